"""QueueService handlers for job control and visibility: logs, waiting for a job, retry, promote, priority,
data, reschedule.

``WaitForJob`` follows one job without polling: it registers a follower (services/waiters.py), flags the
job in Redis so scripts publish its state changes (``watch_job.lua``), then reads it. Every change after
that read publishes a ``j`` event that wakes the follower, which re-reads the job and sends it when its
state differs from the last one sent. A re-check every RECHECK_S covers an event lost in transit.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc

from queue_manager.v1 import jobs_pb2 as pb
from queue_manager.v1 import types_pb2
from queue_manager_server import convert, filter_convert, paging, validate
from queue_manager_server.engine import Engine
from queue_manager_server.engine.job_control import JobControl
from queue_manager_server.engine.search import JobFilter, JobSearch
from queue_manager_server.errors import InvalidArgument, JobNotFound
from queue_manager_server.services.errors import streaming, unary
from queue_manager_server.services.search import bulk_cursor, bulk_token
from queue_manager_server.services.waiters import Follower, JobWaiters

# A follower re-reads its job at least this often, in case a pub/sub event was lost.
RECHECK_S = 5.0
FINISHED = frozenset({"completed", "failed", "cancelled"})
_FINISHED_VALUES = {
    "completed": types_pb2.JOB_STATE_COMPLETED,
    "failed": types_pb2.JOB_STATE_FAILED,
    "cancelled": types_pb2.JOB_STATE_CANCELLED,
}
_RETRYABLE = {
    types_pb2.JOB_STATE_UNSPECIFIED: "failed",
    types_pb2.JOB_STATE_FAILED: "failed",
    types_pb2.JOB_STATE_CANCELLED: "cancelled",
}


async def job_message(control: JobControl, queue: str, job_id: str) -> types_pb2.Job:
    """The job with the tail of its log, as GetJob and WaitForJob show it."""
    return convert.job_view_out(await control.job_view(queue, job_id))


class JobControlHandlers:
    """Logs, waiting, retry, promotion, priority and data of jobs (part of `QueueService`)."""

    engine: Engine
    control: JobControl
    search: JobSearch
    waiters: JobWaiters
    max_payload: int

    @unary
    async def GetJobLogs(
        self, request: pb.GetJobLogsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetJobLogsResponse:
        queue = validate.queue_name(request.queue_name)
        job_id = validate.job_id(request.job_id)
        size, first = paging.page_request(request.page_size, request.page_token, "l", "GetJobLogs")
        page = await self.control.job_logs(queue, job_id, first, size)
        response = pb.GetJobLogsResponse(lines=convert.log_lines_out(page.lines), total_size=page.kept)
        after = page.first + len(page.lines)
        if after < page.end:
            response.next_page_token = paging.next_token("l", after)
        return response

    @streaming
    async def WaitForJob(
        self, request: pb.WaitForJobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WaitForJobResponse]:
        queue = validate.queue_name(request.queue_name)
        job_id = validate.job_id(request.job_id)
        loop = asyncio.get_running_loop()
        deadline = None
        if request.HasField("timeout"):
            deadline = loop.time() + validate.duration_ms(request.timeout, "timeout") / 1000
        with self.waiters.follow(queue, job_id) as follower:
            # Flag first, read second: every change after the read publishes an event.
            await self.control.watch_job(queue, job_id)
            last: types_pb2.Job | None = None
            while True:
                follower.changed.clear()
                job = await self._current(queue, job_id, follower, last)
                if last is None or job.state != last.state:
                    yield pb.WaitForJobResponse(job=job)
                    last = job
                if job.state in _FINISHED_VALUES.values():
                    return
                wait = RECHECK_S if deadline is None else min(RECHECK_S, deadline - loop.time())
                if wait <= 0:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(follower.changed.wait(), wait)

    async def _current(
        self, queue: str, job_id: str, follower: Follower, last: types_pb2.Job | None
    ) -> types_pb2.Job:
        """The job now. A job removed as it finished (retention "remove") is shown in the state it finished
        in, from the last message and the event; a job removed unfinished is NOT_FOUND.

        The read can see the job gone before the event naming its last state arrives (pub/sub lags the
        script that published it): then it waits, up to RECHECK_S, for an event that says "finished" or
        "removed" rather than deciding from an older one."""
        try:
            return await job_message(self.control, queue, job_id)
        except JobNotFound:
            if last is None:
                raise
        if follower.event_state not in FINISHED and follower.event_state != "removed":
            follower.changed.clear()  # the event naming its last state may still be on its way
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(follower.changed.wait(), RECHECK_S)
        finished = _FINISHED_VALUES.get(follower.event_state)
        if finished is None:
            raise JobNotFound(queue, job_id)
        gone = types_pb2.Job()
        gone.CopyFrom(last)
        gone.state = finished
        gone.ClearField("worker_id")
        return gone

    @unary
    async def RetryJob(
        self, request: pb.RetryJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.RetryJobResponse:
        queue, job_id = validate.queue_name(request.queue_name), validate.job_id(request.job_id)
        data: bytes | None = None
        ct = ""
        if request.HasField("data"):
            data, ct = convert.payload_given(request.data, "data", self.max_payload)
        await self.control.retry_job(queue, job_id, data, ct)
        return pb.RetryJobResponse(job=await job_message(self.control, queue, job_id))

    @unary
    async def RetryFailedJobs(
        self, request: pb.RetryFailedJobsRequest, context: grpc.aio.ServicerContext
    ) -> pb.RetryFailedJobsResponse:
        queue = validate.queue_name(request.queue_name)
        state = _RETRYABLE.get(request.state)
        if state is None:
            raise InvalidArgument(
                "state",
                validate.enum_problem(request.state, _RETRYABLE, types_pb2.JobState, "failed jobs"),
            )
        flt = filter_convert.job_filter(request.filter)
        if flt is None and not request.limit and not request.page_token:  # the whole state, as ever
            return pb.RetryFailedJobsResponse(count=await self.control.retry_jobs(queue, state))
        limit = filter_convert.action_limit(request.limit)
        kind, after = bulk_cursor(request.page_token, "r", state, "RetryFailedJobs")
        acted = await self.search.retry_matching(queue, state, flt or JobFilter(), after, limit)
        return pb.RetryFailedJobsResponse(count=acted.count, next_page_token=bulk_token(kind, acted))

    @unary
    async def PromoteJob(
        self, request: pb.PromoteJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.PromoteJobResponse:
        queue, job_id = validate.queue_name(request.queue_name), validate.job_id(request.job_id)
        await self.control.promote_job(queue, job_id)
        return pb.PromoteJobResponse(job=await job_message(self.control, queue, job_id))

    @unary
    async def ChangeJobPriority(
        self, request: pb.ChangeJobPriorityRequest, context: grpc.aio.ServicerContext
    ) -> pb.ChangeJobPriorityResponse:
        queue, job_id = validate.queue_name(request.queue_name), validate.job_id(request.job_id)
        priority = validate.enum_value(request.priority, range(1, 6), "priority", types_pb2.JobPriority)
        await self.control.change_priority(queue, job_id, priority)
        return pb.ChangeJobPriorityResponse(job=await job_message(self.control, queue, job_id))

    @unary
    async def RescheduleJob(
        self, request: pb.RescheduleJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.RescheduleJobResponse:
        queue, job_id = validate.queue_name(request.queue_name), validate.job_id(request.job_id)
        when = request.WhichOneof("when")
        if when == "run_time":
            run_at, delay = validate.run_time_ms(request.run_time, "run_time"), 0
        elif when == "delay":
            run_at, delay = -1, validate.duration_ms(request.delay, "delay")
        else:
            raise InvalidArgument("run_time", "or delay is required: when the job is to run")
        await self.control.reschedule_job(queue, job_id, run_at, delay)
        return pb.RescheduleJobResponse(job=await job_message(self.control, queue, job_id))

    @unary
    async def UpdateJobData(
        self, request: pb.UpdateJobDataRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateJobDataResponse:
        queue, job_id = validate.queue_name(request.queue_name), validate.job_id(request.job_id)
        if request.data.WhichOneof("body") is None:
            raise InvalidArgument("data", "is required: a JSON value or raw bytes (JSON null clears it)")
        body, ct = convert.payload_in(request.data, "data", self.max_payload)
        token = validate.text(request.lease_token, "lease_token", required=False)
        await self.control.update_job_data(queue, job_id, body, ct, token)
        return pb.UpdateJobDataResponse(job=await job_message(self.control, queue, job_id))
