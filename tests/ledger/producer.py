"""A producer that chooses every job id and journals each add it tries and how it ended.

Outcomes: ``ack`` (the server answered OK: the job must never be lost), ``refused`` (a status that promises
nothing was written: the job must not exist), ``unknown`` (the call broke: Redis or the server went away,
or a deadline passed; the job may or may not exist). An add retried with the same id after an unknown
outcome is the idempotent retry the promise relies on: it may find the job already there, and still acks.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from queue_manager import QueueManager
from queue_manager.errors import QueueManagerError
from tests.ledger.journal import Journal

# Statuses that promise the add wrote nothing (docs: "never a partial write").
REFUSALS = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
    }
)
# Backoff between retries of an add whose outcome is unknown.
RETRY_FIRST_S = 0.05
RETRY_MAX_S = 0.5


@dataclass
class Job:
    """A job to add: its id, name, data and options (``job_id`` is set from id)."""

    id: str
    name: str = "ledger"
    data: Any = None
    options: dict[str, Any] = field(default_factory=dict)

    def bulk_entry(self) -> dict[str, Any]:
        return {"name": self.name, "data": self.data, "options": {**self.options, "job_id": self.id}}


@dataclass
class Tally:
    """What a producer saw: outcomes by kind, status codes of failed calls, and when."""

    outcomes: Counter[str] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    # Loop time of the first failed call and of the first ack after a failure (outage measurements).
    first_failure: float | None = None
    first_ack_after_failure: float | None = None


class Producer:
    """Adds jobs through one client and journals them (``try``, then ``ack``, ``refused`` or ``unknown``).

    Args:
        address: Server address or gRPC target.
        journal: Where the records go.
        timeout: Deadline of each call in seconds.
    """

    def __init__(self, address: str, journal: Journal, timeout: float = 5.0) -> None:
        self.client = QueueManager(address=address, timeout=timeout)
        self.journal = journal
        self.tally = Tally()

    async def close(self) -> None:
        await self.client.close()

    def _outcome(self, queue: str, ids: list[str], exc: QueueManagerError | None) -> str:
        loop_time = asyncio.get_running_loop().time()
        if exc is None:
            kind = "ack"
            if self.tally.first_failure is not None and self.tally.first_ack_after_failure is None:
                self.tally.first_ack_after_failure = loop_time
            self.journal.record("ack", q=queue, ids=ids)
        else:
            kind = "refused" if exc.code in REFUSALS else "unknown"
            self.tally.codes[exc.code.name] += 1
            if self.tally.first_failure is None:
                self.tally.first_failure = loop_time
            self.journal.record(kind, q=queue, ids=ids, code=exc.code.name, msg=exc.message[:200])
        self.tally.outcomes[kind] += len(ids)
        return kind

    async def add(self, queue: str, job: Job) -> str:
        """Adds one job once; returns its outcome."""
        self.journal.record("try", q=queue, ids=[job.id])
        try:
            await self.client.add_job(queue, job.name, job.data, {**job.options, "job_id": job.id})
        except QueueManagerError as exc:
            return self._outcome(queue, [job.id], exc)
        return self._outcome(queue, [job.id], None)

    async def add_bulk(self, queue: str, jobs: Sequence[Job]) -> str:
        """Adds jobs in one bulk stream once; returns its outcome (one for all of them)."""
        ids = [j.id for j in jobs]
        self.journal.record("try", q=queue, ids=ids)
        try:
            got = await self.client.add_bulk(queue, [j.bulk_entry() for j in jobs])
        except QueueManagerError as exc:
            return self._outcome(queue, ids, exc)
        assert got == ids, "the server answered other ids than the ones chosen"
        return self._outcome(queue, ids, None)

    async def add_until_known(
        self, queue: str, jobs: Sequence[Job], deadline: float, bulk: bool = False
    ) -> str:
        """Adds (one job, or a bulk stream) and retries with the same ids while the outcome is unknown,
        until acked or refused or the loop time passes `deadline`; returns the last outcome."""
        delay = RETRY_FIRST_S
        loop = asyncio.get_running_loop()
        while True:
            kind = await (self.add_bulk(queue, jobs) if bulk else self.add(queue, jobs[0]))
            if kind != "unknown" or loop.time() + delay > deadline:
                return kind
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)

    async def pump(
        self,
        queue: str,
        jobs: Iterable[Job],
        *,
        concurrency: int,
        deadline: float,
        stop: asyncio.Event | None = None,
        pace_s: float = 0.0,
    ) -> None:
        """Adds jobs one by one from `concurrency` tasks (each retrying its job while the outcome is unknown)
        until the jobs run out, `stop` is set or the loop time passes `deadline`. pace_s: pause after each
        add, so a load spreads over the time a fault takes."""
        source = iter(jobs)
        lock = asyncio.Lock()
        loop = asyncio.get_running_loop()

        async def one() -> None:
            while loop.time() < deadline and not (stop is not None and stop.is_set()):
                async with lock:
                    job = next(source, None)
                if job is None:
                    return
                await self.add_until_known(queue, [job], deadline)
                if pace_s:
                    await asyncio.sleep(pace_s)

        await asyncio.gather(*(one() for _ in range(concurrency)))


def numbered(prefix: str, count: int, **data: Any) -> list[Job]:
    """Jobs ``<prefix>-0`` … with the given data (plus their index ``i``)."""
    return [Job(id=f"{prefix}-{i}", data={"i": i, **data}) for i in range(count)]


def endless(prefix: str, **data: Any) -> Iterable[Job]:
    """Jobs ``<prefix>-0``, ``<prefix>-1`` … without end (a pump bounded by time or a stop event)."""
    return (Job(id=f"{prefix}-{i}", data={"i": i, **data}) for i in itertools.count())
