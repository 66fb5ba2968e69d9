"""External events (PushEvent, WaitForEvent): a running job waits for an event of one of some keys, parked
as a durable sleep parks it, and a push wakes every job waiting for its key and adds the jobs of the event
triggers its key matches (services/event_triggers.py).

On one Redis server a wait is one script (lua/event_wait.lua) and so is a push of a key with at most a batch
of waiters (lua/push_event.lua), so a wait and a push never miss each other and a lost server leaves nothing
half done: a WaitForEvent whose answer was lost either parked the job, or left it active under a lease that
runs out, after which it runs again (a redelivery) and waits anew. A push of a key with more waiters wakes
them in batches from a snapshot taken in its first step, the janitor going on after a lost server
(services/long_pushes.py). On a Redis Cluster a push reaches jobs of any queue, which one script cannot: it is
recorded in one step and carried out queue by queue in another, replayed by the janitor after a crash
(services/event_pushes.py), and a wait indexes its queue before it parks the job.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc

from queue_manager.v1 import external_events_pb2 as pb
from queue_manager.v1 import types_pb2
from queue_manager_server import convert, event_trigger_convert, validate
from queue_manager_server.engine import Engine
from queue_manager_server.engine.event_triggers import EventTriggers
from queue_manager_server.engine.external_events import CANCELLED, ExternalEvents
from queue_manager_server.engine.records import NewJob
from queue_manager_server.errors import InvalidArgument, Unavailable
from queue_manager_server.services.errors import unary
from queue_manager_server.services.event_pushes import ClusterPushes
from queue_manager_server.services.long_pushes import LongPushes

# Keys one WaitForEvent may wait for: enough for "approved, rejected or withdrawn"; a wider fan-in is an
# event key shared by the pushers.
MAX_EVENT_KEYS = 16
# The longest wait timeout: a wait meant to outlast a year has no timeout.
MAX_WAIT_TIMEOUT_MS = 366 * 24 * 3600 * 1000


def event_keys(keys: list[str], field: str = "keys") -> list[str]:
    """The keys of a wait: 1 to MAX_EVENT_KEYS valid event keys, repeats dropped."""
    if not keys:
        raise InvalidArgument(field, "wait for at least one event key")
    if len(keys) > MAX_EVENT_KEYS:
        raise InvalidArgument(field, f"at most {MAX_EVENT_KEYS} keys per wait, got {len(keys)}")
    for i, key in enumerate(keys):
        validate.event_key(key, f"{field}[{i}]")
    return list(dict.fromkeys(keys))


class ExternalEventHandlers:
    """PushEvent and WaitForEvent (part of `QueueService`)."""

    engine: Engine
    external_events: ExternalEvents
    event_triggers: EventTriggers
    max_payload: int
    # On a Redis Cluster (set by the app): pushes recorded, then carried out queue by queue.
    cluster_pushes: ClusterPushes | None = None
    # On one Redis server (set by the app): pushes in one step, or in batches for a key with many waiters.
    long_pushes: LongPushes
    lease_ended: Callable[[str, str, str], None] | None

    @unary
    async def PushEvent(
        self, request: pb.PushEventRequest, context: grpc.aio.ServicerContext
    ) -> pb.PushEventResponse:
        key = validate.event_key(request.key, "key")
        event_id = validate.event_key(request.event_id, "event_id") if request.event_id else ""
        body, ct = convert.payload_in(request.data, "data", self.max_payload)
        event = types_pb2.ExternalEvent(key=key, event_id=event_id)
        if request.HasField("data") and request.data.WhichOneof("body") is not None:
            event.data.CopyFrom(convert.payload_out(body, ct, json_view=False))

        async def plan(fresh: bool) -> tuple[str, list[tuple[str, list[NewJob]]]]:
            version, triggers = await self.event_triggers.current(fresh)
            return version, event_trigger_convert.jobs_for(triggers, key, request.data, self.max_payload)

        if self.cluster_pushes is not None:
            pushed = await self.cluster_pushes.push_event(key, event.SerializeToString(), event_id, plan)
        else:
            pushed = await self.long_pushes.push_event(key, event.SerializeToString(), event_id, plan)
        if pushed is None:
            raise Unavailable("the event triggers kept changing while the event was pushed; push it again")
        return pb.PushEventResponse(
            woken=[types_pb2.JobRef(queue_name=q, job_id=j) for q, j in pushed.woken],
            added=[types_pb2.JobRef(queue_name=q, job_id=j) for q, j in pushed.added],
            duplicate=pushed.duplicate,
            pushed_at=convert.ms_timestamp(pushed.pushed_ms),
            woken_count=pushed.woken_count,
            woken_truncated=pushed.woken_count > len(pushed.woken),
        )

    @unary
    async def WaitForEvent(
        self, request: pb.WaitForEventRequest, context: grpc.aio.ServicerContext
    ) -> pb.WaitForEventResponse:
        queue = validate.queue_name(request.queue_name)
        job_id = validate.job_id(request.job_id)
        if not request.lease_token:
            raise InvalidArgument("lease_token", "is required: only the job's own run waits for an event")
        keys = event_keys(list(request.keys))
        timeout = -1
        if request.HasField("timeout"):
            timeout = validate.duration_ms(request.timeout, "timeout")
            if not 0 < timeout <= MAX_WAIT_TIMEOUT_MS:
                raise InvalidArgument(
                    "timeout", "must be 1 ms to 366 days (leave it unset to wait with no end)"
                )
        body, ct = b"", ""  # no new data: the job keeps its own
        if request.HasField("data"):
            body, ct = convert.payload_in(request.data, "data", self.max_payload)
        wait = types_pb2.EventWait(keys=keys).SerializeToString()
        waits = self.cluster_pushes or self.external_events
        parked = await waits.event_wait(queue, job_id, request.lease_token, ct, body, timeout, wait, keys)
        if self.lease_ended is not None:
            self.lease_ended(queue, job_id, request.lease_token)
        out = pb.WaitForEventResponse(cancelled=parked.code == CANCELLED)
        if parked.until_ms is not None:
            out.until.CopyFrom(convert.ms_timestamp(parked.until_ms))
        return out
