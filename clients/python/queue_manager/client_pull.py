"""`PullCalls`: the part of `QueueManager` for pull workers (no stream): `fetch_jobs` leases ready jobs
with one unary call, and each `PulledJob` completes, fails or extends itself with one more."""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any

import grpc

from queue_manager.client_base import ClientBase
from queue_manager.errors import error_from_rpc
from queue_manager.pull import PulledJob, fetch_request, leases, taken_up
from queue_manager.v1 import pull_pb2

__all__ = ["PullCalls"]


class PullCalls(ClientBase):
    """Pull workers (QueueManager's): BullMQ's getNextJob + moveToCompleted, Faktory's FETCH + ACK/FAIL."""

    async def fetch_jobs(
        self,
        queue_name: str,
        max_jobs: int = 1,
        *,
        wait: float | timedelta = 0,
        lease_duration: float | timedelta | None = None,
        worker_name: str | None = None,
    ) -> list[PulledJob]:
        """Leases up to `max_jobs` ready jobs of a queue, as a stream worker's claim does (pause, priorities,
        rate limits, group limits and caps apply; jobs routed by worker labels are never fetched).

        Args:
            queue_name: The queue.
            max_jobs: Most jobs to lease, 1 to 1,000.
            wait: Seconds (or a timedelta), at most 30: how long to wait for a first job when none is ready
                (a long poll, woken by the server's events); 0 answers at once.
            lease_duration: Seconds (or a timedelta), 1 s to 1 h: how long each lease runs unless extended;
                None takes the server's lease duration.
            worker_name: Lists the caller in `list_workers` (language "pull") for a lease after the fetch.

        Returns:
            The jobs leased (maybe none), each to `complete`, `fail` or `extend_lease`. A job not finished
            before its lease runs out goes back to waiting (stalled count +1) and its late outcome is refused
            with `FailedPreconditionError`.

        Raises:
            TypeError, ValueError: An argument of the wrong type or out of range.
            NotFoundError: The queue is not registered.
        """
        request, wait_s = fetch_request(queue_name, max_jobs, wait, lease_duration, worker_name)
        timeout = None if self.timeout is None else self.timeout + wait_s
        try:
            response: pull_pb2.FetchJobsResponse = await self._queue_stub().FetchJobs(
                request, timeout=timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        tracer = self._tracing()
        return [
            PulledJob(
                job,
                leased.lease_token,
                leased.lease_expire_time.ToDatetime(tzinfo=UTC),
                leased.redelivery,
                _tracer=tracer,
                _call=self._pull_call,
            )
            for job, leased in leases(response)
        ]

    def pulled_job(self, queue_name: str, job_id: str, lease_token: str) -> PulledJob:
        """A fetched job taken up by its lease, maybe in another process than the fetch's (a shell script's
        ``qm pull fetch``), to `complete`, `fail`, `extend_lease` or `report_progress` it. Makes no call.

        Its `job` holds only its id and queue (`get_job` reads the rest), its `lease_expires` is None until
        `extend_lease`, and its outcome carries no duration: the server measures the run from its fetch.

        Args:
            queue_name: The job's queue.
            job_id: The job's id.
            lease_token: The lease token its fetch gave.

        Raises:
            TypeError, ValueError: An argument of the wrong type or empty.
        """
        job = taken_up(queue_name, job_id, lease_token)
        return PulledJob(job, lease_token, None, False, None, _tracer=self._tracing(), _call=self._pull_call)

    async def _pull_call(self, rpc: str, request: Any) -> Any:
        return await self._unary(getattr(self._queue_stub(), rpc), request)
