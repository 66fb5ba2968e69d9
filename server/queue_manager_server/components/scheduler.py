"""Fires due schedules on time, in every queue, safe to run in any number of servers at once.

Timers are armed from the ``s <queue> <due ms>`` events an upsert publishes, and from a rescan every
`RESCAN_S` (which also arms what the last firing set, and catches events missed while the subscription
was down). Due times are Redis times; as in the promoter, they become local deadlines through the offset
between Redis ``TIME`` and this process's monotonic clock, so a skewed wall clock changes nothing.

Firing one schedule: Python plans its occurrences (recurrence.plan: catch-up policy, limit, end time),
then fire_schedule.lua adds their jobs and moves the schedule to its next due time, as a compare-and-set
on the due time and firing state that were read. When several servers fire the same occurrence, the
first adds its job and the others find the schedule moved on and write nothing. Each job's id is derived
from the schedule and occurrence (schedule_convert.occurrence_job_id), a second guard against a double add.
"""

from __future__ import annotations

import sys

from queue_manager.v1 import schedules_pb2
from queue_manager_server import schedule_convert
from queue_manager_server.components.base import TimedComponent, error_text
from queue_manager_server.engine import Engine
from queue_manager_server.engine.engine import ADD_CHUNK
from queue_manager_server.engine.schedules import ScheduleRecord, ScheduleStore
from queue_manager_server.recurrence import plan

# Bound on how late a due time found by rescanning (not announced by an event) is noticed.
RESCAN_S = 1.0
# Due schedules read per round trip, and rounds per firing of a queue before other queues get a turn.
FIRE_BATCH = 100
MAX_ROUNDS = 50
# Job data was checked against the payload limit when the schedule was stored; a limit lowered since
# must not stop schedules that were accepted.
STORED_PAYLOAD_LIMIT = sys.maxsize


class Scheduler(TimedComponent):
    name = "scheduler"

    def __init__(self, engine: Engine, rescan_interval: float = RESCAN_S) -> None:
        super().__init__(rescan_interval)
        self.engine = engine
        self.store = ScheduleStore(engine)

    def schedule(self, queue: str, due_ms: int) -> None:
        """A schedule of `queue` falls due at `due_ms` (Redis time): make sure a timer fires by then."""
        self.arm_at(queue, due_ms)

    async def tick(self) -> None:
        """Rescans every queue: fires what is due, arms timers for the rest."""
        queues = await self.engine.queue_names()
        now, earliest = await self.store.earliest(queues)
        self.sync(now)
        for queue, due in earliest.items():
            if due > now:
                self.schedule(queue, due)
                continue
            try:
                await self.fire_due(queue)
            except Exception as exc:
                self.log.warning("firing failed", extra={"queue": queue, "error": error_text(exc)})

    async def clock_moved(self) -> None:
        await self.tick()  # what fell due fires, the offset is synced again, timers armed anew

    async def fire(self, queue: str) -> None:
        await self.fire_due(queue)

    async def fire_due(self, queue: str) -> None:
        """Fires every due schedule of the queue, then arms the timer of its next one."""
        self.disarm(queue)
        failed: set[str] = set()
        for _ in range(MAX_ROUNDS):
            now, records, following = await self.store.due(queue, FIRE_BATCH)
            self.sync(now)
            todo = [r for r in records if r.id not in failed]
            if not todo:
                if following >= 0:
                    self.schedule(queue, following)
                return  # schedules that failed stay due: the next rescan retries them
            for record in todo:
                try:
                    await self._fire(record, now)
                except Exception as exc:
                    # One schedule that cannot fire must not hold up the others of its queue.
                    failed.add(record.id)
                    self.log.warning(
                        "schedule failed to fire",
                        extra={
                            "queue": queue,
                            "schedule": record.id,
                            "error": error_text(exc),
                        },
                    )
        self.schedule(queue, 0)  # still more due: carry on after the other queues' turn

    async def _fire(self, record: ScheduleRecord, now: int) -> None:
        d = schedules_pb2.Schedule.FromString(record.definition)
        run = plan(
            schedule_convert.recurrence(d),
            record.due_ms,
            now,
            schedule_convert.catch_up(d),
            schedule_convert.runs_left(d, record.run_count),
            ADD_CHUNK,
        )
        jobs = schedule_convert.jobs(d, run.occurrences, STORED_PAYLOAD_LIMIT)
        created = await self.store.fire(record, jobs, run.next_due_ms)
        if created < 0:
            return  # another server fired it first, or it was changed meanwhile
        extra = {"queue": record.queue, "schedule": record.id, "late_ms": now - record.due_ms}
        if jobs:
            self.log.debug("schedule fired", extra={**extra, "jobs": len(jobs), "created": created})
        elif run.next_due_ms >= 0:
            self.log.info("missed runs skipped (catch-up policy skip)", extra=extra)
        if run.next_due_ms < 0:
            self.log.info("schedule over", extra=extra)
