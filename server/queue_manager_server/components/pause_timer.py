"""Lifts timed pauses on time (PauseQueueRequest.resume_after / resume_at, and PauseGroup's), in every queue,
safe to run in any number of servers at once.

Timers are armed from the ``p <queue> <resume ms>`` events a timed pause publishes (set_paused.lua,
set_group_paused.lua), and from a rescan every `RESCAN_S`, which also catches events missed while the
subscription was down and pauses given while no server was up. Resume times are Redis times; as in the
promoter, they become local deadlines through the offset between Redis ``TIME`` and this process's
monotonic clock. resume_due.lua lifts only a pause whose own time has passed, atomically, so when several
servers fire at once the first lifts it and the others change nothing; it wakes the queue's workers itself.
"""

from __future__ import annotations

from queue_manager_server.components.base import TimedComponent, error_text
from queue_manager_server.engine import Engine
from queue_manager_server.engine.pauses import Pauses, Resumed

# Bound on how late a resume time whose event was missed is noticed; the events make the usual case punctual.
RESCAN_S = 5.0


class PauseTimer(TimedComponent):
    name = "pause_timer"

    def __init__(self, engine: Engine, rescan_interval: float = RESCAN_S) -> None:
        super().__init__(rescan_interval)
        self.engine = engine
        self.pauses = Pauses(engine)

    def schedule(self, queue: str, resume_ms: int) -> None:
        """A pause of `queue` (or of one of its groups) lifts at `resume_ms` (Redis time): fire by then."""
        self.arm_at(queue, resume_ms)

    async def tick(self) -> None:
        queues = await self.engine.queue_names()
        for queue in queues:
            self.disarm(queue)  # first: a timer armed while the calls run is kept
        for queue, result in zip(queues, await self.pauses.resume_due_all(queues), strict=True):
            if isinstance(result, Exception):
                self.log.warning("resume failed", extra={"queue": queue, "error": error_text(result)})
                continue
            self._resumed(queue, result)

    async def clock_moved(self) -> None:
        await self.tick()  # what fell due is lifted, the offset synced again, timers armed anew

    async def fire(self, queue: str) -> None:
        self.disarm(queue)  # first: a timer armed while the call runs is kept
        self._resumed(queue, await self.pauses.resume_due(queue))

    def _resumed(self, queue: str, result: Resumed) -> None:
        self.sync(result.now_ms)
        if result.next_due_ms >= 0:
            self.arm_at(queue, result.next_due_ms)
        if result.lifted:
            self.log.info("timed pause over", extra={"queue": queue, "count": result.lifted})
