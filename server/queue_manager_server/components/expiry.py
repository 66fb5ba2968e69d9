"""The expiry sweep: ends the jobs whose expiry (JobOptions.expire_after) passed while nobody claimed them.

A claim ends an expired job it pops (lua/includes/claim.lua); this sweep ends the ones no claim reaches in
time, a queue without workers above all, so its counts, its dashboard and the expired jobs' flows (a chain's,
a workflow's cancelled path) do not wait for a worker. Every interval it runs expire_waiting.lua once for
every queue, in shared round trips; the script reads only the queue's 'expiring' entries that are due (one
command when none is), and is atomic, so any number of servers may sweep at once.
"""

from __future__ import annotations

from queue_manager_server.components.base import Component, error_text
from queue_manager_server.engine import Engine

# Entries looked at per queue and call; a queue with more due is called again at once.
EXPIRE_CHUNK = 1000


class ExpirySweep(Component):
    name = "expiry_sweep"

    def __init__(self, engine: Engine, interval: float) -> None:
        super().__init__(interval)
        self.engine = engine

    async def clock_moved(self) -> None:
        await self.tick()

    async def tick(self) -> None:
        queues = await self.engine.queue_names()
        results = await self.engine.expire_waiting_all(queues, EXPIRE_CHUNK)
        for queue, result in zip(queues, results, strict=True):
            if isinstance(result, Exception):
                self.log.warning("expiry sweep failed", extra={"queue": queue, "error": error_text(result)})
                continue
            expired = result
            while result == EXPIRE_CHUNK:  # more may be due: this queue goes on alone
                (result,) = await self.engine.expire_waiting_all([queue], EXPIRE_CHUNK)
                if isinstance(result, Exception):
                    break
                expired += result
            if expired:
                self.log.info("ended jobs that expired unclaimed", extra={"queue": queue, "count": expired})
