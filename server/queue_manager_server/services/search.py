"""QueueService handlers for the bulk actions by filter: CancelJobs and RemoveJobs (RetryFailedJobs, which
takes the same filter, lives with job control). engine/search.py says how a call is bounded and paged."""

from __future__ import annotations

import grpc

from queue_manager.v1 import jobs_pb2 as pb
from queue_manager.v1 import types_pb2
from queue_manager_server import convert, filter_convert, paging, validate
from queue_manager_server.engine.search import Acted, JobFilter, JobSearch
from queue_manager_server.errors import InvalidArgument
from queue_manager_server.services.cancel import MAX_REASON
from queue_manager_server.services.errors import unary

_CANCELLABLE: set[int] = {
    types_pb2.JOB_STATE_WAITING,
    types_pb2.JOB_STATE_PAUSED,
    types_pb2.JOB_STATE_DELAYED,
    types_pb2.JOB_STATE_ACTIVE,
}
_REMOVABLE: set[int] = set(convert.STATE_NAMES) - {types_pb2.JOB_STATE_ACTIVE}


def bulk_token(kind: str, acted: Acted) -> str:
    """The next_page_token of a bounded bulk call: empty once the state's end was read."""
    return "" if acted.position is None else paging.next_token(kind, acted.position)


def _state(value: int, allowed: set[int], why: str) -> str:
    if value not in allowed:
        problem = validate.enum_problem(value, allowed, types_pb2.JobState)
        raise InvalidArgument("state", f"{problem}{why}" if value else problem)
    return convert.state_name(value)


class SearchHandlers:
    """Bulk actions on the jobs a filter selects (part of `QueueService`)."""

    search: JobSearch

    @unary
    async def CancelJobs(
        self, request: pb.CancelJobsRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelJobsResponse:
        queue = validate.queue_name(request.queue_name)
        state = _state(request.state, _CANCELLABLE, " (finished jobs cannot be cancelled)")
        flt = filter_convert.job_filter(request.filter) or JobFilter()
        limit = filter_convert.action_limit(request.limit)
        position = paging.position(request.page_token, "c", "CancelJobs")
        reason = validate.text(request.reason, "reason", MAX_REASON, required=False)
        acted = await self.search.cancel_matching(queue, state, flt, position, limit, reason)
        return pb.CancelJobsResponse(
            count=acted.count, requested_count=acted.requested, next_page_token=bulk_token("c", acted)
        )

    @unary
    async def RemoveJobs(
        self, request: pb.RemoveJobsRequest, context: grpc.aio.ServicerContext
    ) -> pb.RemoveJobsResponse:
        queue = validate.queue_name(request.queue_name)
        why = " (an active job is cancelled with CancelJobs, then removed once cancelled)"
        state = _state(request.state, _REMOVABLE, why)
        flt = filter_convert.job_filter(request.filter) or JobFilter()
        limit = filter_convert.action_limit(request.limit)
        position = paging.position(request.page_token, "x", "RemoveJobs")
        acted = await self.search.remove_matching(queue, state, flt, position, limit)
        return pb.RemoveJobsResponse(count=acted.count, next_page_token=bulk_token("x", acted))
