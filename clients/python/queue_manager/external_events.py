"""External events: `ExternalEventCalls.push_event` (PushEvent), the part of `QueueManager` that pushes
them, and the request a processor's `JobContext.wait_for_event` sends (WaitForEvent)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from queue_manager.child_jobs import KEEP
from queue_manager.client_base import ClientBase
from queue_manager.convert import JobRef, encode_payload, timestamp_to_datetime
from queue_manager.routing import is_control
from queue_manager.v1 import external_events_pb2

__all__ = [
    "ExternalEventCalls",
    "PushedEvent",
    "push_event_request",
    "pushed_from_proto",
    "wait_for_event_request",
]

_pb = external_events_pb2
# The server's limits (services/external_events.py, validate.MAX_EVENT_KEY), checked before a call.
MAX_EVENT_KEY = 256
MAX_EVENT_KEYS = 16


@dataclass(frozen=True, slots=True)
class PushedEvent:
    """What `QueueManager.push_event` did.

    Attributes:
        woken: The jobs the event woke (they waited for its key), now waiting to run: all of them up to the
            server's bound (1,000), the first ones past it.
        duplicate: True when its event id had been pushed in the last 24 hours: nothing changed, and
            ``woken`` and ``pushed_at`` are the first push's.
        pushed_at: When the server recorded the push.
        added: The jobs its event triggers added (one per trigger whose pattern matches its key).
        woken_count: How many jobs the event woke, listed in ``woken`` or not.
        woken_truncated: True when ``woken`` lists fewer than ``woken_count``.
    """

    woken: list[JobRef] = field(default_factory=list)
    duplicate: bool = False
    pushed_at: datetime | None = None
    added: list[JobRef] = field(default_factory=list)
    woken_count: int = 0
    woken_truncated: bool = False


def event_key(value: str, what: str = "event key") -> str:
    """An event key or id as the server takes it: 1 to 256 characters, no control characters."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string")
    if len(value) > MAX_EVENT_KEY:
        raise ValueError(f"{what} is {len(value)} characters long; the limit is {MAX_EVENT_KEY}")
    if any(is_control(c) for c in value):
        raise ValueError(f"{what} {value[:40]!r} must not contain control characters")
    return value


def push_event_request(key: str, data: Any = None, event_id: str = "") -> _pb.PushEventRequest:
    """The PushEvent request for an event of `key` with `data` (JSON-serialisable or bytes)."""
    request = _pb.PushEventRequest(key=event_key(key))
    if event_id:
        request.event_id = event_key(event_id, "event id")
    if data is not None:
        encode_payload(data, request.data)
    return request


def wait_for_event_request(
    queue_name: str,
    job_id: str,
    lease_token: str,
    keys: str | Sequence[str],
    timeout: float | timedelta | None,
    data: Any,
) -> _pb.WaitForEventRequest:
    """The WaitForEvent request of a running job (see `JobContext.wait_for_event`)."""
    names = [keys] if isinstance(keys, str) else list(keys)
    if not 1 <= len(names) <= MAX_EVENT_KEYS:
        raise ValueError(f"wait for 1 to {MAX_EVENT_KEYS} event keys, got {len(names)}")
    request = _pb.WaitForEventRequest(
        queue_name=queue_name, job_id=job_id, lease_token=lease_token, keys=[event_key(k) for k in names]
    )
    if timeout is not None:
        seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)
        if not seconds > 0:
            raise ValueError(f"timeout must be positive (None waits with no end), got {timeout!r}")
        request.timeout.FromTimedelta(timedelta(seconds=seconds))
    if data is not KEEP:
        encode_payload(data, request.data)
    return request


class ExternalEventCalls(ClientBase):
    """Pushing external events (QueueManager's)."""

    async def push_event(self, key: str, data: Any = None, *, event_id: str = "") -> PushedEvent:
        """Pushes an external event: every job waiting for `key` (`JobContext.wait_for_event`) goes back to
        waiting at once, and its next run sees the event in `JobContext.event`. A job that starts waiting
        after the push does not see it.

        Args:
            key: The event's key: 1 to 256 characters, no control characters.
            data: The event's data (JSON-serialisable or bytes), within the server's payload limit.
            event_id: Makes the push safe to repeat: a push of an id pushed in the last 24 hours changes
                nothing and answers as the first did (a webhook's retries).

        Returns:
            What the push did: the jobs it woke, and whether it was a repeat.

        Raises:
            InvalidArgumentError: A bad key or id, or data over the payload limit.
            ValueError: A bad key or id (raised before anything is sent).
        """
        request = push_event_request(key, data, event_id)
        answer: _pb.PushEventResponse = await self._unary(self._queue_stub().PushEvent, request)
        return pushed_from_proto(answer)


def pushed_from_proto(answer: _pb.PushEventResponse) -> PushedEvent:
    """What a push did, from the server's answer."""
    return PushedEvent(
        woken=[JobRef(queue_name=r.queue_name, job_id=r.job_id) for r in answer.woken],
        duplicate=answer.duplicate,
        pushed_at=timestamp_to_datetime(answer.pushed_at) if answer.HasField("pushed_at") else None,
        added=[JobRef(queue_name=r.queue_name, job_id=r.job_id) for r in answer.added],
        woken_count=answer.woken_count,
        woken_truncated=answer.woken_truncated,
    )
