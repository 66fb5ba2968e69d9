"""The runs of jobs on a worker: a processor's call, its outcome in the next report, and what a running
job's `JobContext` sends meanwhile (progress, log lines, data updates).

`JobRuns` is the innermost layer of `Worker` (worker.py): the stream layer (worker_stream.py) starts runs
and stops them, this one reports how they end. The protocol both speak is in worker.py's docstring.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Any, NoReturn, TypeAlias, cast

import grpc
import grpc.aio
from google.protobuf import struct_pb2

from queue_manager import tracing
from queue_manager.codecs import CodecChain
from queue_manager.context import JobContext
from queue_manager.convert import decode_payload, encode_payload, timestamp_to_datetime
from queue_manager.errors import (
    DelayedError,
    RateLimitedError,
    UnrecoverableError,
    WaitingForChildren,
    WaitingForEvent,
    error_from_rpc,
)
from queue_manager.logsampling import Sampler
from queue_manager.tracebacks import exception_text, format_failure, printable
from queue_manager.v1 import external_events_pb2, jobs_pb2, queue_service_pb2_grpc, worker_service_pb2

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

__all__ = ["JobRuns", "Processor"]

# The worker's one logger, whichever of its modules logs: what users configure and filter on.
logger = logging.getLogger("queue_manager.worker")

Processor: TypeAlias = Callable[[JobContext], Awaitable[Any]] | Callable[[JobContext], Any]
"""A processor: ``async def fn(job)`` or ``def fn(job)`` (run in a thread); it returns the job's result."""

# Stopped runs remembered for their ack (accepted stops are never acked, so the oldest are dropped).
_STOPPED_KEPT = 1000
# What the server keeps of a job's log: its last lines, each cut to a length (sending more is waste).
_LOG_LINES_KEPT = 1000
_LOG_LINE_CHARS = 2000
# Seconds a processor's data update (UpdateJobData) may take before it fails with DEADLINE_EXCEEDED.
_UPDATE_DATA_TIMEOUT = 30.0


class _JobTimeout(Exception):
    """A run that passed its timeout (``JobOptions.timeout``) on this worker."""


class JobRuns:
    """Runs jobs and puts their outcomes, progress and log lines into the worker's outbox.

    The state below is set by `Worker.__init__` and `Worker.start` (their comments say what each holds);
    this class runs on the worker's event loop, except where a method says a processor's thread calls it.
    """

    _processors: dict[str, tuple[Processor, bool]]  # queue -> (processor, whether it is async)
    _running: dict[tuple[str, str], JobContext]
    _stopped: dict[tuple[str, str, str], bool]
    _outbox: worker_service_pb2.ConnectRequest
    _unsent: int
    _credits: int
    _debt: int
    _wake: asyncio.Event
    _stopping: bool
    _draining: bool
    _loop: asyncio.AbstractEventLoop | None
    _executor: ThreadPoolExecutor | None
    _tracer: Tracer | None
    _channel: grpc.aio.Channel | None
    _failure_log: Sampler
    _codecs: CodecChain | None

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

    def _time_out(self, ctx: JobContext, reason: str) -> None:
        """Stops a run past its job's timeout, whichever side noticed first: this worker's timer
        (`_execute`) or the server (CANCEL_JOB with ``timed_out``), so a processor cannot tell them apart.
        Its task is cancelled (a plain-``def`` processor's thread is no longer awaited and sees
        ``job.cancelled``); however the run then ends, it is reported as a failure that timed out."""
        if ctx._timed_out:
            return
        ctx._timed_out = reason
        if ctx._task is not None:
            ctx._task.cancel()

    async def _execute(self, ctx: JobContext, fn: Processor, is_async: bool, limit: float | None) -> None:
        started = time.perf_counter_ns()
        timer = None
        if limit is not None:
            reason = f"job timed out after {limit:g}s"
            timer = asyncio.get_running_loop().call_later(limit, self._time_out, ctx, reason)
        try:
            result = await self._call(ctx, fn, is_async)
        except asyncio.CancelledError as exc:
            if ctx._cancelled:  # the server asked to stop the run (CANCEL_JOB)
                self._report_cancelled(ctx)
                return
            if ctx._timed_out:  # past its timeout (`_time_out`): a failure that timed out
                self._fail(ctx, exc, time.perf_counter_ns() - started)
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
        finally:
            if timer is not None:
                timer.cancel()

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
        if self._debt:  # a lower concurrency (SET_CONCURRENCY): this slot is given up
            self._debt -= 1
        elif not (self._stopping or self._draining):
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

    def _expect_rejection(self, ctx: JobContext, parked: bool = False) -> None:
        """Takes a rejection of the run's lease as expected: the server may have ended the run itself, or
        (`parked`) ends it in a call this worker makes (`_stopped`)."""
        self._stopped[(ctx.queue_name, ctx.id, ctx.lease_token)] = parked
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
        if ctx._timed_out:  # it returned after its timeout: the result is discarded, the run timed out
            self._fail(ctx, _JobTimeout(ctx._timed_out), nanos)
            return
        completions = self._outbox.report.completions
        done = completions.add(queue_name=ctx.queue_name, job_id=ctx.id, lease_token=ctx.lease_token)
        if result is not None:
            try:
                encode_payload(result, done.result, "result")
                if self._codecs is not None:
                    self._codecs.encode(done.result)
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
        if ctx._timed_out and not isinstance(exc, _JobTimeout):  # however it ended after its timeout
            exc = _JobTimeout(ctx._timed_out)
        if isinstance(exc, DelayedError):
            self._delay(ctx, exc, nanos)
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
            stacktrace=_stack_text(exc),
            do_not_retry=isinstance(exc, UnrecoverableError),
            timed_out=isinstance(exc, _JobTimeout),
        )
        failure.duration.seconds, failure.duration.nanos = divmod(nanos, 1_000_000_000)
        if isinstance(exc, _JobTimeout):  # the server may have timed the run out first
            self._expect_rejection(ctx)
        if isinstance(exc, RateLimitedError):  # back without using an attempt; the queue holds off
            failure.retry_after.FromTimedelta(exc.retry_after)
            failure.stacktrace = ""
        self._unsent += 1
        self._finish(ctx)

    def _delay(self, ctx: JobContext, exc: DelayedError, nanos: int) -> None:
        """The run asked to run again later (DelayedError): its job waits without using an attempt."""
        delays = self._outbox.report.delays
        item = delays.add()
        item.lease.queue_name, item.lease.job_id, item.lease.lease_token = (
            ctx.queue_name,
            ctx.id,
            ctx.lease_token,
        )
        item.delay.FromTimedelta(exc.delay)
        if exc.data is not DelayedError.KEEP:
            try:
                encode_payload(exc.data, item.data)
                if self._codecs is not None:
                    self._codecs.encode(item.data)
            except (TypeError, ValueError) as bad:  # not JSON: the attempt fails with why
                del delays[-1]
                self._fail(ctx, bad, nanos)
                return
        logger.debug(
            "job %s/%s runs again in %gs",
            ctx.queue_name,
            ctx.id,
            exc.delay.total_seconds(),
            extra={"queue": ctx.queue_name, "job_id": ctx.id},
        )
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

    def _parked(self, ctx: JobContext) -> None:
        """The server ended the run when its call parked the job (WaitForChildren, WaitForEvent): whatever the
        processor does next is not reported (a completion would be refused as a lost lease), its lease is no
        longer extended, and the next report names it in ``parked``. The call may have reached another server
        than the stream's (several behind one address), which then cannot tell the stream's server that the
        lease is over; without the item that server counts it against the worker's credits until the stream
        ends. The item waits for the report the run's end sends with its credit (no message of its own). An
        extension the heartbeat put in the unsent report while the call was out is dropped."""
        ctx._lost = True
        report = self._outbox.report
        extensions = report.extensions
        kept = [e for e in extensions if (e.job_id, e.lease_token) != (ctx.id, ctx.lease_token)]
        if len(kept) != len(extensions):
            del extensions[:]
            extensions.extend(kept)
        report.parked.add(queue_name=ctx.queue_name, job_id=ctx.id, lease_token=ctx.lease_token)

    def _wait_for_children(self, ctx: JobContext, request: jobs_pb2.WaitForChildrenRequest) -> Any:
        """A run adding children and ending (WaitForChildren): a coroutine to await on the worker's loop;
        called from a plain-``def`` processor's thread, the call runs on the loop and this raises its
        outcome there."""
        loop = self._loop
        assert loop is not None
        if self._in_loop():
            return self._send_children(ctx, request)
        asyncio.run_coroutine_threadsafe(self._send_children(ctx, request), loop).result()
        raise AssertionError("unreachable: _send_children always raises")

    async def _send_children(self, ctx: JobContext, request: jobs_pb2.WaitForChildrenRequest) -> NoReturn:
        assert self._channel is not None
        stub = queue_service_pb2_grpc.QueueServiceStub(self._channel)
        if self._codecs is not None:
            self._codecs.encode_message(request)
        self._expect_rejection(ctx, parked=True)
        try:
            answer = await stub.WaitForChildren(request, timeout=_UPDATE_DATA_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            self._not_parked(ctx)
            raise error_from_rpc(exc) from None
        # The server ended the run: whatever the processor does next is not reported (a completion would
        # be refused as a lost lease).
        self._parked(ctx)
        logger.debug(
            "job %s/%s waits for %d children",
            ctx.queue_name,
            ctx.id,
            answer.children_pending,
            extra={"queue": ctx.queue_name, "job_id": ctx.id},
        )
        raise WaitingForChildren([(c.queue_name, c.job_id) for c in answer.children], answer.children_pending)

    def _wait_for_event(self, ctx: JobContext, request: external_events_pb2.WaitForEventRequest) -> Any:
        """A run ending to wait for an external event (WaitForEvent): as `_wait_for_children`."""
        loop = self._loop
        assert loop is not None
        if self._in_loop():
            return self._send_event_wait(ctx, request)
        asyncio.run_coroutine_threadsafe(self._send_event_wait(ctx, request), loop).result()
        raise AssertionError("unreachable: _send_event_wait always raises")

    async def _send_event_wait(
        self, ctx: JobContext, request: external_events_pb2.WaitForEventRequest
    ) -> NoReturn:
        assert self._channel is not None
        stub = queue_service_pb2_grpc.QueueServiceStub(self._channel)
        self._expect_rejection(ctx, parked=True)
        try:
            answer = await stub.WaitForEvent(request, timeout=_UPDATE_DATA_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            self._not_parked(ctx)
            raise error_from_rpc(exc) from None
        # The server ended the run, as for children: nothing the processor does next is reported.
        self._parked(ctx)
        until = timestamp_to_datetime(answer.until) if answer.HasField("until") else None
        logger.debug(
            "job %s/%s waits for event %s",
            ctx.queue_name,
            ctx.id,
            ", ".join(request.keys),
            extra={"queue": ctx.queue_name, "job_id": ctx.id},
        )
        raise WaitingForEvent(list(request.keys), until)

    def _not_parked(self, ctx: JobContext) -> None:
        """A call that would have parked the run was refused: the run goes on, and a rejection of its lease
        is news again (a lease lost)."""
        self._stopped.pop((ctx.queue_name, ctx.id, ctx.lease_token), None)

    async def _send_data(self, ctx: JobContext, request: jobs_pb2.UpdateJobDataRequest) -> None:
        assert self._channel is not None
        stub = queue_service_pb2_grpc.QueueServiceStub(self._channel)
        data = decode_payload(request.data)
        if self._codecs is not None:
            self._codecs.encode_message(request)
        try:
            await stub.UpdateJobData(request, timeout=_UPDATE_DATA_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        ctx.data = data


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
    # The name and the error are the user's text, escaped so control characters reach no terminal.
    where = f"job {ctx.queue_name}/{ctx.id} ({printable(ctx.name)})"
    attempt = ctx.attempts_made + 1
    fields = {"queue": ctx.queue_name, "job_id": ctx.id, "attempt": attempt, "error": repr(exc)}
    if isinstance(exc, RateLimitedError):
        seconds = exc.retry_after.total_seconds()
        logger.info(
            "%s rate limited: %s; retried in %gs without using an attempt",
            where,
            printable(exception_text(exc)),
            seconds,
            extra=fields,
        )
        return
    if isinstance(exc, UnrecoverableError):
        then = "not retried (UnrecoverableError)"
    elif attempt < ctx.max_attempts:
        then = "will be retried"
    else:
        then = "no attempts left"
    error = str(exc) if isinstance(exc, _JobTimeout) else f"{type(exc).__name__}: {exception_text(exc)}"
    error = printable(error)
    logger.warning(
        "%s failed on attempt %d of %d: %s; %s", where, attempt, ctx.max_attempts, error, then, extra=fields
    )
    if not isinstance(exc, _JobTimeout) and logger.isEnabledFor(logging.DEBUG):
        logger.debug("%s traceback", where, exc_info=exc, extra=fields)


def _stack_text(exc: BaseException) -> str:
    """A failed run's stack text: its traceback, none for a timeout, or the text an exception carries as its
    ``stacktrace`` attribute (qm exec's CommandError: the command's own failure, whose stderr is in the
    message, not this worker's frames)."""
    if isinstance(exc, _JobTimeout):
        return ""
    own = getattr(exc, "stacktrace", None)
    return own if isinstance(own, str) else format_failure(exc)
