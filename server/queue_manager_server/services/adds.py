"""Coalesces concurrent AddJob calls: adds that arrive while the server is busy share one Redis round trip.

Producers such as web handlers add one job per request, many at once. Each AddJob on its own would cost a
pipeline, a script call, an fsync and a wake-up event. Here a call's job (validated by its handler, so a bad
request fails alone) joins a pending batch; the batch is written as one pipeline holding one add_jobs
script call per queue (engine ``add_jobs_many``), and every caller gets its own job back.

No linger: the first add of an idle server is written in the same event-loop turn (``call_soon``, so adds
that arrived in that turn join it). While a batch is being written, new adds wait for the next one, which
leaves as soon as that write ends: under load the batches grow by themselves, bounded by ``MAX_BATCH``,
and no add waits longer than one write.

Failures stay per caller: an unknown queue fails only that queue's callers. If a queue's script call fails
as a whole (a script error mid-batch could leave earlier jobs written), each of its jobs is sent again on its
own: adds are idempotent on job id (ids are chosen before the first try), so a job already written is found,
not written twice, and each caller gets its own job's outcome.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass, field

from queue_manager_server.engine import Engine
from queue_manager_server.engine.engine import ADD_CHUNK, new_job_id
from queue_manager_server.engine.records import AddResult, JobRecord, NewJob
from queue_manager_server.errors import QueueNotFound

log = logging.getLogger("queue_manager_server.adds")

# Jobs per coalesced write: one add_jobs script call per queue (a script call holds Redis for its length).
MAX_BATCH = ADD_CHUNK
# Writes under way at once. One: while it is written (a round trip and Redis's fsync, ~0.5 ms) the next
# batch fills. Measured with 50 concurrent callers: 1 gives batches of ~6 jobs and 380 µs of server CPU per
# add; 2 gives batches of ~2 and 530 µs (each round trip costs the server more than its jobs do).
MAX_IN_FLIGHT = 1


@dataclass(slots=True)
class AddOutcome:
    """One caller's job as stored (the holder's when its id or dedup key was taken)."""

    record: JobRecord
    created: bool
    queue_paused: bool


@dataclass(slots=True)
class _Pending:
    queue: str
    job: NewJob
    generated_id: bool
    future: asyncio.Future[AddOutcome] = field(repr=False)


class AddCoalescer:
    """Writes the jobs of concurrent AddJob calls in shared round trips."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._pending: list[_Pending] = []
        self._in_flight = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def add(self, queue: str, job: NewJob) -> AddOutcome:
        """Adds one validated job with the adds pending now; returns it as stored."""
        loop = asyncio.get_running_loop()
        generated = not job.id
        if generated:
            job.id = new_job_id()
        pending = _Pending(queue, job, generated, loop.create_future())
        self._pending.append(pending)
        if not self._scheduled and self._in_flight < MAX_IN_FLIGHT:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await pending.future

    def _flush(self) -> None:
        self._scheduled = False
        if not self._pending or self._in_flight >= MAX_IN_FLIGHT:
            return
        batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
        self._in_flight += 1
        task = asyncio.create_task(self._write(batch), name="add-batch")
        self._tasks.add(task)
        task.add_done_callback(self._written)

    def _written(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._in_flight -= 1
        if self._pending and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    async def _write(self, batch: list[_Pending]) -> None:
        by_queue: dict[str, list[_Pending]] = defaultdict(list)
        for p in batch:
            by_queue[p.queue].append(p)
        groups = list(by_queue.items())
        try:
            results = await self.engine.add_jobs_many(
                [(q, [p.job for p in items]) for q, items in groups], fetch=True
            )
        except Exception as exc:  # the round trip failed: nothing is known to be written
            for p in batch:
                _settle(p, exc)
            return
        for (_, items), result in zip(groups, results, strict=True):
            if isinstance(result, AddResult):
                _deliver(items, result)
            elif len(items) > 1 and not _whole_queue_error(result):
                await self._one_by_one(items)
            else:
                for p in items:
                    _settle(p, result)

    async def _one_by_one(self, items: list[_Pending]) -> None:
        """Sends each job of a failed queue call again alone, so each caller gets its own outcome."""
        log.warning("coalesced add failed; adding its jobs one by one", extra={"queue": items[0].queue})
        results = await asyncio.gather(
            *(self.engine.add_jobs(p.queue, [p.job], fetch=True) for p in items), return_exceptions=True
        )
        for p, result in zip(items, results, strict=True):
            if isinstance(result, AddResult):
                _deliver([p], result)
            else:
                _settle(p, result if isinstance(result, Exception) else RuntimeError(str(result)))


def _whole_queue_error(exc: Exception) -> bool:
    """Errors that every job of the queue would meet alone too (no retry one by one)."""
    return isinstance(exc, QueueNotFound)


def _deliver(items: list[_Pending], result: AddResult) -> None:
    for p, record, created in zip(items, result.records, result.created, strict=True):
        # A generated id is this call's own: found existing, it was written by an earlier try of this add.
        created = created or (p.generated_id and record.id == p.job.id and bool(record.fields))
        if not p.future.done():
            p.future.set_result(AddOutcome(record, created, result.queue_paused))


def _settle(p: _Pending, exc: Exception) -> None:
    if not p.future.done():
        p.future.set_exception(exc)
