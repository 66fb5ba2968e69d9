"""Anti-starvation aging: the priority bounds of a queue (QueueConfig.priority_bounds) carried out by
age_waiting.lua, which moves the waiting jobs that have waited their level's bound ahead of every level.

The bounds live in the queue's meta field ``aging`` (``"<level>:<ms>,..."``, the levels in order; empty
for none), written by register_queue.lua from the config (convert.py). Only the periodic priority sweep
reads them (components/aging.py): add, claim and completion never do, so a queue pays for its bounds one
script call per sweep and nothing per job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from queue_manager_server.engine.engine import SWEEP_CHUNK, Engine, only

# Jobs moved per age_waiting call; a queue with more past their bound is called again at once.
AGE_CHUNK = 1000
# Fairness groups visited per age_waiting call; a queue with more is called again from where it stopped.
GROUP_VISITS = 200
# The meta field holding a queue's bounds.
AGING_FIELD = "aging"


def bounds_field(bounds: Sequence[tuple[int, int]]) -> str:
    """The meta field's value for bounds given as (level, max wait ms), the levels in order."""
    return ",".join(f"{level}:{ms}" for level, ms in bounds)


@dataclass(frozen=True, slots=True)
class Aged:
    """What one age_waiting call did: jobs moved, the group the next call goes on after ("": every group
    visited) and whether the queue needs another call now (jobs may be due still, or groups are left)."""

    moved: int
    go_on: str
    more: bool


class Aging:
    """The priority bounds of the queues and the script that applies them."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def bounded_queues(self) -> list[str]:
        """The registered queues that have priority bounds, by name (one meta read each, SWEEP_CHUNK per
        round trip)."""
        queues = await self.engine.queue_names()
        out: list[str] = []
        for start in range(0, len(queues), SWEEP_CHUNK):
            chunk = queues[start : start + SWEEP_CHUNK]
            pipe = self.engine.store.pipeline()
            for queue in chunk:
                pipe.hget(self.engine.keys(queue).meta, AGING_FIELD)
            for queue, value in zip(chunk, await self.engine.store.execute(pipe), strict=True):
                if value:
                    out.append(queue)
        return out

    async def age_waiting(
        self, queue: str, limit: int = AGE_CHUNK, after: str = "", visits: int = GROUP_VISITS
    ) -> Aged:
        """Moves the queue's waiting jobs past their level's bound to the head of the first level (after
        those moved before, oldest first; a fairness group's to its own first level), visiting `visits` of
        its groups from after the group `after` ("": the first)."""
        return only(await self.age_waiting_all([queue], limit, after, visits))

    async def go_on(self, queue: str, aged: Aged, limit: int = AGE_CHUNK, visits: int = GROUP_VISITS) -> int:
        """Calls `age_waiting` again while the call before (`aged`, the first one's) left jobs that may be
        due or groups not visited; returns how many jobs these calls moved."""
        moved = 0
        while aged.more:
            aged = await self.age_waiting(queue, limit, aged.go_on, visits)
            moved += aged.moved
        return moved

    async def age_waiting_all(
        self, queues: Sequence[str], limit: int = AGE_CHUNK, after: str = "", visits: int = GROUP_VISITS
    ) -> list[Aged | Exception]:
        """`age_waiting` for each queue, in shared round trips (Engine.sweep)."""
        return await self.engine.sweep(
            "age_waiting",
            queues,
            lambda k: ([k.meta, k.waiting], [k.job_prefix, limit, after, visits]),
            lambda _queue, r: self._aged(r, limit),
        )

    @staticmethod
    async def _aged(r: Any, limit: int) -> Aged:
        moved = int(r[1])
        go_on = r[2].decode() if isinstance(r[2], bytes) else str(r[2])
        return Aged(moved, go_on, moved >= limit or go_on != "")
