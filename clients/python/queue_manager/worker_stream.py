"""The worker's side of the `WorkerService.Connect` stream: reconnecting with backoff, one session (hello,
welcome, a reader, a writer of the outbox, heartbeats) and the server's deliveries, acks and commands.

`WorkerStream` is the middle layer of `Worker` (worker.py, whose docstring holds the protocol): it starts
the runs of delivered jobs and stops them on the server's word; `JobRuns` (worker_runs.py) reports them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import TypeAlias

import grpc
import grpc.aio

from queue_manager._version import client_version
from queue_manager.codecs import PayloadCodecError
from queue_manager.context import JobContext
from queue_manager.errors import UnrecoverableError, status_code
from queue_manager.stats import ProcessStats
from queue_manager.v1 import types_pb2, worker_service_pb2, worker_service_pb2_grpc
from queue_manager.worker_runs import JobRuns

__all__ = ["WorkerStream"]

# The worker's one logger, whichever of its modules logs: what users configure and filter on.
logger = logging.getLogger("queue_manager.worker")

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
_QUIET = worker_service_pb2.SERVER_COMMAND_TYPE_QUIET
_RESUME = worker_service_pb2.SERVER_COMMAND_TYPE_RESUME
_STOP = worker_service_pb2.SERVER_COMMAND_TYPE_STOP
_SET_CONCURRENCY = worker_service_pb2.SERVER_COMMAND_TYPE_SET_CONCURRENCY
# The operators' commands this worker obeys (its hello lists them; worker.py's docstring says how).
_CONTROL_COMMANDS = (_QUIET, _RESUME, _STOP, _SET_CONCURRENCY)


class WorkerStream(JobRuns):
    """Keeps a stream open to the server and serves it: the sessions of one `Worker`.

    The state below (and `JobRuns`') is set by `Worker.__init__`, whose comments say what each holds.
    """

    address: str
    worker_id: str
    queues: list[str]
    concurrency: int
    labels: dict[str, str]
    queue_weights: dict[str, int]
    strict_order: bool
    tier: int
    server_id: str
    lease_duration: float
    heartbeat_interval: float
    _stats: ProcessStats
    _connected: asyncio.Event
    _closing_event: asyncio.Event
    _closing: bool
    _delivery_stopped: bool
    _quiet: bool
    stopped_by_server: bool
    _executor: ThreadPoolExecutor | None
    _shutdown_task: asyncio.Task[None] | None
    shutdown: Callable[[], Coroutine[object, object, None]]  # Worker.shutdown

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
                commands=_CONTROL_COMMANDS,
                quiet=self._quiet,
                queue_weights=self.queue_weights,
                strict_order=self.strict_order,
                tier=self.tier,
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
        self._debt = max(0, len(self._running) - self.concurrency)  # runs beyond a lowered concurrency
        # Extensions queued for the old stream are stale. Fresh ones for every run still going go in the
        # first report: a server that ended the old stream at its shutdown left their leases held, and this
        # server takes them over when they are extended here (a lease lost meanwhile is refused: that run is
        # stopped).
        del self._outbox.report.extensions[:]
        del self._outbox.report.parked[:]  # leases of the old stream, which its server let go when it ended
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
            if (
                self._unsent
                or self._credits
                or report.extensions
                or report.parked
                or report.stop
                or report.HasField("stats")
            ):
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
        """Puts an unwritten report back at the head of the outbox (minus credits, extensions and parked runs:
        the stream they were for has ended, and with it every lease its server counted)."""
        request.report.credits = 0
        request.report.ClearField("extensions")
        request.report.ClearField("parked")
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
            undecodable = self._decode(job)
            ctx = JobContext(leased, self)
            earlier = self._running.get(ctx.key)
            if earlier is not None:
                # The server leased the job again (its earlier lease here was recovered): that run is lost.
                self._lose(earlier)
            self._running[ctx.key] = ctx
            if undecodable is not None:  # fails for good, where an operator sees it: no attempt can read it
                self._fail(
                    ctx, UnrecoverableError(f"cannot decode the job's payload: {undecodable.message}"), 0
                )
                continue
            fn, is_async = entry
            limit = job.options.timeout.ToNanoseconds() / 1e9 if job.options.HasField("timeout") else None
            if self._tracer is None:
                ctx._task = self._loop.create_task(self._execute(ctx, fn, is_async, limit))
            else:
                ctx._task = self._loop.create_task(self._execute_traced(ctx, fn, is_async, limit))

    def _decode(self, job: types_pb2.Job) -> PayloadCodecError | None:
        """Decodes a delivered job's payloads (data, parents' and children's results) in place; the error
        when one cannot be."""
        if self._codecs is not None:
            try:
                self._codecs.decode_message(job)
            except PayloadCodecError as exc:
                return exc
        return None

    def _on_ack(self, ack: worker_service_pb2.ReportAck) -> None:
        if ack.delivery_stopped:
            self._delivery_stopped = True
            self._wake.set()
        for item in ack.results:
            if item.code == 0:
                continue
            lease = item.lease
            run = (lease.queue_name, lease.job_id, lease.lease_token)
            ctx = self._running.get((lease.queue_name, lease.job_id))
            if ctx is not None and ctx.lease_token != lease.lease_token:
                ctx = None  # a verdict on an earlier run of the job, not on the one running now
            if self._stopped.get(run):
                # A heartbeat that crossed the call parking the run (WaitForEvent, WaitForChildren): the
                # server ended the lease in that call, as this worker asked. Kept, not popped: a slow call
                # can be crossed by more than one.
                logger.debug(
                    "job %s/%s: a lease extension crossed the call that parked it (%s)",
                    lease.queue_name,
                    lease.job_id,
                    item.message,
                )
            elif ctx is not None and not ctx._lost:
                self._lose(ctx)
                logger.warning(
                    "job %s/%s lost its lease (%s: %s); its run is stopped and its result discarded",
                    lease.queue_name,
                    lease.job_id,
                    _code_name(item.code),
                    item.message,
                )
            elif self._stopped.pop(run, None) is False:
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
        elif command.type in (_QUIET, _RESUME):
            self._quiet = command.type == _QUIET
            logger.info("worker %s: %s by the server", self.worker_id, "quiet" if self._quiet else "resumed")
        elif command.type == _STOP:
            self._on_stop(command)
        elif command.type == _SET_CONCURRENCY:
            self._resize(command.concurrency, command.revoked_credits)

    def _on_stop(self, command: worker_service_pb2.ServerCommand) -> None:
        """STOP: shut down as `shutdown` does (no reconnect); `run` then returns."""
        reason = command.reason or "no reason given"
        logger.info("worker %s: the server asks it to stop (%s)", self.worker_id, reason)
        if self._stopping:
            return
        self.stopped_by_server = True
        assert self._loop is not None
        self._shutdown_task = self._loop.create_task(self.shutdown())

    def _resize(self, concurrency: int, revoked: int) -> None:
        """SET_CONCURRENCY: at most `concurrency` jobs from now on. The server took back `revoked` of the
        credits it held; the rest of a decrease comes from credits not yet sent, then from finished jobs."""
        if concurrency < 1:
            return
        change, self.concurrency = concurrency - self.concurrency, concurrency
        logger.info("worker %s: concurrency set to %d by the server", self.worker_id, concurrency)
        if change > 0:
            paid = min(change, self._debt)
            self._debt -= paid
            if not (self._stopping or self._draining):
                self._credits += change - paid
                self._wake.set()
            if self._executor is not None and self._executor._max_workers < concurrency:
                self._executor._max_workers = concurrency  # threads start as runs need them
            return
        owed = max(0, -change - revoked)
        taken = min(owed, self._credits)
        self._credits -= taken
        self._debt += owed - taken

    def _on_cancel(self, command: worker_service_pb2.ServerCommand) -> None:
        """CANCEL_JOB: stop that run (cancel an async processor's task; a plain-``def`` processor sees
        ``job.cancelled``); however it then ends, it is reported in ``cancelled``. With ``timed_out`` the
        server timed the run out (it counts from the claim, this worker from the delivery a little later):
        the run ends as at this worker's own timeout, a failure that timed out."""
        ref = command.job
        ctx = self._running.get((ref.queue_name, ref.job_id))
        if ctx is None or ctx.lease_token != ref.lease_token or ctx._cancelled or ctx._timed_out:
            return  # finished meanwhile (its outcome is recorded as usual), another run, or told already
        if command.timed_out:
            logger.debug(
                "job %s/%s: the server timed it out (%s)", ref.queue_name, ref.job_id, command.reason
            )
            self._time_out(ctx, command.reason or "job timed out")
            return
        logger.info(
            "job %s/%s: the server asks to stop it (%s)",
            ref.queue_name,
            ref.job_id,
            command.reason or "cancelled",
        )
        self._stop_run(ctx)


def _code_name(code: int) -> str:
    status = status_code(code)
    return status.name if status is not None else str(code)
