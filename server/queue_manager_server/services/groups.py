"""QueueService handlers for fairness groups (JobOptions.group): list them, set a group's own limits and
maintenance windows (windows.py), pause and resume them."""

from __future__ import annotations

import grpc

from queue_manager.v1 import queue_service_pb2 as pb
from queue_manager.v1 import types_pb2
from queue_manager_server import convert, paging, validate, windows
from queue_manager_server.engine.groups import GroupInfo, Groups, Limits
from queue_manager_server.errors import InvalidArgument
from queue_manager_server.services.errors import unary
from queue_manager_server.windows import MaintenanceWindows


def _group_out(g: GroupInfo) -> types_pb2.GroupInfo:
    limits = g.limits
    out = types_pb2.GroupInfo(
        group=g.name,
        waiting=g.waiting,
        active=g.active,
        limits=convert.group_limits_out(
            limits.concurrency, limits.rate_max, limits.rate_ms, limits.max_size, limits.rate_burst
        ),
        custom_limits=g.own is not None,
        paused=g.paused,
        paused_until=convert.ms_timestamp(g.paused_until_ms) if g.paused_until_ms else None,
        maintenance_until=convert.ms_timestamp(g.maintenance_until_ms) if g.maintenance_until_ms else None,
        next_maintenance_time=convert.ms_timestamp(g.next_maintenance_ms) if g.next_maintenance_ms else None,
    )
    if g.own is not None and g.windows:
        out.limits.maintenance_windows.extend(types_pb2.GroupLimits.FromString(g.windows).maintenance_windows)
    return out


class GroupHandlers:
    """ListGroups, SetGroupLimits, PauseGroup and ResumeGroup (part of `QueueService`). A group's maintenance
    windows are part of its own limits; ResumeGroup ends an operator's pause only, as ResumeQueue does."""

    groups: Groups

    @unary
    async def ListGroups(
        self, request: pb.ListGroupsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListGroupsResponse:
        queue = validate.queue_name(request.queue_name)
        token = request.page_token
        size, after = paging.cursor_request(request.page_size, token, "g", "ListGroups", stale="o")
        # One group more than the page says whether another page follows.
        found, total = await self.groups.list_groups(queue, "" if after is None else after[1], size + 1)
        response = pb.ListGroupsResponse(groups=[_group_out(g) for g in found[:size]], total_size=total)
        if len(found) > size:
            response.next_page_token = paging.next_cursor("g", 0, found[size - 1].name)
        return response

    @unary
    async def SetGroupLimits(
        self, request: pb.SetGroupLimitsRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetGroupLimitsResponse:
        queue = validate.queue_name(request.queue_name)
        group = validate.group(request.group, "group")
        if request.clear and request.HasField("limits"):
            # Which one was meant is a guess either way: a client sending both has a bug to hear about.
            raise InvalidArgument("clear", "removes the group's own limits: give it without limits")
        limits, blob = None, b""
        if not request.clear and request.HasField("limits"):
            limits = Limits(*convert.group_limits_in(request.limits, "limits"))
            given = request.limits.maintenance_windows
            windows.check_windows(given, "limits.maintenance_windows")
            if given:
                blob = types_pb2.GroupLimits(maintenance_windows=given).SerializeToString(deterministic=True)
        info = await self.groups.set_group_limits(queue, group, limits, blob)
        if blob:
            # Held or freed as the windows say now, and its next boundary announced to every pause timer.
            _, _, info = await MaintenanceWindows(self.groups.engine).apply_group(queue, group)
        return pb.SetGroupLimitsResponse(group=_group_out(info))

    @unary
    async def PauseGroup(
        self, request: pb.PauseGroupRequest, context: grpc.aio.ServicerContext
    ) -> pb.PauseGroupResponse:
        queue, group = validate.queue_name(request.queue_name), validate.group(request.group, "group")
        after = request.resume_after if request.HasField("resume_after") else None
        at = request.resume_at if request.HasField("resume_at") else None
        until = 0
        if after is not None or at is not None:
            # The queue's own Redis clock, which resume_due.lua compares the time with.
            until = validate.resume_time_ms(after, at, await self.groups.engine.redis_time_ms(queue), "group")
        info = await self.groups.set_group_paused(queue, group, True, until)
        return pb.PauseGroupResponse(group=_group_out(info))

    @unary
    async def ResumeGroup(
        self, request: pb.ResumeGroupRequest, context: grpc.aio.ServicerContext
    ) -> pb.ResumeGroupResponse:
        queue, group = validate.queue_name(request.queue_name), validate.group(request.group, "group")
        return pb.ResumeGroupResponse(
            group=_group_out(await self.groups.set_group_paused(queue, group, False))
        )
