"""A busy worker's free slots are claimed for together: credits trickling back wait (briefly) for company."""

from __future__ import annotations

import time

from queue_manager import QueueManager
from queue_manager.v1 import worker_service_pb2 as pb
from tests.conftest import RunningServer
from tests.rawworker import RawWorker


def _done(jobs: list[pb.LeasedJob]) -> pb.WorkerReport:
    """Completes the jobs and frees their slots (a credit each)."""
    r = pb.WorkerReport(credits=len(jobs))
    for j in jobs:
        r.completions.add(queue_name=j.job.queue_name, job_id=j.job.id, lease_token=j.lease_token)
    return r


async def test_a_busy_workers_free_slots_are_claimed_for_together(server: RunningServer) -> None:
    dispatcher = server.app.dispatcher
    assert dispatcher is not None
    dispatcher.credit_linger_s = 1.0  # long enough to tell a lingering claim from a prompt one
    async with QueueManager(server.address, timeout=10) as qm:
        await qm.register_queue("linger")
        await qm.add_bulk("linger", [{"name": "j", "data": i} for i in range(40)])
    w = RawWorker(server.address, ["linger"], concurrency=10)
    try:
        await w.connect(credits=10)
        running = await w.jobs(10)  # every slot busy

        # Three slots come back one by one: fewer than half, so their claim waits for the linger.
        t0 = time.monotonic()
        for j in running[:3]:
            w.report(_done([j]))
        delivered = (await w.until("delivery")).delivery.jobs
        waited = time.monotonic() - t0
        assert len(delivered) == 3, "the trickled credits were claimed for in one claim"
        assert waited >= 0.9, f"claimed after {waited:.3f} s: the claim did not wait for more free slots"
        running = running[3:] + list(delivered)

        # Half the slots back, one report at a time: claimed for at once, in one delivery.
        t0 = time.monotonic()
        for j in running[:5]:
            w.report(_done([j]))
        delivered = (await w.until("delivery")).delivery.jobs
        assert len(delivered) == 5
        assert time.monotonic() - t0 < 0.9, "half the slots free: no waiting"
    finally:
        await w.close()


async def test_an_idle_worker_granting_few_credits_gets_its_jobs_at_once(server: RunningServer) -> None:
    dispatcher = server.app.dispatcher
    assert dispatcher is not None
    dispatcher.credit_linger_s = 1.0
    async with QueueManager(server.address, timeout=10) as qm:
        await qm.register_queue("few")
        await qm.add_bulk("few", [{"name": "j", "data": i} for i in range(3)])
    w = RawWorker(server.address, ["few"], concurrency=10)
    try:
        t0 = time.monotonic()
        await w.connect(credits=1)  # one credit of ten, but nothing runs: no reason to wait
        assert len(await w.jobs(1)) == 1
        assert time.monotonic() - t0 < 0.9
    finally:
        await w.close()
