"""QueueService handlers for event triggers: upsert, list, delete. A trigger makes each PushEvent of a
matching key add a job (services/external_events.py plans them, push_event.lua adds them in the push's step).

The definitions are global: on a Redis Cluster they live in the event hash slot, beside the pushes' records
(services/event_pushes.py), and each push's record keeps the jobs they add, so a replayed push adds them once.
"""

from __future__ import annotations

import grpc

from queue_manager.v1 import external_events_pb2 as pb
from queue_manager_server import event_trigger_convert, validate
from queue_manager_server.engine import Engine
from queue_manager_server.engine.event_triggers import EventTriggers
from queue_manager_server.errors import InvalidArgument
from queue_manager_server.services.errors import unary


class EventTriggerHandlers:
    """Creating, listing and deleting event triggers (part of `QueueService`)."""

    engine: Engine
    event_triggers: EventTriggers
    max_payload: int

    @unary
    async def UpsertEventTrigger(
        self, request: pb.UpsertEventTriggerRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpsertEventTriggerResponse:
        if not request.HasField("trigger"):
            raise InvalidArgument("trigger", "is required")
        t = request.trigger
        now = await self.engine.redis_time_ms(validate.queue_name(t.queue_name, "trigger.queue_name"))
        stored = event_trigger_convert.definition(t, now, self.max_payload)
        await self.engine.require_queues([t.queue_name])
        previous = await self.event_triggers.find(t.id)
        if previous is not None:
            stored.create_time.CopyFrom(previous.create_time)  # a replaced trigger keeps its create time
        created = await self.event_triggers.upsert_event_trigger(stored)
        return pb.UpsertEventTriggerResponse(trigger=stored, created=created)

    @unary
    async def ListEventTriggers(
        self, request: pb.ListEventTriggersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListEventTriggersResponse:
        queue = validate.queue_name(request.queue_name) if request.queue_name else None
        _, triggers = await self.event_triggers.current(fresh=True)
        selected = [t for t in triggers if queue is None or t.queue_name == queue]
        if queue is not None and not selected:
            # An unknown queue is NOT_FOUND, as ListSchedules answers, not an empty list that reads as "no
            # triggers yet". The triggers of a queue deleted since stay listed: they outlive it.
            await self.engine.require_queues([queue])
        return pb.ListEventTriggersResponse(triggers=selected)

    @unary
    async def DeleteEventTrigger(
        self, request: pb.DeleteEventTriggerRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteEventTriggerResponse:
        tid = event_trigger_convert.trigger_id(request.trigger_id, "trigger_id")
        return pb.DeleteEventTriggerResponse(trigger=await self.event_triggers.delete_event_trigger(tid))
