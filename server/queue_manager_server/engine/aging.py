"""Anti-starvation aging: the priority bounds of a queue (QueueConfig.priority_bounds) carried out by
age_waiting.lua, which moves the waiting jobs that have waited their level's bound ahead of every level.

The bounds live in the queue's meta field ``aging`` (``"<level>:<ms>,..."``, the levels in order; empty
for none), written by register_queue.lua from the config (convert.py). Only the periodic priority sweep
reads them (components/aging.py): add, claim and completion never do, so a queue pays for its bounds one
script call per sweep and nothing per job.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from queue_manager_server.engine.engine import SWEEP_CHUNK, Engine, only

# Jobs moved per age_waiting call; a queue with more past their bound is called again at once.
AGE_CHUNK = 1000
# The meta field holding a queue's bounds.
AGING_FIELD = "aging"


def bounds_field(bounds: Sequence[tuple[int, int]]) -> str:
    """The meta field's value for bounds given as (level, max wait ms), the levels in order."""
    return ",".join(f"{level}:{ms}" for level, ms in bounds)


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

    async def age_waiting(self, queue: str, limit: int = AGE_CHUNK) -> int:
        """Moves the queue's waiting jobs past their level's bound to the head of the first level (after
        those moved before, oldest first); returns how many (`limit`: more may be due)."""
        return only(await self.age_waiting_all([queue], limit))

    async def age_waiting_all(self, queues: Sequence[str], limit: int = AGE_CHUNK) -> list[int | Exception]:
        """`age_waiting` for each queue, in shared round trips (Engine.sweep)."""
        return await self.engine.sweep(
            "age_waiting", queues, lambda k: ([k.meta, k.waiting], [k.job_prefix, limit]), self._aged
        )

    async def _aged(self, queue: str, r: Any) -> int:
        return int(r[1])
