"""External events on a Redis Cluster, where one script touches one hash slot and a push reaches jobs of any
queue: the push is recorded in one step and carried out queue by queue in a second, idempotent one, as a
chain's next link is (services/flows.py).

Keys. Each queue keeps its own waiters set per event key, in its hash slot. The event hash slot (the event
triggers' hash tag: engine/keys.py) holds, per event key, an index of the queues with jobs that may wait for
it (queue -> the time it was indexed), the records of pushes not carried out yet, and the event ids' records.

A wait. The server first indexes the queue for each key (index_event_wait.lua), then parks the job and joins
the queue's sets (event_wait.lua). So a wait parked before a push's record has its queue in the index the
record reads, and the push's share in that queue (below), which runs after the record, finds it.

A push. record_event.lua deduplicates its event id (24 h, as on one server), checks the triggers' version,
reads the key's index and writes the push's record: the queues it listed and the triggers' jobs by queue,
planned here before. Then deliver_event.lua runs in each of those queues (one round trip for all): it wakes
the queue's jobs parked for the key, WAKE_BATCH at most per call (the first call moves the queue's waiters set
to the push's snapshot, so a wait parked after it is not this push's: includes/event_push.lua), adds the
triggers' jobs, and leaves a mark holding what it did so far; queues with waiters left get another round trip
until none has, and a call after a queue's share is done changes nothing and answers the same. Last,
event_done.lua clears the record and writes the whole answer into the event id's record. A server lost between
the steps leaves the record: the janitor of any server carries out records older than REPLAY_AFTER_MS the same
way, so every waiter is woken once and every trigger job added once. A push of many rounds marks its record
alive with each round after the first (touch_event_push.lua, in that round's round trip), so the janitor joins
only a push whose server has done no round for REPLAY_AFTER_MS, not one that is long in all. A repeat of an
event id whose push is not carried out yet carries it out itself, so it answers what the first push did, as on
one server.

The index shrinks too: a queue that a push found with no waiter left leaves it (event_done.lua), unless it
was indexed again since the push read it, or less than INDEX_GRACE_MS before the push; the janitor applies
the same rule to keys whose waits ended with no push (event_index_due.lua, event_index_sweep.lua). A wait
indexed earlier than that which is not parked yet could still join the queue's set after the push looked,
and would be lost from the index; event_wait.lua refuses to park a job whose index is older than
INDEX_MAX_AGE_MS (the server indexes again and retries), which rules that out while the nodes' clocks agree
within the difference.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import uuid
from collections.abc import Awaitable, Callable, Sequence

from queue_manager_server.engine import Engine
from queue_manager_server.engine.event_pushes import Delivered, EventPushes, FirstPush, PushRecord
from queue_manager_server.engine.external_events import STALE_INDEX, EventParked, ExternalEvents, Pushed
from queue_manager_server.engine.records import NewJob
from queue_manager_server.errors import Unavailable

log = logging.getLogger("queue_manager_server.event_pushes")

# How long a pushed event id is remembered, so a webhook's retries within it push nothing twice; a push's
# marks in its queues are kept as long.
EVENT_ID_WINDOW_MS = 24 * 3600 * 1000
# Plans of a push's trigger jobs before it gives up (services/external_events.py).
PLAN_ATTEMPTS = 5
# How old a queue's index entry may be when its wait is parked, and how long before a push a queue must have
# been indexed to leave the index: the second at least twice the first, so nodes' clocks may differ by the
# difference (see the module docstring).
INDEX_MAX_AGE_MS = 30_000
INDEX_GRACE_MS = 60_000
# Indexings of a wait before it gives up: each is refused only when more than INDEX_MAX_AGE_MS passed between
# the index and the park (a server stalled between two calls).
INDEX_ATTEMPTS = 3
# The janitor carries out pushes recorded longer ago than this (a push's own server takes milliseconds).
REPLAY_AFTER_MS = 2_000
REPLAY_BATCH = 100
# Event keys whose indexes the janitor sweeps per tick.
SWEEP_BATCH = 100
# The most waiters one script call wakes (a push with more wakes them in batches: deliver_event.lua here,
# services/long_pushes.py on one server): a wake costs Valkey about 35 µs, so a batch holds it 3 to 4 ms
# (python -m bench.events_push). And the most woken jobs a push's answer lists (PushEventResponse.woken;
# woken_count counts them all).
WAKE_BATCH = 100
ANSWER_LIMIT = 1000
# Testing knob (qm serve --test-crash-point, as services/flows.py CRASH_POINTS): the process kills itself
# with SIGKILL after a push's record, after its queues' shares and before the record is cleared, or after
# the first batch of a push carried out in batches (here or on one server).
CRASH_POINTS = ("after-event-record", "after-event-delivery", "between-event-batches")

# The triggers' version and the jobs they add for the push, by queue; True asks to read the triggers again.
Plan = Callable[[bool], Awaitable[tuple[str, Sequence[tuple[str, Sequence[NewJob]]]]]]


class ClusterPushes:
    """Waits and pushes of external events on a Redis Cluster (see the module docstring)."""

    def __init__(self, engine: Engine, crash_point: str = "") -> None:
        self.engine = engine
        self.pushes = EventPushes(engine)
        self.events = ExternalEvents(engine)
        self.crash_point = crash_point

    async def event_wait(
        self,
        queue: str,
        job_id: str,
        lease_token: str,
        content_type: str,
        data: bytes,
        timeout_ms: int,
        wait: bytes,
        keys: Sequence[str],
    ) -> EventParked:
        """ExternalEvents.event_wait, the queue indexed for the keys first."""
        for _ in range(INDEX_ATTEMPTS):
            indexed = await self.pushes.index_event_wait(queue, keys, timeout_ms)
            parked = await self.events.event_wait(
                queue,
                job_id,
                lease_token,
                content_type,
                data,
                timeout_ms,
                wait,
                keys,
                indexed,
                INDEX_MAX_AGE_MS,
            )
            if parked.code != STALE_INDEX:
                return parked
        raise Unavailable("the wait could not be registered in time; ask again")

    async def push_event(self, key: str, event: bytes, event_id: str, plan: Plan) -> Pushed | None:
        """Records a push and carries it out. Returns None when the triggers kept changing."""
        push_id = uuid.uuid4().hex
        for attempt in range(PLAN_ATTEMPTS):
            version, adds = await plan(attempt > 0)
            got = await self.pushes.record_event(
                push_id, key, event, event_id, EVENT_ID_WINDOW_MS, version, adds
            )
            if isinstance(got, PushRecord):
                maybe_crash(self.crash_point, "after-event-record")
                return await self.carry_out(got)
            if isinstance(got, FirstPush):
                if got.pending is None:
                    return Pushed(True, got.pushed_ms, got.woken, got.added, got.woken_count)
                first = await self.pushes.push_record(got.pending)
                if first is not None:
                    done = await self.carry_out(first)
                    done.duplicate = True
                    return done
                # Carried out meanwhile: the event id's record now holds its whole answer.
        return None

    async def carry_out(self, push: PushRecord) -> Pushed:
        """Carries a recorded push out in each queue it reaches, a batch of waiters per queue and round trip
        (deliver_event.lua), and clears its record; what it did."""
        queues = list(dict.fromkeys([q for q, _ in push.indexed] + [q for q, _ in push.adds]))
        delivered: dict[str, Delivered] = {}
        first = True
        while len(delivered) < len(queues):
            pending = [q for q in queues if q not in delivered]
            # Each further round marks the push as alive, so the janitor joins only a push whose server
            # stopped, not one that takes longer than REPLAY_AFTER_MS in all; the first round needs no mark
            # (the record was just written), so a push of one round costs no command more.
            for queue, share in await self.pushes.deliver_event(
                push, pending, EVENT_ID_WINDOW_MS, WAKE_BATCH, ANSWER_LIMIT, touch=not first
            ):
                if share.done:
                    delivered[queue] = share
            first = False
            if len(delivered) < len(queues):
                maybe_crash(self.crash_point, "between-event-batches")
        maybe_crash(self.crash_point, "after-event-delivery")
        woken = [(q, job_id) for q, _ in push.indexed for job_id in delivered[q].woken][:ANSWER_LIMIT]
        added = [(q, job_id) for q, _ in push.adds for job_id in delivered[q].added]
        count = sum(delivered[q].count for q, _ in push.indexed)
        answer = json.dumps([push.at_ms, _flat(woken), _flat(added), "", count])
        emptied = [(q, at) for q, at in push.indexed if not delivered[q].left]
        await self.pushes.event_done(push, answer, INDEX_GRACE_MS, emptied)
        return Pushed(False, push.at_ms, woken, added, count)

    async def replay(self) -> int:
        """Carries out the pushes a lost server left recorded (the janitor's call); returns how many."""
        now = await self.engine.redis_time_ms()
        done = 0
        for push_id in await self.pushes.pending_pushes(now - REPLAY_AFTER_MS, REPLAY_BATCH):
            push = await self.pushes.push_record(push_id)
            if push is not None:
                await self.carry_out(push)
                done += 1
        return done

    async def sweep_index(self) -> int:
        """Drops from the keys' indexes the queues whose waits ended with no push (cancelled, removed, timed
        out), a batch of keys not indexed for INDEX_GRACE_MS at a time (the janitor's call), under the rule
        of a push's clean-up: the index is read first, the queues' sets looked at after. Returns how many
        entries it dropped."""
        read_at, due = await self.pushes.event_index_due(INDEX_GRACE_MS, SWEEP_BATCH)
        if not due:
            return 0
        pairs = [(queue, k.key) for k in due for queue, _ in k.entries]
        left = iter(await self.pushes.waiters_left(pairs) if pairs else [])
        empty = [[(queue, at) for queue, at in k.entries if not next(left)] for k in due]
        return await self.pushes.event_index_sweep(read_at, INDEX_GRACE_MS, due, empty)


def maybe_crash(crash_point: str, point: str) -> None:
    """Kills this process at the test crash point `point` when it is the one set (CRASH_POINTS)."""
    if crash_point == point:
        log.critical("test crash point reached: killing this process", extra={"point": point})
        os.kill(os.getpid(), signal.SIGKILL)


def _flat(refs: Sequence[tuple[str, str]]) -> list[str]:
    return [part for ref in refs for part in ref]
