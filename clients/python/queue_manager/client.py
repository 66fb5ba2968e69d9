"""`QueueManager`: the asyncio producer, admin and worker entry point.

This module holds its settings, its workers and its adds; its other calls are in parts it inherits, each over
the channel and call plumbing of `ClientBase` (client_base.py): `JobCalls` (client_jobs.py: jobs already
there), `QueueCalls` (client_queues.py: queues, groups, metrics, events, workers) and `FlowCalls`
(client_flows.py: workflows, schedules).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

import grpc
import grpc.aio

from queue_manager import tracing
from queue_manager.adds import AddBatcher
from queue_manager.batching import BatchHandler, batch
from queue_manager.channel import resolve_address
from queue_manager.checks import (
    check_channel_options,
    check_concurrency,
    check_credentials,
    check_grace,
    check_labels,
    check_timeout,
    check_token,
)
from queue_manager.client_base import UNREAD
from queue_manager.client_flows import FlowCalls
from queue_manager.client_jobs import JobCalls
from queue_manager.client_pull import PullCalls
from queue_manager.client_queues import QueueCalls
from queue_manager.client_workers import WorkerCalls
from queue_manager.codecs import PayloadCodec, make_chain
from queue_manager.context import JobContext
from queue_manager.convert import Job, created_job, job_from_proto
from queue_manager.errors import error_from_rpc
from queue_manager.event_triggers import EventTriggerCalls
from queue_manager.external_events import ExternalEventCalls
from queue_manager.options import JobOptionsLike
from queue_manager.requests import BulkJobLike, add_job_request, bulk_requests, split_streams
from queue_manager.test_clock import TestClockCalls
from queue_manager.v1 import jobs_pb2
from queue_manager.worker import Processor, Worker, check_processor

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer, TracerProvider

    from queue_manager.v1.queue_service_pb2_grpc import QueueServiceAsyncStub


__all__ = ["QueueManager"]

_P = TypeVar("_P", bound=Callable[..., Any])
_H = TypeVar("_H", bound=BatchHandler)


class QueueManager(
    JobCalls,
    QueueCalls,
    FlowCalls,
    WorkerCalls,
    PullCalls,
    ExternalEventCalls,
    EventTriggerCalls,
    TestClockCalls,
):
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
        codecs: Payload codecs, ``[GzipCodec(min_size=1024), AesGcmCodec(keys={"k1": key}, active="k1")]``:
            every payload this client and its workers send is encoded, every one they read decoded
            (codecs.py, docs/security.md); None: from ``QM_CODEC_KEYS`` and the like, else none; ``[]``: none.

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
        codecs: Sequence[PayloadCodec] | None = None,
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
        self._codecs = make_chain(codecs)
        # The adds' tracer, read at the first add (a client made at import time, before the application
        # configured OpenTelemetry, still traces): None when tracing is off, _UNREAD before.
        self._tracer: Tracer | object | None = UNREAD
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

    def batch_processor(
        self,
        queue_name: str,
        *,
        size: int,
        wait: float = 1.0,
        key: Callable[[JobContext], Hashable] | None = None,
    ) -> Callable[[_H], _H]:
        """Decorator that registers a batch handler as the queue's processor: it is called once with up to
        `size` jobs (a list of `JobContext`), and returns None or one result (or exception) per job; see
        `queue_manager.batch` for `wait` and `key`. ``@qm.batch_processor("rows", size=500, wait=0.5)``.
        """

        def register(fn: _H) -> _H:
            self.register_processor(queue_name, batch(fn, size=size, wait=wait, key=key))
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
        check_processor(queue_name, fn)
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
        queue_weights: Mapping[str, int] | None = None,
        queue_order: Sequence[str] | None = None,
        tier: int = 0,
    ) -> Worker:
        """Starts one worker (one stream) for the registered processors and returns it.

        Args:
            queues: Only these queues' processors: a queue name or several; default all registered ones.
            concurrency: Jobs run at once, 1 to 100,000; default the client's concurrency.
            handle_signals: Shut down gracefully on SIGTERM/SIGINT.
            queue_weights: Shares of the slots by queue when several have jobs ready (`Worker`).
            queue_order: Strict priority of the queues instead, highest first (`Worker`).
            tier: Preference among the queues' workers, 0 (the first) to 100 (`Worker`).

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
            queue_weights=queue_weights,
            queue_order=queue_order,
            tier=tier,
            codecs=self._codecs.codecs if self._codecs is not None else [],
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
            says which: True when this call created it, False when it found it, and its ``replaced`` whether
            it found a pending job of its dedup key and gave it this add's name and data (mode ``replace``).
            The data of a job this call created is ``data`` itself, not a copy (bytes-like data as bytes).

        Raises:
            QueueFullError: The queue holds its ``max_size`` jobs, or the job's group its own; the job was
                not added (an existing ``job_id`` or dedup key still answers with its job).
        """
        request = add_job_request(queue_name, name, data, options)
        if self._codecs is not None:
            self._codecs.encode_message(request)
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
        if self._codecs is not None:  # the job found (an id or dedup key taken): what it holds
            self._codecs.decode_message(answer.job)
        job = job_from_proto(answer.job)
        job.created = answer.created
        job.replaced = answer.disposition == jobs_pb2.ADD_DISPOSITION_REPLACED
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
        if self._codecs is not None:
            for request in requests:
                self._codecs.encode_message(request)
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

    # ----------------------------------------------------------------- plumbing

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
