"""Timed pauses: a queue's or a fairness group's pause that lifts by itself (PauseQueueRequest.resume_after).

set_paused.lua and set_group_paused.lua record the time (meta ``paused_until``; ``gpuntil`` for groups) and
announce it; resume_due.lua lifts what is due, atomically and only once, which components/pause_timer.py
calls on time in every server.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from queue_manager_server.engine.engine import Engine

# Groups resumed per call; a queue with more due is called again at once (its next time is then not later
# than now).
RESUME_CHUNK = 500


@dataclass(frozen=True, slots=True)
class Resumed:
    """What one resume_due.lua call did: the pauses it lifted, the next time one is due (Redis ms; -1 for
    none) and Redis's clock as it ran."""

    lifted: int
    next_due_ms: int
    now_ms: int


class Pauses:
    """The timed-pause operation on top of an `Engine`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def resume_due(self, queue: str) -> Resumed:
        """Lifts the queue's and its groups' timed pauses that are due."""
        (result,) = await self.resume_due_all([queue])
        if isinstance(result, Exception):
            raise result
        return result

    async def resume_due_all(self, queues: Sequence[str]) -> list[Resumed | Exception]:
        """`resume_due` for each queue, in shared round trips (Engine.sweep)."""

        async def parsed(queue: str, r: Any) -> Resumed:
            return Resumed(int(r[1]), int(r[2]), int(r[0]))

        return await self.engine.sweep("resume_due", queues, lambda k: ([k.meta], [RESUME_CHUNK]), parsed)
