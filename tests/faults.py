"""Fault injection: a loopback TCP proxy that can cut every connection and refuse new ones."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlparse


class Proxy:
    def __init__(self, target_url: str) -> None:
        u = urlparse(target_url)
        self.target = (u.hostname or "127.0.0.1", u.port or 6379)
        self.db = u.path or "/0"
        self.server: asyncio.Server | None = None
        self.port = 0
        self.up = True
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}{self.db}"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:  # the target is down: the client sees its connection closed, as a refusal
            writer.close()
            return
        self._writers |= {writer, up_writer}
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        dst.close()

    def cut(self) -> None:
        """Drops every open connection and refuses new ones until restore()."""
        self.up = False
        for w in self._writers:
            w.close()
        self._writers.clear()

    def restore(self) -> None:
        self.up = True

    async def stop(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        for t in list(self._pipes):
            t.cancel()
