"""Schedule storage: one Python method per schedule script, plus the reads the scheduler and admin need.

A schedule lives in three keys of its queue (engine/keys.py): its definition (an encoded ``Schedule``,
opaque here), the occurrence it waits for (a zset score, Redis ms), and its firing state
``"<revision> <run count> <last run ms> <last job id>"``. The revision is new at every upsert, so a firing
planned on an older definition no longer matches and writes nothing (fire_schedule.lua).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from queue_manager_server.engine.engine import Engine
from queue_manager_server.engine.records import NewJob
from queue_manager_server.errors import QueueNotFound, ScheduleNotFound

NO_QUEUE = -1


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


@dataclass(slots=True)
class ScheduleRecord:
    """A stored schedule."""

    queue: str
    id: str
    definition: bytes
    runs: str  # the firing state, as stored (compared by fire_schedule.lua)
    due_ms: int  # -1: over

    @property
    def run_count(self) -> int:
        return int(self._part(1) or 0)

    @property
    def last_run_ms(self) -> int:
        return int(self._part(2) or -1)

    @property
    def last_job_id(self) -> str:
        return self._part(3)

    def _part(self, index: int) -> str:
        parts = self.runs.split(" ", 3)
        return parts[index] if len(parts) == 4 else ""


class ScheduleStore:
    """The schedules of every queue, on the engine's Redis."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.redis = engine.redis
        self.store = engine.store

    async def upsert(
        self, queue: str, schedule_id: str, definition: bytes, next_due_ms: int
    ) -> tuple[bool, ScheduleRecord]:
        """Creates or replaces a schedule. Returns (created, the stored schedule)."""
        k = self.engine.keys(queue)
        r = await self.engine.scripts.run(
            "upsert_schedule",
            [k.meta, k.schedules, k.schedule_due, k.schedule_runs],
            [schedule_id, definition, next_due_ms, os.urandom(6).hex(), self.engine.channel, queue],
        )
        if int(r[0]) == NO_QUEUE:
            raise QueueNotFound(queue)
        return int(r[0]) == 1, ScheduleRecord(queue, schedule_id, definition, _s(r[1]), next_due_ms)

    async def find(self, queue: str, schedule_id: str) -> ScheduleRecord | None:
        """One schedule, or None; raises QueueNotFound when the queue is not registered."""
        k = self.engine.keys(queue)
        pipe = self.store.pipeline()
        pipe.exists(k.meta)
        pipe.hget(k.schedules, schedule_id)
        pipe.hget(k.schedule_runs, schedule_id)
        pipe.zscore(k.schedule_due, schedule_id)
        exists, definition, runs, due = await self.store.execute(pipe)
        if not exists:
            raise QueueNotFound(queue)
        if definition is None:
            return None
        return ScheduleRecord(queue, schedule_id, definition, _s(runs or b""), _due(due))

    async def get(self, queue: str, schedule_id: str) -> ScheduleRecord:
        found = await self.find(queue, schedule_id)
        if found is None:
            raise ScheduleNotFound(queue, schedule_id)
        return found

    async def list_schedules(self, queue: str | None) -> list[ScheduleRecord]:
        """The schedules of one queue (raises QueueNotFound when it is not registered) or of every queue,
        by queue then id."""
        if queue is not None:
            await self.engine.get_queue(queue)
        queues = [queue] if queue is not None else await self.engine.queue_names()
        pipe = self.store.pipeline()
        for q in queues:
            k = self.engine.keys(q)
            pipe.hgetall(k.schedules)
            pipe.hgetall(k.schedule_runs)
            pipe.zrange(k.schedule_due, 0, -1, withscores=True)
        rows = await self.store.execute(pipe)
        out: list[ScheduleRecord] = []
        for i, q in enumerate(queues):
            definitions, runs, due = rows[3 * i], rows[3 * i + 1], rows[3 * i + 2]
            due_by_id = {_s(member): int(score) for member, score in due}
            for raw_id in sorted(definitions, key=_s):
                sid = _s(raw_id)
                state = _s(runs.get(raw_id, b""))
                out.append(ScheduleRecord(q, sid, definitions[raw_id], state, due_by_id.get(sid, -1)))
        return out

    async def delete(self, queue: str, schedule_id: str) -> ScheduleRecord:
        """Deletes a schedule and returns it as it was."""
        k = self.engine.keys(queue)
        r = await self.engine.scripts.run(
            "delete_schedule", [k.schedules, k.schedule_due, k.schedule_runs], [schedule_id]
        )
        if not r:
            await self.engine.get_queue(queue)
            raise ScheduleNotFound(queue, schedule_id)
        return ScheduleRecord(queue, schedule_id, r[0], _s(r[1]), int(r[2]))

    # ---- firing (components/scheduler.py) -----------------------------------------------------

    async def earliest(self, queues: Sequence[str]) -> tuple[int, dict[str, int]]:
        """Redis time now, and the earliest due time of each queue that has a schedule waiting."""
        pipe = self.store.pipeline()
        self.store.time_in(pipe)
        for q in queues:
            pipe.zrange(self.engine.keys(q).schedule_due, 0, 0, withscores=True)
        rows = await self.store.execute(pipe)
        sec, usec = rows[0]
        first = {q: int(row[0][1]) for q, row in zip(queues, rows[1:], strict=True) if row}
        return int(sec) * 1000 + int(usec) // 1000, first

    async def due(self, queue: str, limit: int) -> tuple[int, list[ScheduleRecord], int]:
        """Redis time now, at most `limit` schedules of the queue due by then (earliest first), and the
        earliest due time of the rest (-1: none)."""
        k = self.engine.keys(queue)
        pipe = self.store.pipeline()
        self.store.time_in(pipe, k.schedule_due)  # the clock fire_schedule.lua compares with
        pipe.zrange(k.schedule_due, 0, limit, withscores=True)
        (sec, usec), first = await self.store.execute(pipe)
        now = int(sec) * 1000 + int(usec) // 1000
        ready = [(_s(member), int(score)) for member, score in first[:limit] if score <= now]
        rest = first[len(ready)] if len(first) > len(ready) else None
        if not ready:
            return now, [], int(rest[1]) if rest is not None else -1
        pipe = self.store.pipeline()
        for sid, _ in ready:
            pipe.hget(k.schedules, sid)
            pipe.hget(k.schedule_runs, sid)
        rows = await self.store.execute(pipe)
        records = [
            ScheduleRecord(queue, sid, rows[2 * i], _s(rows[2 * i + 1] or b""), due)
            for i, (sid, due) in enumerate(ready)
            if rows[2 * i] is not None
        ]
        return now, records, int(rest[1]) if rest is not None else -1

    async def fire(self, record: ScheduleRecord, jobs: Sequence[NewJob], next_due_ms: int) -> int:
        """Adds a due schedule's jobs and moves it on to next_due_ms, unless it changed since `record` was
        read. Returns the number of jobs created, or -1 when it had changed (nothing written)."""
        k = self.engine.keys(record.queue)
        args: list[Any] = [
            k.job_prefix,
            self.engine.channel,
            record.queue,
            record.id,
            record.due_ms,
            record.runs,
            next_due_ms,
            len(jobs),
        ]
        for job in jobs:
            args += job.argv()
        r = await self.engine.scripts.run(
            "fire_schedule", [k.meta, k.waiting, k.delayed, k.schedule_due, k.schedule_runs], args
        )
        code = int(r[0])
        if code == NO_QUEUE:
            raise QueueNotFound(record.queue)
        return int(r[2]) if code == 1 else -1


def _due(score: Any) -> int:
    return -1 if score is None else int(score)
