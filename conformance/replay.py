"""Replays recorded worker streams to a worker, with no server and no Redis: ``python -m conformance.replay
STREAM.jsonl [STREAM.jsonl …] --worker "COMMAND"`` (conformance/README.md, "Recording and replaying").

A recording (recording.py) holds both sides of a worker's stream. The replay plays the server's side back to
the worker under test, on a loopback gRPC port of its own: each recorded server message is sent once the
worker has sent what came before it in the recording, and what the worker sends is checked, line by line,
against the recording's shape (transcript.py: the lines the protocol fixes, without heartbeats, stats, log
lines and later credits). The first line that differs, or a line that does not come within the timeout,
fails the replay and says which. So a worker bug met once in a recorded session can be run again at will,
and a worker in a new language can be checked against sessions recorded from another.

Each recorded stream serves one connection, in order (a worker that reconnects gets the next); a
connection beyond the recording is refused UNAVAILABLE. A recorded stop the server did not ask for
(``> stop`` not after a drain or stop command) came from a signal: the replay sends the worker SIGTERM once
it has been idle for `IDLE_S` at that point. Acknowledgements of heartbeats alone are not sent (the worker's
heartbeats come at its own times, so those acks would answer nothing).

The worker is started with ``QM_CONFORMANCE_ADDRESS`` and ``QM_SERVER`` (the replay's address),
``QM_CONFORMANCE_QUEUE`` and ``QM_CONFORMANCE_CONCURRENCY`` (the first recorded hello's first queue and
concurrency).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shlex
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import grpc.aio

from conformance import transcript
from conformance.harness import STOP_TIMEOUT_S, WorkerProcess
from conformance.proxy import StreamRecord
from conformance.recording import RecordingError, load
from queue_manager.v1 import worker_service_pb2 as pb
from queue_manager.v1 import worker_service_pb2_grpc as pb_grpc

# How long the worker may stay silent before a recorded signal-driven stop is asked of it with SIGTERM.
IDLE_S = 0.5
# How long the replay waits for each line the worker is to send.
TIMEOUT_S = 10.0


@dataclass
class _Step:
    """One thing the server did in the recording, once the recording's shape had `gate` lines."""

    gate: int
    send: pb.ConnectResponse | None = None
    end: str = ""  # the stream's end: "OK" or a status name


@dataclass
class _Script:
    """A recorded stream made ready to replay: its shape and the server's steps."""

    shape: list[str]
    steps: list[_Step]
    # Indices into `shape` of the `> stop` lines that came from a signal, not from a server command, with the
    # number of jobs the worker still held when it stopped.
    signalled: dict[int, int] = field(default_factory=dict)


class _Shape:
    """A stream's shape built message by message, as `transcript.shape` builds it from a whole record."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.names: dict[str, str] = {}  # job id -> name, from the deliveries
        # Jobs delivered and not yet reported on (an outcome, a release…): a stop that came from a signal came
        # with as many in hand as the recording had then, not while a run the recording had ended is going on.
        self.in_flight: set[str] = set()
        # Lines the protocol fixes, counted as they come, folded ones too: the worker is busy while it grows.
        self.received = 0
        self._credited = False

    def add_request(self, body: pb.ConnectRequest | None, end: str = "") -> None:
        if body is not None and body.WhichOneof("kind") == "report":
            r = body.report
            for outcomes in (r.completions, r.failures, r.releases, r.abandoned, r.cancelled, r.parked):
                self.in_flight.difference_update(o.job_id for o in outcomes)
        self._add([f"> end {end}"] if end else transcript._request_lines(body, self.names))

    def add_response(self, body: pb.ConnectResponse | None, end: str = "") -> None:
        if body is not None and body.WhichOneof("kind") == "delivery":
            self.in_flight.update(leased.job.id for leased in body.delivery.jobs)
        self._add([f"< end {end}"] if end else transcript._response_lines(body, self.names))

    def _add(self, lines: list[str]) -> None:
        for line in lines:
            if line.startswith(transcript._NOISE):
                continue
            self.received += 1
            if line.startswith("> credits"):
                if self._credited:
                    continue
                self._credited, line = True, "> credits"
            if not self.lines or self.lines[-1] != line:
                self.lines.append(line)


def _noise_only(body: pb.ConnectResponse) -> bool:
    """An acknowledgement of heartbeats alone: nothing the protocol fixes."""
    lines = transcript._response_lines(body, {})
    return all(line.startswith(transcript._NOISE) for line in lines)


def script(record: StreamRecord) -> _Script:
    """The replay of one recorded stream."""
    shape = _Shape()
    steps: list[_Step] = []
    signalled: dict[int, int] = {}
    commanded = False  # a drain or stop command was sent on this stream
    for m in record.messages:
        if m.direction == "<":
            if m.end:
                steps.append(_Step(len(shape.lines), end=m.end))
                shape.add_response(None, m.end)
                continue
            assert isinstance(m.body, pb.ConnectResponse)
            if m.body.WhichOneof("kind") == "ack" and _noise_only(m.body):
                continue
            if m.body.WhichOneof("kind") == "command" and m.body.command.type in (
                pb.SERVER_COMMAND_TYPE_DRAIN,
                pb.SERVER_COMMAND_TYPE_STOP,
            ):
                commanded = True
            steps.append(_Step(len(shape.lines), send=m.body))
            shape.add_response(m.body)
        else:
            before = len(shape.lines)
            shape.add_request(m.body if not m.end else None, m.end)  # type: ignore[arg-type]
            for i in range(before, len(shape.lines)):
                if shape.lines[i] == "> stop" and not commanded:
                    signalled[i] = len(shape.in_flight)
    return _Script(shape.lines, steps, signalled)


class Divergence(AssertionError):
    """The worker did not do what the recording did (the message says where)."""


@dataclass
class _Live:
    """One connection's replay: the worker's side as it comes, against the recording's."""

    number: int
    script: _Script
    shape: _Shape = field(default_factory=_Shape)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    done: bool = False
    failure: str = ""

    def check(self) -> None:
        want, got = self.script.shape, self.shape.lines
        for i, line in enumerate(got):
            if i >= len(want) or line != want[i]:
                expected = want[i] if i < len(want) else "(the recording's stream had ended)"
                raise Divergence(
                    f"stream {self.number}, line {i + 1}: the recording has {expected!r}, the worker sent "
                    f"{line!r}\n  recording: "
                    + "\n             ".join(want)
                    + "\n  replay:    "
                    + "\n             ".join(got)
                )


class Replay:
    """A loopback WorkerService that plays recorded streams back, one per connection."""

    def __init__(
        self, records: list[StreamRecord], on_signal: Callable[[], None], timeout_s: float = TIMEOUT_S
    ):
        self.scripts = [script(r) for r in records]
        self.on_signal = on_signal
        self.timeout_s = timeout_s
        self.lives: list[_Live] = []
        self.finished = asyncio.Event()  # every recorded stream has been replayed, or one failed
        self.failure = ""
        self._server: grpc.aio.Server | None = None
        self.address = ""

    async def start(self) -> None:
        self._server = grpc.aio.server()
        pb_grpc.add_WorkerServiceServicer_to_server(_Servicer(self), self._server)
        self.address = f"127.0.0.1:{self._server.add_insecure_port('127.0.0.1:0')}"
        await self._server.start()

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(0)

    def _fail(self, why: str) -> None:
        if not self.failure:
            self.failure = why
        self.finished.set()

    async def connect(
        self, requests: AsyncIterator[pb.ConnectRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ConnectResponse]:
        number = len(self.lives) + 1
        if number > len(self.scripts) or self.failure:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"the recording has {len(self.scripts)} stream(s); this is connection {number}",
            )
        live = _Live(number, self.scripts[number - 1])
        self.lives.append(live)
        reader = asyncio.create_task(self._read(requests, live))
        try:
            for step in live.script.steps:
                await self._until_gate(live, step.gate)
                if step.end:
                    live.shape.add_response(None, step.end)
                    live.check()
                    live.done = True
                    if number == len(self.scripts):
                        self.finished.set()
                    if step.end != "OK":
                        await context.abort(
                            getattr(grpc.StatusCode, step.end, grpc.StatusCode.UNKNOWN), "replayed"
                        )
                    return
                assert step.send is not None
                live.shape.add_response(step.send)
                live.check()
                yield step.send
        except Divergence as exc:
            self._fail(str(exc))
            await context.abort(grpc.StatusCode.ABORTED, "the replay diverged from the recording")
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    async def _read(self, requests: AsyncIterator[pb.ConnectRequest], live: _Live) -> None:
        try:
            async for request in requests:
                live.shape.add_request(request)
                live.changed.set()
            live.shape.add_request(None, "half-close")
        finally:
            live.changed.set()

    async def _until_gate(self, live: _Live, gate: int) -> None:
        """Waits until the worker's lines reach `gate`, checking each as it comes; SIGTERM for a stop the
        recording shows came from a signal, once the worker holds no more jobs than the recording's did then
        and has sent nothing for `IDLE_S`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        signalled = False
        while True:
            live.check()
            count = len(live.shape.lines)
            if count >= gate:
                return
            held = live.script.signalled.get(count)
            if held is not None and not signalled and len(live.shape.in_flight) <= held:
                received = live.shape.received
                live.changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(IDLE_S):
                        await live.changed.wait()
                if live.shape.received == received:
                    signalled = True
                    self.on_signal()
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                want = live.script.shape[count] if count < len(live.script.shape) else "?"
                raise Divergence(
                    f"stream {live.number}, line {count + 1}: waited {self.timeout_s:.0f} s for the worker "
                    f"to send {want!r}; it had sent:\n  " + "\n  ".join(live.shape.lines)
                )
            live.changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await live.changed.wait()


class _Servicer(pb_grpc.WorkerServiceServicer):
    def __init__(self, replay: Replay) -> None:
        self.replay = replay

    async def Connect(
        self, request_iterator: AsyncIterator[pb.ConnectRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ConnectResponse]:
        async for response in self.replay.connect(request_iterator, context):
            yield response


def _worker_env(records: list[StreamRecord], address: str) -> dict[str, str]:
    hello = next(
        (
            m.body.hello
            for r in records
            for m in r.messages
            if isinstance(m.body, pb.ConnectRequest) and m.body.WhichOneof("kind") == "hello"
        ),
        None,
    )
    env = {**os.environ, "QM_CONFORMANCE_ADDRESS": address, "QM_SERVER": address}
    if hello is not None:
        if hello.queues:
            env["QM_CONFORMANCE_QUEUE"] = hello.queues[0]
        if hello.concurrency:
            env["QM_CONFORMANCE_CONCURRENCY"] = str(hello.concurrency)
    return env


async def replay(paths: list[Path], worker: str, timeout_s: float = TIMEOUT_S) -> str:
    """Replays the recorded streams to a worker started with `worker`; returns "" when it did what the
    recording did, else why not (with the end of the worker's output)."""
    records = [load(p) for p in paths]
    proc_box: list[WorkerProcess] = []
    signalled: list[bool] = []

    def signal_worker() -> None:
        if proc_box and proc_box[0].proc.returncode is None:
            signalled.append(True)
            with contextlib.suppress(ProcessLookupError):
                proc_box[0].proc.send_signal(signal.SIGTERM)

    server = Replay(records, signal_worker, timeout_s)
    await server.start()
    fd, name = tempfile.mkstemp(prefix="qm-replay-", suffix=".log")
    log = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            proc = await asyncio.create_subprocess_exec(
                *shlex.split(worker),
                env=_worker_env(records, server.address),
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
            )
        worker_process = WorkerProcess(proc, log)
        proc_box.append(worker_process)
        exited = asyncio.create_task(proc.wait())
        finished = asyncio.create_task(server.finished.wait())
        limit = timeout_s * (sum(len(s.shape) for s in server.scripts) + 2)
        done, _ = await asyncio.wait({exited, finished}, timeout=limit, return_when=asyncio.FIRST_COMPLETED)
        finished.cancel()
        why = server.failure
        if not why and finished not in done:
            why = (
                f"the worker exited with {proc.returncode} before the replay ended"
                if exited in done
                else f"the replay did not end within {limit:.0f} s"
            )
        if signalled:  # it was asked to stop once already: a second SIGTERM may kill it outright
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(exited), STOP_TIMEOUT_S)
        try:
            status = await worker_process.stop()
        except AssertionError as exc:
            why = why or str(exc)
        else:
            if not why and status != 0:
                why = f"the worker exited with status {status} after SIGTERM (0 expected)"
        exited.cancel()
        if why:
            why += f"\n  the worker's output (last lines):\n{worker_process.output()[-1500:]}"
        return why
    finally:
        await server.stop()
        os.unlink(log)


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m conformance.replay", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "streams", nargs="+", type=Path, help="recorded streams (.jsonl), in connection order"
    )
    parser.add_argument("--worker", required=True, help="the command that starts the worker under test")
    parser.add_argument(
        "--timeout",
        type=float,
        default=TIMEOUT_S,
        help=f"seconds to wait for each line (default {TIMEOUT_S:.0f})",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    try:
        why = asyncio.run(replay(args.streams, args.worker, args.timeout))
    except (RecordingError, OSError) as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 2
    print(
        f"FAIL: {why}"
        if why
        else f"PASS: the worker did what the recording did ({len(args.streams)} stream(s))"
    )
    return 1 if why else 0


if __name__ == "__main__":
    sys.exit(main())
