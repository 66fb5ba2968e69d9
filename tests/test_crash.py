"""Crashes with real processes: nothing acknowledged is lost when a worker or a server dies by SIGKILL."""

from __future__ import annotations

import sys

from queue_manager import JobContext, QueueManager, SyncQueueManager
from queue_manager_server.engine import Engine
from tests.procs import Procs
from tests.rawworker import eventually


async def test_worker_killed_with_jobs_in_flight_all_redelivered(
    procs: Procs, redis_url: str, prefix: str, engine: Engine
) -> None:
    srv = await procs.server(redis_url, prefix)
    qm = QueueManager(address=srv.address)
    await qm.register_queue("crash")
    ids = [j.id for j in [await qm.add_job("crash", "c", {"i": i}) for i in range(30)]]
    holder = procs.spawn(
        [sys.executable, "-m", "tests.crash_worker", srv.address, "crash", "hold", "8"], name="hold"
    )

    async def holding() -> bool:
        return (await engine.metrics("crash")).active == 8

    await eventually(holding, timeout=20)
    held = {j.id for j in (await engine.list_jobs("crash", "active", 0, 100))[0]}
    holder.kill()
    await holder.wait()
    procs.spawn([sys.executable, "-m", "tests.crash_worker", srv.address, "crash", "work", "8"], name="work")

    async def all_completed() -> bool:
        return (await engine.metrics("crash")).completed == 30

    await eventually(all_completed, timeout=30)
    for job_id in ids:
        job = await qm.get_job("crash", job_id)
        assert job.result == {"redelivery": job_id in held, "stalled": 1 if job_id in held else 0}
    m = await engine.metrics("crash")
    assert (m.waiting, m.active, m.failed, m.stalled_total) == (0, 0, 0, 8)
    await qm.shutdown()


async def test_server_killed_and_restarted_while_workers_run(
    procs: Procs, redis_url: str, prefix: str, engine: Engine
) -> None:
    srv = await procs.server(redis_url, prefix, 0, "--lease-ms", "1000")
    port = int(srv.address.rsplit(":", 1)[1])
    producer = SyncQueueManager(address=srv.address)
    producer.register_queue("flow")
    worker_qm = QueueManager(address=srv.address, concurrency=10)
    done: set[str] = set()

    @worker_qm.processor("flow")
    async def work(job: JobContext) -> None:
        done.add(job.id)

    worker = await worker_qm.start_workers()
    ids = producer.add_bulk("flow", [{"name": "f", "data": {"i": i}} for i in range(300)])
    producer.close()

    async def some_done() -> bool:
        return len(done) >= 50

    await eventually(some_done)
    srv.kill()
    await srv.wait()
    again = await procs.server(redis_url, prefix, port, "--lease-ms", "1000")

    async def all_completed() -> bool:
        return (await engine.metrics("flow")).completed == 300

    await eventually(all_completed, timeout=60)
    assert done == set(ids)
    assert worker.server_id != ""
    await worker_qm.shutdown()
    again.terminate()
    assert await again.wait() == 0
