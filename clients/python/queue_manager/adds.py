"""Carries one client's concurrent `add_job` calls together: as messages of one ``AddJobStream`` it keeps
open, or (with a server without it) as ``AddJob`` and ``AddJobBatch`` calls.

A web handler adds one job per request, and many handlers run at once. Each `add_job` on its own costs a
gRPC round trip and work on the server (a few hundred µs of CPU in Python on both sides); carried together,
the cost is paid once per batch. There is no linger: while fewer than `MAX_IN_FLIGHT` calls are under way
and none of them is a batch, an add goes out at once on its own (a lone add is as fast as before). Adds made
otherwise wait for a call to end and then leave together, so under load the batches grow by themselves and
no add waits longer than one call. The callers a batch's answer wakes add again in one event-loop turn;
those adds leave together too. Two batches may be under way at once: a large batch leaving with nothing
under way is sent as two halves, which then alternate (one is written by the server while the other's
callers are resumed and add again).

Each add keeps its own outcome: the server answers every item with its job or the status ``AddJob`` would
have ended with (an item out of the token's reach included). When the whole batch is refused for a reason
that may concern only some of its items (a server that refused a whole batch for one item out of reach, or
one too old for ``AddJobBatch``), its adds are sent again one by one, so each caller gets exactly what its
own ``AddJob`` would have got.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio

from queue_manager.errors import QueueManagerError, error_from_rpc, error_from_status
from queue_manager.v1 import jobs_pb2

log = logging.getLogger("queue_manager.adds")

# Calls under way at once. A lone add never waits; beyond this, adds share the next call. Measured with 50
# concurrent callers on 2 cores (20,000 adds, interleaved): 1 gave 6,300-6,700 adds/s at 33 µs of client and
# 62-68 µs of server CPU per add; 2 gave 4,300-6,800 at 42 and 78-85 µs; 4 gave 4,000-6,100 at 55 and 105 µs
# (smaller batches cost both sides more per add, and the extra overlap bought nothing). But with 1, a
# producer paced at 500 adds/s often found the previous call still under way: its add waited 0.54 ms at p50
# and 1.9 ms at p90 (bench.hops), the largest part of add→start latency. 2 keeps that wait off that path.
MAX_IN_FLIGHT = 2
# Beside a batch under way, a second call may start only with at least this many adds; a lone add waits for
# the batch instead. Under load one caller's adds otherwise went out alone, each in a call of its own, every
# time its last one came back while the others' batch was under way: half the calls carried one add, and the
# batches half of the callers. A paced producer's adds are lone calls, which still overlap.
PIPELINE_MIN = 8
# With nothing under way, a batch of at least twice PIPELINE_MIN leaves as two calls of half each: while the
# server writes one, the client resolves the other's callers and sends their next adds, so the two halves
# keep alternating. One batch at a time left each side idle while the other worked (2026-12-04, one
# process, 20,000 adds on 2 cores: 50 callers 17,200-17,500 -> 21,200-22,300 adds/s, 200 callers
# 20,700-23,300 -> 28,200-28,700; thirds or quarters were slower than halves, and a lone add is unchanged).
# Adds per batch call (the server's limit, services/jobs.py MAX_BATCH_ITEMS).
MAX_ITEMS = 1_000
# Whole-call refusals that may concern some items only: their adds are sent again one by one.
_ONE_BY_ONE = frozenset(
    {
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)

AddJob = Callable[[jobs_pb2.AddJobRequest], Awaitable[jobs_pb2.AddJobResponse]]
AddJobBatch = Callable[[jobs_pb2.AddJobBatchRequest], Awaitable[jobs_pb2.AddJobBatchResponse]]
# Opens an AddJobStream call (grpc.aio's stream-stream call: write, read, cancel).
OpenStream = Callable[[], Any]
Outcomes = Sequence[jobs_pb2.AddJobOutcome]
# An add's answer: the job as stored, or (a brief answer on the stream) what the request lacks to make it.
Answer = jobs_pb2.AddJobResponse | jobs_pb2.CreatedJob


@dataclass(slots=True)
class _Pending:
    request: jobs_pb2.AddJobRequest
    future: asyncio.Future[Answer] = field(repr=False)


class AddBatcher:
    """Sends adds at once while few calls are under way, and in shared batch calls beyond that.

    Args:
        add_job: Sends one ``AddJob`` (raising `QueueManagerError` on failure).
        add_job_batch: Sends one ``AddJobBatch`` (raising ``grpc.aio.AioRpcError`` on failure).
        open_stream: Opens an ``AddJobStream``, which then carries the calls instead (a message costs about
            half a unary call); None, or a server without it, keeps them unary.
        timeout: How long an add on the stream waits for its answer (None: no limit), as a unary call's
            deadline.
    """

    def __init__(
        self,
        add_job: AddJob,
        add_job_batch: AddJobBatch,
        open_stream: OpenStream | None = None,
        timeout: float | None = None,
    ) -> None:
        self._add_job = add_job
        self._add_job_batch = add_job_batch
        self._open_stream = open_stream
        self._timeout = timeout
        self._stream: _AddStream | None = None
        self._pending: list[_Pending] = []
        self._in_flight = 0
        self._batches_in_flight = 0  # calls carrying more than one add under way
        # A batch's answers just woke its callers: the adds they make in this event-loop turn leave together.
        self._gathering = False
        self._scheduled = False
        self._batches = True  # False once the server turned out to lack AddJobBatch
        self._tasks: set[asyncio.Task[None]] = set()

    async def add(self, request: jobs_pb2.AddJobRequest) -> Answer:
        """Adds one job (as ``AddJob`` would) and returns the server's answer: on the stream, a job created as
        its request says is answered briefly (`convert.created_job` builds it from the request)."""
        if self._free() and not self._pending and not self._gathering:
            self._in_flight += 1
            try:
                outcomes = await self._on_stream([request])
                if outcomes is None:
                    return await self._add_job(request)
                return _response(outcomes[0])
            finally:
                self._in_flight -= 1
                self._kick()
        pending = _Pending(request, asyncio.get_running_loop().create_future())
        self._pending.append(pending)
        self._kick()
        return await pending.future

    def _kick(self) -> None:
        if self._pending and not self._scheduled and not self._gathering and self._free():
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        # Adds whose callers gave up (cancelled) before leaving are not sent.
        self._pending = [p for p in self._pending if not p.future.done()]
        if not self._pending or not self._free():
            return
        batch, self._pending = self._pending[:MAX_ITEMS], self._pending[MAX_ITEMS:]
        if self._in_flight == 0 and len(batch) >= 2 * PIPELINE_MIN:
            half = len(batch) // 2
            self._start(batch[:half])
            self._start(batch[half:])
        else:
            self._start(batch)

    def _start(self, batch: list[_Pending]) -> None:
        self._in_flight += 1
        is_batch = len(batch) > 1
        self._batches_in_flight += is_batch
        task = asyncio.create_task(self._send(batch, is_batch), name="qm-add-batch")
        self._tasks.add(task)
        task.add_done_callback(self._sent)

    def _free(self) -> bool:
        """Whether a call may start now: beside a batch, only a batch of PIPELINE_MIN adds or more."""
        if self._in_flight >= MAX_IN_FLIGHT:
            return False
        return not self._batches_in_flight or len(self._pending) >= PIPELINE_MIN

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._in_flight -= 1
        self._kick()

    async def _send(self, batch: list[_Pending], is_batch: bool) -> None:
        try:
            await self._send_batch(batch)
        finally:
            if is_batch:
                # The callers woken run before _gathered (call_soon keeps order): what they add now waits
                # for it, so they leave together again instead of the first one alone.
                self._batches_in_flight -= 1
                self._gathering = True
                asyncio.get_running_loop().call_soon(self._gathered)

    def _gathered(self) -> None:
        self._gathering = False
        self._kick()

    async def _send_batch(self, batch: list[_Pending]) -> None:
        try:
            outcomes = await self._on_stream([p.request for p in batch])
        except BaseException as exc:  # the stream broke or timed out (or the client is closing)
            for p in batch:
                _settle(p, exc)
            if not isinstance(exc, Exception):
                raise
            return
        if outcomes is not None:
            _deliver(batch, outcomes)
            return
        if len(batch) == 1 or not self._batches:
            await self._one_by_one(batch)
            return
        request = jobs_pb2.AddJobBatchRequest(items=[p.request for p in batch])
        try:
            response = await self._add_job_batch(request)
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in _ONE_BY_ONE:
                error = error_from_rpc(exc)
                for p in batch:
                    _settle(p, error)
                return
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                self._batches = False
            await self._one_by_one(batch)
            return
        except BaseException as exc:  # the batch task itself is cancelled (the client is closing)
            for p in batch:
                _settle(p, exc)
            raise
        try:
            _deliver(batch, _counted(response.outcomes, len(batch)))
        except QueueManagerError as exc:
            for p in batch:
                _settle(p, exc)

    async def _one_by_one(self, batch: list[_Pending]) -> None:
        live = [p for p in batch if not p.future.done()]
        results = await asyncio.gather(*(self._add_job(p.request) for p in live), return_exceptions=True)
        for p, result in zip(live, results, strict=True):
            if isinstance(result, jobs_pb2.AddJobResponse):
                if not p.future.done():
                    p.future.set_result(result)
            else:
                _settle(p, result)

    async def _on_stream(self, requests: list[jobs_pb2.AddJobRequest]) -> Outcomes | None:
        """Sends adds as one message of the producer stream and returns their outcomes; None when there is no
        stream to send on (none configured, or the server lacks it: nothing was sent). Raises
        `QueueManagerError` when the stream broke or the answer did not come within the timeout."""
        for fresh in (False, True):
            if self._open_stream is None:
                return None
            stream = self._stream
            if stream is None or stream.broken is not None:
                stream = self._stream = _AddStream(self._open_stream())
            try:
                # A scope, not wait_for, which would run the send as a task of its own.
                async with asyncio.timeout(self._timeout):
                    return await stream.send(requests)
            except TimeoutError:
                raise QueueManagerError(
                    f"no answer to the add within {self._timeout:g}s", grpc.StatusCode.DEADLINE_EXCEEDED
                ) from None
            except _Unsent as unsent:
                # The stream had ended before the message left (a server restart): nothing was sent, so a
                # new stream takes it, once.
                error = unsent.error
                if fresh or not isinstance(error, grpc.aio.AioRpcError):
                    raise _stream_error(error) from None
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNIMPLEMENTED:  # an older server: unary calls from now on
                    self._open_stream = None
                    return None
                raise _stream_error(exc) from None
        raise AssertionError("unreachable")

    async def close(self) -> None:
        """Waits for the calls under way (their callers get their outcomes), then ends the stream."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._stream is not None:
            await self._stream.close()
            self._stream = None


class _AddStream:
    """One open AddJobStream: messages written one at a time (grpc.aio allows one write at once), answers
    matched to them by batch id by a reader task. When the call ends, every add still waiting gets its
    error, and the stream is replaced by the next add."""

    def __init__(self, call: Any) -> None:
        self._call = call
        self._waiting: dict[int, asyncio.Future[Outcomes]] = {}
        self._next = 0
        self._writing = asyncio.Lock()
        self._opened = False
        self.broken: BaseException | None = None
        self._reader = asyncio.create_task(self._read(), name="qm-add-stream")

    async def send(self, requests: list[jobs_pb2.AddJobRequest]) -> Outcomes:
        if not self._opened:
            # Nothing is written before the server has accepted the call (it sends its headers at once): a
            # server without AddJobStream then ends it UNIMPLEMENTED cleanly, where a write racing that
            # refusal could end it INTERNAL.
            await self._call.initial_metadata()
            self._opened = True
            if self._call.done():
                await asyncio.wait([self._reader])
        if self.broken is not None:
            raise self.broken
        self._next += 1
        batch_id = self._next
        answer: asyncio.Future[Outcomes] = asyncio.get_running_loop().create_future()
        self._waiting[batch_id] = answer
        try:
            async with self._writing:
                # brief: jobs created as their requests say are answered without the job (adds.Answer).
                message = jobs_pb2.AddJobStreamRequest(batch_id=batch_id, items=requests, brief=True)
                await self._call.write(message)
        except (asyncio.InvalidStateError, grpc.aio.AioRpcError):
            # The call has ended (grpc.aio says so either way) and the message did not leave.
            self._waiting.pop(batch_id, None)
            await asyncio.wait([self._reader])
            ended = self.broken or QueueManagerError("the add stream ended", grpc.StatusCode.UNAVAILABLE)
            raise _Unsent(ended) from None
        except BaseException:
            self._waiting.pop(batch_id, None)
            raise
        return _counted(await answer, len(requests))

    async def _read(self) -> None:
        error: BaseException
        try:
            async for message in self._call:
                answer = self._waiting.pop(message.batch_id, None)
                if answer is not None and not answer.done():
                    answer.set_result(message.outcomes)
            error = QueueManagerError("the server ended the add stream", grpc.StatusCode.UNAVAILABLE)
        except grpc.aio.AioRpcError as exc:
            error = exc
        except asyncio.CancelledError:
            error = QueueManagerError("the client is closing", grpc.StatusCode.CANCELLED)
        self.broken = error
        waiting, self._waiting = self._waiting, {}
        for answer in waiting.values():
            if not answer.done():
                answer.set_exception(error)

    async def close(self) -> None:
        self._call.cancel()
        await asyncio.wait([self._reader])


class _Unsent(Exception):
    """A message not written because its stream had ended; error: why the stream ended."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def _stream_error(error: BaseException) -> BaseException:
    """What the callers of a broken stream see: a gRPC status as a `QueueManagerError` (a connection lost
    mid-stream reads UNAVAILABLE, errors.error_from_rpc), anything else as is."""
    return error_from_rpc(error) if isinstance(error, grpc.aio.AioRpcError) else error


def _counted(outcomes: Outcomes, adds: int) -> Outcomes:
    """The outcomes of `adds` adds; a server bug when their number differs (never guess which is which)."""
    if len(outcomes) != adds:
        raise QueueManagerError(
            f"the server answered {len(outcomes)} outcomes for {adds} adds", grpc.StatusCode.INTERNAL
        )
    return outcomes


def _deliver(batch: list[_Pending], outcomes: Outcomes) -> None:
    """Each caller of the batch gets its own outcome: its answer, or its error."""
    for p, outcome in zip(batch, outcomes, strict=True):
        if p.future.done():
            continue
        try:
            p.future.set_result(_response(outcome))
        except QueueManagerError as exc:
            p.future.set_exception(exc)


def _response(outcome: jobs_pb2.AddJobOutcome) -> Answer:
    """An add's answer, or its error raised."""
    kind = outcome.WhichOneof("outcome")
    if kind == "created":
        return outcome.created
    if kind == "added":
        return outcome.added
    raise error_from_status(outcome.error.code, outcome.error.message)


def _settle(p: _Pending, exc: BaseException) -> None:
    if not p.future.done():
        p.future.set_exception(exc)
