"""Leases of jobs delivered together: each job keeps its own lease, whatever token the batch shares."""

from __future__ import annotations

import asyncio
from collections import Counter

from queue_manager import JobContext, JobState, QueueManager
from tests.conftest import ServerFactory

WAIT = 30.0


async def test_backlog_longer_than_the_lease_runs_each_job_once(server_factory: ServerFactory) -> None:
    # Lease 1 s (heartbeat every ~0.33 s), jobs of 1.6 s, all queued before the worker connects: the
    # worker gets them in batches sharing a token, and every job's lease must be extended.
    server = await server_factory(lease_ms=1_000)
    client = QueueManager(address=server.address, concurrency=10, shutdown_grace=10.0)
    try:
        await client.register_queue("long")
        jobs = await client.add_bulk("long", [{"name": f"j{i}"} for i in range(10)])
        runs: Counter[str] = Counter()
        tokens: dict[str, str] = {}
        all_started = asyncio.Event()

        @client.processor("long")
        async def slow(job: JobContext) -> str:
            runs[job.id] += 1
            tokens[job.id] = job.lease_token
            if len(runs) == 10:
                all_started.set()
            await asyncio.sleep(1.6)
            return "ok"

        worker = await client.start_workers()
        async with asyncio.timeout(WAIT):
            await all_started.wait()
        assert len(set(tokens.values())) < 10, "expected jobs delivered together (sharing a lease token)"
        await worker.shutdown()
        stored = [await client.get_job("long", job_id) for job_id in jobs]
        assert [(j.state, j.stalled_count) for j in stored] == [(JobState.COMPLETED, 0)] * 10
        assert runs == Counter({job_id: 1 for job_id in jobs})
    finally:
        await client.shutdown()


async def test_shutdown_waits_for_every_job_of_a_batch(server_factory: ServerFactory) -> None:
    server = await server_factory()
    client = QueueManager(address=server.address, concurrency=8, shutdown_grace=10.0)
    try:
        await client.register_queue("batch")
        # Different lengths, so waiting for any single one of them is not enough.
        jobs = await client.add_bulk(
            "batch", [{"name": f"j{i}", "data": {"s": 1.0 - 0.25 * i}} for i in range(4)]
        )
        started: set[str] = set()
        all_started = asyncio.Event()

        @client.processor("batch")
        async def work(job: JobContext) -> str:
            started.add(job.id)
            if len(started) == 4:
                all_started.set()
            await asyncio.sleep(job.data["s"])
            return job.id

        worker = await client.start_workers()
        async with asyncio.timeout(WAIT):
            await all_started.wait()
        await worker.shutdown()  # must wait for all four, not for one per lease token
        stored = [await client.get_job("batch", job_id) for job_id in jobs]
        assert [(j.state, j.result, j.stalled_count) for j in stored] == [
            (JobState.COMPLETED, job_id, 0) for job_id in jobs
        ]
    finally:
        await client.shutdown()
