"""QueueService handlers for repeatable schedules: upsert, get, list, delete.

Firing is done by components/scheduler.py in every server; an upsert publishes the schedule's next due
time so that every server arms a timer for it at once.
"""

from __future__ import annotations

import grpc

from queue_manager.v1 import schedules_pb2 as pb
from queue_manager_server import schedule_convert, validate
from queue_manager_server.engine import Engine
from queue_manager_server.engine.schedules import ScheduleStore
from queue_manager_server.errors import InvalidArgument
from queue_manager_server.services.errors import unary


class ScheduleHandlers:
    """Creating, reading and deleting schedules (part of `QueueService`)."""

    engine: Engine
    max_payload: int

    @unary
    async def UpsertSchedule(
        self, request: pb.UpsertScheduleRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpsertScheduleResponse:
        if not request.HasField("schedule"):
            raise InvalidArgument("schedule", "is required")
        s = request.schedule
        now = await self.engine.redis_time_ms(s.queue_name)
        stored = schedule_convert.definition(s, now, self.max_payload)
        store = ScheduleStore(self.engine)
        previous = await store.find(s.queue_name, s.id)
        if previous is not None:
            old = pb.Schedule.FromString(previous.definition)
            # A replaced schedule keeps its create time (and an interval its phase).
            stored.create_time.CopyFrom(old.create_time)
            if _same(stored, old):
                # Upserting the same schedule again (as an application does at every start) changes
                # nothing, and in particular keeps a run missed during an outage due for its catch-up.
                return pb.UpsertScheduleResponse(schedule=schedule_convert.schedule_out(previous))
        left = schedule_convert.runs_left(stored, previous.run_count if previous is not None else 0)
        first = schedule_convert.recurrence(stored).first_at_or_after(now)
        due = -1 if first is None or (left is not None and left <= 0) else first
        created, record = await store.upsert(s.queue_name, s.id, stored.SerializeToString(), due)
        return pb.UpsertScheduleResponse(schedule=schedule_convert.schedule_out(record), created=created)

    @unary
    async def GetSchedule(
        self, request: pb.GetScheduleRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetScheduleResponse:
        queue = validate.queue_name(request.queue_name)
        sid = schedule_convert.schedule_id(request.schedule_id, "schedule_id")
        record = await ScheduleStore(self.engine).get(queue, sid)
        return pb.GetScheduleResponse(schedule=schedule_convert.schedule_out(record))

    @unary
    async def ListSchedules(
        self, request: pb.ListSchedulesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListSchedulesResponse:
        queue = validate.queue_name(request.queue_name) if request.queue_name else None
        records = await ScheduleStore(self.engine).list_schedules(queue)
        return pb.ListSchedulesResponse(schedules=[schedule_convert.schedule_out(r) for r in records])

    @unary
    async def DeleteSchedule(
        self, request: pb.DeleteScheduleRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteScheduleResponse:
        queue = validate.queue_name(request.queue_name)
        sid = schedule_convert.schedule_id(request.schedule_id, "schedule_id")
        record = await ScheduleStore(self.engine).delete(queue, sid)
        return pb.DeleteScheduleResponse(schedule=schedule_convert.schedule_out(record))


def _same(new: pb.Schedule, old: pb.Schedule) -> bool:
    """Whether two definitions differ only in their update time."""
    a, b = pb.Schedule(), pb.Schedule()
    a.CopyFrom(new)
    b.CopyFrom(old)
    a.ClearField("update_time")
    b.ClearField("update_time")
    return a == b
