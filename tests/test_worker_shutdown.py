"""Worker shutdown with jobs still arriving: jobs never run are handed back without a stall."""

from __future__ import annotations

import asyncio

from queue_manager import JobContext, QueueManager
from queue_manager_server.engine import Engine
from tests.conftest import RunningServer


async def test_shutdown_as_jobs_arrive_releases_unstarted_jobs_without_stall(
    server: RunningServer, engine: Engine
) -> None:
    admin = QueueManager(address=server.address)
    await admin.register_queue("busy")
    runs: list[str] = []
    for round_ in range(10):
        qm = QueueManager(address=server.address, concurrency=8)

        @qm.processor("busy")
        async def work(job: JobContext) -> None:
            runs.append(job.id)

        worker = await qm.start_workers()
        async with asyncio.timeout(10):
            await worker.wait_connected()
        await asyncio.sleep(0.05)  # idle: the server holds all 8 credits
        await admin.add_bulk("busy", [{"name": "b", "data": round_}] * 20)
        await worker.shutdown(grace=5.0)  # deliveries race with the shutdown
        await qm.shutdown()
    m = await engine.metrics("busy")
    assert m.stalled_total == 0, m
    assert (m.completed, m.waiting, m.active) == (len(runs), 200 - len(runs), 0)
    await admin.shutdown()
