"""The lifecycle every background loop shares."""

from __future__ import annotations

import asyncio
import contextlib
import logging


class Component:
    """A loop that calls ``tick`` every ``interval`` seconds until stopped; errors are logged, not fatal."""

    name = "component"

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.log = logging.getLogger(f"queue_manager_server.{self.name}")
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                await self.tick()
            except Exception as exc:
                self.log.warning("tick failed", extra={"error": f"{type(exc).__name__}: {exc}"})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval)

    async def tick(self) -> None:
        raise AssertionError("subclasses define tick")
