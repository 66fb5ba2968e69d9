"""Batch processors (queue_manager.batch): many jobs per handler call, each job still its own run with its own
outcome, against a real server and Valkey."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from queue_manager import (
    BatchProcessor,
    DelayedError,
    JobContext,
    JobState,
    QueueManager,
    UnrecoverableError,
    batch,
)
from tests.conftest import RunningServer

WAIT = 20.0


@pytest.fixture
async def qm(server: RunningServer) -> AsyncIterator[QueueManager]:
    client = QueueManager(address=server.address, concurrency=20, shutdown_grace=5.0)
    yield client
    await client.shutdown()


class Batches:
    """The batches a handler saw (job ids per call), awaitable by count."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.threads: list[str] = []
        self.times: list[float] = []
        self._changed = asyncio.Condition()
        self._loop = asyncio.get_running_loop()

    def seen(self, jobs: list[JobContext]) -> None:
        if threading.current_thread() is not threading.main_thread():
            self.threads.append(threading.current_thread().name)
            self._loop.call_soon_threadsafe(self.seen, jobs)
            return
        self.calls.append([j.id for j in jobs])
        self.times.append(time.monotonic())
        self._loop.create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(WAIT), self._changed:
            await self._changed.wait_for(lambda: len(self.calls) >= count)


async def states(qm: QueueManager, queue: str, ids: list[str], *wanted: JobState) -> dict[str, Any]:
    """Waits until every job is in one of the wanted states; returns the jobs by id."""
    async with asyncio.timeout(WAIT):
        while True:
            jobs = {i: await qm.get_job(queue, i) for i in ids}
            if all(j.state in wanted for j in jobs.values()):
                return jobs
            await asyncio.sleep(0.02)


async def test_full_batches_leave_at_once_and_each_job_gets_its_own_result(qm: QueueManager) -> None:
    await qm.register_queue("rows")
    seen = Batches()

    @qm.batch_processor("rows", size=5, wait=30)
    async def insert(jobs: list[JobContext]) -> list[int]:
        seen.seen(jobs)
        return [job.data["i"] * 10 for job in jobs]

    ids = await qm.add_bulk("rows", [{"name": "row", "data": {"i": i}} for i in range(10)])
    await qm.start_workers(concurrency=10)
    jobs = await states(qm, "rows", ids, JobState.COMPLETED)
    # wait is 30 s: only a full batch could have left by now.
    assert sorted(len(c) for c in seen.calls) == [5, 5]
    assert sorted(i for c in seen.calls for i in c) == sorted(ids)
    assert [jobs[i].result for i in ids] == [i * 10 for i in range(10)]


async def test_a_batch_that_does_not_fill_leaves_after_wait(qm: QueueManager) -> None:
    await qm.register_queue("few")
    seen = Batches()
    wait = 0.3

    @qm.batch_processor("few", size=100, wait=wait)
    async def handle(jobs: list[JobContext]) -> None:
        seen.seen(jobs)

    await qm.start_workers()
    t0 = time.monotonic()
    ids = [(await qm.add_job("few", "x", {"n": n})).id for n in range(3)]
    await seen.wait_for(1)
    assert seen.calls == [ids]
    assert seen.times[0] - t0 >= wait
    jobs = await states(qm, "few", ids, JobState.COMPLETED)
    assert all(j.result is None for j in jobs.values())


async def test_entries_that_are_exceptions_fail_their_jobs_only(qm: QueueManager) -> None:
    await qm.register_queue("mixed")

    @qm.batch_processor("mixed", size=4, wait=30)
    async def handle(jobs: list[JobContext]) -> list[Any]:
        return [ValueError(f"bad row {j.data}") if j.data % 2 else j.data for j in jobs]

    ids = await qm.add_bulk("mixed", [{"name": "r", "data": n, "options": {"attempts": 1}} for n in range(4)])
    await qm.start_workers()
    jobs = await states(qm, "mixed", ids, JobState.COMPLETED, JobState.FAILED)
    assert [jobs[i].state for i in ids] == [JobState.COMPLETED, JobState.FAILED] * 2
    assert [jobs[i].result for i in ids[::2]] == [0, 2]
    assert [jobs[i].failed_reason for i in ids[1::2]] == ["bad row 1", "bad row 3"]


async def test_entries_of_the_processor_errors_act_per_job_as_from_a_processor(qm: QueueManager) -> None:
    """A DelayedError entry runs its job later with its data and no attempt used; an UnrecoverableError entry
    fails its job for good with attempts left; the other jobs of the batch complete (docs/api.md)."""
    await qm.register_queue("steps")

    @qm.batch_processor("steps", size=3, wait=30)
    async def handle(jobs: list[JobContext]) -> list[Any]:
        by_kind = {
            "later": DelayedError(3600, data={"step": 2}),
            "never": UnrecoverableError("bad row"),
            "done": "ok",
        }
        return [by_kind[j.data["kind"]] for j in jobs]

    kinds = ("later", "never", "done")
    bulk = [{"name": "r", "data": {"kind": k}, "options": {"attempts": 5}} for k in kinds]
    later, never, done = ids = await qm.add_bulk("steps", bulk)
    await qm.start_workers()
    jobs = await states(qm, "steps", ids, JobState.DELAYED, JobState.FAILED, JobState.COMPLETED)
    assert (jobs[later].state, jobs[later].data) == (JobState.DELAYED, {"step": 2})
    assert jobs[later].attempts_made == 0
    assert (jobs[never].state, jobs[never].failed_reason) == (JobState.FAILED, "bad row")
    assert jobs[never].attempts_made < jobs[never].max_attempts
    assert (jobs[done].state, jobs[done].result) == (JobState.COMPLETED, "ok")


async def test_a_raising_handler_fails_every_job_which_retries_as_its_attempts_allow(
    qm: QueueManager,
) -> None:
    await qm.register_queue("flaky")
    runs: list[list[int]] = []

    @qm.batch_processor("flaky", size=3, wait=30)
    async def handle(jobs: list[JobContext]) -> list[str]:
        runs.append([j.attempts_made for j in jobs])
        if len(runs) == 1:
            raise ConnectionError("database went away")
        return ["ok"] * len(jobs)

    options = {"attempts": 2, "backoff": {"type": "fixed", "delay": 10}}
    bulk = [{"name": "r", "data": n, "options": options} for n in range(3)]
    ids = await qm.add_bulk("flaky", bulk)
    await qm.start_workers()
    jobs = await states(qm, "flaky", ids, JobState.COMPLETED)
    assert runs == [[0, 0, 0], [1, 1, 1]]
    assert all(j.result == "ok" and j.attempts_made == 2 for j in jobs.values())


async def test_an_answer_of_the_wrong_shape_fails_the_batch_with_what_was_expected(qm: QueueManager) -> None:
    await qm.register_queue("shape")

    @qm.batch_processor("shape", size=2, wait=30)
    async def handle(jobs: list[JobContext]) -> list[str]:
        return ["only one"]

    ids = await qm.add_bulk("shape", [{"name": "r", "options": {"attempts": 1}} for _ in range(2)])
    await qm.start_workers()
    jobs = await states(qm, "shape", ids, JobState.FAILED)
    assert {j.failed_reason for j in jobs.values()} == {
        "a batch handler must return None or one result per job: 2 jobs, got 1 entries"
    }


async def test_key_keeps_jobs_of_different_keys_in_different_batches(qm: QueueManager) -> None:
    await qm.register_queue("tenants")
    seen = Batches()

    @qm.batch_processor("tenants", size=3, wait=30, key=lambda job: job.name)
    async def handle(jobs: list[JobContext]) -> list[str]:
        seen.seen(jobs)
        assert len({j.name for j in jobs}) == 1
        return [j.name for j in jobs]

    bulk = [{"name": name} for name in ("a", "b") * 3]
    ids = await qm.add_bulk("tenants", bulk)
    await qm.start_workers()
    jobs = await states(qm, "tenants", ids, JobState.COMPLETED)
    assert sorted(len(c) for c in seen.calls) == [3, 3]
    assert [jobs[i].result for i in ids] == ["a", "b"] * 3


async def test_a_job_cancelled_while_its_batch_fills_leaves_it(qm: QueueManager) -> None:
    await qm.register_queue("cancel")
    seen = Batches()
    parked: list[str] = []
    two_parked = asyncio.Event()

    def key(job: JobContext) -> None:  # called as each run joins the filling batch
        parked.append(job.id)
        if len(parked) == 2:
            two_parked.set()

    async def handle(jobs: list[JobContext]) -> None:
        seen.seen(jobs)

    qm.register_processor("cancel", batch(handle, size=3, wait=30, key=key))
    await qm.start_workers()
    first, second = [(await qm.add_job("cancel", "x")).id for _ in range(2)]
    async with asyncio.timeout(WAIT):
        await two_parked.wait()
    await qm.cancel_job("cancel", first, "not needed")
    await states(qm, "cancel", [first], JobState.CANCELLED)
    more = [(await qm.add_job("cancel", "x")).id for _ in range(2)]
    await seen.wait_for(1)
    assert seen.calls == [[second, *more]]
    await states(qm, "cancel", [second, *more], JobState.COMPLETED)


async def test_a_plain_def_handler_runs_in_a_thread(qm: QueueManager) -> None:
    await qm.register_queue("sync")
    seen = Batches()

    def handle(jobs: list[JobContext]) -> list[int]:
        seen.seen(jobs)
        return [len(jobs)] * len(jobs)

    qm.register_processor("sync", batch(handle, size=2, wait=30))
    ids = await qm.add_bulk("sync", [{"name": "r"} for _ in range(2)])
    await qm.start_workers()
    jobs = await states(qm, "sync", ids, JobState.COMPLETED)
    assert [j.result for j in jobs.values()] == [2, 2]
    assert len(seen.threads) == 1


def test_bad_arguments_are_refused_with_what_is_allowed() -> None:
    async def h(jobs: list[JobContext]) -> None:
        return None

    with pytest.raises(ValueError, match="size must be 1 to 100,000, not 0"):
        batch(h, size=0)
    with pytest.raises(TypeError, match="size must be an int, not float"):
        batch(h, size=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="wait must be more than 0 and at most 3600 seconds, not 0"):
        batch(h, size=2, wait=0)
    with pytest.raises(ValueError, match="not inf"):
        batch(h, size=2, wait=float("inf"))
    with pytest.raises(TypeError, match="handler must be callable, not str"):
        batch("h", size=2)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="key must be callable or None, not str"):
        batch(h, size=2, key="name")  # type: ignore[arg-type]
    assert isinstance(batch(h, size=2), BatchProcessor)
