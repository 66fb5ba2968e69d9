"""Where the ``EventTrigger`` message meets stored triggers, validating on the way in, and the jobs a
trigger adds for an event.

The stored definition is the message itself, its create and update time set; the job template is checked
as a schedule's is (schedule_convert.job_template).
"""

from __future__ import annotations

import re

from queue_manager.v1 import external_events_pb2 as pb
from queue_manager.v1 import types_pb2
from queue_manager_server import convert, schedule_convert, validate
from queue_manager_server.engine.engine import new_job_id
from queue_manager_server.engine.records import NewJob
from queue_manager_server.errors import InvalidArgument

_TRIGGER_ID = re.compile(r"[A-Za-z0-9_.\-]{1,100}")


def trigger_id(value: str, field: str) -> str:
    if not _TRIGGER_ID.fullmatch(value):
        if not value:
            raise InvalidArgument(field, "is required")
        raise InvalidArgument(
            field, f"{value[:120]!r} is not a valid trigger id: use 1-100 letters, digits, '-', '_' or '.'"
        )
    return value


def key_pattern(value: str, field: str) -> str:
    """An exact event key, or a prefix of one followed by '*'."""
    validate.event_key(value, field)
    if "*" in value[:-1]:
        raise InvalidArgument(field, f"{value[:120]!r}: '*' may only end a pattern (a key prefix, 'order:*')")
    return value


def matches(pattern: str, key: str) -> bool:
    """Whether an event key matches a trigger's pattern."""
    if pattern.endswith("*"):
        return key.startswith(pattern[:-1])
    return key == pattern


def definition(
    t: pb.EventTrigger, now_ms: int, payload_limit: int, field: str = "trigger"
) -> pb.EventTrigger:
    """Validates a trigger and returns the definition to store, its create and update time `now_ms` (a
    replacement keeps the create time of the trigger it replaces; the caller copies it)."""
    out = pb.EventTrigger()
    out.CopyFrom(t)
    trigger_id(t.id, f"{field}.id")
    key_pattern(t.key_pattern, f"{field}.key_pattern")
    validate.queue_name(t.queue_name, f"{field}.queue_name")
    if not t.HasField("job"):
        raise InvalidArgument(f"{field}.job", "is required: the job each matching event adds")
    if t.job.HasField("data"):
        raise InvalidArgument(f"{field}.job.data", "is not allowed: each job's data is its event's data")
    schedule_convert.job_template(
        t.job,
        f"{field}.job",
        payload_limit,
        own_id="each event's job gets an id of its own",
        own_time="each event's job is added when the event is pushed; use delay to run it later",
    )
    out.create_time.CopyFrom(convert.ms_timestamp(now_ms))
    out.update_time.CopyFrom(convert.ms_timestamp(now_ms))
    return out


def jobs_for(
    triggers: list[pb.EventTrigger], key: str, data: types_pb2.Payload, payload_limit: int
) -> list[tuple[str, list[NewJob]]]:
    """The jobs the triggers matching `key` add for an event with `data`, by queue (in the order of the
    triggers), each with a new id."""
    by_queue: dict[str, list[NewJob]] = {}
    for t in triggers:
        if not matches(t.key_pattern, key):
            continue
        options = t.job.options if t.job.HasField("options") else None
        job = convert.job_from(t.job.name, data, options, f"trigger {t.id}", payload_limit, name_part="name")
        job.id = new_job_id()
        by_queue.setdefault(t.queue_name, []).append(job)
    return list(by_queue.items())
