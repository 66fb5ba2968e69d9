"""Lifts timed pauses and applies maintenance windows on time, in every queue, safe to run in any number of
servers at once.

Timed pauses (PauseQueueRequest.resume_after / resume_at, and PauseGroup's): timers are armed from the
``p <queue> <ms>`` events a timed pause publishes (set_paused.lua, set_group_paused.lua), and resume_due.lua
lifts only a pause whose own time has passed, atomically, so when several servers fire at once the first
lifts it and the others change nothing; it wakes the queue's workers itself.

Maintenance windows (QueueConfig.maintenance_windows, windows.py): a queue's next window boundary (when the
window it is in ends, or the next one starts) is stored with the queue and announced the same way when it
changes (set_window.lua); at the boundary the windows are applied again, a compare-and-set any number of
servers may run at once. Nothing polls a window: a queue is visited at its boundaries. A fairness group's
own windows (GroupLimits.maintenance_windows) are applied the same way, their boundaries read with the
queue's (the earliest of the queue's and its groups' arms the queue's timer).

A rescan every `RESCAN_S` catches events missed while the subscription was down, pauses given and windows
registered while no server was up, and applies windows whose config changed. Times are Redis times; as in
the promoter, they become local deadlines through the offset between Redis ``TIME`` and this process's
monotonic clock.
"""

from __future__ import annotations

from queue_manager_server.components.base import TimedComponent, error_text
from queue_manager_server.engine import Engine
from queue_manager_server.engine.pauses import Pauses, Resumed
from queue_manager_server.windows import MaintenanceWindows

# Bound on how late a time whose event was missed is noticed; the events make the usual case punctual.
RESCAN_S = 5.0


class PauseTimer(TimedComponent):
    name = "pause_timer"

    def __init__(self, engine: Engine, rescan_interval: float = RESCAN_S) -> None:
        super().__init__(rescan_interval)
        self.engine = engine
        self.pauses = Pauses(engine)
        self.windows = MaintenanceWindows(engine)

    def schedule(self, queue: str, at_ms: int) -> None:
        """A pause of `queue` (or of one of its groups) lifts, or a window of it starts or ends, at `at_ms`
        (Redis time): fire by then."""
        self.arm_at(queue, at_ms)

    async def tick(self) -> None:
        queues = await self.engine.queue_names()
        for queue in queues:
            self.disarm(queue)  # first: a timer armed while the calls run is kept
        for queue, result in zip(queues, await self.pauses.resume_due_all(queues), strict=True):
            if isinstance(result, Exception):
                self.log.warning("resume failed", extra={"queue": queue, "error": error_text(result)})
                continue
            self._resumed(queue, result)
        now, due, later = await self.windows.due(queues)
        self.sync(now)
        for queue, boundary in later.items():
            self.arm_at(queue, boundary)
        for queue in due:
            try:
                await self._apply_windows(queue)
            except Exception as exc:
                extra = {"queue": queue, "error": error_text(exc)}
                self.log.warning("maintenance window failed", extra=extra)

    async def clock_moved(self) -> None:
        await self.tick()  # what fell due is lifted or applied, the offset synced again, timers armed anew

    async def fire(self, queue: str) -> None:
        self.disarm(queue)  # first: a timer armed while the calls run is kept
        self._resumed(queue, await self.pauses.resume_due(queue))
        _, due, later = await self.windows.due([queue])
        if due:
            await self._apply_windows(queue)
        elif queue in later:
            self.arm_at(queue, later[queue])

    async def _apply_windows(self, queue: str) -> None:
        now, boundary = await self.windows.apply(queue)
        self.sync(now)
        now, groups = await self.windows.apply_groups(queue)
        self.sync(now)
        for at in (boundary, groups):
            if at >= 0:
                self.arm_at(queue, at)

    def _resumed(self, queue: str, result: Resumed) -> None:
        self.sync(result.now_ms)
        if result.next_due_ms >= 0:
            self.arm_at(queue, result.next_due_ms)
        if result.lifted:
            self.log.info("timed pause over", extra={"queue": queue, "count": result.lifted})
