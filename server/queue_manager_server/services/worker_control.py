"""ControlWorker: quiet, resume, stop or resize one worker, on whichever server holds its stream.

The server that takes the call applies it itself when it holds the worker's stream. Otherwise it looks the
worker up in the registry (engine/workers.py): a worker listed nowhere is NOT_FOUND at once. For a listed
one it publishes a request on the engine's channel (``k {json}``, components/notifier.py), which every
server receives; the server holding the stream (or, when none does, the server the registry names) applies
it and publishes the answer the same way. No answer within ANSWER_TIMEOUT_S means the listed server is
gone (killed, or cut from Redis: its entries expire within three heartbeat intervals): NOT_FOUND too.

Applying a command to a session (`WorkerControl.apply`):

- QUIET: the dispatcher delivers nothing more to the stream (`WorkerSession.held`); credits the worker
  sends are kept, so RESUME delivers against them at once. The worker is told (SERVER_COMMAND_TYPE_QUIET)
  so that a stream it opens later says ``quiet`` in its hello.
- RESUME: deliveries start again; the worker's queues are woken.
- STOP: as the worker's own stop (nothing delivered, credits dropped); the worker is told
  (SERVER_COMMAND_TYPE_STOP), finishes or releases what it holds, half-closes and does not reconnect.
- SET_CONCURRENCY: `WorkerSession.resize`; the command carries the credits the server took back.

A worker that did not list the command in its hello (``WorkerHello.commands``: an older client, or one that
implements only some) is refused with FAILED_PRECONDITION and sent nothing; so is anything but STOP to a
stopping worker. The registry entry is rewritten before the answer, so ListWorkers shows the new state as
soon as ControlWorker returns.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

import grpc

from queue_manager.v1 import metrics_pb2
from queue_manager.v1 import queue_service_pb2 as pb
from queue_manager.v1 import worker_service_pb2 as wpb
from queue_manager_server import validate
from queue_manager_server.engine import Engine
from queue_manager_server.engine.workers import WorkerStore
from queue_manager_server.errors import InvalidArgument, QueueManagerError, WorkerNotFound, WrongState
from queue_manager_server.metrics_convert import WORKER_STATES
from queue_manager_server.services.dispatcher import Dispatcher, WorkerSession
from queue_manager_server.services.errors import status_for, unary
from queue_manager_server.services.registry import registry_entry, registry_ttl_ms

log = logging.getLogger("queue_manager_server.worker_control")

# How long the server taking the call waits for the server holding the worker's stream to answer.
ANSWER_TIMEOUT_S = 5.0
# How long the server the registry names, holding no stream of the worker, waits before it answers that none
# is connected: the worker may have reconnected to another server meanwhile (the entry is rewritten at the
# next heartbeat), whose answer, sent at once, is the one the caller takes.
NOT_HERE_DELAY_S = 1.0
# Highest concurrency a worker may be given (the Python worker's bound too: queue_manager/checks.py).
MAX_CONCURRENCY = 100_000

# Action -> (the command the worker is sent, its name in messages).
COMMANDS: dict[int, tuple[wpb.ServerCommandType.ValueType, str]] = {
    pb.WORKER_CONTROL_ACTION_QUIET: (wpb.SERVER_COMMAND_TYPE_QUIET, "quiet"),
    pb.WORKER_CONTROL_ACTION_RESUME: (wpb.SERVER_COMMAND_TYPE_RESUME, "resume"),
    pb.WORKER_CONTROL_ACTION_STOP: (wpb.SERVER_COMMAND_TYPE_STOP, "stop"),
    pb.WORKER_CONTROL_ACTION_SET_CONCURRENCY: (wpb.SERVER_COMMAND_TYPE_SET_CONCURRENCY, "set concurrency"),
}
# A refusal carried back from the server holding the stream: the gRPC status name -> the domain error.
_ERRORS: dict[str, type[QueueManagerError]] = {
    grpc.StatusCode.NOT_FOUND.name: WorkerNotFound,
    grpc.StatusCode.FAILED_PRECONDITION.name: WrongState,
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a command did: the server holding the stream, the worker's state and concurrency after it, and
    whether anything changed."""

    server_id: str
    state: str
    concurrency: int
    changed: bool


def check_request(request: pb.ControlWorkerRequest) -> tuple[str, int, int]:
    """The worker id, action and concurrency of a request, checked."""
    worker_id = validate.text(request.worker_id, "worker_id")
    action = request.action
    if action not in COMMANDS:
        raise InvalidArgument(
            "action", "choose QUIET, RESUME, STOP or SET_CONCURRENCY (WORKER_CONTROL_ACTION_…)"
        )
    n = request.concurrency
    if action == pb.WORKER_CONTROL_ACTION_SET_CONCURRENCY:
        if not 1 <= n <= MAX_CONCURRENCY:
            raise InvalidArgument("concurrency", f"must be from 1 to {MAX_CONCURRENCY:,}, got {n}")
    elif n:
        raise InvalidArgument("concurrency", "is only given with SET_CONCURRENCY; leave it 0")
    return worker_id, action, n


class WorkerControl:
    """Applies control commands to this server's worker streams, and carries them to other servers."""

    def __init__(
        self, engine: Engine, dispatcher: Dispatcher, store: WorkerStore, server_id: str, heartbeat_ms: int
    ) -> None:
        self.engine = engine
        self.dispatcher = dispatcher
        self.store = store
        self.server_id = server_id
        self.ttl_ms = registry_ttl_ms(heartbeat_ms)
        self.answer_timeout_s = ANSWER_TIMEOUT_S
        # Requests this server published, by id, until their answer comes.
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def control(self, worker_id: str, action: int, concurrency: int) -> Outcome:
        """Applies the action to the worker wherever its stream is.

        Raises:
            WorkerNotFound: No live server holds a stream of the worker.
            WrongState: The worker does not obey the command, or is stopping.
        """
        s = self.dispatcher.session_of(worker_id)
        if s is not None:
            return await self.apply(s, action, concurrency)
        _, workers = await self.store.list_workers()
        entry = next((w for w in workers if w.worker_id == worker_id), None)
        if entry is None or entry.server_id == self.server_id:
            raise WorkerNotFound(
                f"no connected worker has id {worker_id!r}; "
                "`qm workers list` (ListWorkers) lists the connected ones"
            )
        request_id = secrets.token_hex(8)
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = answer
        message = {
            "t": "q",
            "id": request_id,
            "from": self.server_id,
            "sid": entry.server_id,
            "w": worker_id,
            "a": action,
            "n": concurrency,
        }
        try:
            await self.engine.publish_control(json.dumps(message, separators=(",", ":")))
            async with asyncio.timeout(self.answer_timeout_s):
                reply = await answer
        except TimeoutError:
            raise WorkerNotFound(
                f"worker {worker_id!r} is listed on server {entry.server_id!r}, which did not answer within "
                f"{self.answer_timeout_s:g}s: that server has stopped or lost the job store (its workers "
                "drop out of the list within three heartbeat intervals); the worker reconnects elsewhere"
            ) from None
        finally:
            self._pending.pop(request_id, None)
        error = reply.get("err")
        if error is not None:
            raise _ERRORS.get(error, WrongState)(str(reply.get("msg", "")))
        return Outcome(str(reply["sid"]), str(reply["st"]), int(reply["n"]), bool(reply["ch"]))

    async def apply(self, s: WorkerSession, action: int, concurrency: int) -> Outcome:
        """Applies the action to a stream of this server and tells its worker; rewrites its registry entry."""
        command_type, name = COMMANDS[action]
        if command_type not in s.commands:
            who = " ".join(p for p in (s.hello.language, s.hello.version) if p) or "an unnamed client"
            raise WrongState(
                f"worker {s.worker_id!r} ({who}) does not take {name} commands: its hello does not list them "
                "(a client older than worker control, or one that does not implement this command); "
                "upgrade its client library"
            )
        if s.draining and action != pb.WORKER_CONTROL_ACTION_STOP:
            raise WrongState(f"worker {s.worker_id!r} is stopping; it takes no other command")
        command = wpb.ServerCommand(type=command_type, reason="asked by an operator (ControlWorker)")
        changed = True
        if action == pb.WORKER_CONTROL_ACTION_QUIET:
            changed = not s.quiet
            s.set_quiet(True)
        elif action == pb.WORKER_CONTROL_ACTION_RESUME:
            changed = s.quiet
            s.set_quiet(False)
            for q in s.queues:
                self.dispatcher.wake(q)
        elif action == pb.WORKER_CONTROL_ACTION_STOP:
            changed = not s.draining
            s.stop_taking()
        else:
            changed = concurrency != s.concurrency
            command.concurrency = concurrency
            command.revoked_credits = s.resize(concurrency)
        if changed:
            s.send(wpb.ConnectResponse(command=command))
            told = {"worker_id": s.worker_id, "command": name, "state": s.state}
            log.info("worker told by an operator", extra=told)
            try:
                await self.store.workers_seen(
                    [registry_entry(s, self.server_id, time.monotonic())], [], self.ttl_ms
                )
            except Exception as exc:  # the registry component writes it on its next tick
                log.info("cannot write worker entry", extra={"worker_id": s.worker_id, "error": str(exc)})
        return Outcome(self.server_id, s.state, s.concurrency, changed)

    # ---- requests between servers -------------------------------------------------------------------

    def deliver(self, data: bytes) -> None:
        """A ``k`` message from the engine's channel (components/notifier.py): a request to apply if this
        server holds the worker's stream (or is the server the registry names), or an answer awaited here."""
        try:
            message = json.loads(data)
            kind = message["t"]
        except (ValueError, KeyError, TypeError):
            text = data[:200].decode(errors="replace")
            log.warning("malformed worker control message", extra={"data": text})
            return
        if kind == "a":
            waiting = self._pending.get(str(message.get("id")))
            if waiting is not None and not waiting.done():
                waiting.set_result(message)
            return
        if kind != "q" or message.get("from") == self.server_id:
            return
        s = self.dispatcher.session_of(str(message.get("w")))
        if s is None and message.get("sid") != self.server_id:
            return  # another server holds it, or the one named answers that none does
        task = asyncio.create_task(self._answer(message, s), name="worker-control")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        """Ends the answers under way (App.stop, before Redis closes: an answer published after the close
        would open a connection nobody closes)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _answer(self, request: dict[str, Any], s: WorkerSession | None) -> None:
        answer: dict[str, Any] = {"t": "a", "id": request.get("id")}
        try:
            if s is None:
                await asyncio.sleep(NOT_HERE_DELAY_S)
                raise WorkerNotFound(
                    f"worker {request.get('w')!r} is no longer connected (its stream ended just now); "
                    "`qm workers list` (ListWorkers) lists the connected ones"
                )
            done = await self.apply(s, int(request["a"]), int(request["n"]))
            answer |= {"sid": done.server_id, "st": done.state, "n": done.concurrency, "ch": done.changed}
        except asyncio.CancelledError:
            raise  # the server is stopping: the caller's server times out and says so
        except Exception as exc:
            code, text = status_for(exc)
            answer |= {"err": code.name, "msg": text}
        try:
            await self.engine.publish_control(json.dumps(answer, separators=(",", ":")))
        except Exception as exc:  # the caller's server times out and says so
            log.warning("cannot answer worker control", extra={"error": str(exc)})


class WorkerControlHandlers:
    """ControlWorker (part of `QueueService`)."""

    # Set by the app before the server starts.
    worker_control: WorkerControl | None

    @unary
    async def ControlWorker(
        self, request: pb.ControlWorkerRequest, context: grpc.aio.ServicerContext
    ) -> pb.ControlWorkerResponse:
        worker_id, action, concurrency = check_request(request)
        if self.worker_control is None:
            raise WorkerNotFound("this server serves no workers")
        done = await self.worker_control.control(worker_id, action, concurrency)
        return pb.ControlWorkerResponse(
            server_id=done.server_id,
            state=WORKER_STATES.get(done.state, metrics_pb2.WORKER_STATE_ACTIVE),
            concurrency=done.concurrency,
            changed=done.changed,
        )
