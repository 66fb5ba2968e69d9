"""Where the ``Schedule`` message meets stored schedules (both directions), validating on the way in.

The stored definition is the ``Schedule`` message itself, normalised (catch-up and time zone filled in,
output-only fields cleared, create and update time set); its firing state is kept apart
(engine/schedules.py) and merged back on the way out.
"""

from __future__ import annotations

import dataclasses
import re

from queue_manager.v1 import jobs_pb2
from queue_manager.v1 import schedules_pb2 as pb
from queue_manager_server import convert, validate
from queue_manager_server.engine.records import NewJob
from queue_manager_server.engine.schedules import ScheduleRecord
from queue_manager_server.errors import InvalidArgument
from queue_manager_server.recurrence import Recurrence, check_cron, time_zone

_SCHEDULE_ID = re.compile(r"[A-Za-z0-9_.\-]{1,100}")
MIN_EVERY_MS = 1000
_CATCH_UP = {
    pb.SCHEDULE_CATCH_UP_SKIP: "skip",
    pb.SCHEDULE_CATCH_UP_ONE: "one",
    pb.SCHEDULE_CATCH_UP_ALL: "all",
}


def schedule_id(value: str, field: str) -> str:
    if not _SCHEDULE_ID.fullmatch(value):
        if not value:
            raise InvalidArgument(field, "is required")
        raise InvalidArgument(
            field, f"{value[:120]!r} is not a valid schedule id: use 1-100 letters, digits, '-', '_' or '.'"
        )
    return value


def occurrence_job_id(schedule: str, occurrence_ms: int) -> str:
    """The id of the job a schedule adds for one occurrence: derived, so it is added at most once."""
    return f"schedule:{schedule}:{occurrence_ms}"


def definition(s: pb.Schedule, now_ms: int, payload_limit: int, field: str = "schedule") -> pb.Schedule:
    """Validates a schedule and returns the definition to store (see the module docstring).

    Args:
        s: The schedule as sent.
        now_ms: Redis time now: its create and update time (a replacement keeps the create time of the
            schedule it replaces; the caller copies it).
        payload_limit: Largest job data accepted.
        field: Name of the schedule in error messages.
    """
    out = pb.Schedule()
    out.CopyFrom(s)
    for name in ("next_run_time", "last_run_time", "run_count", "last_job_id", "create_time", "update_time"):
        out.ClearField(name)
    validate.queue_name(s.queue_name, f"{field}.queue_name")
    schedule_id(s.id, f"{field}.id")
    if s.cron and s.HasField("every"):
        raise InvalidArgument(f"{field}.every", "set either cron or every, not both")
    if s.cron:
        try:
            zone = time_zone(s.timezone)
        except ValueError as exc:
            raise InvalidArgument(f"{field}.timezone", str(exc)) from None
        try:
            check_cron(s.cron, zone)
        except ValueError as exc:
            raise InvalidArgument(f"{field}.cron", str(exc)) from None
        out.timezone = s.timezone or "UTC"
    elif s.HasField("every"):
        every = validate.duration_ms(s.every, f"{field}.every")
        if every < MIN_EVERY_MS:
            raise InvalidArgument(f"{field}.every", f"{every} ms is shorter than the minimum of 1 s")
        out.every.CopyFrom(convert.ms_duration(every))  # whole ms, as checked (recurrence reads it so)
        if s.timezone:
            raise InvalidArgument(f"{field}.timezone", "applies to cron schedules only; leave it empty")
    else:
        raise InvalidArgument(
            f"{field}.cron", "is required: set cron (a cron expression) or every (an interval)"
        )
    start, end = _time(s, "start_time", field), _time(s, "end_time", field)
    if start >= 0 and 0 <= end < start:
        raise InvalidArgument(f"{field}.end_time", "is before start_time")
    if s.catch_up and s.catch_up not in _CATCH_UP:
        raise InvalidArgument(
            f"{field}.catch_up",
            validate.enum_problem(s.catch_up, _CATCH_UP, pb.ScheduleCatchUp, "SKIP"),
        )
    out.catch_up = s.catch_up or pb.SCHEDULE_CATCH_UP_SKIP
    _check_template(s, f"{field}.job", payload_limit)
    out.create_time.CopyFrom(convert.ms_timestamp(now_ms))
    out.update_time.CopyFrom(convert.ms_timestamp(now_ms))
    return out


def _time(s: pb.Schedule, name: str, field: str) -> int:
    if not s.HasField(name):  # type: ignore[arg-type]
        return -1
    return validate.run_time_ms(getattr(s, name), f"{field}.{name}")


def _check_template(s: pb.Schedule, field: str, payload_limit: int) -> None:
    if not s.HasField("job"):
        raise InvalidArgument(field, "is required: the job each run adds")
    job_template(
        s.job,
        field,
        payload_limit,
        own_id="each run's job gets its own id, schedule:<schedule id>:<occurrence ms>",
        own_time="each run's job runs at its occurrence; use delay to run it later",
    )


def job_template(job: jobs_pb2.NewJob, field: str, payload_limit: int, own_id: str, own_time: str) -> NewJob:
    """Validates the template of the jobs something adds in turn (a schedule's runs, an event trigger's
    events): a job as an add takes it, less a job id and a fixed run time, which each job has its own of
    (own_id and own_time say how, in the refusal)."""
    o = job.options
    if o.job_id:
        raise InvalidArgument(f"{field}.options.job_id", f"is not allowed: {own_id}")
    if o.HasField("schedule_time"):
        raise InvalidArgument(f"{field}.options.schedule_time", f"is not allowed: {own_time}")
    return convert.new_job(job, field, payload_limit)


def recurrence(d: pb.Schedule) -> Recurrence:
    """The occurrences of a stored definition (an interval without start_time counts from creation)."""
    start = d.start_time.ToMilliseconds() if d.HasField("start_time") else -1
    end = d.end_time.ToMilliseconds() if d.HasField("end_time") else -1
    if d.cron:
        return Recurrence(cron=d.cron, zone=time_zone(d.timezone), start_ms=start, end_ms=end)
    every = d.every.ToMilliseconds()
    anchor = start if start >= 0 else d.create_time.ToMilliseconds() + every
    return Recurrence(every_ms=every, anchor_ms=anchor, start_ms=start, end_ms=end)


def catch_up(d: pb.Schedule) -> str:
    return _CATCH_UP.get(d.catch_up, "skip")


def runs_left(d: pb.Schedule, run_count: int) -> int | None:
    """Runs before the schedule's limit; None when it has none."""
    return d.limit - run_count if d.limit else None


def jobs(d: pb.Schedule, occurrences: list[int], payload_limit: int) -> list[NewJob]:
    """The jobs of a stored schedule's occurrences, each with its derived id."""
    if not occurrences:
        return []
    template = convert.new_job(d.job, "schedule.job", payload_limit)
    return [dataclasses.replace(template, id=occurrence_job_id(d.id, at)) for at in occurrences]


def schedule_out(r: ScheduleRecord) -> pb.Schedule:
    """A stored schedule with its firing state."""
    s = pb.Schedule.FromString(r.definition)
    if r.due_ms >= 0:
        s.next_run_time.CopyFrom(convert.ms_timestamp(r.due_ms))
    if r.last_run_ms >= 0:
        s.last_run_time.CopyFrom(convert.ms_timestamp(r.last_run_ms))
    s.run_count = r.run_count
    s.last_job_id = r.last_job_id
    return s
