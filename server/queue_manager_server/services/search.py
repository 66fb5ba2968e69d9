"""QueueService handlers for the bulk actions by filter: CancelJobs and RemoveJobs (RetryFailedJobs, which
takes the same filter, lives with job control). engine/search.py says how a call is bounded and paged."""

from __future__ import annotations

import grpc

from queue_manager.v1 import jobs_pb2 as pb
from queue_manager.v1 import types_pb2
from queue_manager_server import convert, filter_convert, paging, validate
from queue_manager_server.engine.search import Acted, Cursor, JobFilter, JobSearch
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


def bulk_cursor(token: str, letter: str, state: str, rpc: str) -> tuple[str, Cursor | None]:
    """The kind of cursor a bulk call on `state` answers (its letter, then the state's kind: paging.py) and
    the cursor its page_token names (none: from the first job); a position token of the call's older kind
    (its letter alone) is refused as out of date."""
    kind, member = paging.job_cursor(state)
    again = "run the action again from its first call"
    return letter + kind, paging.cursor(token, letter + kind, rpc, member, stale=letter, again=again)


def bulk_token(kind: str, acted: Acted) -> str:
    """The next_page_token of a bounded bulk call: empty once the state's end was read."""
    return "" if acted.cursor is None else paging.next_cursor(kind, *acted.cursor)


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
        kind, after = bulk_cursor(request.page_token, "c", state, "CancelJobs")
        reason = validate.text(request.reason, "reason", MAX_REASON, required=False)
        acted = await self.search.cancel_matching(queue, state, flt, after, limit, reason)
        return pb.CancelJobsResponse(
            count=acted.count, requested_count=acted.requested, next_page_token=bulk_token(kind, acted)
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
        kind, after = bulk_cursor(request.page_token, "x", state, "RemoveJobs")
        acted = await self.search.remove_matching(queue, state, flt, after, limit)
        return pb.RemoveJobsResponse(count=acted.count, next_page_token=bulk_token(kind, acted))
