"""Repeatable schedules on the client side: the `Schedule` dataclass and the requests that manage them.

A schedule adds a job to its queue on a cron expression (5 fields, or 6 with seconds first, in an IANA
time zone) or on a fixed interval::

    await qm.add_schedule("reports", "nightly", cron="0 3 * * *", timezone="Europe/Paris",
                          job_name="build-report", data={"kind": "daily"})
    await qm.add_schedule("health", "ping", every=timedelta(seconds=30), job_name="ping")

Each run's job has the id ``schedule:<schedule id>:<occurrence ms>``, so an occurrence is added once
however many servers run. ``catch_up`` says what happens to runs missed while no server ran: ``"skip"``
(default: only a run at most a minute late still happens), ``"one"`` (one run for all of them) or
``"all"`` (one per missed occurrence, oldest first, at most 1,000).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from queue_manager.convert import (
    decode_payload,
    duration_to_timedelta,
    encode_payload,
    job_options_from_proto,
    timestamp_to_datetime,
)
from queue_manager.options import (
    DurationLike,
    JobOptions,
    JobOptionsLike,
    duration_ms,
    job_options_to_proto,
    to_duration,
    to_timestamp,
    validate_job_name,
    validate_queue_name,
)
from queue_manager.v1 import schedules_pb2

__all__ = [
    "CATCH_UP_POLICIES",
    "Schedule",
    "schedule_from_proto",
    "upsert_schedule_request",
    "validate_schedule_id",
]

CATCH_UP_POLICIES = ("skip", "one", "all")
_CATCH_UP_NUMBER = {
    "skip": schedules_pb2.SCHEDULE_CATCH_UP_SKIP,
    "one": schedules_pb2.SCHEDULE_CATCH_UP_ONE,
    "all": schedules_pb2.SCHEDULE_CATCH_UP_ALL,
}
_CATCH_UP_NAME = {number: name for name, number in _CATCH_UP_NUMBER.items()}
_SCHEDULE_ID = re.compile(r"[A-Za-z0-9._-]{1,100}")
_MIN_EVERY_MS = 1000
_UINT32_MAX = 2**32 - 1


@dataclass(slots=True)
class Schedule:
    """A repeatable schedule as stored by the server.

    Attributes:
        id: Schedule id, unique within its queue.
        queue_name: Queue its jobs are added to.
        job_name: Name of each run's job.
        data: Data of each run's job.
        options: Options of each run's job.
        cron: Cron expression, or None for an interval schedule.
        every: Interval between runs, or None for a cron schedule.
        timezone: Time zone of the cron expression ("" for an interval schedule).
        start: No run before this time.
        end: No run after this time.
        limit: Most runs in all; None for no limit.
        catch_up: What happens to runs missed while no server ran: "skip", "one" or "all".
        next_run_at: When the next job is due; None once the schedule is over.
        last_run_at: When the last job was added.
        run_count: Runs so far (kept when the schedule is replaced).
        last_job_id: Id of the last run's job.
        created_at: When the schedule was created.
        updated_at: When it was last replaced.
        created: On the schedule `QueueManager.add_schedule` returns: True when the call created it, False
            when it replaced the queue's schedule of that id (the RPC's ``created``, as Go's second result
            and Java's ``Schedule.created()`` give it). None on schedules read any other way. Not compared.
    """

    id: str
    queue_name: str
    job_name: str
    data: Any = None
    options: JobOptions = field(default_factory=JobOptions)
    cron: str | None = None
    every: timedelta | None = None
    timezone: str = ""
    start: datetime | None = None
    end: datetime | None = None
    limit: int | None = None
    catch_up: str = "skip"
    next_run_at: datetime | None = None
    last_run_at: datetime | None = None
    run_count: int = 0
    last_job_id: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None
    created: bool | None = field(default=None, compare=False)


def validate_schedule_id(schedule_id: str) -> str:
    """Checks a schedule id: 1 to 100 letters, digits, "-", "_" or "."."""
    if not isinstance(schedule_id, str):
        raise TypeError(f"schedule id must be a str, not {type(schedule_id).__name__}")
    if not _SCHEDULE_ID.fullmatch(schedule_id):
        raise ValueError(f"schedule id {schedule_id!r} must be 1 to 100 letters, digits, '-', '_' or '.'")
    return schedule_id


def upsert_schedule_request(
    queue_name: str,
    schedule_id: str,
    *,
    cron: str | None,
    every: DurationLike | None,
    timezone: str | None,
    job_name: str,
    data: Any,
    options: JobOptionsLike | None,
    start: datetime | None,
    end: datetime | None,
    limit: int | None,
    catch_up: str,
) -> schedules_pb2.UpsertScheduleRequest:
    """Builds and validates an UpsertScheduleRequest (see `QueueManager.add_schedule`)."""
    msg = schedules_pb2.Schedule(
        id=validate_schedule_id(schedule_id), queue_name=validate_queue_name(queue_name)
    )
    if (cron is None) == (every is None):
        raise ValueError("give either cron (a cron expression) or every (an interval), not both or neither")
    if cron is not None:
        if not isinstance(cron, str) or not cron.strip():
            raise ValueError(f"cron must be a cron expression such as '0 3 * * *', got {cron!r}")
        msg.cron = cron
    if every is not None:
        try:
            every_ms = duration_ms(every, "every")
        except ValueError:  # negative or not finite: the minimum below is the one to state
            every_ms = -1.0
        if every_ms < _MIN_EVERY_MS:
            raise ValueError(f"every must be at least 1 s (1000 ms), got {every!r}")
        msg.every.CopyFrom(to_duration(every, "every"))
    if timezone:
        if cron is None:
            raise ValueError("timezone applies to cron schedules only")
        msg.timezone = str(timezone)
    msg.job.name = validate_job_name(job_name)
    encode_payload(data, msg.job.data)
    if options is not None:
        job_options_to_proto(options, into=msg.job.options)
        if msg.job.options.job_id:
            raise ValueError("options job_id is not allowed in a schedule: each run's job gets its own id")
    if start is not None:
        msg.start_time.CopyFrom(to_timestamp(start, "start"))
    if end is not None:
        msg.end_time.CopyFrom(to_timestamp(end, "end"))
        if start is not None and msg.end_time.ToNanoseconds() < msg.start_time.ToNanoseconds():
            raise ValueError("end must not be before start")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= _UINT32_MAX:
            raise ValueError(f"limit must be an int from 1 to {_UINT32_MAX} (None: no limit), got {limit!r}")
        msg.limit = limit
    policy = _CATCH_UP_NUMBER.get(str(catch_up).lower())
    if policy is None:
        raise ValueError(f"catch_up must be one of {', '.join(CATCH_UP_POLICIES)}, got {catch_up!r}")
    msg.catch_up = policy
    return schedules_pb2.UpsertScheduleRequest(schedule=msg)


def schedule_from_proto(msg: schedules_pb2.Schedule) -> Schedule:
    """Public `Schedule` from a `queue_manager.v1.Schedule`."""

    def when(name: str) -> datetime | None:
        return timestamp_to_datetime(getattr(msg, name)) if msg.HasField(name) else None  # type: ignore[arg-type]

    return Schedule(
        id=msg.id,
        queue_name=msg.queue_name,
        job_name=msg.job.name,
        data=decode_payload(msg.job.data),
        options=job_options_from_proto(msg.job.options),
        cron=msg.cron or None,
        every=duration_to_timedelta(msg.every) if msg.HasField("every") else None,
        timezone=msg.timezone,
        start=when("start_time"),
        end=when("end_time"),
        limit=msg.limit or None,
        catch_up=_CATCH_UP_NAME.get(msg.catch_up, "skip"),
        next_run_at=when("next_run_time"),
        last_run_at=when("last_run_time"),
        run_count=msg.run_count,
        last_job_id=msg.last_job_id,
        created_at=when("create_time"),
        updated_at=when("update_time"),
    )
