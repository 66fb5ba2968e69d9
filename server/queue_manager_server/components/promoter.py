"""Moves delayed jobs to waiting when they fall due, on time, in every queue.

Timers are armed from the ``d <queue> <run-at>`` events any server publishes when it delays a job, and
from a periodic scan (which also catches events missed while the subscription was down). Run-at times are
Redis times; they become local deadlines through the offset between Redis ``TIME`` (returned by every
promote call) and this process's monotonic clock, so a skewed wall clock changes nothing.

Queues with workers attached also promote inside each claim, timed by the dispatcher; this component
keeps every queue's state truthful even when no worker is listening.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from queue_manager_server.components.base import Component
from queue_manager_server.engine import Engine


class Promoter(Component):
    name = "promoter"

    def __init__(self, engine: Engine, scan_interval: float = 5.0) -> None:
        super().__init__(scan_interval)
        self.engine = engine
        # queue -> local monotonic deadline (seconds) of its earliest delayed job
        self._due: dict[str, float] = {}
        self._changed = asyncio.Event()
        self._offset_ms: float | None = None  # Redis ms minus local monotonic ms
        self._timer: asyncio.Task[None] | None = None

    def start(self) -> None:
        super().start()
        self._timer = asyncio.create_task(self._fire(), name="promoter-timers")

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
        await super().stop()

    def schedule(self, queue: str, run_at_ms: int) -> None:
        """A job of `queue` falls due at `run_at_ms` (Redis time): make sure a timer fires by then."""
        when = time.monotonic() if self._offset_ms is None else (run_at_ms - self._offset_ms) / 1000
        if when < self._due.get(queue, float("inf")):
            self._due[queue] = when
            self._changed.set()

    async def tick(self) -> None:
        for queue in await self.engine.queue_names():
            await self._promote(queue)

    async def _promote(self, queue: str) -> None:
        promoted, next_due, now = await self.engine.promote(queue)
        self._offset_ms = now - time.monotonic() * 1000
        if next_due >= 0:
            self._due[queue] = (next_due - self._offset_ms) / 1000
        else:
            self._due.pop(queue, None)
        if promoted:
            self.log.debug("promoted delayed jobs", extra={"queue": queue, "count": promoted})

    async def _fire(self) -> None:
        while True:
            self._changed.clear()
            if not self._due:
                await self._changed.wait()
                continue
            queue, when = min(self._due.items(), key=lambda item: item[1])
            delay = when - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), delay)
                continue
            self._due.pop(queue, None)
            try:
                await self._promote(queue)
            except Exception as exc:
                self.log.warning(
                    "promote failed", extra={"queue": queue, "error": f"{type(exc).__name__}: {exc}"}
                )
                await asyncio.sleep(0.5)
