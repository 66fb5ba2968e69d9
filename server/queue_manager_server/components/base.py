"""The lifecycle every background loop shares."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time


def error_text(exc: BaseException) -> str:
    """An error as the components log it: its type and message."""
    return f"{type(exc).__name__}: {exc}"


# A queue a periodic scan found idle (no lease, no deadline) is visited again after this many ticks.
IDLE_LOOKS = 5


class Looks:
    """Which queues a periodic scan visits at a tick: every queue that had work at its last visit, and one
    that had none only once `idle` seconds have passed since (an idle server with thousands of queues then
    visits each a fifth as often). A queue never visited, or whose visit failed, is due."""

    def __init__(self, idle: float) -> None:
        self.idle = idle
        self._next: dict[str, float] = {}  # queue -> when an idle queue is due again (monotonic s)

    def due(self, queues: list[str], now: float) -> list[str]:
        live = set(queues)
        self._next = {q: t for q, t in self._next.items() if q in live}  # deleted queues forgotten
        return [q for q in queues if self._next.get(q, 0.0) <= now]

    def seen(self, queue: str, busy: bool, now: float) -> None:
        """The visit at `now` found the queue with work (busy) or without."""
        if busy:
            self._next.pop(queue, None)
        else:
            self._next[queue] = now + self.idle


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
                self.log.warning("tick failed", extra={"error": error_text(exc)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval)

    async def tick(self) -> None:
        raise AssertionError("subclasses define tick")

    async def clock_moved(self) -> None:
        """The test clock moved forward (queue_manager_server.testing): do at once what fell due by Redis's
        clock, and return once it is done. Nothing here: loops that keep to real time (leases, health, worker
        streams) go on as they were."""


class TimedComponent(Component):
    """A `Component` that also fires per-queue timers: `fire(queue)` runs when the queue's earliest armed
    deadline passes. Deadlines given in Redis time become local ones through the offset between Redis
    ``TIME`` (which subclasses report with `sync`) and this process's monotonic clock, so a skewed wall
    clock changes nothing. A `fire` that fails is logged and its queue waits for the next arming or scan."""

    def __init__(self, interval: float) -> None:
        super().__init__(interval)
        # queue -> local monotonic deadline (seconds) of its earliest armed timer
        self._due: dict[str, float] = {}
        self._changed = asyncio.Event()
        self._offset_ms: float | None = None  # Redis ms minus local monotonic ms
        self._timer: asyncio.Task[None] | None = None

    def start(self) -> None:
        super().start()
        self._timer = asyncio.create_task(self._fire_timers(), name=f"{self.name}-timers")

    async def stop(self) -> None:
        # The stop event first, and the timers woken: Python 3.11's wait_for may swallow a cancellation that
        # lands as its wait ends (the timers' loop then waited on, and stop with it: a test's teardown hung
        # 1 run in 20 under load); the loop sees the event at its next turn whatever became of the cancel.
        self._stop.set()
        self._changed.set()
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
        await super().stop()

    def sync(self, redis_now_ms: int) -> None:
        """Records Redis's clock as just read, so Redis times map to local deadlines."""
        self._offset_ms = redis_now_ms - time.monotonic() * 1000

    def arm_at(self, queue: str, redis_ms: int) -> None:
        """Makes sure `fire(queue)` runs by `redis_ms` (Redis time; at once before the first `sync`)."""
        self.arm(queue, time.monotonic() if self._offset_ms is None else (redis_ms - self._offset_ms) / 1000)

    def arm(self, queue: str, when: float) -> None:
        """Makes sure `fire(queue)` runs by local monotonic time `when` (an earlier timer is kept)."""
        if when < self._due.get(queue, float("inf")):
            self._due[queue] = when
            self._changed.set()

    def disarm(self, queue: str) -> None:
        """Forgets the queue's timer (call it before a check, so one armed meanwhile is kept)."""
        self._due.pop(queue, None)

    async def fire(self, queue: str) -> None:
        raise AssertionError("subclasses define fire")

    async def _fire_timers(self) -> None:
        while not self._stop.is_set():
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
            self.disarm(queue)
            try:
                await self.fire(queue)
            except Exception as exc:
                self.log.warning("timer failed", extra={"queue": queue, "error": error_text(exc)})
                await asyncio.sleep(0.5)
