"""The priority sweep: carries out the queues' priority bounds (anti-starvation aging, engine/aging.py).

Every interval it reads which queues have bounds (one meta field each, in shared round trips) and runs
age_waiting.lua once for each of them, which moves the jobs that have waited their level's bound ahead of
every level (a fairness group's within its group), and again at once for a queue with more jobs due or
more groups than one call takes. A bound therefore holds to within one interval: a job runs no later than
its bound plus one interval plus the time until a worker's slot frees (docs/jobs.md). The script is atomic
and finds only the jobs still past their bound at the head of their own level, so any number of servers may
sweep the same queue at once: the first one moves a job, the others no longer find it there. Nothing here
runs on the add, claim or completion path.
"""

from __future__ import annotations

from queue_manager_server.components.base import Component, error_text
from queue_manager_server.engine import Engine
from queue_manager_server.engine.aging import Aging


class PrioritySweep(Component):
    name = "priority_sweep"

    def __init__(self, engine: Engine, interval: float) -> None:
        super().__init__(interval)
        self.aging = Aging(engine)

    async def clock_moved(self) -> None:
        await self.tick()

    async def tick(self) -> None:
        queues = await self.aging.bounded_queues()
        for queue, result in zip(queues, await self.aging.age_waiting_all(queues), strict=True):
            if isinstance(result, Exception):
                self.log.warning("priority sweep failed", extra={"queue": queue, "error": error_text(result)})
                continue
            # More may be past their bound, or groups are left: this queue goes on alone.
            moved = result.moved + await self.aging.go_on(queue, result)
            if moved:
                self.log.info(
                    "moved jobs past their priority bound ahead", extra={"queue": queue, "count": moved}
                )
