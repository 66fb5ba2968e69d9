"""The test clock's storage side (Settings.test_clock, queue_manager_server.testing): how far it has been
moved forward, kept in one key (engine/keys.py clock_offset) that every script of such a server adds to Redis
TIME (lua/includes/test_clock.lua), and the move itself (advance_clock.lua)."""

from __future__ import annotations

from queue_manager_server.engine.engine import Engine
from queue_manager_server.engine.keys import clock_offset, workers_index


class TestClockStorage:
    """Reads and moves the test clock of an engine made with ``test_clock=True``."""

    # Not a test class, whatever its name says (pytest collects classes named Test*).
    __test__ = False

    def __init__(self, engine: Engine) -> None:
        """Raises:
        ValueError: the engine reads Redis TIME alone (no test clock).
        """
        if not engine.test_clock:
            raise ValueError("this engine is not on the test clock: make it with test_clock=True")
        self.engine = engine

    async def offset_ms(self) -> int:
        """How far (ms) the clock has been moved forward since the key prefix was first used."""
        return int(await self.engine.redis.get(clock_offset(self.engine.prefix)) or 0)

    async def advance(self, ms: int) -> int:
        """Moves Redis's clock, as this engine's scripts and reads see it, `ms` forward; leases, worker
        registry entries and job-event watches keep their real-time deadlines (advance_clock.lua). Returns the
        new offset (ms).

        Raises:
            ValueError: `ms` is not a positive whole number.
        """
        if isinstance(ms, bool) or not isinstance(ms, int) or ms <= 0:
            raise ValueError(f"the test clock moves forward by a positive number of ms, not {ms!r}")
        e = self.engine
        keys = [clock_offset(e.prefix), workers_index(e.prefix)]
        for queue in await e.queue_names():
            k = e.keys(queue)
            keys += [k.meta, k.active]
        return int(await e.scripts.run("advance_clock", keys, [ms]))
