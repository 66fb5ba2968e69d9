"""Enforces job timeouts on the server: a run past its job's timeout fails as timed out, even when its
worker never answers.

A claim gives each job with a timeout a deadline (start + timeout, Redis time) in its queue's deadlines
set. Timers are armed by the dispatcher of the server that leased the jobs (it knows their timeout the
moment it claims them) and re-armed from what each check returns (the next deadline, as an offset from
Redis ``TIME``, so skewed wall clocks change nothing). A periodic scan of every queue catches runs leased
by a server that died, and is what other servers rely on. The check (``time_out.lua``) is atomic and
idempotent, so any number of servers may run it: the first one past a deadline acts, the rest find
nothing due. Each timed-out run's worker is told to stop through the events channel (``t`` events: a
CANCEL_JOB with ``timed_out``, so the worker ends the run as at its own timeout).
"""

from __future__ import annotations

import time

from queue_manager_server.components.base import IDLE_LOOKS, Looks, TimedComponent, error_text
from queue_manager_server.engine import Engine
from queue_manager_server.engine.control import TIME_OUT_CHUNK, Control, TimedOut

# A timer fires this much after the deadline it waits for: a check that comes a hair early (local and
# Redis clocks tick apart) finds nothing due and has to be re-armed.
FIRE_LATE_S = 0.002


class Timeouts(TimedComponent):
    name = "timeouts"

    def __init__(self, engine: Engine, scan_interval: float) -> None:
        super().__init__(scan_interval)
        self.engine = engine
        self.control = Control(engine)
        # A queue whose last scan found no deadline is scanned again after IDLE_LOOKS ticks: a deadline set
        # meanwhile has the timer of the server that set it; only if that server died does it wait for a scan.
        self.looks = Looks(IDLE_LOOKS * scan_interval)

    def schedule(self, queue: str, in_ms: int) -> None:
        """A run of `queue` reaches its deadline `in_ms` from now: make sure a check fires by then."""
        self.arm(queue, time.monotonic() + in_ms / 1000 + FIRE_LATE_S)

    async def tick(self) -> None:
        """Checks the queues due (`looks`), in shared round trips; a queue with more runs past their deadline
        than one check takes goes on alone."""
        now = time.monotonic()
        due = self.looks.due(await self.engine.queue_names(), now)
        for queue in due:
            self.disarm(queue)  # first: a timer armed while the checks run (a claim meanwhile) is kept
        for queue, result in zip(due, await self.control.time_out_all(due), strict=True):
            if isinstance(result, Exception):
                self.log.warning(
                    "timeout check failed",
                    extra={"queue": queue, "error": error_text(result)},
                )
                continue
            self.looks.seen(queue, result.next_deadline_ms >= 0, now)
            if len(result.outcomes) < TIME_OUT_CHUNK:
                self._checked(queue, result, len(result.outcomes))
            else:
                await self.check(queue, len(result.outcomes))

    async def clock_moved(self) -> None:
        # Every queue, idle looks or not: its timers were armed in local time, before the jump.
        for queue in await self.engine.queue_names():
            await self.check(queue)

    async def check(self, queue: str, count: int = 0) -> int:
        """Fails the queue's runs past their deadline; returns how many (with `count` already), and
        re-arms its timer."""
        # Forget the timer first: one armed while the check runs (a claim meanwhile) is kept.
        self.disarm(queue)
        while True:
            result = await self.control.time_out(queue)
            count += len(result.outcomes)
            if len(result.outcomes) < TIME_OUT_CHUNK:
                break
        self._checked(queue, result, count)
        return count

    def _checked(self, queue: str, result: TimedOut, count: int) -> None:
        if result.next_deadline_ms >= 0:
            self.schedule(queue, result.next_deadline_ms - result.now_ms)
        if count:
            self.log.info("runs timed out", extra={"queue": queue, "count": count})

    async def fire(self, queue: str) -> None:
        await self.check(queue)
