"""WorkerService: the worker stream, and the dispatcher that pushes jobs down it.

Protocol (one bidirectional stream per worker process, ``WorkerService/Connect``):

1. The worker's first message is ``hello`` (worker id, queues, concurrency, labels). Unknown queues end
   the stream with NOT_FOUND, a missing or malformed hello with INVALID_ARGUMENT. The server answers
   ``welcome`` with its id, the lease duration and the heartbeat interval.
2. Credits: ``report.credits = n`` lets the server send n more jobs. Each delivered job uses one credit;
   the server never sends more than granted. Workers return a credit with each finished job.
3. Jobs arrive as ``delivery`` messages, each holding every job claimed for that worker at that moment
   (one Lua call claims many). Each job carries a lease token and its expiry, and ``redelivery`` when an
   earlier start of the same attempt was lost. Jobs claimed together share one token, so a job is named
   by its queue and id everywhere (reports, the session's held leases, the worker's running jobs).
4. Completions, failures (with ``do_not_retry``; ``timed_out`` for a run the worker stopped at the job's
   timeout: recorded and counted as timed out, not raised), progress, log lines, lease extensions,
   releases of unstarted jobs and abandoned (started, unfinished) jobs travel in ``report`` messages,
   batched (log lines and progress are stored before the outcomes of the same report). Each presents
   the job's lease token; a stale token changes nothing. The server answers with ``ack``: one result per
   extension (new expiry, or the rejection) and one per rejected completion, failure, progress, log lines or
   release (code FAILED_PRECONDITION for a stale lease, NOT_FOUND for a job that no longer exists).
   Accepted completions are not acked one by one.
5. Heartbeats are the extensions: the worker sends them every ``heartbeat_interval`` for every running job.
   A job whose lease runs out is recovered by the reaper (stalled count +1) and its late result rejected.
   A worker holding jobs that has sent nothing for a whole lease is sent no job until it reports again
   (Dispatcher._silent): the jobs recovered from a frozen worker are not sent straight back to it.
   With each heartbeat the worker may send ``report.stats`` (its CPU and memory), busy or idle. From the
   welcome until the stream ends the worker is listed in the worker registry (``ListWorkers``) with its
   hello, its jobs in flight and its last stats (services/registry.py).
6. Server command ``DRAIN``: the server is shutting down; finish or release what you hold, then
   half-close, and reconnect later. No delivery follows the command.
   Operators' commands (ControlWorker, services/worker_control.py), sent only to a worker whose hello lists
   them in ``commands`` (others are refused FAILED_PRECONDITION and sent nothing): ``QUIET`` — no delivery
   until ``RESUME``, credits kept (``WorkerSession.held``); the worker stays connected and says ``quiet``
   in the hello of a later stream. ``STOP`` — as DRAIN, but the worker does not reconnect. ``SET_CONCURRENCY``
   — ``command.concurrency`` from now on; the server drops up to the decrease of the credits it holds
   (``revoked_credits``) and the worker takes back the rest from credits not sent and finished jobs.
7. A worker that shuts down sends ``report.stop``; the server stops delivering and answers with an ack
   whose ``delivery_stopped`` is set. Jobs delivered before it are the worker's to run or release; it
   half-closes only after it, so no job is ever in flight towards a closed stream.
8. When the stream ends — the worker half-closes, crashes or the connection is cut — every job still
   leased to it goes back to waiting at once (stalled count +1, failing past the job's stall limit).
   Outcomes are processed in order before the server closes its side, so a worker that half-closes after
   its last report knows everything it reported was recorded when the stream ends. A job whose cancel was
   asked ends cancelled instead.
9. Server command ``CANCEL_JOB`` (``command.job`` names the lease, ``reason`` says why): stop that run —
   its job was cancelled (``CancelJob``), or it passed its timeout. The server of whichever process holds
   the lease sends it (the ``c`` or ``t`` event on the engine's channel reaches every server), and again
   with the ack of each extension of a run whose cancel is pending (a lost event costs a heartbeat
   interval). The worker stops the run and reports it in ``report.cancelled``; the job then ends
   cancelled. A report about the job that arrives first is recorded as usual (a completion wins; a failure
   with attempts left ends it cancelled). A worker that never answers loses the lease, and the reaper ends
   the job cancelled.
   For a timeout the command says ``timed_out``: the server has already failed the attempt as timed out
   (retried per attempts and backoff), and the worker ends the run as at its own timeout of the job (a
   failure with ``timed_out``); its late report, whatever it is, is rejected with FAILED_PRECONDITION, so
   the attempt counts once.
10. A failure with ``retry_after`` (the processor was told to slow down) sends the job back to delayed for
   that long without using an attempt (the next run is no redelivery), and no job of the queue starts on
   any server until then.
11. A ``delays`` item (``JobDelay``: the run asked to run again later, a durable sleep between steps) does
   the same for its job alone, holding nothing else back, and replaces the job's data with its ``data``
   (when set) in the same script call; data that cannot be stored fails the attempt instead.
12. A run can end through a unary call instead of a report: ``WaitForEvent`` and ``WaitForChildren`` park
   the job (the call changes Redis). The server that takes the call forgets the lease if the worker's
   stream is its own (``Dispatcher.lease_ended``); the worker also names the run in ``report.parked`` on its
   stream, for when the call reached another server. The server forgets those leases (they stop counting
   against ``--max-worker-credits``, the in-flight figure and a drain's wait), changes nothing in Redis and
   acks nothing; a lease the stream does not hold is ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator

import grpc

from queue_manager.v1 import worker_service_pb2 as pb
from queue_manager.v1 import worker_service_pb2_grpc as pb_grpc
from queue_manager_server import convert, validate
from queue_manager_server.engine import Engine
from queue_manager_server.engine.workers import WorkerStore
from queue_manager_server.errors import InvalidArgument, Unavailable
from queue_manager_server.services.dispatcher import Dispatcher, WorkerSession
from queue_manager_server.services.errors import status_for, streaming
from queue_manager_server.services.registry import registry_entry, registry_ttl_ms
from queue_manager_server.services.reports import ReportHandler

log = logging.getLogger("queue_manager_server.workers")

# How long a shutdown waits, once no drained worker holds a lease, for the drained workers to half-close.
DRAINED_HALF_CLOSE_S = 1.0

# The hello must arrive within this time.
HELLO_TIMEOUT_S = 30.0


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
        self.reports = ReportHandler(engine, lease_ms, max_payload, dispatcher.exemplars)
        self.registry = WorkerStore(engine.scripts, engine.prefix)
        self.accepting = True
        # Set whenever a worker reports or leaves, so shutdown can wait for leases to drain.
        self.progress = asyncio.Event()
        # Set by a second shutdown signal: stop waiting for in-flight jobs.
        self.hurry = asyncio.Event()
        # Worker streams whose handler has not finished its clean-up yet (streams_ended).
        self._open_streams = 0
        self._streams_ended = asyncio.Event()
        self._streams_ended.set()
        # Bounds of one stream (app.py sets them from the settings; docs/security.md).
        self.max_credits = 10_000
        self.max_buffer = 1_000

    @streaming
    async def Connect(
        self, request_iterator: AsyncIterator[pb.ConnectRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ConnectResponse]:
        if not self.accepting:
            raise Unavailable("the server is shutting down; connect to another server or retry shortly")
        session = await self._hello(request_iterator)
        # Listed from the welcome on; components/worker_registry.py keeps the entry fresh, then removes it.
        entry = registry_entry(session, self.server_id, time.monotonic())
        await self.registry.workers_seen([entry], [], registry_ttl_ms(self.heartbeat_ms))
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
        session.task, session.max_buffer = asyncio.current_task(), self.max_buffer
        self._open_streams += 1
        self._streams_ended.clear()
        try:
            self.dispatcher.register(session)
            while (message := await session.outbound.get()) is not None:
                session.writing_since = time.monotonic()  # until the worker takes it (stream_guard.py)
                yield message
                session.writing_since = 0.0
        finally:
            session.closed = True
            self.progress.set()
            self.dispatcher.unregister(session)
            reader.cancel()
            if not session.keep_leases:
                self.dispatcher.spawn(self._recover_held(session), f"release:{session.worker_id}")
            self.dispatcher.spawn(self._unlist(session), f"unlist:{session.worker_id}")
            self._open_streams -= 1  # its clean-up is the dispatcher's now (streams_ended)
            if not self._open_streams:
                self._streams_ended.set()
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
        validate.worker_hello(h)
        if not h.queues:
            raise InvalidArgument("hello.queues", "name at least one queue to take jobs from")
        queues = list(
            dict.fromkeys(validate.queue_name(q, f"hello.queues[{i}]") for i, q in enumerate(h.queues))
        )
        for q in queues:
            await self.engine.get_queue(q)
        session = WorkerSession(worker_id=h.worker_id, queues=queues, concurrency=h.concurrency, hello=h)
        session.order, session.weights = validate.queue_shares(h, queues)
        session.tier = h.tier
        session.labels = tuple(x for pair in h.labels.items() for x in pair)
        session.commands = frozenset(h.commands)
        session.set_quiet(h.quiet)
        return session

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
        s.reported_at = time.monotonic()
        self.dispatcher.heard(s)
        if r.HasField("stats"):  # sent with heartbeats; the registry component writes it out
            s.stats = r.stats
        if r.stop:
            # From here the dispatcher delivers nothing to this session (it checks after every claim too).
            s.stop_taking()
        # Runs the worker ended through a call that parked their jobs (WaitForEvent, WaitForChildren): when
        # the call reached another server, only this report tells this one. Forgotten before the credits
        # below, which the leases held bound. A lease the session does not hold is ignored rather than
        # rejected: the server that took the call forgot it already when the stream is its own, a reconnected
        # stream holds none of its predecessor's leases, and a newer lease of the job (woken and sent here
        # again) has another token; the call has parked the job, so there is nothing to refuse or to undo.
        for ref in r.parked:
            s.forget(ref.queue_name, ref.job_id, ref.lease_token)
        if r.credits and not s.draining:
            # Credits first: the next claim overlaps with recording this report's outcomes. Jobs held and
            # owed are bounded (--max-worker-credits): a worker that grants more than it reads cannot make
            # the server buffer a whole queue for it.
            s.credits = max(0, min(s.credits + r.credits, self.max_credits - len(s.leases)))
            for q in s.queues:
                self.dispatcher.credit(q, s)
        results = await self.reports.handle(s, r)
        self.progress.set()
        if results or r.stop:
            s.send(pb.ConnectResponse(ack=pb.ReportAck(results=results, delivery_stopped=r.stop)))

    async def _unlist(self, s: WorkerSession) -> None:
        """Removes the worker from the registry (if it failed, the entry expires in three heartbeats)."""
        try:
            await self.registry.workers_seen([], [(s.worker_id, s.session_id)], 0)
        except Exception as exc:
            log.info("cannot unlist worker", extra={"worker_id": s.worker_id, "error": str(exc)})

    async def _recover_held(self, s: WorkerSession) -> None:
        """The jobs a worker whose stream ended on its own still held go back, each counting a stall."""
        held = list(s.leases.items())
        s.leases.clear()
        by_queue: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for (queue, job_id), token in held:
            by_queue[queue].append((job_id, token))
        for queue, items in by_queue.items():
            try:
                await self.engine.release(queue, items, stalled=True)
            except Exception as exc:
                log.warning("release failed; leases will expire", extra={"queue": queue, "error": str(exc)})

    # ---- shutdown -----------------------------------------------------------------------------

    async def streams_ended(self, timeout: float) -> None:
        """Returns once every worker stream's handler has run its clean-up (the release of what it held and
        its unlisting, handed to the dispatcher), or after timeout seconds. The gRPC server's stop returns
        before the handlers it cancelled have run theirs: a stopping server waits here before it stops the
        dispatcher (which waits for that work) and closes Redis (work after that would open connections
        of its own that nobody closes)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._streams_ended.wait()

    async def drain(self, grace_s: float) -> None:
        """Stops new work, tells workers to drain, waits for their leases, then ends the streams of the
        workers still running jobs with those leases held: the runs go on, and each worker carries its
        leases over to the next server it connects to (WorkerSession.keep_leases). Releasing them here
        would count a stall against each job and run it a second time beside the run that goes on."""
        self.accepting = False
        sessions = self.dispatcher.all_sessions()
        for s in sessions:
            s.stop_taking()
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
        # A drained worker holding nothing half-closes on its own, right after its last report: a moment for
        # that, so its stream ends by its half-close rather than by the server cutting across it.
        settle = min(deadline, loop.time() + DRAINED_HALF_CLOSE_S)
        while (
            any(not s.closed for s in sessions)
            and not self.hurry.is_set()
            and (left := settle - loop.time()) > 0
        ):
            self.progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.progress.wait(), left)
        for s in sessions:
            if not s.closed:
                s.keep_leases = True
                if s.leases:
                    log.info(
                        "worker still running jobs at shutdown; leases left for its next stream",
                        extra={"worker_id": s.worker_id, "held": len(s.leases)},
                    )
                s.outbound.put_nowait(None)
