"""Pushes of external events on one Redis server, in one script call when the key has few waiters and in
batches when it has many, so no call holds the server for long (a key with 50,000 waiters would otherwise
be one script of a few hundred milliseconds, stalling every other client meanwhile).

A push (push_event.lua) that finds at most WAKE_BATCH waiters wakes them and adds its triggers' jobs in one
step, as before. One that finds more adds the triggers' jobs, moves the key's waiters set to the push's
snapshot, and writes the push's record (its event, its cut, what it did so far) and, with an event id, the
id's record naming the push; then wake_event_batch.lua wakes the snapshot WAKE_BATCH jobs per call until it
is empty, and the last call writes the push's whole answer into the id's record. The cut is precise: the
jobs woken are those in the key's set at the first step, less any whose wait ended and began again after it
(includes/event_push.lua). A server lost between batches leaves the record in the pushes to carry out: the
janitor of any server goes on with it once it has had no batch for REPLAY_AFTER_MS, and each member is popped
once, so every job is woken once. A repeat of the event id meanwhile goes on with the push itself and
answers what it did, as on a Cluster (services/event_pushes.py). A server that stalled between two batches
for longer than the finished record is kept (DONE_KEPT_MS) cannot answer: its push was carried out, so it
answers DATA_LOSS, not UNAVAILABLE, which callers retry and which would push the event a second time.
"""

from __future__ import annotations

import uuid

from queue_manager_server.engine import Engine
from queue_manager_server.engine.engine import _s
from queue_manager_server.engine.event_pushes import EventPushes
from queue_manager_server.engine.external_events import Batched, ExternalEvents, Pushed
from queue_manager_server.engine.keys import event_push
from queue_manager_server.errors import AnswerLost
from queue_manager_server.services.event_pushes import (
    ANSWER_LIMIT,
    EVENT_ID_WINDOW_MS,
    PLAN_ATTEMPTS,
    REPLAY_AFTER_MS,
    REPLAY_BATCH,
    WAKE_BATCH,
    Plan,
    maybe_crash,
)

# How long a push carried out in batches keeps its record once done, so a server that carried it out along
# with the janitor (it stalled past REPLAY_AFTER_MS between two batches) still reads its whole answer.
DONE_KEPT_MS = 600_000


class LongPushes:
    """Pushes of external events on one Redis server (see the module docstring)."""

    def __init__(self, engine: Engine, crash_point: str = "") -> None:
        self.engine = engine
        self.events = ExternalEvents(engine)
        self.pushes = EventPushes(engine)
        self.crash_point = crash_point

    async def push_event(self, key: str, event: bytes, event_id: str, plan: Plan) -> Pushed | None:
        """Pushes an event, planned again when the triggers changed since; None when they kept changing."""
        push_id = uuid.uuid4().hex
        for attempt in range(PLAN_ATTEMPTS):
            version, adds = await plan(attempt > 0)
            pushed = await self.events.push_event(
                key, event, event_id, EVENT_ID_WINDOW_MS, version, adds, push_id, WAKE_BATCH
            )
            if not isinstance(pushed, Batched):
                if pushed is not None:
                    return pushed
                continue
            done = await self.carry_out(pushed.push_id, event_id)
            if done is not None:
                done.duplicate = pushed.duplicate
                return done
            if not pushed.duplicate:
                raise AnswerLost(
                    f"the event was pushed and every waiter of key {key!r} woken, but this server stalled"
                    f" between two batches for longer than its answer is kept ({DONE_KEPT_MS // 60_000}"
                    " minutes), so the push's answer is gone; do not push the event again: a second push"
                    " would wake the key's waiters and add its triggers' jobs again"
                    + (f" (a push with event id {event_id!r} answers what it did)" if event_id else "")
                )
            # Carried out meanwhile, and its record gone: the event id's record now holds its whole answer.
        return None

    async def carry_out(self, push_id: str, event_id: str) -> Pushed | None:
        """Wakes the rest of a push carried out in batches; its answer, or None when its record is gone."""
        while True:
            done, answer = await self.events.wake_event_batch(
                push_id, event_id, WAKE_BATCH, ANSWER_LIMIT, DONE_KEPT_MS
            )
            if done:
                return answer
            maybe_crash(self.crash_point, "between-event-batches")

    async def replay(self) -> int:
        """Goes on with the pushes a lost server left half carried out (the janitor's call); how many."""
        now = await self.engine.redis_time_ms()
        done = 0
        for push_id in await self.pushes.pending_pushes(now - REPLAY_AFTER_MS, REPLAY_BATCH):
            raw = await self.engine.redis.hget(event_push(self.engine.prefix, push_id), "eid")
            if raw is not None and await self.carry_out(push_id, _s(raw)) is not None:
                done += 1
        return done
