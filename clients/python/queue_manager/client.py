"""`QueueManager`: the asyncio producer, admin and worker entry point."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

import grpc
import grpc.aio

from queue_manager import tracing
from queue_manager.adds import AddBatcher
from queue_manager.bounds import PriorityBoundsLike
from queue_manager.channel import aio_channel, resolve_address
from queue_manager.checks import (
    check_channel_options,
    check_concurrency,
    check_credentials,
    check_grace,
    check_labels,
    check_timeout,
    check_token,
)
from queue_manager.convert import (
    Job,
    JobLogLine,
    Queue,
    QueueMetrics,
    created_job,
    job_from_proto,
    log_lines_from_proto,
    metrics_from_proto,
    queue_from_proto,
)
from queue_manager.dead_letters import (
    DEAD_LETTER_QUEUE,
    DeadLetter,
    RedriveResult,
    dead_letter_from_job,
    redrive_request,
    redrive_result_from_proto,
    retry_job_request,
)
from queue_manager.enums import STATE_BY_NUMBER, JobPriority, JobState
from queue_manager.errors import error_from_rpc
from queue_manager.events import JobEventStream, JobEventType, watch_job_events_request
from queue_manager.groups import (
    GroupInfo,
    GroupLimitsLike,
    RateLimitLike,
    group_info_from_proto,
    list_groups_request,
    pause_group_request,
    resume_group_request,
    set_group_limits_request,
)
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
from queue_manager.metrics import (
    MetricsSnapshot,
    WorkerInfo,
    snapshot_from_proto,
    watch_metrics_request,
    worker_from_proto,
)
from queue_manager.options import DurationLike, JobOptionsLike, RateLimit, validate_queue_name
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
from queue_manager.schedules import Schedule, schedule_from_proto, upsert_schedule_request
from queue_manager.search import (
    BulkResult,
    cancel_jobs_request,
    job_filter,
    remove_jobs_request,
    retry_jobs_request,
)
from queue_manager.v1 import (
    jobs_pb2,
    metrics_pb2,
    queue_service_pb2,
    queue_service_pb2_grpc,
    schedules_pb2,
    types_pb2,
    workflows_pb2,
)
from queue_manager.worker import Processor, Worker
from queue_manager.workflows import WorkflowLike, WorkflowRun, workflow_run_from_proto, workflow_to_proto

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer, TracerProvider

    from queue_manager.v1.queue_service_pb2_grpc import QueueServiceAsyncStub

__all__ = ["QueueManager"]

_P = TypeVar("_P", bound=Callable[..., Any])
_UNREAD = object()


class QueueManager:
    """Client of a Queue Manager server: add and read jobs, administer queues, run processors.

    The channel is opened on first use, so a `QueueManager` may be created at import time (for example to
    register processors with the `processor` decorator) and used later inside an event loop.

    Args:
        address: Server ``host:port`` (port 1 to 65535), or another gRPC target (``dns:``, ``ipv4:``,
            ``unix:``…); default ``QM_SERVER`` or ``localhost:50051``.
        concurrency: Jobs run at once by `start_workers`, 1 to 100,000; default ``WORKER_CONCURRENCY`` or 10.
        credentials: TLS channel credentials; None: from ``QM_TLS_*``, else plaintext (docs/security.md).
        token: Bearer token sent with every call; None: ``QM_TOKEN`` (or ``QM_TOKEN_FILE``), else none.
        channel_options: Extra gRPC channel options, ``(name, value)`` pairs.
        timeout: Deadline in seconds for each unary call, more than 0 and at most 365 days; None for no
            deadline.
        worker_labels: Labels (str to str) sent in each worker's hello.
        shutdown_grace: Seconds `shutdown` waits for running jobs (finite, at least 0).
        tracer_provider: OpenTelemetry tracer provider of the adds' and the workers' spans; None: the global
            one, read at the first add (and by each worker at its start). Tracing is off when no provider is
            configured then, or without ``queue-manager[otel]`` (docs/observability.md).

    Raises:
        TypeError: An argument of the wrong type (``concurrency="5"``).
        ValueError: An argument out of its range (a port of 99999, a negative or NaN timeout); the message
            names the parameter and what it accepts.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        concurrency: int | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        token: str | None = None,
        channel_options: list[tuple[str, Any]] | None = None,
        timeout: float | None = None,
        worker_labels: Mapping[str, str] | None = None,
        shutdown_grace: float = 30.0,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self.address = resolve_address(address)
        self.concurrency = check_concurrency(concurrency)
        self.timeout = check_timeout(timeout)
        self.shutdown_grace = check_grace(shutdown_grace)
        self._credentials = check_credentials(credentials)
        self._token = check_token(token)
        self._channel_options = check_channel_options(channel_options)
        self._worker_labels = check_labels(worker_labels)
        self._tracer_provider = tracer_provider
        # The adds' tracer, read at the first add (a client made at import time, before the application
        # configured OpenTelemetry, still traces): None when tracing is off, _UNREAD before.
        self._tracer: Tracer | object | None = _UNREAD
        self._channel: grpc.aio.Channel | None = None
        self._queues: QueueServiceAsyncStub | None = None
        self._adds: AddBatcher | None = None
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
        queues: Iterable[str] | str | None = None,
        *,
        concurrency: int | None = None,
        handle_signals: bool = False,
    ) -> Worker:
        """Starts one worker (one stream) for the registered processors and returns it.

        Args:
            queues: Only these queues' processors: a queue name or several; default all registered ones.
            concurrency: Jobs run at once, 1 to 100,000; default the client's concurrency.
            handle_signals: Shut down gracefully on SIGTERM/SIGINT.

        Returns:
            The running `Worker` (already started; see `Worker.wait_connected`).
        """
        if isinstance(queues, str):
            queues = [queues]  # one queue, not its letters
        wanted = list(queues) if queues is not None else list(self._processors)
        missing = [q for q in wanted if q not in self._processors]
        if missing:
            raise ValueError(f"no processor registered for queue(s) {', '.join(map(str, missing))}")
        if not wanted:
            raise ValueError("no processors registered; use @qm.processor(queue_name) first")
        worker = Worker(
            self.address,
            {q: self._processors[q] for q in wanted},
            concurrency=concurrency if concurrency is not None else self.concurrency,
            labels=self._worker_labels,
            credentials=self._credentials,
            token=self._token,
            channel_options=self._channel_options,
            shutdown_grace=self.shutdown_grace,
            tracer_provider=self._tracer_provider,
        )
        await worker.start()
        if handle_signals:
            worker.install_signal_handlers()
        self._workers.append(worker)
        return worker

    async def shutdown(self, grace: float | None = None) -> None:
        """Stops the workers gracefully (see `Worker.shutdown`), then closes the channel."""
        if grace is not None:
            check_grace(grace, "grace")
        workers, self._workers = self._workers, []
        for worker in workers:
            await worker.shutdown(grace)
        if self._adds is not None:  # adds under way get their answers before the channel closes
            adds, self._adds = self._adds, None
            await adds.close()
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
            The job as stored (the existing one when ``job_id`` or the dedup key was taken); its ``created``
            says which: True when this call created it, False when it found it. The data of a job this call
            created is ``data`` itself, not a copy (bytes-like data as bytes).

        Raises:
            QueueFullError: The queue holds its ``max_size`` jobs, or the job's group its own; the job was
                not added (an existing ``job_id`` or dedup key still answers with its job).
        """
        request = add_job_request(queue_name, name, data, options)
        tracer = self._tracing()
        if tracer is None:
            # Concurrent add_job calls share AddJobBatch calls (adds.py); a lone one is a plain AddJob.
            answer = await self._batcher().add(request)
        else:
            with tracing.publish(tracer, queue_name) as span:
                tracing.carry(request.job.options.metadata, tracing.trace_context(span))
                answer = await self._batcher().add(request)
                span.set_attribute(
                    "messaging.message.id",
                    answer.id if isinstance(answer, jobs_pb2.CreatedJob) else answer.job.id,
                )
        if isinstance(answer, jobs_pb2.CreatedJob):
            return created_job(request, answer, data)
        job = job_from_proto(answer.job)
        job.created = answer.created
        return job

    async def add_bulk(self, queue_name: str, jobs: Iterable[BulkJobLike]) -> list[str]:
        """Adds many jobs over client streams (about 500 jobs per message, up to 100,000 per stream).

        Args:
            queue_name: A registered queue.
            jobs: Mappings ``{"name": ..., "data": ..., "options": ...}`` or `BulkJob`s.

        Returns:
            The job ids, in the order of ``jobs``.

        Raises:
            QueueFullError: The jobs would not all fit under the queue's ``max_size`` (or a group's): each
                stream of up to 100,000 jobs is checked whole and refused whole, before any is written (an
                earlier stream of the same call stays added).
        """
        # Validate every job before sending any, so a bad job never leaves the others half added.
        requests = list(bulk_requests(queue_name, jobs))
        tracer = self._tracing()
        if tracer is None:
            return await self._add_bulk(requests)
        with tracing.publish(tracer, queue_name, sum(len(r.jobs) for r in requests)) as span:
            tracing.carry_bulk(requests, tracing.trace_context(span))
            return await self._add_bulk(requests)

    async def _add_bulk(self, requests: list[jobs_pb2.AddBulkRequest]) -> list[str]:
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

    async def remove_job(self, queue_name: str, job_id: str) -> JobState | None:
        """Removes a job that is not active; returns the state it was in."""
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
        request = jobs_pb2.CancelJobRequest(queue_name=queue_name, job_id=job_id, reason=reason)
        response: jobs_pb2.CancelJobResponse = await self._unary(self._queue_stub().CancelJob, request)
        return job_from_proto(response.job)

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
        concurrency: int = 0,
        priority_bounds: PriorityBoundsLike | None = None,
        group_limits: GroupLimitsLike | None = None,
        max_size: int = 0,
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
            concurrency: At most this many jobs of the queue active at once across all workers and
                servers; 0 (the default) for no cap.
            priority_bounds: Anti-starvation aging: levels (HIGH to BACKGROUND) to the longest a job of
                that level waits behind the levels above before it runs next, in milliseconds or a
                timedelta, 1 s to 30 days (``{JobPriority.BACKGROUND: timedelta(minutes=1)}``). A bound
                holds to within the server's priority sweep (1 s by default). None or empty: strict
                priority. The whole config is replaced, so pass the bounds again when changing others.
            group_limits: Limits of each fairness group (`JobOptions.group`) on its own: a `GroupLimits` or
                ``{"concurrency": n, "rate_limit": {"max": n, "duration": ms}, "max_size": n}``; a group
                given limits of its own (`set_group_limits`) has those instead. None: no per-group limit.
            max_size: Producer backpressure: the most jobs the queue holds waiting (or paused) and delayed,
                up to 2**48; an add beyond it raises `QueueFullError` and writes nothing. Jobs the server
                adds itself (chain links, workflow steps, schedules, retries) are never refused. 0 (the
                default): no limit.

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
            concurrency=concurrency,
            priority_bounds=priority_bounds,
            group_limits=group_limits,
            max_size=max_size,
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

    async def list_groups(
        self, queue_name: str, page_size: int = 100, page_token: str = ""
    ) -> tuple[list[GroupInfo], str]:
        """Lists one page of a queue's fairness groups (`JobOptions.group`), by name.

        A queue knows a group while it has jobs waiting or active, or limits of its own
        (`QueueMetrics.groups` counts them).

        Args:
            queue_name: The queue.
            page_size: Groups per page, 1 to 1000; 0 means 100.
            page_token: The token a previous page returned; "" for the first page.

        Returns:
            The groups, each with its waiting and active jobs and the limits that apply to it, and the token
            of the next page ("" on the last page).
        """
        request = list_groups_request(queue_name, page_size, page_token)
        response: queue_service_pb2.ListGroupsResponse = await self._unary(
            self._queue_stub().ListGroups, request
        )
        return [group_info_from_proto(g) for g in response.groups], response.next_page_token

    async def set_group_limits(
        self,
        queue_name: str,
        group: str,
        concurrency: int = 0,
        rate_limit: RateLimitLike | None = None,
        max_size: int = 0,
    ) -> GroupInfo:
        """Gives one fairness group limits of its own: they replace the queue's ``group_limits`` for it.

        The limits are set together: one left out is none for this group (``set_group_limits(q, "vip")``
        lifts every per-group limit off "vip"). A group with limits of its own is listed while idle too.

        Args:
            queue_name: The queue.
            group: The group (`JobOptions.group`), 1 to 128 characters; it need not have jobs yet.
            concurrency: Most jobs of the group active at once across all workers; 0 for no limit.
            rate_limit: ``{"max": n, "duration": ms}`` or a `RateLimit` on the group's job starts; None for
                none.
            max_size: Most jobs of the group waiting; an add beyond it raises `QueueFullError`. 0 for no
                limit.

        Returns:
            The group after the change.
        """
        request = set_group_limits_request(queue_name, group, concurrency, rate_limit, max_size)
        response: queue_service_pb2.SetGroupLimitsResponse = await self._unary(
            self._queue_stub().SetGroupLimits, request
        )
        return group_info_from_proto(response.group)

    async def clear_group_limits(self, queue_name: str, group: str) -> GroupInfo:
        """Removes a fairness group's own limits: the queue's ``group_limits`` apply to it again.

        Returns:
            The group after the change (an idle group without jobs is no longer listed).
        """
        request = set_group_limits_request(queue_name, group, clear=True)
        response: queue_service_pb2.SetGroupLimitsResponse = await self._unary(
            self._queue_stub().SetGroupLimits, request
        )
        return group_info_from_proto(response.group)

    async def pause_group(self, queue_name: str, group: str) -> GroupInfo:
        """Pauses one fairness group: its jobs are still added, but none starts until `resume_group`.

        The group's active jobs run on; the queue's other groups keep taking their turns. A paused group is
        listed while idle too. Pausing a paused group changes nothing.

        Args:
            queue_name: The queue.
            group: The group (`JobOptions.group`), 1 to 128 characters; it need not have jobs yet.

        Returns:
            The group after the change (``paused`` True).
        """
        request = pause_group_request(queue_name, group)
        response: queue_service_pb2.PauseGroupResponse = await self._unary(
            self._queue_stub().PauseGroup, request
        )
        return group_info_from_proto(response.group)

    async def resume_group(self, queue_name: str, group: str) -> GroupInfo:
        """Resumes a paused fairness group: its waiting jobs take their turns again at once.

        Resuming a group that is not paused changes nothing.

        Returns:
            The group after the change (``paused`` False; an idle group without jobs or limits of its own
            is no longer listed).
        """
        request = resume_group_request(queue_name, group)
        response: queue_service_pb2.ResumeGroupResponse = await self._unary(
            self._queue_stub().ResumeGroup, request
        )
        return group_info_from_proto(response.group)

    async def get_queue_metrics(self, name: str, include_history: bool = False) -> QueueMetrics:
        """Returns a queue's metrics: counts by state, throughput, processing times, error rate, oldest
        waiting job, workers and rate-limit level (see `QueueMetrics`).

        Args:
            name: The queue.
            include_history: Also return the last hour in one-minute buckets (``history``).
        """
        request = queue_service_pb2.GetQueueMetricsRequest(name=name, include_history=include_history)
        response: queue_service_pb2.GetQueueMetricsResponse = await self._unary(
            self._queue_stub().GetQueueMetrics, request
        )
        return metrics_from_proto(response.metrics)

    async def get_all_metrics(self, include_history: bool = False) -> list[QueueMetrics]:
        """Returns the metrics of every queue, by name (one round trip to Redis on the server)."""
        request = metrics_pb2.GetAllMetricsRequest(include_history=include_history)
        response: metrics_pb2.GetAllMetricsResponse = await self._unary(
            self._queue_stub().GetAllMetrics, request
        )
        return [metrics_from_proto(m) for m in response.metrics]

    async def watch_metrics(
        self,
        queues: Iterable[str] | str | None = None,
        *,
        interval: float | timedelta = 1.0,
        include_history: bool = False,
        include_workers: bool = False,
    ) -> AsyncIterator[MetricsSnapshot]:
        """Yields a snapshot of the queues' metrics at once, then every interval, until you stop iterating
        (the server pushes them: no polling).

        Args:
            queues: Queue names; None for every queue (those registered later included).
            interval: Seconds (or a timedelta) between snapshots, 0.1 to 60.
            include_history: Fill each queue's ``history`` (the last hour, by minute).
            include_workers: Fill each snapshot's ``workers``.
        """
        request = watch_metrics_request(queues, interval, include_history, include_workers)
        call = self._queue_stub().WatchMetrics(request)
        try:
            async for response in call:
                yield snapshot_from_proto(response)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        finally:
            call.cancel()

    def watch_job_events(
        self,
        queue_name: str,
        *,
        types: Iterable[JobEventType | str] | JobEventType | str | None = None,
        job_names: Iterable[str] | str | None = None,
    ) -> JobEventStream:
        """Follows a queue's job events live (BullMQ's QueueEvents): ``async for ev in
        qm.watch_job_events("emails", types=["completed", "failed"])``.

        The feed is live and at most once: it holds what happens once the server watches (``async with
        qm.watch_job_events(...) as events`` enters then; so does ``await events.ready()``), never a
        replay; `get_job` and `wait_for_job` give a job's durable state. A watcher that falls behind the
        server's buffer ends with `ResourceExhaustedError` ("events dropped…"). docs/events.md.

        Args:
            queue_name: The queue.
            types: Only these event types (`JobEventType` or their names); None: all.
            job_names: Only events of jobs with these names; None: all.
        """
        request = watch_job_events_request(queue_name, types, job_names)
        return JobEventStream(self._queue_stub().WatchJobEvents(request))

    async def list_workers(self, queue: str | None = None) -> list[WorkerInfo]:
        """Returns the workers connected to any server (taking jobs of `queue`, if given), by id."""
        request = metrics_pb2.ListWorkersRequest(queue_name=queue or "")
        response: metrics_pb2.ListWorkersResponse = await self._unary(self._queue_stub().ListWorkers, request)
        return [worker_from_proto(w) for w in response.workers]

    # ----------------------------------------------------------------- workflows

    async def execute_workflow(self, workflow: WorkflowLike, run_id: str | None = None) -> str:
        """Starts a workflow run and returns its id at once (see `queue_manager.workflows` for the shape).

        Args:
            workflow: ``{"id", "name", "steps": [...], "metadata": {...}}``; each step has ``queue_name``,
                ``job_name``, optional ``data``, ``options``, ``on_success``, ``on_failure``, ``key`` and
                ``depends_on``.
            run_id: Your own run id (1-100 letters, digits, "-", "_", "."): executing again with the same
                run id returns that run and starts nothing. None: a new random id.

        Returns:
            The run id.
        """
        request = workflows_pb2.ExecuteWorkflowRequest(
            workflow=workflow_to_proto(workflow), run_id=run_id or ""
        )
        tracer = self._tracing()
        if tracer is None:
            response: workflows_pb2.ExecuteWorkflowResponse = await self._unary(
                self._queue_stub().ExecuteWorkflow, request
            )
            return response.run_id
        with tracing.publish_workflow(tracer, request.workflow) as span:
            tracing.carry(request.workflow.metadata, tracing.trace_context(span))
            response = await self._unary(self._queue_stub().ExecuteWorkflow, request)
            span.set_attribute("queue_manager.workflow.run_id", response.run_id)
        return response.run_id

    async def get_workflow(self, run_id: str) -> WorkflowRun:
        """Returns a run with every step's state, job, result or error; `NotFoundError` if unknown."""
        request = workflows_pb2.GetWorkflowRequest(run_id=run_id)
        response: workflows_pb2.GetWorkflowResponse = await self._unary(
            self._queue_stub().GetWorkflow, request
        )
        return workflow_run_from_proto(response.run)

    async def list_workflows(
        self, page_size: int = 100, page_token: str = ""
    ) -> tuple[list[WorkflowRun], str]:
        """Lists runs newest first (without their steps). Returns the runs and the next page's token."""
        request = workflows_pb2.ListWorkflowsRequest(page_size=page_size, page_token=page_token)
        response: workflows_pb2.ListWorkflowsResponse = await self._unary(
            self._queue_stub().ListWorkflows, request
        )
        return [workflow_run_from_proto(r) for r in response.runs], response.next_page_token

    async def cancel_workflow(self, run_id: str, reason: str = "") -> WorkflowRun:
        """Cancels a running run: no further step starts and its started steps' jobs are cancelled."""
        request = workflows_pb2.CancelWorkflowRequest(run_id=run_id, reason=reason)
        response: workflows_pb2.CancelWorkflowResponse = await self._unary(
            self._queue_stub().CancelWorkflow, request
        )
        return workflow_run_from_proto(response.run)

    async def retry_workflow(self, run_id: str) -> WorkflowRun:
        """Runs the job of every failed (or cancelled) step of a failed run again, in one call.

        The steps start again, the steps skipped because of them are pending again, and the run is running
        until they finish: when a retried step completes, what follows it runs as if it had never failed.

        Args:
            run_id: The run.

        Returns:
            The run after the retry (running, its retried steps started).

        Raises:
            NotFoundError: No such run.
            FailedPreconditionError: The run is running, completed or was cancelled with `cancel_workflow`,
                or a failed step's job no longer exists (the message names it; nothing is retried).
        """
        request = workflows_pb2.RetryWorkflowRequest(run_id=run_id)
        response: workflows_pb2.RetryWorkflowResponse = await self._unary(
            self._queue_stub().RetryWorkflow, request
        )
        return workflow_run_from_proto(response.run)

    # ----------------------------------------------------------------- schedules

    async def add_schedule(
        self,
        queue_name: str,
        schedule_id: str,
        *,
        cron: str | None = None,
        every: DurationLike | None = None,
        timezone: str | None = None,
        job_name: str,
        data: Any = None,
        options: JobOptionsLike | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int | None = None,
        catch_up: str = "skip",
    ) -> Schedule:
        """Creates a repeatable schedule, or replaces the queue's schedule of that id (an upsert).

        Args:
            queue_name: A registered queue; each run adds a job to it.
            schedule_id: 1 to 100 letters, digits, "-", "_" or "."; unique within the queue.
            cron: Cron expression: 5 fields (minute hour day-of-month month day-of-week), or 6 with
                seconds first. Exclusive with every.
            every: Fixed interval (milliseconds or timedelta, at least 1 s): runs at ``start`` and every
                interval after it, or one interval after creation when there is no start.
            timezone: IANA time zone of the cron expression (default UTC).
            job_name: Name of each run's job.
            data: Data of each run's job (JSON-serialisable, or bytes).
            options: Job options as for `add_job`, without ``job_id`` (each run's job is named
                ``schedule:<schedule id>:<occurrence ms>``).
            start: No run before this time.
            end: No run after this time.
            limit: Most runs in all (a replaced schedule keeps its count); None for no limit.
            catch_up: Runs missed while no server ran: "skip" (only one at most a minute late still runs),
                "one" (one run for all of them) or "all" (each one, oldest first, at most 1,000).

        Returns:
            The schedule as stored, with its next run time.
        """
        request = upsert_schedule_request(
            queue_name,
            schedule_id,
            cron=cron,
            every=every,
            timezone=timezone,
            job_name=job_name,
            data=data,
            options=options,
            start=start,
            end=end,
            limit=limit,
            catch_up=catch_up,
        )
        response: schedules_pb2.UpsertScheduleResponse = await self._unary(
            self._queue_stub().UpsertSchedule, request
        )
        return schedule_from_proto(response.schedule)

    async def get_schedule(self, queue_name: str, schedule_id: str) -> Schedule:
        """Returns one schedule; raises `NotFoundError` when it does not exist."""
        request = schedules_pb2.GetScheduleRequest(queue_name=queue_name, schedule_id=schedule_id)
        response: schedules_pb2.GetScheduleResponse = await self._unary(
            self._queue_stub().GetSchedule, request
        )
        return schedule_from_proto(response.schedule)

    async def list_schedules(self, queue_name: str | None = None) -> list[Schedule]:
        """Returns the schedules of one queue, or of every queue (None), by queue then id."""
        request = schedules_pb2.ListSchedulesRequest(queue_name=queue_name or "")
        response: schedules_pb2.ListSchedulesResponse = await self._unary(
            self._queue_stub().ListSchedules, request
        )
        return [schedule_from_proto(s) for s in response.schedules]

    async def delete_schedule(self, queue_name: str, schedule_id: str) -> Schedule:
        """Deletes a schedule (the jobs it added stay) and returns it as it was."""
        request = schedules_pb2.DeleteScheduleRequest(queue_name=queue_name, schedule_id=schedule_id)
        response: schedules_pb2.DeleteScheduleResponse = await self._unary(
            self._queue_stub().DeleteSchedule, request
        )
        return schedule_from_proto(response.schedule)

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
                yield response.job
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        finally:
            call.cancel()

    async def retry_job(self, queue_name: str, job_id: str, data: Any = None) -> Job:
        """Runs a failed or cancelled job again, with its attempts counted afresh.

        Args:
            data: New data for the job (edit and requeue): bytes (sent as application/octet-stream) or a
                JSON-serialisable value; None keeps its data. The data changes in the same atomic step as the
                retry, so a job that cannot be retried keeps its data; the same payload limit as an add's.

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

        Returns:
            What was sent back, per original queue; named copies that stay, and why.

        Raises:
            NotFoundError: The dead-letter queue or `original_queue` is not registered.
            InvalidArgumentError: The queue is no queue's dead-letter queue, or the filters are bad.
        """
        request = redrive_request(queue_name, original_queue, limit, job_ids, replace_data)
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
        return [d for d in map(dead_letter_from_job, jobs) if d is not None], token

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

    # ----------------------------------------------------------------- plumbing

    def _ensure_channel(self) -> grpc.aio.Channel:
        if self._channel is None:
            self._channel = aio_channel(self.address, self._credentials, self._channel_options, self._token)
            self._queues = cast(
                "QueueServiceAsyncStub", queue_service_pb2_grpc.QueueServiceStub(self._channel)
            )
        return self._channel

    def _tracing(self) -> Tracer | None:
        """The adds' tracer (None: tracing is off), read once."""
        tracer = self._tracer
        if tracer is _UNREAD:
            tracer = self._tracer = tracing.tracer(self._tracer_provider)
        return cast("Tracer | None", tracer)

    def _batcher(self) -> AddBatcher:
        if self._adds is None:
            stub = self._queue_stub()

            async def add_job(request: jobs_pb2.AddJobRequest) -> jobs_pb2.AddJobResponse:
                response: jobs_pb2.AddJobResponse = await self._unary(stub.AddJob, request)
                return response

            async def add_job_batch(request: jobs_pb2.AddJobBatchRequest) -> jobs_pb2.AddJobBatchResponse:
                response: jobs_pb2.AddJobBatchResponse = await stub.AddJobBatch(request, timeout=self.timeout)
                return response

            self._adds = AddBatcher(add_job, add_job_batch, stub.AddJobStream, self.timeout)
        return self._adds

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
