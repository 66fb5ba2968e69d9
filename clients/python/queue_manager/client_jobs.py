"""`JobCalls`: the part of `QueueManager` that reads and acts on jobs already there: get, list, remove,
cancel, logs, waits, retries (one job, by filter, the dead-letter queue's), promote, reschedule, priority
and data."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from datetime import datetime, timedelta
from typing import Any

import grpc
import grpc.aio

from queue_manager.client_base import ClientBase
from queue_manager.convert import Job, JobLogLine, job_from_proto, log_lines_from_proto
from queue_manager.dead_letters import (
    DEAD_LETTER_QUEUE,
    KEEP_DATA,
    DeadLetter,
    RedriveResult,
    dead_letter_from_job,
    redrive_request,
    redrive_result_from_proto,
    retry_job_request,
)
from queue_manager.enums import STATE_BY_NUMBER, JobPriority, JobState
from queue_manager.errors import error_from_rpc
from queue_manager.job_control import (
    change_priority_request,
    finished_job,
    get_job_logs_request,
    job_key,
    reschedule_job_request,
    retry_failed_request,
    update_job_data_request,
    wait_for_job_request,
)
from queue_manager.options import DurationLike
from queue_manager.requests import cancel_job_request, list_jobs_request
from queue_manager.search import (
    BulkResult,
    JobCount,
    cancel_jobs_request,
    count_jobs_request,
    job_filter,
    max_calls_checked,
    remove_jobs_request,
    retry_jobs_request,
)
from queue_manager.v1 import jobs_pb2, queue_service_pb2, types_pb2

__all__ = ["JobCalls"]


class JobCalls(ClientBase):
    """Reading and changing jobs already there (QueueManager's)."""

    # ----------------------------------------------------------------- jobs

    async def get_job(self, queue_name: str, job_id: str) -> Job:
        """Returns one job; raises `NotFoundError` when it does not exist."""
        queue_name, job_id = job_key(queue_name, job_id)
        request = jobs_pb2.GetJobRequest(queue_name=queue_name, job_id=job_id)
        response: jobs_pb2.GetJobResponse = await self._unary(self._queue_stub().GetJob, request)
        return job_from_proto(response.job)

    async def list_jobs(
        self,
        queue_name: str,
        state: JobState | str,
        page_size: int = 100,
        page_token: str = "",
        *,
        name: str | None = None,
        group: str | None = None,
        tag: str | None = None,
        correlation_id: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
    ) -> tuple[list[Job], str]:
        """Lists one page of a queue's jobs in one state, those that match the filters given.

        With a filter the server reads at most a few thousand jobs of the state per call (it keeps no
        index), so a page may hold fewer jobs than page_size, or none, with a token: keep following the
        token until it is "".

        Args:
            queue_name: The queue.
            state: The state to list.
            page_size: Jobs per page, 1 to 1000.
            page_token: The token of the previous page ("" for the first).
            name: Only jobs of this name, or of names starting so when it ends with "*" ("send-*").
            group: Only jobs of this fairness group.
            tag: Only jobs whose metadata holds this tag.
            correlation_id: Only jobs with this correlation id.
            created_after: Only jobs created at or after this time.
            created_before: Only jobs created before this time.

        Returns:
            The jobs and the token of the next page ("" on the last page).
        """
        request = list_jobs_request(queue_name, state, page_size, page_token)
        request.filter.CopyFrom(job_filter(name, group, tag, correlation_id, created_after, created_before))
        response: jobs_pb2.ListJobsResponse = await self._unary(self._queue_stub().ListJobs, request)
        return [job_from_proto(job) for job in response.jobs], response.next_page_token

    async def count_jobs(
        self,
        queue_name: str,
        state: JobState | str,
        *,
        name: str | None = None,
        group: str | None = None,
        tag: str | None = None,
        correlation_id: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        page_token: str = "",
        max_calls: int | None = None,
    ) -> JobCount:
        """Counts the jobs of one state that match the filters given, on the server: no job is sent back.

        With a filter each ListJobs call reads at most a few thousand jobs of the state, so counting follows
        the tokens, one call after the other, to the end of the state or for at most ``max_calls`` calls.

        Args:
            queue_name: The queue.
            state: The state to count.
            name: Only jobs of this name, or of names starting so when it ends with "*" ("send-*").
            group: Only jobs of this fairness group.
            tag: Only jobs whose metadata holds this tag.
            correlation_id: Only jobs with this correlation id.
            created_after: Only jobs created at or after this time.
            created_before: Only jobs created before this time.
            page_token: Where to start: "" for the state's start, or a previous count's (or listing's) token.
            max_calls: Most calls (None: until the state's end).

        Returns:
            The count, and the token to go on from when ``max_calls`` stopped it before the end.
        """
        flt = job_filter(name, group, tag, correlation_id, created_after, created_before)
        most = max_calls_checked(max_calls)
        count, calls, token = 0, 0, page_token
        while most is None or calls < most:
            request = count_jobs_request(queue_name, state, flt, token)
            response: jobs_pb2.ListJobsResponse = await self._unary(self._queue_stub().ListJobs, request)
            count, calls, token = count + response.match_count, calls + 1, response.next_page_token
            if not token:
                break
        return JobCount(count, token, calls)

    async def remove_job(self, queue_name: str, job_id: str) -> JobState | None:
        """Removes a job that is not active; returns the state it was in."""
        queue_name, job_id = job_key(queue_name, job_id)
        request = jobs_pb2.RemoveJobRequest(queue_name=queue_name, job_id=job_id)
        response: jobs_pb2.RemoveJobResponse = await self._unary(self._queue_stub().RemoveJob, request)
        return STATE_BY_NUMBER.get(response.previous_state)

    # ----------------------------------------------------------------- cancel

    async def cancel_job(self, queue_name: str, job_id: str, reason: str = "") -> Job:
        """Cancels a job.

        A waiting, paused or delayed job ends cancelled at once. An active job is marked
        ``cancel_requested`` and its worker is told to stop it (an async processor's task is cancelled; a
        plain-``def`` processor sees ``job.cancelled``); the job ends cancelled when the run stops, or when
        its lease runs out if the worker never answers. A completion that arrives first still wins.

        Args:
            queue_name: The queue.
            job_id: The job.
            reason: Why, kept with the job (at most 1,000 characters).

        Returns:
            The job: cancelled, or still active with ``cancel_requested`` while its worker stops it.

        Raises:
            NotFoundError: No such queue or job.
            FailedPreconditionError: The job finished already (completed, failed or cancelled).
        """
        request = cancel_job_request(queue_name, job_id, reason)
        response: jobs_pb2.CancelJobResponse = await self._unary(self._queue_stub().CancelJob, request)
        return job_from_proto(response.job)

    # ----------------------------------------------------------------- job control

    async def get_job_logs(
        self, queue_name: str, job_id: str, page_size: int = 100, page_token: str = ""
    ) -> tuple[list[JobLogLine], str]:
        """Returns one page of a job's log lines, oldest first (`JobContext.log` adds them).

        Args:
            queue_name: The job's queue.
            job_id: The job.
            page_size: Lines per page, 1 to 1000; 0 means 100.
            page_token: The token a previous page returned; "" for the first page.

        Returns:
            The lines and the token of the next page ("" on the last page). A job keeps its last 1,000
            lines; a token stays valid while older lines are dropped.
        """
        request = get_job_logs_request(queue_name, job_id, page_size, page_token)
        response: jobs_pb2.GetJobLogsResponse = await self._unary(self._queue_stub().GetJobLogs, request)
        return log_lines_from_proto(response.lines), response.next_page_token

    async def watch_job(
        self, queue_name: str, job_id: str, timeout: float | timedelta | None = None
    ) -> AsyncIterator[Job]:
        """Yields the job at once, then again after every change of its state, until it is finished
        (completed, failed for good or cancelled) or ``timeout`` passes. The server pushes each change: no
        polling.

        Args:
            queue_name: The job's queue.
            job_id: The job.
            timeout: Seconds (or a timedelta) to follow it; None until it is finished.
        """
        async for message in self._wait_stream(queue_name, job_id, timeout):
            yield job_from_proto(message)

    async def wait_for_job(
        self, queue_name: str, job_id: str, timeout: float | timedelta | None = None
    ) -> Job:
        """Waits until the job is finished (completed, failed for good or cancelled) and returns it.

        Args:
            queue_name: The job's queue.
            job_id: The job.
            timeout: Seconds (or a timedelta) to wait at most; None waits as long as it takes.

        Returns:
            The finished job: its state, and its result or failure reason.

        Raises:
            TimeoutError: The job is still unfinished after ``timeout``.
            NotFoundError: The job does not exist (or was removed while unfinished).
        """
        last: types_pb2.Job | None = None
        async for message in self._wait_stream(queue_name, job_id, timeout):
            last = message
        return finished_job(queue_name, job_id, last, timeout)

    async def _wait_stream(
        self, queue_name: str, job_id: str, timeout: float | timedelta | None
    ) -> AsyncIterator[types_pb2.Job]:
        request, deadline = wait_for_job_request(queue_name, job_id, timeout)
        call = self._queue_stub().WaitForJob(request, timeout=deadline)
        try:
            async for response in call:
                if self._codecs is not None:
                    self._codecs.decode_message(response.job)
                yield response.job
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        finally:
            call.cancel()

    async def retry_job(self, queue_name: str, job_id: str, data: Any = KEEP_DATA) -> Job:
        """Runs a failed or cancelled job again, with its attempts counted afresh.

        Args:
            data: New data for the job (edit and requeue): bytes (sent as application/octet-stream) or a
                JSON-serialisable value, None for JSON null; `KEEP_DATA` (the default) keeps its data, as in
                `redrive_dead_letters`. The data changes in the same atomic step as the retry, so a job that
                cannot be retried keeps its data; the same payload limit as an add's.

        Returns:
            The job, waiting again. Raises `FailedPreconditionError` for a job in any other state,
            `InvalidArgumentError` for data over the server's payload limit.
        """
        request = retry_job_request(queue_name, job_id, data)
        response: jobs_pb2.RetryJobResponse = await self._unary(self._queue_stub().RetryJob, request)
        return job_from_proto(response.job)

    async def retry_failed(self, queue_name: str, state: JobState | str = JobState.FAILED) -> int:
        """Runs every failed job of a queue again (or every cancelled one, with ``state="cancelled"``).

        Returns:
            How many jobs went back to waiting.
        """
        request = retry_failed_request(queue_name, state)
        response: jobs_pb2.RetryFailedJobsResponse = await self._unary(
            self._queue_stub().RetryFailedJobs, request
        )
        return response.count

    async def redrive_dead_letters(
        self,
        queue_name: str = DEAD_LETTER_QUEUE,
        *,
        original_queue: str | None = None,
        limit: int | None = None,
        job_ids: Iterable[str] | None = None,
        replace_data: bool = False,
        data: Any = KEEP_DATA,
    ) -> RedriveResult:
        """Sends dead-letter copies back to their original queues, each copy leaving the dead-letter queue in
        the same step: a failed original runs again (attempts counted afresh), one that retention removed is
        added anew with its id, name, data and content type, one run again meanwhile is left as it is.

        Args:
            queue_name: The dead-letter queue.
            original_queue: Only copies of this queue's jobs (None: every queue's).
            limit: At most this many copies (None: every one). Not with `job_ids`.
            job_ids: Only these copies (``<original queue>:<job id>``), at most 1,000; None: the waiting
                copies in the queue's order.
            replace_data: A failed original runs with the copy's ``original_data`` (as edited with
                `update_job_data` on the copy) rather than the data it failed with.
            data: With exactly one of `job_ids`: the original runs with this data instead (a failed one run
                again, a gone one added anew), set in the same call that takes the copy, so a copy skipped or
                a call refused changes nothing. Bytes go as octet-stream, anything else as JSON (None as JSON
                null); left out, the original keeps its data (see `replace_data`).

        Returns:
            What was sent back, per original queue; named copies that stay, and why.

        Raises:
            NotFoundError: The dead-letter queue or `original_queue` is not registered.
            InvalidArgumentError: The queue is no queue's dead-letter queue, the filters are bad, or `data` is
                over the server's payload limit.
            ValueError: `data` with other than one of `job_ids`, or data that is not JSON.
        """
        request = redrive_request(queue_name, original_queue, limit, job_ids, replace_data, data)
        stub = self._queue_stub()
        response: queue_service_pb2.RedriveDeadLettersResponse = await self._unary(
            stub.RedriveDeadLetters, request
        )
        return redrive_result_from_proto(response)

    async def list_dead_letters(
        self,
        queue_name: str = DEAD_LETTER_QUEUE,
        state: JobState | str = JobState.WAITING,
        page_size: int = 100,
        page_token: str = "",
    ) -> tuple[list[DeadLetter], str]:
        """One page of a dead-letter queue's copies in one state, each read as its original's queue, id, name,
        data and why it failed; jobs of the queue that are not copies are left out.

        Returns:
            The copies and the token of the next page ("" on the last page).
        """
        jobs, token = await self.list_jobs(queue_name, state, page_size, page_token)
        letters = (dead_letter_from_job(job, self._codecs) for job in jobs)
        return [d for d in letters if d is not None], token

    async def retry_jobs(
        self,
        queue_name: str,
        state: JobState | str = JobState.FAILED,
        *,
        name: str | None = None,
        group: str | None = None,
        tag: str | None = None,
        correlation_id: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int = 0,
        page_token: str = "",
    ) -> BulkResult:
        """Runs the failed (or cancelled) jobs that match again: one bounded call (`retry_failed` runs every
        one). Each call reads at most a few thousand jobs of the state and retries at most `limit`; call
        again with the result's next_page_token until it is "".

        Args:
            queue_name: The queue.
            state: "failed" or "cancelled".
            name: Only jobs of this name, or of names starting so when it ends with "*" ("send-*").
            group: Only jobs of this fairness group.
            tag: Only jobs whose metadata holds this tag.
            correlation_id: Only jobs with this correlation id.
            created_after: Only jobs created at or after this time.
            created_before: Only jobs created before this time.
            limit: Most jobs retried by this call, 1 to 1000 (0: 1000).
            page_token: The previous call's next_page_token ("" to start).
        """
        flt = job_filter(name, group, tag, correlation_id, created_after, created_before)
        request = retry_jobs_request(queue_name, state, flt, limit, page_token)
        response: jobs_pb2.RetryFailedJobsResponse = await self._unary(
            self._queue_stub().RetryFailedJobs, request
        )
        return BulkResult(response.count, response.next_page_token)

    async def cancel_jobs(
        self,
        queue_name: str,
        state: JobState | str,
        *,
        name: str | None = None,
        group: str | None = None,
        tag: str | None = None,
        correlation_id: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int = 0,
        page_token: str = "",
        reason: str = "",
    ) -> BulkResult:
        """Cancels the jobs of one state that match (waiting, paused or delayed ones at once; active ones are
        asked to stop, as `cancel_job` does): one bounded call; call again with the result's next_page_token
        until it is "".

        Args:
            queue_name: The queue.
            state: "waiting", "paused", "delayed" or "active".
            name: Only jobs of this name, or of names starting so when it ends with "*" ("send-*").
            group: Only jobs of this fairness group.
            tag: Only jobs whose metadata holds this tag.
            correlation_id: Only jobs with this correlation id.
            created_after: Only jobs created at or after this time.
            created_before: Only jobs created before this time.
            limit: Most jobs cancelled by this call, 1 to 1000 (0: 1000).
            page_token: The previous call's next_page_token ("" to start).
            reason: Why, kept with each job.
        """
        flt = job_filter(name, group, tag, correlation_id, created_after, created_before)
        request = cancel_jobs_request(queue_name, state, flt, limit, page_token, reason)
        response: jobs_pb2.CancelJobsResponse = await self._unary(self._queue_stub().CancelJobs, request)
        return BulkResult(response.count, response.next_page_token, response.requested_count)

    async def remove_jobs(
        self,
        queue_name: str,
        state: JobState | str,
        *,
        name: str | None = None,
        group: str | None = None,
        tag: str | None = None,
        correlation_id: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int = 0,
        page_token: str = "",
    ) -> BulkResult:
        """Removes the jobs of one state (not active) that match: one bounded call; call again with the
        result's next_page_token until it is "".

        Args:
            queue_name: The queue.
            state: Any state but "active".
            name: Only jobs of this name, or of names starting so when it ends with "*" ("send-*").
            group: Only jobs of this fairness group.
            tag: Only jobs whose metadata holds this tag.
            correlation_id: Only jobs with this correlation id.
            created_after: Only jobs created at or after this time.
            created_before: Only jobs created before this time.
            limit: Most jobs removed by this call, 1 to 1000 (0: 1000).
            page_token: The previous call's next_page_token ("" to start).
        """
        flt = job_filter(name, group, tag, correlation_id, created_after, created_before)
        request = remove_jobs_request(queue_name, state, flt, limit, page_token)
        response: jobs_pb2.RemoveJobsResponse = await self._unary(self._queue_stub().RemoveJobs, request)
        return BulkResult(response.count, response.next_page_token)

    async def promote_job(self, queue_name: str, job_id: str) -> Job:
        """Makes a delayed job waiting now; `FailedPreconditionError` if it is not delayed."""
        queue_name, job_id = job_key(queue_name, job_id)
        request = jobs_pb2.PromoteJobRequest(queue_name=queue_name, job_id=job_id)
        response: jobs_pb2.PromoteJobResponse = await self._unary(self._queue_stub().PromoteJob, request)
        return job_from_proto(response.job)

    async def reschedule_job(
        self,
        queue_name: str,
        job_id: str,
        *,
        delay: DurationLike | None = None,
        run_at: datetime | None = None,
    ) -> Job:
        """Changes when a delayed job runs; a waiting (or paused) job becomes delayed until then.

        Give exactly one of `delay` and `run_at`. A time that has come (``delay=0``, a past ``run_at``) makes
        a delayed job waiting now, as `promote_job` does, and leaves a waiting one as it is. The server's
        Redis clock decides when the job is due. A job of a fairness group stays in its group; its priority
        and options are unchanged.

        Args:
            queue_name: The job's queue.
            job_id: The job.
            delay: How long from now: milliseconds or a timedelta, not negative.
            run_at: When (a naive datetime is local time).

        Returns:
            The job after the change: delayed with its new ``run_at``, or waiting.

        Raises:
            FailedPreconditionError: The job is active or finished (the message names its state).
            NotFoundError: No such job or queue.
            ValueError: Both or neither of `delay` and `run_at`, or a negative delay (nothing is sent).
        """
        request = reschedule_job_request(queue_name, job_id, delay, run_at)
        stub = self._queue_stub()
        response: jobs_pb2.RescheduleJobResponse = await self._unary(stub.RescheduleJob, request)
        return job_from_proto(response.job)

    async def change_priority(self, queue_name: str, job_id: str, priority: JobPriority | int | str) -> Job:
        """Changes the priority of a waiting or delayed job.

        A waiting job moves to the new level keeping its age (it runs before the jobs of that level added
        after it); a delayed job takes the new level when it becomes due. Other states raise
        `FailedPreconditionError`.
        """
        request = change_priority_request(queue_name, job_id, priority)
        response: jobs_pb2.ChangeJobPriorityResponse = await self._unary(
            self._queue_stub().ChangeJobPriority, request
        )
        return job_from_proto(response.job)

    async def update_job_data(self, queue_name: str, job_id: str, data: Any) -> Job:
        """Replaces the data of a job that has not finished (waiting, paused, delayed or active).

        A run under way keeps the data it was given; the job's next attempt gets the new data. A processor
        changes its own job's data with `JobContext.update_data` instead (fenced by its lease).

        Args:
            data: The new data: bytes (sent as application/octet-stream) or a JSON-serialisable value (None
                is JSON null).

        Returns:
            The job after the change.

        Raises:
            FailedPreconditionError: The job has finished (completed, failed or cancelled).
            NotFoundError: No such job or queue.
            InvalidArgumentError: The data is over the server's payload limit.
            TypeError, ValueError: The data is neither bytes nor JSON (checked before anything is sent).
        """
        request = update_job_data_request(queue_name, job_id, data)
        stub = self._queue_stub()
        response: jobs_pb2.UpdateJobDataResponse = await self._unary(stub.UpdateJobData, request)
        return job_from_proto(response.job)
