"""Coalesces concurrent AddJob calls: adds that arrive while the server is busy share one Redis round trip.

Producers such as web handlers add one job per request, many at once. Each AddJob on its own would cost a
pipeline, a script call, an fsync and a wake-up event. Here a call's job (validated by its handler, so a bad
request fails alone) joins a pending batch; the batch is written as one pipeline holding one add_jobs
script call per queue (engine ``add_jobs_many``), and every caller gets its own job back.

No linger: the first add of an idle server is written after one event-loop turn (so adds that arrived in
that turn join it); alone, by its caller's own task (no task to start: a turn sooner). A batch of adds (an
AddJobBatch call's items, an AddJobStream message) that finds the server idle is written at once: it is
company enough, and a turn's wait put its write behind the stream's next read (bench.hops). While a batch is
being written, new adds wait for the next one, which leaves as soon as that write ends: under load the
batches grow by themselves, bounded by ``MAX_BATCH``, and no add waits longer than one write.

Before each write the server's dispatcher is told (`AddListener.adding`), so a queue it serves is claimed
with the add (a claim it folds into the add's script call: `AddListener.claim_of`) or right behind it,
instead of a round trip later, when the add's pub/sub event would arrive; after it, whether the write
published that event, and the folded claim's reply (`AddListener.added`). See services/dispatcher.py.

Failures stay per caller: an unknown queue fails only that queue's callers. If a queue's script call fails
as a whole (a script error mid-batch could leave earlier jobs written), each of its jobs is sent again on its
own: adds are idempotent on job id (ids are chosen before the first try), so a job already written is found,
not written twice, and each caller gets its own job's outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from queue_manager_server.engine import Engine
from queue_manager_server.engine.engine import ADD_CHUNK, new_job_id
from queue_manager_server.engine.records import AddResult, ClaimRequest, ClaimResult, JobRecord, NewJob
from queue_manager_server.errors import QueueFull, QueueNotFound

log = logging.getLogger("queue_manager_server.adds")

# Jobs per coalesced write: one add_jobs script call per queue (a script call holds Redis for its length).
MAX_BATCH = ADD_CHUNK
# Writes under way at once. One: while it is written (a round trip and Redis's fsync, ~0.5 ms) the next
# batch fills. Measured with 50 concurrent callers: 1 gives batches of ~6 jobs and 380 µs of server CPU per
# add; 2 gives batches of ~2 and 530 µs (each round trip costs the server more than its jobs do).
MAX_IN_FLIGHT = 1


class AddListener(Protocol):
    """Told about each coalesced write (the dispatcher of the same server)."""

    def adding(self, queue: str, ids: list[str]) -> object | None:
        """These jobs are about to be written to the queue; returns a token for `added`, or None."""

    def claim_of(self, token: object) -> ClaimRequest | None:
        """The claim to run in the add's own script call, or None."""

    def added(self, token: object, published: bool, claim: ClaimResult | None) -> None:
        """The write of `adding`'s token came back; published: its script published the queue's wake-up;
        claim: the folded claim's reply (None: none, or the write failed)."""


@dataclass(slots=True)
class AddOutcome:
    """One caller's job as stored (the holder's when its id or dedup key was taken)."""

    record: JobRecord
    created: bool
    queue_paused: bool
    # What the add did: "created", "existing" (its job_id), "deduplicated" (its dedup key held) or
    # "replaced" (it replaced the pending job holding its dedup key).
    how: str = "created"


# An add whose outcome is not known yet (_Group.outcomes).
_UNSET: Any = object()


@dataclass(slots=True)
class _Group:
    """The adds of one call (an AddJob, or the items of an AddJobBatch call or AddJobStream message): one
    future for all of them, resolved when the last one's outcome is known (a future per add cost ~1 µs of
    server CPU per add in futures, gather and their callbacks)."""

    outcomes: list[AddOutcome | Exception]
    left: int
    future: asyncio.Future[list[AddOutcome | Exception]] = field(repr=False)


@dataclass(slots=True)
class _Pending:
    queue: str
    job: NewJob
    generated_id: bool
    group: _Group = field(repr=False)
    index: int


class AddCoalescer:
    """Writes the jobs of concurrent AddJob calls in shared round trips."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # The server's dispatcher (app.py sets it): adds through this server are claimed right behind their
        # write. None: adds are claimed when their pub/sub wake-up arrives.
        self.listener: AddListener | None = None
        self._pending: list[_Pending] = []
        self._in_flight = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        # wait_idle's wake-up: resolved once nothing is pending or being written (_check_idle).
        self._idle: asyncio.Future[None] | None = None

    async def add(self, queue: str, job: NewJob) -> AddOutcome:
        """Adds one validated job with the adds pending now; returns it as stored."""
        group = self._group(1)
        pending = self._enqueue(queue, job, group, 0)
        if self._scheduled or self._in_flight >= MAX_IN_FLIGHT:
            return _only(await group.future)  # the write scheduled or under way takes it
        # Idle: one turn of the event loop lets the adds already on their way (a batch call's items, a
        # burst) join this one, as a flush scheduled with call_soon would; then the write leaves at once.
        self._scheduled = True
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            self._pending.remove(pending)
            self._flush()
            self._check_idle()
            raise
        if len(self._pending) != 1 or self._pending[0] is not pending:
            self._flush()  # company came: written by a task of its own, which no caller can cancel
            return _only(await group.future)
        # Alone: this caller's own task writes it (no task to start, a turn sooner).
        self._scheduled = False
        self._pending = []
        self._in_flight += 1
        try:
            await self._write([pending])
        finally:
            self._done_writing()
        return _only(group.future.result())

    def submit_all(self, jobs: Sequence[tuple[str, NewJob]]) -> asyncio.Future[list[AddOutcome | Exception]]:
        """Queues validated jobs (queue, job) for the next write, which starts now when none is under way,
        and returns one future for all their outcomes, in order: each its job as stored or the exception
        its add met (AddJobBatch and stream messages submit their items so: no task or future per job)."""
        group = self._group(len(jobs))
        for i, (queue, job) in enumerate(jobs):
            self._enqueue(queue, job, group, i)
        if not jobs:
            group.future.set_result([])
        elif not self._scheduled and self._in_flight < MAX_IN_FLIGHT:
            self._flush()
        return group.future

    @staticmethod
    def _group(size: int) -> _Group:
        return _Group([_UNSET] * size, size, asyncio.get_running_loop().create_future())

    def _enqueue(self, queue: str, job: NewJob, group: _Group, index: int) -> _Pending:
        generated = not job.id
        if generated:
            job.id = new_job_id()  # chosen once: a retry of this write finds the job, not a twin
        pending = _Pending(queue, job, generated, group, index)
        self._pending.append(pending)
        return pending

    async def wait_idle(self, timeout: float) -> None:
        """Returns once every add taken has been written, or after timeout seconds. A stopping server calls
        it before it closes its Redis connections: a write that started after that would open a connection
        of its own that nobody closes."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self._pending or self._in_flight:
                    self._idle = asyncio.get_running_loop().create_future()
                    await self._idle

    def _check_idle(self) -> None:
        idle = self._idle
        if idle is not None and not idle.done() and not self._pending and not self._in_flight:
            idle.set_result(None)

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
        self._done_writing()

    def _done_writing(self) -> None:
        self._in_flight -= 1
        if self._pending and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        self._check_idle()

    async def _write(self, batch: list[_Pending]) -> None:
        by_queue: dict[str, list[_Pending]] = defaultdict(list)
        for p in batch:
            by_queue[p.queue].append(p)
        groups = list(by_queue.items())
        listener = self.listener
        tokens: list[object | None] = []
        results: list[AddResult | Exception] = []
        try:
            # One add_jobs script call per queue (MAX_BATCH jobs at most): at most one wake-up event each,
            # and the claim the dispatcher folds into it.
            if listener is not None:
                tokens = [listener.adding(q, [p.job.id for p in items]) for q, items in groups]
            results = await self.engine.add_jobs_many(
                [(q, [p.job for p in items]) for q, items in groups],
                fetch=True,
                limited=True,
                claims=[listener.claim_of(t) for t in tokens] if listener is not None else (),
            )
        except Exception as exc:  # the round trip failed: nothing is known to be written
            for p in batch:
                _resolve(p, exc)
            return
        finally:
            if listener is not None:
                for i, token in enumerate(tokens):
                    if token is not None:  # no reply: nothing known published, no claim's jobs
                        r = results[i] if i < len(results) else None
                        if isinstance(r, AddResult):
                            listener.added(token, r.published, r.claim)
                        else:
                            listener.added(token, False, None)
        for (_, items), result in zip(groups, results, strict=True):
            if isinstance(result, AddResult):
                _deliver(items, result)
            elif len(items) > 1 and not _whole_queue_error(result):
                await self._one_by_one(items)
            else:
                for p in items:
                    _resolve(p, result)

    async def _one_by_one(self, items: list[_Pending]) -> None:
        """Sends each job of a failed queue call again alone, so each caller gets its own outcome."""
        log.warning("coalesced add failed; adding its jobs one by one", extra={"queue": items[0].queue})
        results = await asyncio.gather(
            *(self.engine.add_jobs(p.queue, [p.job], fetch=True, limited=True) for p in items),
            return_exceptions=True,
        )
        for p, result in zip(items, results, strict=True):
            if isinstance(result, AddResult):
                _deliver([p], result)
            else:
                _resolve(p, result if isinstance(result, Exception) else RuntimeError(str(result)))


def _whole_queue_error(exc: Exception) -> bool:
    """Errors that every job of the queue would meet alone too (no retry one by one)."""
    return isinstance(exc, QueueNotFound)


def _deliver(items: list[_Pending], result: AddResult) -> None:
    for i, (p, record, created) in enumerate(zip(items, result.records, result.created, strict=True)):
        if i in result.full:  # no room: this add is refused, the others of the call stand
            _resolve(p, QueueFull(p.queue, p.job.group if result.full[i] == "group" else ""))
            continue
        # A generated id is this call's own: found existing, it was written by an earlier try of this add.
        created = created or (p.generated_id and record.id == p.job.id and bool(record.fields))
        how = "created" if created else result.dedup.get(i, "existing")
        _resolve(p, AddOutcome(record, created, result.queue_paused, how))


def _resolve(p: _Pending, outcome: AddOutcome | Exception) -> None:
    """Records one add's outcome (the first only); its group's future resolves with the last of them (not
    when its caller gave up: cancelled)."""
    g = p.group
    if g.outcomes[p.index] is not _UNSET or g.future.done():
        return
    g.outcomes[p.index] = outcome
    g.left -= 1
    if not g.left:
        g.future.set_result(g.outcomes)


def _only(outcomes: list[AddOutcome | Exception]) -> AddOutcome:
    """The outcome of a group of one add, or its exception raised."""
    (outcome,) = outcomes
    if isinstance(outcome, Exception):
        raise outcome
    return outcome
