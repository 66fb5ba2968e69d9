"""A queue's job events (WatchJobEvents): the watch deadline that turns them on, and their wire format.

While a server has watchers of a queue it keeps the queue's watch deadline (meta ``evw``, ms, Redis clock)
ahead (`watch`); until the deadline passes, every script call that changes the queue's jobs publishes what it
did in ONE message on the events channel (common.lua ``watched``, ``job_event``, ``publish_events``):

    e <queue> <now ms> <JSON array of events>

each event ``[type, id, name, attempt, text, run-at]`` less its empty tail, ``type`` the number of its
``JobEventType`` (jobs.proto), ``text`` a failure's reason or a progress. A queue nobody watches costs its
scripts nothing: the deadline is read with the settings they read anyway. `decode` reads such a message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from queue_manager_server.engine.engine import Engine
from queue_manager_server.errors import QueueNotFound

# The event types (jobs.proto JobEventType) whose text is a progress; the others' is a failure's reason.
PROGRESS = 4


@dataclass(frozen=True, slots=True)
class JobEventRecord:
    """One event of a job, as a script published it.

    Attributes:
        type: Its JobEventType number.
        job_id: The job's id.
        name: The job's name ("" when the job was gone).
        attempt: The attempt it concerns (0: not known).
        text: A failure's reason (FAILED, RETRYING) or a progress as JSON (PROGRESS); else "".
        run_at_ms: When the job runs (ADDED delayed, RETRYING, DELAYED), ms; 0 for none.
    """

    type: int
    job_id: str
    name: str
    attempt: int = 0
    text: str = ""
    run_at_ms: int = 0


@dataclass(frozen=True, slots=True)
class EventBatch:
    """The events one script call published for one queue, in the order they happened."""

    queue: str
    time_ms: int
    events: list[JobEventRecord]


def decode(data: bytes) -> EventBatch | None:
    """An ``e`` message of the events channel (``e <queue> <ms> <JSON>``); None for one it cannot read."""
    parts = data.split(b" ", 3)
    if len(parts) != 4 or parts[0] != b"e":
        return None
    try:
        time_ms = int(parts[2])
        # A name or a reason cut at a byte limit may end inside a character: replaced, not refused.
        raw = json.loads(parts[3].decode(errors="replace"))
        events = [_event(e) for e in raw]
    except (ValueError, TypeError, IndexError):
        return None
    return EventBatch(parts[1].decode(errors="replace"), time_ms, events)


def _event(e: list[object]) -> JobEventRecord:
    n = len(e)
    return JobEventRecord(
        type=int(e[0]),  # type: ignore[call-overload]
        job_id=str(e[1]),
        name=str(e[2]),
        attempt=int(e[3]) if n > 3 else 0,  # type: ignore[call-overload]
        text=str(e[4]) if n > 4 else "",
        run_at_ms=int(e[5]) if n > 5 else 0,  # type: ignore[call-overload]
    )


class JobEvents:
    """The watch deadline of a queue's job events (lua/watch_events.lua)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def watch(self, queue: str, ttl_ms: int) -> int:
        """Keeps the queue's job events on for at least ttl_ms more; returns the deadline (ms, Redis clock).

        Raises:
            QueueNotFound: The queue is not registered.
        """
        k = self.engine.keys(queue)
        deadline = int(await self.engine.scripts.run("watch_events", [k.meta], [ttl_ms]))
        if deadline < 0:
            raise QueueNotFound(queue)
        return deadline
