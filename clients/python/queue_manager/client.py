"""`QueueManager`: the asyncio producer, admin and worker entry point."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

import grpc
import grpc.aio

from queue_manager.channel import aio_channel, resolve_address
from queue_manager.convert import (
    Job,
    Queue,
    QueueMetrics,
    job_from_proto,
    metrics_from_proto,
    queue_from_proto,
)
from queue_manager.enums import STATE_BY_NUMBER, JobState
from queue_manager.errors import error_from_rpc
from queue_manager.options import JobOptionsLike, RateLimit, validate_queue_name
from queue_manager.requests import (
    BulkJobLike,
    RetentionLike,
    add_job_request,
    bulk_requests,
    clean_queue_request,
    list_jobs_request,
    register_queue_request,
    split_streams,
)
from queue_manager.v1 import jobs_pb2, queue_service_pb2, queue_service_pb2_grpc
from queue_manager.worker import Processor, Worker

if TYPE_CHECKING:
    from queue_manager.v1.queue_service_pb2_grpc import QueueServiceAsyncStub

__all__ = ["QueueManager"]

_P = TypeVar("_P", bound=Callable[..., Any])


class QueueManager:
    """Client of a Queue Manager server: add and read jobs, administer queues, run processors.

    The channel is opened on first use, so a `QueueManager` may be created at import time (for example to
    register processors with the `processor` decorator) and used later inside an event loop.

    Args:
        address: Server ``host:port``; default ``QM_SERVER`` or ``localhost:50051``.
        concurrency: Jobs run at once by `start_workers`; default ``WORKER_CONCURRENCY`` or 10.
        credentials: TLS channel credentials; None for plaintext.
        channel_options: Extra gRPC channel options.
        timeout: Deadline in seconds for each unary call; None for no deadline.
        worker_labels: Labels sent in each worker's hello.
        shutdown_grace: Seconds `shutdown` waits for running jobs.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        concurrency: int | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        channel_options: list[tuple[str, Any]] | None = None,
        timeout: float | None = None,
        worker_labels: Mapping[str, str] | None = None,
        shutdown_grace: float = 30.0,
    ) -> None:
        self.address = resolve_address(address)
        self.concurrency = concurrency
        self.timeout = timeout
        self.shutdown_grace = shutdown_grace
        self._credentials = credentials
        self._channel_options = channel_options
        self._worker_labels = dict(worker_labels or {})
        self._channel: grpc.aio.Channel | None = None
        self._queues: QueueServiceAsyncStub | None = None
        self._processors: dict[str, Processor] = {}
        self._workers: list[Worker] = []

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.shutdown()

    # ----------------------------------------------------------------- processors and workers

    def processor(self, queue_name: str) -> Callable[[_P], _P]:
        """Decorator form of `register_processor`: ``@qm.processor("emails")``."""

        def register(fn: _P) -> _P:
            self.register_processor(queue_name, fn)
            return fn

        return register

    def register_processor(self, queue_name: str, fn: Processor) -> None:
        """Registers the processor of a queue (one per queue); `start_workers` runs it.

        Args:
            queue_name: The queue; it must be registered on the server before the worker starts.
            fn: ``async def fn(job)`` or ``def fn(job)`` (run in a thread). It receives a `JobContext`; its
                return value (JSON-serialisable or bytes) is the job's result; raising fails the attempt and
                raising `UnrecoverableError` fails the job for good.
        """
        validate_queue_name(queue_name)
        if not callable(fn):
            raise TypeError(f"processor for {queue_name!r} must be callable")
        if queue_name in self._processors:
            raise ValueError(f"queue {queue_name!r} already has a processor")
        self._processors[queue_name] = fn

    @property
    def processors(self) -> dict[str, Processor]:
        """The registered processors by queue name (a copy)."""
        return dict(self._processors)

    @property
    def workers(self) -> list[Worker]:
        """The workers started by `start_workers`."""
        return list(self._workers)

    async def start_workers(
        self,
        queues: Iterable[str] | None = None,
        *,
        concurrency: int | None = None,
        handle_signals: bool = False,
    ) -> Worker:
        """Starts one worker (one stream) for the registered processors and returns it.

        Args:
            queues: Only these queues' processors; default all registered ones.
            concurrency: Jobs run at once; default the client's concurrency.
            handle_signals: Shut down gracefully on SIGTERM/SIGINT.

        Returns:
            The running `Worker` (already started; see `Worker.wait_connected`).
        """
        wanted = list(queues) if queues is not None else list(self._processors)
        missing = [q for q in wanted if q not in self._processors]
        if missing:
            raise ValueError(f"no processor registered for queue(s) {', '.join(missing)}")
        if not wanted:
            raise ValueError("no processors registered; use @qm.processor(queue_name) first")
        worker = Worker(
            self.address,
            {q: self._processors[q] for q in wanted},
            concurrency=concurrency if concurrency is not None else self.concurrency,
            labels=self._worker_labels,
            credentials=self._credentials,
            channel_options=self._channel_options,
            shutdown_grace=self.shutdown_grace,
        )
        await worker.start()
        if handle_signals:
            worker.install_signal_handlers()
        self._workers.append(worker)
        return worker

    async def shutdown(self, grace: float | None = None) -> None:
        """Stops the workers gracefully (see `Worker.shutdown`), then closes the channel."""
        workers, self._workers = self._workers, []
        for worker in workers:
            await worker.shutdown(grace)
        if self._channel is not None:
            channel, self._channel = self._channel, None
            self._queues = None
            await channel.close()

    close = shutdown

    # ----------------------------------------------------------------- jobs

    async def add_job(
        self, queue_name: str, name: str, data: Any = None, options: JobOptionsLike | None = None
    ) -> Job:
        """Adds one job.

        Args:
            queue_name: A registered queue.
            name: Job name (the kind of work), 1 to 200 characters.
            data: JSON-serialisable data, or bytes.
            options: Job options as a mapping (``priority``, ``delay``, ``attempts``, ``backoff``,
                ``job_id``…) or a `JobOptions`.

        Returns:
            The job as stored (the existing one when ``job_id`` was taken).
        """
        request = add_job_request(queue_name, name, data, options)
        response: jobs_pb2.AddJobResponse = await self._unary(self._queue_stub().AddJob, request)
        return job_from_proto(response.job)

    async def add_bulk(self, queue_name: str, jobs: Iterable[BulkJobLike]) -> list[str]:
        """Adds many jobs over client streams (about 500 jobs per message, up to 100,000 per stream).

        Args:
            queue_name: A registered queue.
            jobs: Mappings ``{"name": ..., "data": ..., "options": ...}`` or `BulkJob`s.

        Returns:
            The job ids, in the order of ``jobs``.
        """
        # Validate every job before sending any, so a bad job never leaves the others half added.
        requests = list(bulk_requests(queue_name, jobs))
        ids: list[str] = []
        for stream in split_streams(requests):
            call = self._queue_stub().AddBulk(timeout=self.timeout)
            try:
                for request in stream:
                    await call.write(request)
                await call.done_writing()
                response: jobs_pb2.AddBulkResponse = await call
            except grpc.aio.AioRpcError as exc:
                raise error_from_rpc(exc) from None
            except BaseException:
                call.cancel()
                raise
            ids += response.job_ids
        return ids

    async def get_job(self, queue_name: str, job_id: str) -> Job:
        """Returns one job; raises `NotFoundError` when it does not exist."""
        request = jobs_pb2.GetJobRequest(queue_name=queue_name, job_id=job_id)
        response: jobs_pb2.GetJobResponse = await self._unary(self._queue_stub().GetJob, request)
        return job_from_proto(response.job)

    async def list_jobs(
        self, queue_name: str, state: JobState | str, page_size: int = 100, page_token: str = ""
    ) -> tuple[list[Job], str]:
        """Lists one page of a queue's jobs in one state.

        Returns:
            The jobs and the token of the next page ("" on the last page).
        """
        request = list_jobs_request(queue_name, state, page_size, page_token)
        response: jobs_pb2.ListJobsResponse = await self._unary(self._queue_stub().ListJobs, request)
        return [job_from_proto(job) for job in response.jobs], response.next_page_token

    async def remove_job(self, queue_name: str, job_id: str) -> JobState | None:
        """Removes a job that is not active; returns the state it was in."""
        request = jobs_pb2.RemoveJobRequest(queue_name=queue_name, job_id=job_id)
        response: jobs_pb2.RemoveJobResponse = await self._unary(self._queue_stub().RemoveJob, request)
        return STATE_BY_NUMBER.get(response.previous_state)

    # ----------------------------------------------------------------- queues

    async def register_queue(
        self,
        name: str,
        *,
        rate_limit: RateLimit | Mapping[str, Any] | None = None,
        default_job_options: JobOptionsLike | None = None,
        dead_letter_queue: str | None = None,
        completed_retention: RetentionLike | None = None,
        failed_retention: RetentionLike | None = None,
        disable_dead_letter: bool = False,
    ) -> Queue:
        """Registers a queue, or updates an existing one's settings.

        Args:
            name: 1 to 100 letters, digits, "-", "_" or ".".
            rate_limit: ``{"max": n, "duration": ms}`` or a `RateLimit`: at most n job starts per duration.
            default_job_options: Options for jobs added without their own.
            dead_letter_queue: Queue receiving jobs that fail for good; default "dead-letter-queue".
            completed_retention: Which completed jobs to keep (True, a count, ``{"age", "count"}`` or
                `KeepJobs`).
            failed_retention: Which failed jobs to keep (same forms).
            disable_dead_letter: Keep failed jobs only in failed.

        Returns:
            The queue as stored.
        """
        request = register_queue_request(
            name,
            rate_limit=rate_limit,
            default_job_options=default_job_options,
            dead_letter_queue=dead_letter_queue,
            completed_retention=completed_retention,
            failed_retention=failed_retention,
            disable_dead_letter=disable_dead_letter,
        )
        response: queue_service_pb2.RegisterQueueResponse = await self._unary(
            self._queue_stub().RegisterQueue, request
        )
        return queue_from_proto(response.queue)

    async def get_queue(self, name: str) -> Queue:
        """Returns one queue; raises `NotFoundError` when it is not registered."""
        response: queue_service_pb2.GetQueueResponse = await self._unary(
            self._queue_stub().GetQueue, queue_service_pb2.GetQueueRequest(name=name)
        )
        return queue_from_proto(response.queue)

    async def list_queues(self) -> list[Queue]:
        """Returns all registered queues, sorted by name."""
        response: queue_service_pb2.ListQueuesResponse = await self._unary(
            self._queue_stub().ListQueues, queue_service_pb2.ListQueuesRequest()
        )
        return [queue_from_proto(queue) for queue in response.queues]

    async def pause_queue(self, name: str) -> Queue:
        """Pauses a queue: jobs are still added, none start until resumed."""
        response: queue_service_pb2.PauseQueueResponse = await self._unary(
            self._queue_stub().PauseQueue, queue_service_pb2.PauseQueueRequest(name=name)
        )
        return queue_from_proto(response.queue)

    async def resume_queue(self, name: str) -> Queue:
        """Resumes a paused queue."""
        request = queue_service_pb2.ResumeQueueRequest(name=name)
        response: queue_service_pb2.ResumeQueueResponse = await self._unary(
            self._queue_stub().ResumeQueue, request
        )
        return queue_from_proto(response.queue)

    async def clean_queue(
        self, name: str, grace: int | float | timedelta, state: JobState | str, limit: int = 0
    ) -> int:
        """Removes jobs of one state older than a grace period.

        Args:
            name: The queue.
            grace: Only jobs older than this (milliseconds or timedelta) are removed.
            state: "completed", "failed", "waiting", "paused" or "delayed".
            limit: At most this many jobs; 0 for no limit.

        Returns:
            The number of jobs removed.
        """
        request = clean_queue_request(name, grace, state, limit)
        response: queue_service_pb2.CleanQueueResponse = await self._unary(
            self._queue_stub().CleanQueue, request
        )
        return response.removed

    async def drain_queue(self, name: str, include_delayed: bool = False) -> int:
        """Removes all waiting jobs (and delayed ones if asked); returns how many."""
        request = queue_service_pb2.DrainQueueRequest(name=name, include_delayed=include_delayed)
        response: queue_service_pb2.DrainQueueResponse = await self._unary(
            self._queue_stub().DrainQueue, request
        )
        return response.removed

    async def obliterate_queue(self, name: str, force: bool = False) -> int:
        """Deletes a queue and all its jobs (``force`` even with active jobs); returns how many jobs."""
        request = queue_service_pb2.ObliterateQueueRequest(name=name, force=force)
        response: queue_service_pb2.ObliterateQueueResponse = await self._unary(
            self._queue_stub().ObliterateQueue, request
        )
        return response.removed

    async def get_queue_metrics(self, name: str) -> QueueMetrics:
        """Returns the counts of a queue's jobs by state."""
        request = queue_service_pb2.GetQueueMetricsRequest(name=name)
        response: queue_service_pb2.GetQueueMetricsResponse = await self._unary(
            self._queue_stub().GetQueueMetrics, request
        )
        return metrics_from_proto(response.metrics)

    # ----------------------------------------------------------------- plumbing

    def _ensure_channel(self) -> grpc.aio.Channel:
        if self._channel is None:
            self._channel = aio_channel(self.address, self._credentials, self._channel_options)
            self._queues = cast(
                "QueueServiceAsyncStub", queue_service_pb2_grpc.QueueServiceStub(self._channel)
            )
        return self._channel

    def _queue_stub(self) -> QueueServiceAsyncStub:
        self._ensure_channel()
        assert self._queues is not None
        return self._queues

    async def _unary(self, method: Any, request: Any) -> Any:
        # grpc is untyped for mypy here; each caller annotates the response type it receives.
        try:
            return await method(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
