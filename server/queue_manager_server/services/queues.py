"""QueueService handlers for registering and administering queues."""

from __future__ import annotations

import grpc

from queue_manager.v1 import queue_service_pb2 as pb
from queue_manager.v1 import types_pb2
from queue_manager_server import convert, validate
from queue_manager_server.engine import Engine
from queue_manager_server.errors import InvalidArgument
from queue_manager_server.services.errors import unary
from queue_manager_server.windows import MaintenanceWindows

_CLEANABLE = {"completed", "failed", "cancelled", "waiting", "paused", "delayed"}
_CLEANABLE_NUMBERS = sorted(types_pb2.JobState.Value(f"JOB_STATE_{name.upper()}") for name in _CLEANABLE)


class QueueAdmin:
    """Queue registration, reads and administration (part of `QueueService`)."""

    engine: Engine

    @unary
    async def RegisterQueue(
        self, request: pb.RegisterQueueRequest, context: grpc.aio.ServicerContext
    ) -> pb.RegisterQueueResponse:
        name = validate.queue_name(request.name, "name")
        fields, _ = convert.queue_meta(request.config, name=name)
        dlq = str(fields["dlq"])
        if dlq == name:
            raise InvalidArgument("config.dead_letter_queue", "a queue cannot be its own dead-letter queue")
        if dlq:  # first: a dead-letter queue being obliterated refuses the call before the queue is written
            dlq_fields, _ = convert.queue_meta(types_pb2.QueueConfig(disable_dead_letter=True))
            await self.engine.register_queue(dlq, dlq_fields, only_if_missing=True)
        created, _ = await self.engine.register_queue(name, fields)
        # The windows hold (or free) the queue at once, and every server's timer learns their next boundary.
        await MaintenanceWindows(self.engine).apply(name)
        return pb.RegisterQueueResponse(
            queue=convert.queue_out(await self.engine.get_queue(name)), created=created
        )

    @unary
    async def GetQueue(
        self, request: pb.GetQueueRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetQueueResponse:
        q = await self.engine.get_queue(validate.queue_name(request.name, "name"))
        return pb.GetQueueResponse(queue=convert.queue_out(q))

    @unary
    async def ListQueues(
        self, request: pb.ListQueuesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListQueuesResponse:
        return pb.ListQueuesResponse(queues=[convert.queue_out(q) for q in await self.engine.list_queues()])

    @unary
    async def PauseQueue(
        self, request: pb.PauseQueueRequest, context: grpc.aio.ServicerContext
    ) -> pb.PauseQueueResponse:
        name = validate.queue_name(request.name, "name")
        after = request.resume_after if request.HasField("resume_after") else None
        at = request.resume_at if request.HasField("resume_at") else None
        until = 0
        if after is not None or at is not None:
            # The queue's own Redis clock, which resume_due.lua compares the time with.
            until = validate.resume_time_ms(after, at, await self.engine.redis_time_ms(name))
        await self.engine.set_paused(name, True, until)
        return pb.PauseQueueResponse(queue=convert.queue_out(await self.engine.get_queue(name)))

    @unary
    async def ResumeQueue(
        self, request: pb.ResumeQueueRequest, context: grpc.aio.ServicerContext
    ) -> pb.ResumeQueueResponse:
        name = validate.queue_name(request.name, "name")
        await self.engine.set_paused(name, False)
        return pb.ResumeQueueResponse(queue=convert.queue_out(await self.engine.get_queue(name)))

    @unary
    async def CleanQueue(
        self, request: pb.CleanQueueRequest, context: grpc.aio.ServicerContext
    ) -> pb.CleanQueueResponse:
        name = validate.queue_name(request.name, "name")
        if not request.state:  # the list of every state named ACTIVE, which is then refused
            raise InvalidArgument("state", validate.enum_problem(0, _CLEANABLE_NUMBERS, types_pb2.JobState))
        state = convert.state_name(request.state)
        if state not in _CLEANABLE:
            raise InvalidArgument(
                "state",
                f"{state} jobs cannot be cleaned; use completed, failed, cancelled, waiting, paused or "
                "delayed",
            )
        grace = validate.duration_ms(request.grace, "grace")
        removed = await self.engine.clean(name, state, grace, request.limit)
        return pb.CleanQueueResponse(removed=removed)

    @unary
    async def DrainQueue(
        self, request: pb.DrainQueueRequest, context: grpc.aio.ServicerContext
    ) -> pb.DrainQueueResponse:
        name = validate.queue_name(request.name, "name")
        return pb.DrainQueueResponse(removed=await self.engine.drain(name, request.include_delayed))

    @unary
    async def ObliterateQueue(
        self, request: pb.ObliterateQueueRequest, context: grpc.aio.ServicerContext
    ) -> pb.ObliterateQueueResponse:
        name = validate.queue_name(request.name, "name")
        return pb.ObliterateQueueResponse(removed=await self.engine.obliterate(name, request.force))
