"""Moves delayed jobs to waiting when they fall due, on time, in every queue.

Timers are armed from the ``d <queue> <run-at>`` events any server publishes when it delays a job, and
from a periodic scan (which also catches events missed while the subscription was down). Run-at times are
Redis times; they become local deadlines through the offset between Redis ``TIME`` (returned by every
promote call) and this process's monotonic clock, so a skewed wall clock changes nothing.

Queues with workers attached also promote inside each claim, timed by the dispatcher; this component
keeps every queue's state truthful even when no worker is listening.
"""

from __future__ import annotations

from queue_manager_server.components.base import TimedComponent, error_text
from queue_manager_server.engine import Engine


class Promoter(TimedComponent):
    name = "promoter"

    def __init__(self, engine: Engine, scan_interval: float = 5.0) -> None:
        super().__init__(scan_interval)
        self.engine = engine

    def schedule(self, queue: str, run_at_ms: int) -> None:
        """A job of `queue` falls due at `run_at_ms` (Redis time): make sure a timer fires by then."""
        self.arm_at(queue, run_at_ms)

    async def tick(self) -> None:
        queues = await self.engine.queue_names()
        for queue in queues:
            self.disarm(queue)  # first: a timer armed while the promotes run is kept
        for queue, result in zip(queues, await self.engine.promote_all(queues), strict=True):
            if isinstance(result, Exception):
                self.log.warning("promote failed", extra={"queue": queue, "error": error_text(result)})
                continue
            self._promoted(queue, *result)

    async def clock_moved(self) -> None:
        await self.tick()  # every queue promoted, the offset synced again, timers armed anew

    async def fire(self, queue: str) -> None:
        self.disarm(queue)  # first: a timer armed while the promote runs is kept
        self._promoted(queue, *await self.engine.promote(queue))

    def _promoted(self, queue: str, promoted: int, next_due: int, now: int) -> None:
        self.sync(now)
        if next_due >= 0:
            self.arm_at(queue, next_due)
        if promoted:
            self.log.debug("promoted delayed jobs", extra={"queue": queue, "count": promoted})
