"""The dispatcher's Redis work at low load: one claim per job, however many workers are connected."""

from __future__ import annotations

import asyncio
import collections

import pytest

from queue_manager import JobContext, JobState, QueueManager
from queue_manager_server.services import dispatcher
from tests.conftest import RunningServer, count_claims


async def test_one_claim_per_job_at_low_load_with_two_workers(server: RunningServer) -> None:
    dispatcher = server.app.dispatcher
    assert dispatcher is not None
    qm = QueueManager(address=server.address, concurrency=4)
    await qm.register_queue("low")
    done: asyncio.Queue[str] = asyncio.Queue()
    ran_on: list[str] = []

    @qm.processor("low")
    async def record(job: JobContext) -> None:
        ran_on.append(job._worker.worker_id)
        done.put_nowait(job.id)

    workers = [await qm.start_workers(), await qm.start_workers()]
    for w in workers:
        await asyncio.wait_for(w.wait_connected(), 10)
    claims = count_claims(dispatcher)
    try:
        for i in range(10):
            await qm.add_job("low", f"j{i}")
            await asyncio.wait_for(done.get(), 10)
    finally:
        del dispatcher.engine.claim
        del dispatcher.added
        await qm.shutdown()
    assert sum(claims) == 10
    # A claim that finds the queue empty ends the round: the other worker's claim would come back empty too
    # (two claims per job before). A credit returned may still cost an occasional extra claim.
    assert len(claims) <= 13, claims
    # Claims folded into the adds take turns too: both workers run some of the jobs.
    counts = collections.Counter(ran_on)
    assert len(counts) == 2 and min(counts.values()) >= 3, counts


async def test_a_worker_of_many_queues_takes_each_ready_job_with_its_free_slots(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim reserves the session's credits while it runs; a queue loop that found none meanwhile slept
    until the next event or its idle recheck (5 s), so a worker of several queues left a job waiting for
    seconds with its slots free. With the recheck made a minute long, every job must still start at once."""
    monkeypatch.setattr(dispatcher, "IDLE_RECHECK_S", 60.0)
    names = [f"many-{i}" for i in range(6)]
    async with QueueManager(server.address, concurrency=1) as qm:
        for name in names:
            await qm.register_queue(name)
            qm.register_processor(name, lambda job: job.queue_name)
        first = await qm.add_job(names[-1], "waiting-before-start")
        await qm.start_workers()
        done = await qm.wait_for_job(names[-1], first.id, timeout=20)
        assert done.state is JobState.COMPLETED
        for _ in range(2):
            jobs = [await qm.add_job(name, "one-each") for name in names]
            for job in jobs:
                done = await qm.wait_for_job(job.queue_name, job.id, timeout=20)
                assert (done.state, done.result) == (JobState.COMPLETED, job.queue_name)
