"""The stream worker: one `WorkerService.Connect` stream runs the processors of several queues.

Protocol, as this side speaks it:

1. Send ``hello`` (worker id, queues, concurrency, labels, language, version); the server answers
   ``welcome`` (lease duration, heartbeat interval) or ends the call (NOT_FOUND for an unknown queue).
2. Credits: the first report grants ``concurrency - running`` credits; each delivered job uses one and each
   finished job gives one back, in the same report as its outcome. So at most ``concurrency`` jobs run.
3. Deliveries carry several leased jobs; each starts at once as its own task. A running job is known by
   its queue and job id (jobs claimed together share one lease token, so the token alone names no job);
   every report item carries all three, and the server fences on the token.
4. Outcomes, credits, progress, log lines, releases and extensions wait in one outbox; a single writer
   task sends everything ready as ONE report whenever it wakes, so a lone completion goes out at once and
   a burst shares a message. A run's log lines travel before its outcome (the server stores them first).
5. Every heartbeat interval the leases of running jobs are extended. The server acks each extension and
   every rejected item; a rejected lease marks its job lost: its run is stopped (as on CANCEL_JOB) and
   its result discarded. The first report and
   every heartbeat, busy or idle, carry ``stats``: this process's CPU and memory (with psutil installed,
   ``queue-manager[stats]``; without it none), which ``ListWorkers`` and the dashboard show.
6. DRAIN command (no delivery follows it): grant nothing more, let running jobs finish, send their
   outcomes, release jobs that had not started, half-close, read until the server ends the stream,
   reconnect with backoff.
7. CANCEL_JOB command (the job was cancelled, or passed its timeout on the server): an async
   processor's task is cancelled, a plain-``def`` processor sees ``job.cancelled``; however the run then
   ends it is reported in ``cancelled``. A processor that raises `RateLimitedError` is reported as a
   failure with ``retry_after`` (no attempt used; the queue holds off that long). A processor that raises
   ``asyncio.CancelledError`` while nothing cancelled its run fails its attempt like any other error.
8. A broken stream is reopened with jittered exponential backoff (0.1 s doubling to 5 s). Running jobs
   keep running; the first report on the new stream extends their leases (a server that stopped left
   them held, and the new one takes them over), and outcomes not yet sent go out on it.
9. A processor's ``job.update_data`` is not a report: it is a unary ``QueueService.UpdateJobData`` call on
   this worker's channel, carrying the run's lease token (the server refuses it once the lease is lost), so
   the processor awaits the server's answer and sees a refusal as an exception.
10. `Worker.shutdown`: send ``stop`` (the server confirms that no more jobs come), release jobs delivered
   meanwhile, wait up to a grace period for running jobs, abandon the rest (a stall), flush the outbox,
   half-close, wait (bounded) for the server to end the stream, close the channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import grpc
import grpc.aio
from google.protobuf import struct_pb2

from queue_manager import tracing
from queue_manager._version import client_version
from queue_manager.channel import aio_channel, check_address
from queue_manager.checks import (
    MAX_CONCURRENCY,
    check_channel_options,
    check_concurrency,
    check_credentials,
    check_grace,
    check_labels,
    check_token,
)
from queue_manager.context import JobContext
from queue_manager.convert import decode_payload, encode_payload
from queue_manager.errors import RateLimitedError, UnrecoverableError, error_from_rpc, status_code
from queue_manager.lifecycle import RunsUntilShutdown
from queue_manager.logsampling import Sampler
from queue_manager.stats import ProcessStats
from queue_manager.tracebacks import exception_text, format_failure
from queue_manager.v1 import jobs_pb2, queue_service_pb2_grpc, worker_service_pb2, worker_service_pb2_grpc

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer, TracerProvider

__all__ = ["JobContext", "Processor", "Worker", "default_concurrency", "make_worker_id"]

logger = logging.getLogger("queue_manager.worker")

Processor: TypeAlias = Callable[[JobContext], Awaitable[Any]] | Callable[[JobContext], Any]
"""A processor: ``async def fn(job)`` or ``def fn(job)`` (run in a thread); it returns the job's result."""

_BACKOFF_FIRST = 0.1
_BACKOFF_MAX = 5.0
_DEFAULT_HEARTBEAT = 10.0
# How long to wait for the server to end the stream after we half-closed it.
_CLOSE_TIMEOUT = 10.0
# Errors that retrying soon will not fix (unknown queue, bad hello…): log them and wait the longest backoff.
_CONFIG_ERRORS = frozenset(
    {
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)
_Call: TypeAlias = (
    "grpc.aio.StreamStreamCall[worker_service_pb2.ConnectRequest, worker_service_pb2.ConnectResponse]"
)
_DRAIN = worker_service_pb2.SERVER_COMMAND_TYPE_DRAIN
_CANCEL = worker_service_pb2.SERVER_COMMAND_TYPE_CANCEL_JOB
# Stopped runs remembered for their ack (accepted stops are never acked, so the oldest are dropped).
_STOPPED_KEPT = 1000
# What the server keeps of a job's log: its last lines, each cut to a length (sending more is waste).
_LOG_LINES_KEPT = 1000
_LOG_LINE_CHARS = 2000
# Seconds a processor's data update (UpdateJobData) may take before it fails with DEADLINE_EXCEEDED.
_UPDATE_DATA_TIMEOUT = 30.0


def default_concurrency() -> int:
    """``WORKER_CONCURRENCY`` from the environment, else 10."""
    text = os.environ.get("WORKER_CONCURRENCY", "").strip()
    if not text:
        return 10
    try:
        value = int(text)
    except ValueError:
        raise ValueError(
            f"WORKER_CONCURRENCY must be a whole number of at least 1, not {text[:50]!r}"
        ) from None
    if not 1 <= value <= MAX_CONCURRENCY:
        raise ValueError(f"WORKER_CONCURRENCY must be from 1 to {MAX_CONCURRENCY:,}, got {value}")
    return value


def make_worker_id() -> str:
    """A worker id unique per process: ``{hostname}-{pid}-{6 random hex digits}``."""
    return f"{socket.gethostname()[:150]}-{os.getpid()}-{secrets.token_hex(3)}"


def _is_async(fn: Callable[..., Any]) -> bool:
    call = getattr(fn, "__call__", None)  # noqa: B004 - an object whose __call__ is a coroutine function
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call)


class _JobTimeout(Exception):
    pass


class Worker(RunsUntilShutdown):
    """Runs processors for jobs pushed over one worker stream.

    Args:
        address: Server address, ``host:port``.
        processors: Processor per queue name.
        concurrency: Most jobs run at once, 1 to 100,000; default ``WORKER_CONCURRENCY`` or 10.
        labels: Free labels sent in the hello (host and pid are added).
        worker_id: Id sent in the hello; default ``{hostname}-{pid}-{random}``.
        credentials: TLS credentials; None: from ``QM_TLS_*``, else plaintext (docs/security.md).
        token: Bearer token of the stream; None: ``QM_TOKEN`` (or ``QM_TOKEN_FILE``), else none.
        channel_options: Extra gRPC channel options.
        shutdown_grace: Default seconds `shutdown` waits for running jobs (finite, at least 0).
        tracer_provider: OpenTelemetry tracer provider of the runs' spans; None: the global one, read at
            `start` (tracing is off when none is configured then, or without ``queue-manager[otel]``).

    Raises:
        TypeError, ValueError: An argument of the wrong type or out of its range (see `QueueManager`).
    """

    def __init__(
        self,
        address: str,
        processors: Mapping[str, Processor],
        *,
        concurrency: int | None = None,
        labels: Mapping[str, str] | None = None,
        worker_id: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        token: str | None = None,
        channel_options: list[tuple[str, Any]] | None = None,
        shutdown_grace: float = 30.0,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        if not processors:
            raise ValueError("a worker needs at least one processor")
        self.address = check_address(address)
        self.concurrency = check_concurrency(concurrency) or default_concurrency()
        self.worker_id = worker_id or make_worker_id()
        self.queues = sorted(processors)
        self.labels = {
            "host": socket.gethostname(),
            "pid": str(os.getpid()),
            **check_labels(labels, "labels"),
        }
        self.shutdown_grace = check_grace(shutdown_grace)
        self.server_id = ""
        self.lease_duration = 0.0
        self.heartbeat_interval = _DEFAULT_HEARTBEAT
        self._processors = {queue: (fn, _is_async(fn)) for queue, fn in processors.items()}
        self._credentials = check_credentials(credentials)
        self._token = check_token(token)
        self._channel_options = check_channel_options(channel_options)
        self._tracer_provider = tracer_provider
        self._tracer: Tracer | None = None  # set at start when tracing is on
        self._channel: grpc.aio.Channel | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main: asyncio.Task[None] | None = None
        self._shutdown_task: asyncio.Task[None] | None = None
        # (queue, job id) -> the run of that job on this worker.
        self._running: dict[tuple[str, str], JobContext] = {}
        # Leases (queue, job id, token) of runs reported stopped or timed out, not yet acked: their rejection
        # is expected when the server ended the run itself (its own timeout), so it is no warning. Bounded.
        self._stopped: dict[tuple[str, str, str], None] = {}
        self._outbox = worker_service_pb2.ConnectRequest()
        self._stats = ProcessStats()
        self._unsent = 0  # outcomes, progress and releases in the outbox (extensions and credits aside)
        self._credits = 0  # credits not yet granted on the current stream
        self._wake = asyncio.Event()
        self._connected = asyncio.Event()
        self._closing_event = asyncio.Event()
        self._closed = asyncio.Event()
        self._stopping = False  # no more credits: shutting down
        self._closing = False  # running jobs are done or released: flush, half-close, stop
        self._draining = False  # the server asked this stream to drain
        self._delivery_stopped = False  # the server confirmed no more jobs come on this stream
        # Failure lines: the first few of each kind (queue, error type) per second, then a count (a storm
        # of failures would bury the log and cost more CPU than the runs; logsampling.py).
        self._failure_log = Sampler(_log_left_out)

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Opens the channel and starts the stream in the background (returns at once)."""
        if self._main is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._tracer = tracing.tracer(self._tracer_provider)
        self._channel = aio_channel(self.address, self._credentials, self._channel_options, self._token)
        if any(not is_async for _, is_async in self._processors.values()):
            self._executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="qm-processor")
        self._main = asyncio.create_task(self._main_loop(), name=f"qm-worker-{self.worker_id}")

    _log = logger

    def _description(self) -> str:
        return f"worker {self.worker_id}"

    async def wait_connected(self) -> None:
        """Waits until the server has welcomed the current stream (bound it with `asyncio.timeout`)."""
        await self._connected.wait()

    async def shutdown(self, grace: float | None = None) -> None:
        """Stops taking jobs, waits for running ones, abandons the rest, flushes outcomes and closes.

        Args:
            grace: Seconds to wait for running jobs before cancelling and releasing them; default
                ``shutdown_grace``.
        """
        if grace is not None:
            check_grace(grace, "grace")
        if self._stopping:
            await self._closed.wait()
            return
        self._stopping = True
        self._credits = 0
        # Ask the server to stop delivering; half-close waits for its confirmation.
        self._outbox.report.stop = True
        self._wake.set()
        if self._main is None:
            self._closed.set()
            return
        grace = self.shutdown_grace if grace is None else grace
        tasks = [ctx._task for ctx in self._running.values() if ctx._task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            if pending:
                logger.warning("%d job(s) still running after %.1fs; releasing them", len(pending), grace)
                for task in pending:
                    task.cancel()
                await asyncio.wait(pending, timeout=1.0)
        self._closing = True
        self._closing_event.set()
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._main), timeout=_CLOSE_TIMEOUT + 5)
        except TimeoutError:
            logger.warning(
                "worker %s: stream did not close in %.0fs; cancelling it", self.worker_id, _CLOSE_TIMEOUT
            )
            self._main.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._main
        except Exception:
            logger.exception("worker %s stopped with an error", self.worker_id)
        self._failure_log.flush(final=True)
        if self._unsent:
            logger.warning("worker %s: %d report item(s) could not be sent", self.worker_id, self._unsent)
        if self._channel is not None:
            await self._channel.close()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._closed.set()

    # ----------------------------------------------------------------- stream

    async def _main_loop(self) -> None:
        delay = _BACKOFF_FIRST
        while not (self._closing and not self._unsent):
            welcomed = False
            try:
                welcomed = await self._session()
            except grpc.aio.AioRpcError as exc:
                if exc.code() in _CONFIG_ERRORS:
                    logger.error("worker %s refused: %s: %s", self.worker_id, exc.code().name, exc.details())
                    delay = _BACKOFF_MAX
                else:
                    logger.warning(
                        "worker %s stream lost: %s: %s", self.worker_id, exc.code().name, exc.details()
                    )
            except Exception:
                logger.exception("worker %s stream failed", self.worker_id)
            finally:
                self._connected.clear()
            if self._closing and not self._unsent:
                return
            if welcomed:
                delay = _BACKOFF_FIRST
            pause = delay * (0.5 + random.random() / 2)
            if self._closing:
                # Outcomes left to send while shutting down: keep trying, backing off as ever, until
                # `shutdown` gives up (its closing event is set already: waiting on it would not wait).
                await asyncio.sleep(pause)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing_event.wait(), timeout=pause)
            delay = min(delay * 2, _BACKOFF_MAX)

    async def _session(self) -> bool:
        """Runs one stream until it ends; returns whether the server welcomed it."""
        assert self._channel is not None
        stub = worker_service_pb2_grpc.WorkerServiceStub(self._channel)
        call = stub.Connect()
        try:
            hello = worker_service_pb2.WorkerHello(
                worker_id=self.worker_id,
                queues=self.queues,
                concurrency=self.concurrency,
                labels=self.labels,
                language="python",
                version=client_version(),
            )
            await call.write(worker_service_pb2.ConnectRequest(hello=hello))
            first = await call.read()
            if not isinstance(first, worker_service_pb2.ConnectResponse):
                return False  # the server ended the stream cleanly before welcoming us
            if first.WhichOneof("kind") != "welcome":
                logger.error("worker %s: the server's first message is not a welcome", self.worker_id)
                return False
            self._on_welcome(first.welcome)
            await self._serve(call)
            return True
        finally:
            call.cancel()

    async def _serve(self, call: _Call) -> None:
        """Reads and writes until the server ends the stream (or, after our half-close, a timeout passes)."""
        reader = asyncio.create_task(self._read_loop(call))
        writer = asyncio.create_task(self._write_loop(call))
        heart = asyncio.create_task(self._heartbeat_loop())
        try:
            await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
            if not reader.done() and writer.exception() is None:
                # We half-closed; the server ends the stream once it has read everything.
                await asyncio.wait({reader}, timeout=_CLOSE_TIMEOUT)
            if reader.done():
                reader.result()
            else:
                writer.result()
        finally:
            for task in (reader, writer, heart):
                task.cancel()
            await asyncio.gather(reader, writer, heart, return_exceptions=True)

    def _on_welcome(self, welcome: worker_service_pb2.ServerWelcome) -> None:
        self.server_id = welcome.server_id
        self.lease_duration = welcome.lease_duration.ToNanoseconds() / 1e9
        interval = welcome.heartbeat_interval.ToNanoseconds() / 1e9
        if interval <= 0:
            interval = self.lease_duration / 3 if self.lease_duration > 0 else _DEFAULT_HEARTBEAT
        self.heartbeat_interval = interval
        self._draining = False
        self._delivery_stopped = False
        if self._stopping:
            self._outbox.report.stop = True
        self._credits = 0 if self._stopping else max(0, self.concurrency - len(self._running))
        # Extensions queued for the old stream are stale. Fresh ones for every run still going go in the
        # first report: a server that ended the old stream at its shutdown left their leases held, and this
        # server takes them over when they are extended here (a lease lost meanwhile is refused: that run is
        # stopped).
        del self._outbox.report.extensions[:]
        self._extend_running()
        self._attach_stats()
        self._connected.set()
        self._wake.set()
        logger.info(
            "worker %s connected to %s (server %s) for %s",
            self.worker_id,
            self.address,
            self.server_id,
            self.queues,
        )

    async def _read_loop(self, call: _Call) -> None:
        while True:
            message = await call.read()
            if not isinstance(message, worker_service_pb2.ConnectResponse):
                return  # EOF: the server ended the stream
            kind = message.WhichOneof("kind")
            if kind == "delivery":
                self._on_delivery(message.delivery)
            elif kind == "ack":
                self._on_ack(message.ack)
            elif kind == "command":
                self._on_command(message.command)

    async def _write_loop(self, call: _Call) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            report = self._outbox.report
            if self._unsent or self._credits or report.extensions or report.stop or report.HasField("stats"):
                request, self._outbox = self._outbox, worker_service_pb2.ConnectRequest()
                request.report.credits = self._credits
                unsent, self._unsent, self._credits = self._unsent, 0, 0
                try:
                    await call.write(request)
                except BaseException:
                    self._restore(request, unsent)
                    raise
            if (
                (self._closing or self._draining)
                and self._delivery_stopped
                and not self._running
                and not self._unsent
            ):
                await call.done_writing()
                return

    def _restore(self, request: worker_service_pb2.ConnectRequest, unsent: int) -> None:
        """Puts an unwritten report back at the head of the outbox (minus credits and extensions)."""
        request.report.credits = 0
        request.report.ClearField("extensions")
        request.report.ClearField("stats")
        request.MergeFrom(self._outbox)
        self._outbox = request
        self._unsent += unsent

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            self._failure_log.flush()  # the count of a storm of failures that has stopped
            if self._attach_stats():
                self._wake.set()
            if self._running:
                self._extend_running()
                self._wake.set()

    def _extend_running(self) -> None:
        """Puts an extension of every running job's lease (but the lost ones') into the next report."""
        extensions = self._outbox.report.extensions
        for ctx in self._running.values():
            if not ctx._lost:
                extensions.add(queue_name=ctx.queue_name, job_id=ctx.id, lease_token=ctx.lease_token)

    def _attach_stats(self) -> bool:
        """Puts this process's resource use into the next report; False without psutil."""
        sample = self._stats.sample()
        if sample is None:
            return False
        stats = self._outbox.report.stats
        stats.cpu_percent, stats.memory_bytes = sample
        return True

    # ----------------------------------------------------------------- server messages

    def _on_delivery(self, delivery: worker_service_pb2.JobDelivery) -> None:
        assert self._loop is not None
        for leased in delivery.jobs:
            job = leased.job
            entry = self._processors.get(job.queue_name)
            if entry is None or self._stopping or self._draining:
                if entry is None:
                    logger.error("received job %s of queue %r that has no processor", job.id, job.queue_name)
                self._outbox.report.releases.add(
                    queue_name=job.queue_name, job_id=job.id, lease_token=leased.lease_token
                )
                self._unsent += 1
                self._wake.set()
                continue
            ctx = JobContext(leased, self)
            earlier = self._running.get(ctx.key)
            if earlier is not None:
                # The server leased the job again (its earlier lease here was recovered): that run is lost.
                self._lose(earlier)
            self._running[ctx.key] = ctx
            fn, is_async = entry
            limit = job.options.timeout.ToNanoseconds() / 1e9 if job.options.HasField("timeout") else None
            if self._tracer is None:
                ctx._task = self._loop.create_task(self._execute(ctx, fn, is_async, limit))
            else:
                ctx._task = self._loop.create_task(self._execute_traced(ctx, fn, is_async, limit))

    def _on_ack(self, ack: worker_service_pb2.ReportAck) -> None:
        if ack.delivery_stopped:
            self._delivery_stopped = True
            self._wake.set()
        for item in ack.results:
            if item.code == 0:
                continue
            lease = item.lease
            ctx = self._running.get((lease.queue_name, lease.job_id))
            if ctx is not None and ctx.lease_token != lease.lease_token:
                ctx = None  # a verdict on an earlier run of the job, not on the one running now
            if ctx is not None and not ctx._lost:
                self._lose(ctx)
                logger.warning(
                    "job %s/%s lost its lease (%s: %s); its run is stopped and its result discarded",
                    lease.queue_name,
                    lease.job_id,
                    _code_name(item.code),
                    item.message,
                )
            elif self._stopped.pop((lease.queue_name, lease.job_id, lease.lease_token), 0) is None:
                logger.info(
                    "job %s/%s had already ended on the server (timed out there) when reported (%s)",
                    lease.queue_name,
                    lease.job_id,
                    item.message,
                )
            elif ctx is None:
                logger.warning(
                    "server rejected a report for job %s/%s: %s: %s",
                    lease.queue_name,
                    lease.job_id,
                    _code_name(item.code),
                    item.message,
                )

    def _lose(self, ctx: JobContext) -> None:
        """A run whose lease was recovered (the job is, or will be, delivered again): its result would be
        discarded, so it is stopped as on CANCEL_JOB (an async processor's task is cancelled, a plain-``def``
        one sees ``job.cancelled``) and nothing is reported. A lost run left going kept its slot: after an
        outage longer than the lease, a worker's slots stayed full of runs whose jobs waited meanwhile."""
        ctx._lost = True
        self._stop_run(ctx)

    def _stop_run(self, ctx: JobContext) -> None:
        """Stops a run: an async processor's task is cancelled, a plain-``def`` one sees ``job.cancelled``."""
        ctx._cancelled = True
        if self._processors[ctx.queue_name][1] and ctx._task is not None:
            ctx._task.cancel()

    def _on_command(self, command: worker_service_pb2.ServerCommand) -> None:
        if command.type == _DRAIN:
            logger.info(
                "worker %s: server asks to drain (%s)", self.worker_id, command.reason or "no reason given"
            )
            self._draining = True
            self._delivery_stopped = True  # the server sends no job after this command
            self._credits = 0
            self._wake.set()
        elif command.type == _CANCEL:
            self._on_cancel(command)

    def _on_cancel(self, command: worker_service_pb2.ServerCommand) -> None:
        """CANCEL_JOB: stop that run (cancel an async processor's task; a plain-``def`` processor sees
        ``job.cancelled``); however it then ends, it is reported in ``cancelled``."""
        ref = command.job
        ctx = self._running.get((ref.queue_name, ref.job_id))
        if ctx is None or ctx.lease_token != ref.lease_token or ctx._cancelled:
            return  # finished meanwhile (its outcome is recorded as usual), another run, or told already
        logger.info(
            "job %s/%s: the server asks to stop it (%s)",
            ref.queue_name,
            ref.job_id,
            command.reason or "cancelled",
        )
        self._stop_run(ctx)

    # ----------------------------------------------------------------- running jobs

    async def _execute(self, ctx: JobContext, fn: Processor, is_async: bool, limit: float | None) -> None:
        started = time.perf_counter_ns()
        try:
            if limit is None:
                result = await self._call(ctx, fn, is_async)
            else:
                scope = asyncio.timeout(limit)
                try:
                    async with scope:
                        result = await self._call(ctx, fn, is_async)
                except TimeoutError:
                    if scope.expired():
                        raise _JobTimeout(f"job timed out after {limit:g}s") from None
                    raise
        except asyncio.CancelledError as exc:
            if ctx._cancelled:  # the server asked to stop the run (CANCEL_JOB)
                self._report_cancelled(ctx)
                return
            task = asyncio.current_task()
            if task is not None and not task.cancelling():
                # Nothing cancelled this task: the processor raised CancelledError itself (or awaited
                # something cancelled elsewhere). A failure like any other, not a stall retried for ever.
                self._fail(ctx, exc, time.perf_counter_ns() - started)
                return
            self._finish(ctx)
            if not (ctx._lost):
                # Cancelled by shutdown after the grace period: hand the job back as abandoned (a stall).
                self._outbox.report.abandoned.add(
                    queue_name=ctx.queue_name, job_id=ctx.id, lease_token=ctx.lease_token
                )
                self._unsent += 1
            return
        except Exception as exc:
            self._fail(ctx, exc, time.perf_counter_ns() - started)
        else:
            self._complete(ctx, result, time.perf_counter_ns() - started)

    async def _execute_traced(
        self, ctx: JobContext, fn: Processor, is_async: bool, limit: float | None
    ) -> None:
        """`_execute` inside the run's span (tracing.process); `_fail` marks the span failed."""
        assert self._tracer is not None
        with tracing.process(self._tracer, ctx.queue_name, ctx._job) as span:
            ctx._span = span
            await self._execute(ctx, fn, is_async, limit)

    async def _call(self, ctx: JobContext, fn: Processor, is_async: bool) -> Any:
        if is_async:
            return await fn(ctx)
        assert self._loop is not None
        if ctx._span is None:
            result = await self._loop.run_in_executor(self._executor, fn, ctx)
        else:  # the run's span stays current in the thread (an executor does not carry context variables)
            run = contextvars.copy_context().run
            result = await self._loop.run_in_executor(self._executor, run, fn, ctx)
        if inspect.isawaitable(result):
            result = await result
        return result

    def _finish(self, ctx: JobContext) -> None:
        """Forgets a finished job and gives its credit back (unless the worker stops taking jobs)."""
        if self._running.get(ctx.key) is ctx:
            del self._running[ctx.key]
        if not (self._stopping or self._draining):
            self._credits += 1
        self._wake.set()

    def _report_cancelled(self, ctx: JobContext) -> None:
        """Reports a run that ended after CANCEL_JOB: the job ends cancelled, whatever the run returned."""
        if not ctx._lost:
            self._outbox.report.cancelled.add(
                queue_name=ctx.queue_name, job_id=ctx.id, lease_token=ctx.lease_token
            )
            self._unsent += 1
            self._expect_rejection(ctx)
        self._finish(ctx)

    def _expect_rejection(self, ctx: JobContext) -> None:
        self._stopped[(ctx.queue_name, ctx.id, ctx.lease_token)] = None
        if len(self._stopped) > _STOPPED_KEPT:
            del self._stopped[next(iter(self._stopped))]

    def _complete(self, ctx: JobContext, result: Any, nanos: int) -> None:
        if ctx._cancelled:
            self._report_cancelled(ctx)
            return
        if ctx._lost:
            self._finish(ctx)
            logger.info(
                "discarding the result of job %s/%s (lease lost or job cancelled)", ctx.queue_name, ctx.id
            )
            return
        completions = self._outbox.report.completions
        done = completions.add(queue_name=ctx.queue_name, job_id=ctx.id, lease_token=ctx.lease_token)
        if result is not None:
            try:
                encode_payload(result, done.result)
            except (TypeError, ValueError) as exc:
                del completions[-1]
                self._fail(ctx, exc, nanos)
                return
        done.duration.seconds, done.duration.nanos = divmod(nanos, 1_000_000_000)
        self._unsent += 1
        self._finish(ctx)

    def _fail(self, ctx: JobContext, exc: BaseException, nanos: int) -> None:
        if ctx._cancelled:
            self._report_cancelled(ctx)
            return
        if ctx._lost:
            self._finish(ctx)
            return
        message = _failure_message(exc)
        if ctx._span is not None:
            tracing.record_failure(ctx._span, exc, message)
        kind = _failure_kind(ctx, exc)
        # Sampled only where the line is logged at all (as the server does its own, services/reports.py).
        if logger.isEnabledFor(kind[2]) and self._failure_log.admit(kind):
            _log_failure(ctx, exc)
        failure = self._outbox.report.failures.add(
            queue_name=ctx.queue_name,
            job_id=ctx.id,
            lease_token=ctx.lease_token,
            message=message,
            stacktrace="" if isinstance(exc, _JobTimeout) else format_failure(exc),
            do_not_retry=isinstance(exc, UnrecoverableError),
        )
        failure.duration.seconds, failure.duration.nanos = divmod(nanos, 1_000_000_000)
        if isinstance(exc, _JobTimeout):  # the server may have timed the run out first
            self._expect_rejection(ctx)
        if isinstance(exc, RateLimitedError):  # back without using an attempt; the queue holds off
            failure.retry_after.FromTimedelta(exc.retry_after)
            failure.stacktrace = ""
        self._unsent += 1
        self._finish(ctx)

    def _in_loop(self) -> bool:
        """Whether the caller runs on the worker's event loop (not in a plain-``def`` processor's thread)."""
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def _report_progress(self, ctx: JobContext, value: struct_pb2.Value) -> None:
        loop = self._loop
        assert loop is not None
        if not self._in_loop():
            loop.call_soon_threadsafe(partial(self._report_progress, ctx, value))
            return
        if self._running.get(ctx.key) is not ctx or ctx._lost:
            return
        item = self._outbox.report.progress.add()
        item.lease.queue_name = ctx.queue_name
        item.lease.job_id = ctx.id
        item.lease.lease_token = ctx.lease_token
        item.progress.CopyFrom(value)
        self._unsent += 1
        self._wake.set()

    def _report_log(self, ctx: JobContext, time_ns: int, message: str) -> None:
        loop = self._loop
        assert loop is not None
        if not self._in_loop():
            loop.call_soon_threadsafe(partial(self._report_log, ctx, time_ns, message))
            return
        if self._running.get(ctx.key) is not ctx or ctx._lost:
            return
        # Consecutive lines of one run share a JobLogs entry of the pending report.
        logs = self._outbox.report.logs
        run = (ctx.queue_name, ctx.id, ctx.lease_token)
        last = logs[-1].lease if len(logs) else None
        if last is not None and (last.queue_name, last.job_id, last.lease_token) == run:
            entry = logs[-1]
        else:
            entry = logs.add()
            entry.lease.queue_name, entry.lease.job_id, entry.lease.lease_token = run
        if len(entry.lines) >= _LOG_LINES_KEPT:
            # The server keeps a job's last lines only: while the stream is down, hold no more than that.
            del entry.lines[0]
            self._unsent -= 1
        line = entry.lines.add(message=message[:_LOG_LINE_CHARS])
        line.time.FromNanoseconds(time_ns)
        self._unsent += 1
        self._wake.set()

    def _update_data(self, ctx: JobContext, request: jobs_pb2.UpdateJobDataRequest) -> Awaitable[None] | None:
        """A running job's data update: a coroutine to await on the worker's loop; called from a plain-``def``
        processor's thread, the update runs on the loop and this returns None once it is done."""
        loop = self._loop
        assert loop is not None
        if self._in_loop():
            return self._send_data(ctx, request)
        asyncio.run_coroutine_threadsafe(self._send_data(ctx, request), loop).result()
        return None

    async def _send_data(self, ctx: JobContext, request: jobs_pb2.UpdateJobDataRequest) -> None:
        assert self._channel is not None
        stub = queue_service_pb2_grpc.QueueServiceStub(self._channel)
        try:
            await stub.UpdateJobData(request, timeout=_UPDATE_DATA_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        ctx.data = decode_payload(request.data)


def _failure_message(exc: BaseException) -> str:
    """A failed run's message: the exception's text, else (none, or its ``__str__`` raised) its type name."""
    try:
        return str(exc) or type(exc).__name__
    except BaseException:  # a processor's exception class broke its own __str__
        return type(exc).__name__


def _failure_kind(ctx: JobContext, exc: BaseException) -> tuple[str, str, int]:
    """What makes failures alike for the log's sampling: the queue, the error's type and the line's level."""
    level = logging.INFO if isinstance(exc, RateLimitedError) else logging.WARNING
    return ctx.queue_name, type(exc).__name__, level


def _log_left_out(kind: Hashable, count: int, seconds: float) -> None:
    """The failures of one kind that a second's sampling left out of the log, in one line."""
    queue, error, level = cast("tuple[str, str, int]", kind)  # a _failure_kind
    logger.log(
        level,
        "queue %s: %d more %s failures within %.1fs (not logged one by one; the server keeps each "
        "on its job)",
        queue,
        count,
        error,
        seconds,
        extra={"queue": queue, "error_type": error, "count": count},
    )


def _log_failure(ctx: JobContext, exc: BaseException) -> None:
    """Tells the person watching this worker that a run failed: one WARNING line (queue, job id, attempt,
    error, what happens next), and the traceback at DEBUG (``LOG_LEVEL=DEBUG``). The server records the
    failure as well; this is for the worker's own log, which takes the first few failures of each kind a
    second and counts the rest (`Worker._fail`)."""
    where = f"job {ctx.queue_name}/{ctx.id} ({ctx.name})"
    attempt = ctx.attempts_made + 1
    fields = {"queue": ctx.queue_name, "job_id": ctx.id, "attempt": attempt, "error": repr(exc)}
    if isinstance(exc, RateLimitedError):
        seconds = exc.retry_after.total_seconds()
        logger.info(
            "%s rate limited: %s; retried in %gs without using an attempt", where, exc, seconds, extra=fields
        )
        return
    if isinstance(exc, UnrecoverableError):
        then = "not retried (UnrecoverableError)"
    elif attempt < ctx.max_attempts:
        then = "will be retried"
    else:
        then = "no attempts left"
    error = str(exc) if isinstance(exc, _JobTimeout) else f"{type(exc).__name__}: {exception_text(exc)}"
    logger.warning(
        "%s failed on attempt %d of %d: %s; %s", where, attempt, ctx.max_attempts, error, then, extra=fields
    )
    if not isinstance(exc, _JobTimeout) and logger.isEnabledFor(logging.DEBUG):
        logger.debug("%s traceback", where, exc_info=exc, extra=fields)


def _code_name(code: int) -> str:
    status = status_code(code)
    return status.name if status is not None else str(code)
