"""WorkerService: the worker stream, and the dispatcher that pushes jobs down it.

Protocol (one bidirectional stream per worker process, ``WorkerService/Connect``):

1. The worker's first message is ``hello`` (worker id, queues, concurrency, labels). Unknown queues end
   the stream with NOT_FOUND, a missing or malformed hello with INVALID_ARGUMENT. The server answers
   ``welcome`` with its id, the lease duration and the heartbeat interval.
2. Credits: ``report.credits = n`` lets the server send n more jobs. Each delivered job uses one credit;
   the server never sends more than granted. Workers return a credit with each finished job.
3. Jobs arrive as ``delivery`` messages, each holding every job claimed for that worker at that moment
   (one Lua call claims many). Each job carries a lease token and its expiry, and ``redelivery`` when an
   earlier start of the same attempt was lost.
4. Completions, failures (with ``do_not_retry``), progress, lease extensions, releases of unstarted
   jobs and abandoned (started, unfinished) jobs travel in ``report`` messages, batched. Each presents
   the job's lease token; a stale token changes nothing. The server answers with ``ack``: one result per
   extension (new expiry, or the rejection) and one per rejected completion, failure, progress or
   release (code FAILED_PRECONDITION for a stale lease, NOT_FOUND for a job that no longer exists).
   Accepted completions are not acked one by one.
5. Heartbeats are the extensions: the worker sends them every ``heartbeat_interval`` for every running job.
   A job whose lease runs out is recovered by the reaper (stalled count +1) and its late result rejected.
6. Server commands: ``DRAIN`` (the server is shutting down: finish or release what you hold, then
   half-close; reconnect later) and ``CANCEL_JOB``.
7. When the stream ends — the worker half-closes, crashes or the connection is cut — every job still
   leased to it goes back to waiting at once (stalled count +1, failing past the job's stall limit).
   Outcomes are processed in order before the server closes its side, so a worker that half-closes after
   its last report knows everything it reported was recorded when the stream ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

import grpc
from google.protobuf import json_format, struct_pb2
from queue_manager.v1 import worker_service_pb2 as pb
from queue_manager.v1 import worker_service_pb2_grpc as pb_grpc

from queue_manager_server import convert, validate
from queue_manager_server.engine import Engine
from queue_manager_server.errors import InvalidArgument, Unavailable
from queue_manager_server.services.errors import status_for, streaming

log = logging.getLogger("queue_manager_server.workers")

# Most jobs one claim call leases (one Lua call, one delivery message).
CLAIM_BATCH = 500
# The hello must arrive within this time.
HELLO_TIMEOUT_S = 30.0
# A served queue re-checks Redis at least this often even without notifications (missed pub/sub).
IDLE_RECHECK_S = 5.0
T = TypeVar("T", pb.JobCompletion, pb.JobFailure, pb.LeaseRef, pb.JobProgress)
_CODES = {
    -2: (grpc.StatusCode.NOT_FOUND, "job no longer exists"),
    -3: (grpc.StatusCode.FAILED_PRECONDITION, ""),
}


@dataclass(eq=False)
class WorkerSession:
    """One connected worker stream."""

    worker_id: str
    queues: list[str]
    concurrency: int
    outbound: asyncio.Queue[pb.ConnectResponse | None] = field(default_factory=asyncio.Queue)
    credits: int = 0
    # (queue, job id) -> lease token, for every job this worker holds.
    leases: dict[tuple[str, str], str] = field(default_factory=dict)
    closed: bool = False
    draining: bool = False

    def send(self, message: pb.ConnectResponse) -> None:
        if not self.closed:
            self.outbound.put_nowait(message)


def _lease_ref(queue: str, job_id: str, token: str) -> pb.LeaseRef:
    return pb.LeaseRef(queue_name=queue, job_id=job_id, lease_token=token)


def _rejection(queue: str, job_id: str, token: str, code: int) -> pb.ReportItemResult:
    status, message = _CODES.get(code, (grpc.StatusCode.UNKNOWN, f"code {code}"))
    if code == -3:
        message = (
            f"lease of job {job_id!r} in queue {queue!r} is not held by this token (expired or recovered)"
        )
    return pb.ReportItemResult(lease=_lease_ref(queue, job_id, token), code=status.value[0], message=message)


class Dispatcher:
    """Claims jobs for connected workers, one loop per served queue, woken by events instead of polling."""

    def __init__(self, engine: Engine, lease_ms: int) -> None:
        self.engine = engine
        self.lease_ms = lease_ms
        self.sessions: dict[str, set[WorkerSession]] = defaultdict(set)
        self._wake: dict[str, asyncio.Event] = {}
        self._loops: dict[str, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[object]] = set()
        self.stopping = False

    def register(self, s: WorkerSession) -> None:
        for q in s.queues:
            self.sessions[q].add(s)
            if q not in self._loops or self._loops[q].done():
                self._wake[q] = asyncio.Event()
                self._loops[q] = asyncio.create_task(self._serve(q), name=f"dispatch:{q}")
            self.wake(q)

    def unregister(self, s: WorkerSession) -> None:
        for q in s.queues:
            self.sessions[q].discard(s)
            self.wake(q)

    def wake(self, queue: str) -> None:
        ev = self._wake.get(queue)
        if ev is not None:
            ev.set()

    def all_sessions(self) -> set[WorkerSession]:
        return {s for group in self.sessions.values() for s in group}

    def spawn(self, coro: object, name: str) -> None:
        """Runs work that must finish even if the stream handler that started it is cancelled."""
        task: asyncio.Task[object] = asyncio.create_task(coro, name=name)  # type: ignore[arg-type]
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _serve(self, queue: str) -> None:
        wake = self._wake[queue]
        while self.sessions[queue] and not self.stopping:
            wake.clear()
            timeout = IDLE_RECHECK_S
            try:
                timeout = await self._dispatch_once(queue)
            except Exception as exc:
                code, message = status_for(exc)
                log.warning("dispatch failed", extra={"queue": queue, "status": code.name, "error": message})
                timeout = 1.0
            if timeout == 0:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout)
        self._loops.pop(queue, None)

    async def _dispatch_once(self, queue: str) -> float:
        """Claims for every session with credit. Returns how long to wait (0 = go again at once)."""
        more = False
        wait = IDLE_RECHECK_S
        for s in list(self.sessions[queue]):
            if s.closed or s.draining or s.credits <= 0:
                continue
            take = min(s.credits, CLAIM_BATCH)
            s.credits -= take
            token = secrets.token_hex(8)
            try:
                res = await self.engine.claim(queue, take, token, s.worker_id, self.lease_ms)
            finally:
                s.credits += take
            if res.code == 1:  # paused: resume publishes a notification
                return IDLE_RECHECK_S
            if res.code == 2:  # rate limited
                return max(res.retry_after_ms / 1000, 0.001)
            if res.jobs:
                s.credits -= len(res.jobs)
                if s.closed:
                    # The worker left while we claimed: hand the jobs straight back, unstarted.
                    self.spawn(
                        self.engine.release(queue, [(j.id, token) for j in res.jobs], False), "release"
                    )
                    continue
                for j in res.jobs:
                    s.leases[(queue, j.id)] = token
                s.send(
                    pb.ConnectResponse(
                        delivery=pb.JobDelivery(jobs=[convert.leased_job(queue, j, token) for j in res.jobs])
                    )
                )
                if len(res.jobs) == take:
                    more = True
            if res.next_delayed_ms >= 0:
                wait = min(wait, max((res.next_delayed_ms - res.now_ms) / 1000, 0.0) + 0.001)
        return 0 if more else wait

    async def stop(self) -> None:
        self.stopping = True
        for ev in self._wake.values():
            ev.set()
        loops = list(self._loops.values())
        for t in loops:
            t.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)


class WorkerService(pb_grpc.WorkerServiceServicer):
    def __init__(
        self,
        engine: Engine,
        dispatcher: Dispatcher,
        server_id: str,
        lease_ms: int,
        heartbeat_ms: int,
        max_payload: int,
    ) -> None:
        self.engine = engine
        self.dispatcher = dispatcher
        self.server_id = server_id
        self.lease_ms = lease_ms
        self.heartbeat_ms = heartbeat_ms
        self.max_payload = max_payload
        self.accepting = True
        # Set whenever a worker reports or leaves, so shutdown can wait for leases to drain.
        self.progress = asyncio.Event()
        # Set by a second shutdown signal: stop waiting for in-flight jobs.
        self.hurry = asyncio.Event()

    @streaming
    async def Connect(
        self, request_iterator: AsyncIterator[pb.ConnectRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ConnectResponse]:
        if not self.accepting:
            raise Unavailable("the server is shutting down; connect to another server or retry shortly")
        session = await self._hello(request_iterator)
        yield pb.ConnectResponse(
            welcome=pb.ServerWelcome(
                server_id=self.server_id,
                lease_duration=convert.ms_duration(self.lease_ms),
                heartbeat_interval=convert.ms_duration(self.heartbeat_ms),
            )
        )
        log.info(
            "worker connected", extra={"worker_id": session.worker_id, "queues": ",".join(session.queues)}
        )
        reader = asyncio.create_task(self._read(session, request_iterator), name=f"read:{session.worker_id}")
        self.dispatcher.register(session)
        try:
            while (message := await session.outbound.get()) is not None:
                yield message
        finally:
            session.closed = True
            self.progress.set()
            self.dispatcher.unregister(session)
            reader.cancel()
            self.dispatcher.spawn(self._release_all(session, stalled=True), f"release:{session.worker_id}")
            log.info(
                "worker disconnected", extra={"worker_id": session.worker_id, "held": len(session.leases)}
            )

    async def _hello(self, requests: AsyncIterator[pb.ConnectRequest]) -> WorkerSession:
        try:
            first = await asyncio.wait_for(anext(requests), HELLO_TIMEOUT_S)
        except (StopAsyncIteration, TimeoutError):
            raise InvalidArgument("hello", "the first message on the worker stream must be a hello") from None
        if first.WhichOneof("kind") != "hello":
            raise InvalidArgument("hello", "the first message on the worker stream must be a hello")
        h = first.hello
        validate.text(h.worker_id, "hello.worker_id")
        if not h.queues:
            raise InvalidArgument("hello.queues", "name at least one queue to take jobs from")
        queues = list(
            dict.fromkeys(validate.queue_name(q, f"hello.queues[{i}]") for i, q in enumerate(h.queues))
        )
        for q in queues:
            await self.engine.get_queue(q)
        return WorkerSession(worker_id=h.worker_id, queues=queues, concurrency=h.concurrency)

    async def _read(self, s: WorkerSession, requests: AsyncIterator[pb.ConnectRequest]) -> None:
        try:
            async for message in requests:
                if message.WhichOneof("kind") != "report":
                    continue
                await self._report(s, message.report)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            code, msg = status_for(exc)
            log.info(
                "worker stream ended", extra={"worker_id": s.worker_id, "status": code.name, "error": msg}
            )
        s.outbound.put_nowait(None)

    async def _report(self, s: WorkerSession, r: pb.WorkerReport) -> None:
        results: list[pb.ReportItemResult] = []
        bad_results: list[tuple[str, str, str, str, bool]] = []
        if r.completions:
            for queue, items in _by_queue(r.completions):
                args, accepted = [], []
                for c in items:
                    s.leases.pop((queue, c.job_id), None)
                    try:
                        body, ct = convert.payload_in(c.result, "result", self.max_payload)
                    except InvalidArgument as exc:
                        # An unstorable result fails the attempt instead of breaking the stream.
                        bad_results.append((c.job_id, c.lease_token, f"result rejected: {exc}", "", False))
                        continue
                    args.append((c.job_id, c.lease_token, body, ct))
                    accepted.append(c)
                codes = await self.engine.complete(queue, args) if args else []
                results += [
                    _rejection(queue, c.job_id, c.lease_token, code)
                    for c, code in zip(accepted, codes, strict=True)
                    if code
                ]
                if bad_results:
                    await self.engine.fail(queue, bad_results)
                    bad_results.clear()
        if r.failures:
            for queue, fitems in _by_queue(r.failures):
                for f in fitems:
                    s.leases.pop((queue, f.job_id), None)
                outcomes = await self.engine.fail(
                    queue,
                    [
                        (f.job_id, f.lease_token, f.message[:10_000], f.stacktrace[:50_000], f.do_not_retry)
                        for f in fitems
                    ],
                )
                results += [
                    _rejection(queue, f.job_id, f.lease_token, code)
                    for f, (code, _) in zip(fitems, outcomes, strict=True)
                    if code < 0
                ]
        if r.extensions:
            for queue, eitems in _by_queue(r.extensions):
                ext = await self.engine.extend(
                    queue, [(e.job_id, e.lease_token) for e in eitems], self.lease_ms
                )
                for e, (code, expiry) in zip(eitems, ext, strict=True):
                    if code:
                        results.append(_rejection(queue, e.job_id, e.lease_token, code))
                        s.leases.pop((queue, e.job_id), None)
                    else:
                        results.append(
                            pb.ReportItemResult(lease=e, lease_expire_time=convert.ms_timestamp(expiry))
                        )
        if r.progress:
            for queue, pitems in _by_queue(r.progress):
                codes = await self.engine.progress(
                    queue, [(p.lease.job_id, p.lease.lease_token, _json(p.progress)) for p in pitems]
                )
                results += [
                    _rejection(queue, p.lease.job_id, p.lease.lease_token, c)
                    for p, c in zip(pitems, codes, strict=True)
                    if c
                ]
        for refs, stalled in ((r.releases, False), (r.abandoned, True)):
            for queue, ritems in _by_queue(refs):
                for x in ritems:
                    s.leases.pop((queue, x.job_id), None)
                codes = await self.engine.release(
                    queue, [(x.job_id, x.lease_token) for x in ritems], stalled=stalled
                )
                results += [
                    _rejection(queue, x.job_id, x.lease_token, c)
                    for x, c in zip(ritems, codes, strict=True)
                    if c < 0
                ]
        self.progress.set()
        if results:
            s.send(pb.ConnectResponse(ack=pb.ReportAck(results=results)))
        if r.credits:
            s.credits += r.credits
            for q in s.queues:
                self.dispatcher.wake(q)

    async def _release_all(self, s: WorkerSession, stalled: bool) -> None:
        held = list(s.leases.items())
        s.leases.clear()
        by_queue: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for (queue, job_id), token in held:
            by_queue[queue].append((job_id, token))
        for queue, items in by_queue.items():
            try:
                await self.engine.release(queue, items, stalled=stalled)
            except Exception as exc:
                log.warning("release failed; leases will expire", extra={"queue": queue, "error": str(exc)})

    # ---- shutdown -----------------------------------------------------------------------------

    async def drain(self, grace_s: float) -> None:
        """Stops new work, tells workers to drain, waits for their leases, then releases what is left."""
        self.accepting = False
        sessions = self.dispatcher.all_sessions()
        for s in sessions:
            s.draining = True
            s.send(
                pb.ConnectResponse(
                    command=pb.ServerCommand(type=pb.SERVER_COMMAND_TYPE_DRAIN, reason="server shutting down")
                )
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while (
            any(s.leases and not s.closed for s in sessions)
            and not self.hurry.is_set()
            and (left := deadline - loop.time()) > 0
        ):
            self.progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.progress.wait(), left)
        for s in sessions:
            if not s.closed:
                await self._release_all(s, stalled=True)
                s.outbound.put_nowait(None)


def _by_queue(items: Iterable[T]) -> list[tuple[str, list[T]]]:
    """Groups report items by queue (each script call covers one queue)."""
    groups: dict[str, list[T]] = defaultdict(list)
    for item in items:
        lease = item.lease if isinstance(item, pb.JobProgress) else item
        groups[lease.queue_name].append(item)
    return list(groups.items())


def _json(value: struct_pb2.Value) -> str:
    return json.dumps(json_format.MessageToDict(value), separators=(",", ":"))
