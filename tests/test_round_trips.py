"""Redis round trips of the hot path: a pipeline that carries a script costs one round trip, not two."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from queue_manager import Job, JobState, QueueManager
from queue_manager_server.config import MIN_REDIS_CONNECTIONS
from tests.conftest import RunningServer, ServerFactory


async def script_exists_calls(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_script|exists", {}).get("calls", 0))


async def test_add_job_sends_no_script_exists(server: RunningServer, redis: Redis) -> None:
    qm = QueueManager(address=server.address)
    await qm.register_queue("rt")
    await qm.add_job("rt", "warm-up")
    before = await script_exists_calls(redis)
    for i in range(20):
        await qm.add_job("rt", f"j{i}")
    await qm.add_bulk("rt", [{"name": "b"} for _ in range(1200)])
    assert await script_exists_calls(redis) == before
    await qm.shutdown()


async def test_pipelined_scripts_survive_a_script_flush(server: RunningServer, redis: Redis) -> None:
    qm = QueueManager(address=server.address)
    await qm.register_queue("rt")
    await redis.script_flush()
    job = await qm.add_job("rt", "after-flush")  # a pipeline: EVALSHA refused, scripts loaded, sent again
    assert (await qm.get_job("rt", job.id)).name == "after-flush"
    assert len(await qm.add_bulk("rt", [{"name": "b"} for _ in range(1200)])) == 1200
    await qm.shutdown()


async def test_bursts_wait_for_a_connection_instead_of_failing(server_factory: ServerFactory) -> None:
    """More concurrent requests than pooled Redis connections: they queue for one, none fails. The pool is
    the smallest a server may be given, with every connection it holds for its lifetime in use: its event
    subscription, and the engine's held connections of adds, claims and run outcomes (a job completed and a
    job failed). A pool of only those left no connection for the requests."""
    server = await server_factory(redis_max_connections=MIN_REDIS_CONNECTIONS)
    qm = QueueManager(address=server.address)
    await qm.register_queue("burst")

    @qm.processor("burst")
    async def work(job: Job) -> str:
        if job.name == "fails":
            raise ValueError("on purpose")
        return "ok"

    await qm.start_workers()
    done = await qm.add_job("burst", "completes")
    failed = await qm.add_job("burst", "fails")
    assert (await qm.wait_for_job("burst", done.id, timeout=30)).state == JobState.COMPLETED
    assert (await qm.wait_for_job("burst", failed.id, timeout=30)).state == JobState.FAILED
    got = await asyncio.gather(*(qm.get_job("burst", done.id) for _ in range(300)))
    assert {j.id for j in got} == {done.id}
    await qm.shutdown()
