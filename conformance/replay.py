"""Replays recorded worker streams to a worker, with no server and no Redis: ``python -m conformance.replay
STREAM.jsonl [STREAM.jsonl …] --worker "COMMAND"`` (conformance/README.md, "Recording and replaying").

A recording (recording.py) holds both sides of a worker's stream. The replay plays the server's side back to
the worker under test, on a loopback gRPC port of its own: each recorded server message is sent once the
worker has sent what the recording's worker had sent before it, counted by kind (two ``> completion sleep``
lines are two, however they were folded or split into reports) and, for a delivery, once the worker has
granted the credits it needs. What the worker sends is checked, line by line, against the recording's shape
(transcript.py: the lines the protocol fixes, without heartbeats, stats, log lines and later credits), each
server line placed where its gate was met. The first line that differs, or a line that does not come within
the timeout, fails the replay and says which. So a worker bug met once in a recorded session can be run
again at will, and a worker in a new language can be checked against sessions recorded from another.

Nothing the replay decides depends on timing but SIGTERM's moment. Gates counted in folded lines did: a
completion that came while a delivery was on its way moved the count or not by a few milliseconds, and the
replay then sent a delivery after the worker's last completion, which the recording does not have (met with
the Go worker about once in five runs under load).

Each recorded stream serves one connection, in order (a worker that reconnects gets the next); a
connection beyond the recording is refused UNAVAILABLE. A recorded stop the server did not ask for
(``> stop`` not after a drain or stop command) came from a signal: the replay sends the worker SIGTERM once
it has sent all the recording's worker had sent before that stop and has been idle for `IDLE_S`, and every
server message recorded after the stop waits for the worker's ``> stop``. Acknowledgements of heartbeats
alone are not sent (the worker's heartbeats come at its own times, so those acks would answer nothing).

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
from collections import Counter
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
class _Gate:
    """What the worker must have sent before the server takes a step: its lines the protocol fixes, each one
    counted (``> completion sleep`` twice is 2; the first credit grant counts once, as ``> credits``), and,
    before a delivery, how many credits it must have granted in all so that the delivery fits them."""

    sent: Counter[str] = field(default_factory=Counter)
    credits: int = 0


@dataclass
class _Step:
    """One thing the server did in the recording, once the worker had sent what `gate` counts."""

    gate: _Gate
    send: pb.ConnectResponse | None = None
    end: str = ""  # the stream's end: "OK" or a status name


@dataclass
class _Stop:
    """A recorded ``> stop`` that came from a signal, not from a server command: what the worker had sent
    before it, and how many jobs it still held when it stopped."""

    before: Counter[str]
    held: int


@dataclass
class _Script:
    """A recorded stream made ready to replay: its shape and the server's steps."""

    shape: list[str]
    steps: list[_Step]
    # The signal-driven stops by their number among the stream's stops (the first stop is 1).
    signalled: dict[int, _Stop] = field(default_factory=dict)


class _Shape:
    """A stream's shape built message by message, with the server's lines placed by what the worker had sent.

    The worker's lines are kept in the order it sent them. A server line is placed after the shortest run of
    them that meets the gate the server's step waited for, not where it happened to fall among lines that came
    meanwhile: the replay sends a step once its gate is met, but lines the worker sends while the step is on
    its way (a second completion just behind the first) would otherwise land before or after it by timing
    alone, and fold or not, so that the same worker would pass one run and diverge the next. Built from a
    recording, every server line falls where it was recorded (its gate counts all the worker had sent), so
    this is the shape `transcript.shape` gives.
    """

    def __init__(self) -> None:
        self.worker: list[str] = []  # the worker's lines the protocol fixes, in order
        self.sent: Counter[str] = Counter()  # those lines, each counted
        # For each such line, where each of its occurrences ends in `worker` (a message's lines end together).
        self.ends: dict[str, list[int]] = {}
        self.credits = 0  # credits granted in all
        self.credit_ends: list[tuple[int, int]] = []  # (where in `worker`, credits granted in all by then)
        self.delivered = 0  # jobs delivered in all
        self.server: list[tuple[int, list[str]]] = []  # the server's lines, each with where in `worker`
        self.names: dict[str, str] = {}  # job id -> name, from the deliveries
        # Jobs delivered and not yet reported on (an outcome, a release…): a stop that came from a signal came
        # with as many in hand as the recording had then, not while a run the recording had ended is going on.
        self.in_flight: set[str] = set()
        # The worker's lines the protocol fixes, counted as they come, later credits too: it is busy while
        # this grows.
        self.received = 0

    def add_request(self, body: pb.ConnectRequest | None, end: str = "") -> None:
        if body is not None and body.WhichOneof("kind") == "report":
            r = body.report
            for outcomes in (r.completions, r.failures, r.releases, r.abandoned, r.cancelled, r.parked):
                self.in_flight.difference_update(o.job_id for o in outcomes)
        lines = [f"> end {end}"] if end else transcript._request_lines(body, self.names)
        added: list[str] = []
        for line in lines:
            if line.startswith(transcript._NOISE):
                continue
            self.received += 1
            if line.startswith("> credits"):
                self.credits += int(line.split()[-1])
                if self.sent["> credits"]:
                    continue  # later grants are the library's business: counted in credits, not as lines
                line = "> credits"
            self.worker.append(line)
            added.append(line)
        for line in added:
            self.sent[line] += 1
            self.ends.setdefault(line, []).append(len(self.worker))
        if not self.credit_ends or self.credit_ends[-1][1] != self.credits:
            self.credit_ends.append((len(self.worker), self.credits))

    def gate(self, body: pb.ConnectResponse | None) -> _Gate:
        """The gate of a server message sent now, as the recording is read: all the worker had sent, and for a
        delivery the credits it needs (no more than were granted: a recording is what it is)."""
        credits = 0
        if body is not None and body.WhichOneof("kind") == "delivery":
            credits = min(self.credits, self.delivered + len(body.delivery.jobs))
        return _Gate(Counter(self.sent), credits)

    def where(self, gate: _Gate) -> int | None:
        """Where in the worker's lines `gate` was first met, or None while it is not."""
        at = self.server[-1][0] if self.server else 0
        for line, count in gate.sent.items():
            ends = self.ends.get(line, [])
            if count > len(ends):
                return None
            if count:
                at = max(at, ends[count - 1])
        if gate.credits:
            granted = next((where for where, total in self.credit_ends if total >= gate.credits), None)
            if granted is None:
                return None
            at = max(at, granted)
        return at

    def add_response(self, gate: _Gate, body: pb.ConnectResponse | None, end: str = "") -> None:
        """The server's step with `gate`, which the worker's lines meet."""
        at = self.where(gate)
        assert at is not None, "a server step placed before its gate was met"
        if body is not None and body.WhichOneof("kind") == "delivery":
            self.in_flight.update(leased.job.id for leased in body.delivery.jobs)
            self.delivered += len(body.delivery.jobs)
        lines = [f"< end {end}"] if end else transcript._response_lines(body, self.names)
        self.server.append((at, [line for line in lines if not line.startswith(transcript._NOISE)]))

    def lines(self, until: int | None = None) -> list[str]:
        """The shape: the worker's lines (the first `until` of them) with the server's among them, repeated
        lines folded into one."""
        worker = self.worker if until is None else self.worker[:until]
        merged: list[str] = []
        server = iter(self.server)
        placed = next(server, None)
        for i in range(len(worker) + 1):
            while placed is not None and placed[0] == i:
                merged += placed[1]
                placed = next(server, None)
            if i < len(worker):
                merged.append(worker[i])
        return [line for i, line in enumerate(merged) if i == 0 or merged[i - 1] != line]


def _noise_only(body: pb.ConnectResponse) -> bool:
    """An acknowledgement of heartbeats alone: nothing the protocol fixes."""
    lines = transcript._response_lines(body, {})
    return all(line.startswith(transcript._NOISE) for line in lines)


def script(record: StreamRecord) -> _Script:
    """The replay of one recorded stream."""
    shape = _Shape()
    steps: list[_Step] = []
    signalled: dict[int, _Stop] = {}
    commanded = False  # a drain or stop command was sent on this stream
    for m in record.messages:
        if m.direction == "<":
            body = m.body if not m.end else None
            assert body is None or isinstance(body, pb.ConnectResponse)
            if body is not None and body.WhichOneof("kind") == "ack" and _noise_only(body):
                continue
            if body is not None and body.WhichOneof("kind") == "command":
                commanded |= body.command.type in (pb.SERVER_COMMAND_TYPE_DRAIN, pb.SERVER_COMMAND_TYPE_STOP)
            step = _Step(shape.gate(body), send=body, end=m.end)
            steps.append(step)
            shape.add_response(step.gate, body, m.end)
        else:
            before, stops, held = Counter(shape.sent), shape.sent["> stop"], len(shape.in_flight)
            shape.add_request(m.body if not m.end else None, m.end)  # type: ignore[arg-type]
            if shape.sent["> stop"] > stops and not commanded:
                signalled[stops + 1] = _Stop(before, held)
    return _Script(shape.lines(), steps, signalled)


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
    next_step: int = 0  # the index of the server step the replay takes next
    signalled: set[int] = field(default_factory=set)  # the stops (by number) SIGTERM has been sent for

    def settled(self) -> list[str]:
        """The shape as far as it is settled: up to where the next step's gate is met, if it is (that step
        goes there, among lines the worker has already sent), else all of it."""
        steps = self.script.steps
        until = self.shape.where(steps[self.next_step].gate) if self.next_step < len(steps) else None
        return self.shape.lines(until)

    def check(self) -> None:
        want, got = self.script.shape, self.settled()
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

    def stop_due(self, gate: _Gate) -> _Stop | None:
        """The recorded signal-driven stop `gate` waits for, once the worker has sent all the recording's
        worker had sent before it and holds no more jobs than it held; None before, or once SIGTERM went."""
        number = self.shape.sent["> stop"] + 1
        stop = self.script.signalled.get(number)
        if stop is None or gate.sent["> stop"] < number or number in self.signalled:
            return None
        if len(self.shape.in_flight) > stop.held:
            return None
        return stop if all(self.shape.sent[line] >= n for line, n in stop.before.items()) else None


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
            for index, step in enumerate(live.script.steps):
                live.next_step = index
                await self._until_gate(live, step.gate)
                live.shape.add_response(step.gate, step.send, step.end)
                live.next_step = index + 1
                live.check()
                if step.end:
                    live.done = True
                    if number == len(self.scripts):
                        self.finished.set()
                    if step.end != "OK":
                        await context.abort(
                            getattr(grpc.StatusCode, step.end, grpc.StatusCode.UNKNOWN), "replayed"
                        )
                    return
                assert step.send is not None
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

    async def _until_gate(self, live: _Live, gate: _Gate) -> None:
        """Waits until the worker has sent what `gate` counts, checking its lines as they come; SIGTERM for a
        stop the recording shows came from a signal, once the worker has sent all that came before that stop,
        holds no more jobs than the recording's did then and has sent nothing for `IDLE_S`.

        Every step is gated on what the worker sent, never on when: a step the recording took after a
        signal-driven stop waits for the worker's ``> stop``, and SIGTERM is only sent while waiting for such
        a step, so no delivery reaches a worker the replay has asked to stop unless the recording's did."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        while True:
            live.check()
            if live.shape.where(gate) is not None:
                return
            stop = live.stop_due(gate)
            if stop is not None:
                received = live.shape.received
                live.changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(IDLE_S):
                        await live.changed.wait()
                if live.shape.received == received:
                    live.signalled.add(live.shape.sent["> stop"] + 1)
                    self.on_signal()
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                got = live.shape.lines()
                want = live.script.shape[len(got)] if len(got) < len(live.script.shape) else "?"
                raise Divergence(
                    f"stream {live.number}, line {len(got) + 1}: waited {self.timeout_s:.0f} s for the "
                    f"worker to send {want!r}; it had sent:\n  " + "\n  ".join(got)
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
