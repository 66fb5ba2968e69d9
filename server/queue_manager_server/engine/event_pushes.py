"""External events on a Redis Cluster: a push recorded in the event hash slot, then carried out one queue at
a time (services/event_pushes.py says why and in what order).

One method per Lua script, with the script's name and argument order (as in engine.py).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from queue_manager_server.engine.engine import Engine, _b, _i, _s
from queue_manager_server.engine.keys import (
    cluster_event_pushed,
    event_delivered,
    event_index,
    event_indexed_keys,
    event_push,
    event_pushes,
    event_triggers_version,
    queue_event_push_waiters,
    queue_event_waiters,
)
from queue_manager_server.engine.records import NewJob

# The four add_jobs.lua arguments of one trigger job (NewJob.argv), as a push's record keeps them.
JobArgs = tuple[str, bytes, bytes, bytes]


@dataclass(slots=True)
class PushRecord:
    """A push recorded and not yet carried out to every queue: its id, key, event id ('' for none), the
    event as a Job (what a woken job's 'par' gets), when it was recorded (Redis ms), the queues the key's
    index listed with the time each was indexed, and the triggers' jobs by queue."""

    push_id: str
    key: str
    event_id: str
    tail: bytes
    at_ms: int
    indexed: list[tuple[str, str]]
    adds: list[tuple[str, list[JobArgs]]] = field(default_factory=list)


@dataclass(slots=True)
class Delivered:
    """What a push did in one queue (deliver_event.lua): whether the queue's waiters set of the key still
    holds a job, whether the queue's share is done, how many it woke, and once done the ids woken (the first
    of them past the answer's bound) and the ids added."""

    left: bool
    done: bool
    count: int
    woken: list[str]
    added: list[str]


@dataclass(slots=True)
class IndexedKey:
    """An event key with an index (event_index_due.lua): its score in the list of keys (when it was last
    indexed, as Redis wrote it) and its index's entries, (queue, ms indexed)."""

    key: str
    score: str
    entries: list[tuple[str, str]]


@dataclass(slots=True)
class FirstPush:
    """The record of an event id pushed before: when, what it woke and added as (queue, job id), the
    push's id while that push is not carried out yet (then woken and added are empty), and how many jobs it
    woke (more than `woken` lists past the answer's bound)."""

    pushed_ms: int
    woken: list[tuple[str, str]]
    added: list[tuple[str, str]]
    pending: str | None
    woken_count: int


def encode_adds(adds: Sequence[tuple[str, Sequence[NewJob]]]) -> str:
    """The triggers' jobs as a push's record keeps them (JSON; the bytes in base64)."""
    return json.dumps(
        [
            [
                queue,
                [[h, *(base64.b64encode(b).decode() for b in rest)] for h, *rest in (j.argv() for j in jobs)],
            ]
            for queue, jobs in adds
        ]
    )


def _decode_adds(raw: bytes) -> list[tuple[str, list[JobArgs]]]:
    out: list[tuple[str, list[JobArgs]]] = []
    for queue, jobs in json.loads(raw or b"[]"):
        args = [(h, *(base64.b64decode(b) for b in rest)) for h, *rest in jobs]
        out.append((queue, [(a[0], a[1], a[2], a[3]) for a in args]))
    return out


def _pairs(flat: object) -> list[tuple[str, str]]:
    # cjson writes an empty Lua table as {}: no pairs.
    items = flat if isinstance(flat, list) else []
    return [(str(items[i]), str(items[i + 1])) for i in range(0, len(items) - 1, 2)]


def first_push(raw: bytes) -> FirstPush:
    """An event id's record (record_event.lua, event_done.lua), read."""
    a = json.loads(raw)
    woken = _pairs(a[1])
    count = int(a[4]) if len(a) > 4 else len(woken)
    return FirstPush(int(a[0]), woken, _pairs(a[2]), str(a[3]) if len(a) > 3 and a[3] else None, count)


class EventPushes:
    """The scripts of pushes on a Redis Cluster."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def index_event_wait(self, queue: str, keys: Sequence[str], timeout_ms: int) -> int:
        """Lists the queue in the index of each key; returns when (Redis ms of the event hash slot)."""
        p = self.engine.prefix
        return _i(
            await self.engine.scripts.run(
                "index_event_wait",
                [event_indexed_keys(p), *(event_index(p, k) for k in keys)],
                [queue, timeout_ms, *keys],
            )
        )

    async def record_event(
        self,
        push_id: str,
        key: str,
        event: bytes,
        event_id: str,
        keep_ms: int,
        version: str,
        adds: Sequence[tuple[str, Sequence[NewJob]]],
    ) -> PushRecord | FirstPush | None:
        """Records a push (`event`: the encoded ExternalEvent without its time) with the triggers' jobs
        planned on the triggers at `version`. Returns the record, or the event id's first push for a repeat
        within `keep_ms`, or None, having written nothing, when the triggers changed since `version`."""
        p = self.engine.prefix
        keys = [event_triggers_version(p), event_pushes(p), event_push(p, push_id), event_index(p, key)]
        if event_id:
            keys.append(cluster_event_pushed(p, event_id))
        encoded = encode_adds(adds)
        r = await self.engine.scripts.run(
            "record_event", keys, [push_id, key, event, keep_ms, version, event_id, encoded]
        )
        code = _i(r[0])
        if code < 0:
            return None
        if code == 1:
            return first_push(_b(r[1]))
        indexed = [(_s(r[i]), _s(r[i + 1])) for i in range(3, len(r), 2)]
        return PushRecord(push_id, key, event_id, _b(r[2]), _i(r[1]), indexed, _decode_adds(encoded.encode()))

    async def push_record(self, push_id: str) -> PushRecord | None:
        """The record of a push not carried out yet, or None (carried out meanwhile)."""
        raw = await self.engine.redis.hgetall(event_push(self.engine.prefix, push_id))
        if not raw:
            return None
        f = {_s(k): _b(v) for k, v in raw.items()}
        indexed = [tuple(line.split("\t", 1)) for line in f["q"].decode().split("\n") if line]
        return PushRecord(
            push_id,
            f["key"].decode(),
            f["eid"].decode(),
            f["ev"],
            _i(f["at"]),
            [(q, at) for q, at in indexed],
            _decode_adds(f["adds"]),
        )

    async def deliver_event(
        self,
        push: PushRecord,
        queues: Sequence[str],
        keep_ms: int,
        batch: int,
        limit: int,
        touch: bool = False,
    ) -> list[tuple[str, Delivered]]:
        """Carries the push out in each of `queues` (among those the index listed and the triggers'), one
        script call per queue waking at most `batch` jobs and listing at most `limit`, all in one round
        trip. touch: a further round, which also marks the push as still carried out (touch_event_push.lua),
        in the same round trip."""
        adds = dict(push.adds)
        p = self.engine.prefix
        pipe = self.engine.store.pipeline()
        if touch:
            self.engine.scripts.call_in(pipe, "touch_event_push", [event_pushes(p)], [push.push_id])
        for queue in queues:
            k = self.engine.keys(queue)
            jobs = adds.get(queue, [])
            args: list[str | bytes | int] = [
                self.engine.channel,
                push.key,
                push.tail,
                keep_ms,
                k.job_prefix,
                queue,
                batch,
                limit,
                len(jobs),
            ]
            for job in jobs:
                args += job
            keys = [
                k.meta,
                k.waiting,
                k.delayed,
                queue_event_waiters(p, queue, push.key),
                event_delivered(p, queue, push.push_id),
                queue_event_push_waiters(p, queue, push.push_id),
            ]
            self.engine.scripts.call_in(pipe, "deliver_event", keys, args)
        replies = await self.engine.store.execute(pipe)
        out = []
        for queue, r in zip(queues, replies[1:] if touch else replies, strict=True):
            listed = _i(r[3])
            ids = [_s(v) for v in r[4:]]
            out.append((queue, Delivered(_i(r[0]) == 1, _i(r[1]) == 1, _i(r[2]), ids[:listed], ids[listed:])))
        return out

    async def event_done(
        self, push: PushRecord, answer: str, grace_ms: int, emptied: Sequence[tuple[str, str]]
    ) -> bool:
        """Clears a carried-out push: `answer` (the push's answer as an event id's record holds it) becomes
        its event id's record, and the queues `emptied` (queue, ms indexed as the record read it) leave the
        key's index unless indexed again since or within `grace_ms` before the push. False: cleared before."""
        p = self.engine.prefix
        keys = [event_pushes(p), event_push(p, push.push_id), event_index(p, push.key)]
        if push.event_id:
            keys.append(cluster_event_pushed(p, push.event_id))
        args: list[str | int] = [push.push_id, answer, grace_ms]
        for queue, indexed in emptied:
            args += [queue, indexed]
        return _i(await self.engine.scripts.run("event_done", keys, args)) == 1

    async def pending_pushes(self, before_ms: int, limit: int) -> list[str]:
        """The ids of pushes recorded before `before_ms` (Redis ms) and not carried out yet, oldest first."""
        ids = await self.engine.redis.zrangebyscore(
            event_pushes(self.engine.prefix), "-inf", before_ms, start=0, num=limit
        )
        return [_s(i) for i in ids]

    async def event_index_due(self, grace_ms: int, limit: int) -> tuple[int, list[IndexedKey]]:
        """The event keys not indexed for `grace_ms`, oldest first, with their indexes' entries, and the time
        (Redis ms) they were read."""
        p = self.engine.prefix
        r = await self.engine.scripts.run(
            "event_index_due", [event_indexed_keys(p)], [grace_ms, limit, event_index(p, "")]
        )
        out, i = [], 1
        while i < len(r):
            n = _i(r[i + 2])
            entries = [(_s(r[j]), _s(r[j + 1])) for j in range(i + 3, i + 3 + 2 * n, 2)]
            out.append(IndexedKey(_s(r[i]), _s(r[i + 1]), entries))
            i += 3 + 2 * n
        return _i(r[0]), out

    async def waiters_left(self, entries: Sequence[tuple[str, str]]) -> list[bool]:
        """Whether each queue's waiters set of each event key, (queue, key), holds a job (one round trip)."""
        pipe = self.engine.store.pipeline()
        for queue, key in entries:
            pipe.exists(queue_event_waiters(self.engine.prefix, queue, key))
        return [bool(n) for n in await self.engine.store.execute(pipe)]

    async def event_index_sweep(
        self,
        read_at: int,
        grace_ms: int,
        keys: Sequence[IndexedKey],
        empty: Sequence[Sequence[tuple[str, str]]],
    ) -> int:
        """Drops from each key's index its queues `empty` (queue, ms indexed as read) under event_done.lua's
        rule, and the keys whose index is gone from the list; returns how many entries it dropped."""
        p = self.engine.prefix
        args: list[str | int] = [read_at, grace_ms, event_index(p, "")]
        for key, queues in zip(keys, empty, strict=True):
            args += [key.key, key.score, len(queues)]
            for queue, indexed in queues:
                args += [queue, indexed]
        return _i(await self.engine.scripts.run("event_index_sweep", [event_indexed_keys(p)], args))
