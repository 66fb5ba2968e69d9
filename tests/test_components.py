"""The components' loops (components/base.py): a stop ends them even when a cancellation goes missing."""

from __future__ import annotations

import asyncio
import contextlib
import time

from queue_manager_server.components.base import TimedComponent


class SwallowingTimers(TimedComponent):
    """A timed component whose timer swallows the cancel that lands while it fires, as Python 3.11's
    asyncio.wait_for can when the cancel lands as its wait ends."""

    name = "swallowing"

    def __init__(self) -> None:
        super().__init__(interval=60.0)
        self.firing = asyncio.Event()

    async def tick(self) -> None:
        return None

    async def fire(self, queue: str) -> None:
        self.firing.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(30)


async def test_a_timed_components_stop_ends_its_timers_even_when_a_cancel_is_swallowed() -> None:
    component = SwallowingTimers()
    component.start()
    component.arm("q", time.monotonic())
    await asyncio.wait_for(component.firing.wait(), 5)
    # Before: the timers' loop went on after the swallowed cancel and waited for a timer nobody arms, and stop
    # with it (a deadline here would not tell: stop swallows its own cancel while it waits for its timers).
    started = time.monotonic()
    stopping = asyncio.create_task(component.stop())
    done, _ = await asyncio.wait({stopping}, timeout=5)
    assert stopping in done, "stop() still waits for the timers' loop"
    assert time.monotonic() - started < 5
