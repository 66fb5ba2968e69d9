"""Event triggers: what `QueueManager.upsert_event_trigger` sends (UpsertEventTrigger) and the
`EventTrigger` it and `list_event_triggers` answer. A trigger makes every `push_event` of a matching key add
a job, with the event's data."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from queue_manager.client_base import ClientBase
from queue_manager.convert import job_options_from_proto, timestamp_to_datetime
from queue_manager.external_events import event_key
from queue_manager.options import (
    JobOptions,
    JobOptionsLike,
    job_options_to_proto,
    validate_job_name,
    validate_queue_name,
)
from queue_manager.v1 import external_events_pb2

__all__ = [
    "EventTrigger",
    "EventTriggerCalls",
    "trigger_from_proto",
    "upsert_event_trigger_request",
    "validate_trigger_id",
]

_pb = external_events_pb2

_TRIGGER_ID = re.compile(r"[A-Za-z0-9._-]{1,100}")


@dataclass(slots=True)
class EventTrigger:
    """An event trigger as stored by the server.

    Attributes:
        id: Trigger id, unique on the server.
        key_pattern: The event keys it matches: an exact key, or a prefix ending in ``*``.
        queue_name: Queue the jobs are added to.
        job_name: Name of the job each matching event adds (its data is the event's).
        options: Options of those jobs.
        created_at, updated_at: When it was created and last replaced.
    """

    id: str
    key_pattern: str
    queue_name: str
    job_name: str
    options: JobOptions = field(default_factory=JobOptions)
    created_at: datetime | None = None
    updated_at: datetime | None = None


def validate_trigger_id(trigger_id: str) -> str:
    """Checks a trigger id: 1 to 100 letters, digits, "-", "_" or "."."""
    if not isinstance(trigger_id, str) or not _TRIGGER_ID.fullmatch(trigger_id):
        raise ValueError(f"trigger id must be 1-100 letters, digits, '-', '_' or '.', got {trigger_id!r}")
    return trigger_id


def upsert_event_trigger_request(
    trigger_id: str, key_pattern: str, queue_name: str, job_name: str, options: JobOptionsLike | None
) -> external_events_pb2.UpsertEventTriggerRequest:
    """Builds and checks an UpsertEventTriggerRequest (see `QueueManager.upsert_event_trigger`)."""
    if "*" in event_key(key_pattern, "key pattern")[:-1]:
        raise ValueError(f"'*' may only end a key pattern (a key prefix, 'order:*'), got {key_pattern!r}")
    msg = external_events_pb2.EventTrigger(
        id=validate_trigger_id(trigger_id),
        key_pattern=key_pattern,
        queue_name=validate_queue_name(queue_name),
    )
    msg.job.name = validate_job_name(job_name)
    if options is not None:
        job_options_to_proto(options, into=msg.job.options)
    return external_events_pb2.UpsertEventTriggerRequest(trigger=msg)


def trigger_from_proto(msg: external_events_pb2.EventTrigger) -> EventTrigger:
    """Public `EventTrigger` from a `queue_manager.v1.EventTrigger`."""
    return EventTrigger(
        id=msg.id,
        key_pattern=msg.key_pattern,
        queue_name=msg.queue_name,
        job_name=msg.job.name,
        options=job_options_from_proto(msg.job.options),
        created_at=timestamp_to_datetime(msg.create_time) if msg.HasField("create_time") else None,
        updated_at=timestamp_to_datetime(msg.update_time) if msg.HasField("update_time") else None,
    )


class EventTriggerCalls(ClientBase):
    """Creating, listing and deleting event triggers (QueueManager's)."""

    async def upsert_event_trigger(
        self,
        trigger_id: str,
        key_pattern: str,
        queue_name: str,
        job_name: str,
        options: JobOptionsLike | None = None,
    ) -> EventTrigger:
        """Creates an event trigger, or replaces the one of that id: from now on every `push_event` whose key
        matches `key_pattern` adds a job named `job_name` to `queue_name`, with the event's data, in the
        same step as the push's wake-ups (a repeated event id adds none again).

        Args:
            trigger_id: 1 to 100 letters, digits, "-", "_" or ".", unique on the server.
            key_pattern: An exact event key, or a prefix ending in ``*`` (``"order:*"``; ``"*"`` matches
                every key).
            queue_name: A registered queue.
            job_name: The jobs' name.
            options: The jobs' options, as `add_job` takes them, less ``job_id`` and ``scheduled_at``.

        Raises:
            NotFoundError: The queue is not registered.
            InvalidArgumentError: A bad field.
            FailedPreconditionError: The server has 1,000 triggers.
            ValueError: A bad id, pattern or name (raised before anything is sent).
        """
        request = upsert_event_trigger_request(trigger_id, key_pattern, queue_name, job_name, options)
        answer: _pb.UpsertEventTriggerResponse = await self._unary(
            self._queue_stub().UpsertEventTrigger, request
        )
        return trigger_from_proto(answer.trigger)

    async def list_event_triggers(self, queue_name: str | None = None) -> list[EventTrigger]:
        """The event triggers (of one queue, or all), by id; `NotFoundError` for a queue that is not
        registered and that no trigger names (a deleted queue's triggers stay listed)."""
        request = _pb.ListEventTriggersRequest(queue_name=queue_name or "")
        answer: _pb.ListEventTriggersResponse = await self._unary(
            self._queue_stub().ListEventTriggers, request
        )
        return [trigger_from_proto(t) for t in answer.triggers]

    async def delete_event_trigger(self, trigger_id: str) -> EventTrigger:
        """Deletes an event trigger (the jobs it added stay) and returns it as it was; `NotFoundError` when
        there is none of that id."""
        request = _pb.DeleteEventTriggerRequest(trigger_id=validate_trigger_id(trigger_id))
        answer: _pb.DeleteEventTriggerResponse = await self._unary(
            self._queue_stub().DeleteEventTrigger, request
        )
        return trigger_from_proto(answer.trigger)
