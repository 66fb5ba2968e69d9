"""Redis round trips of the hot path: a pipeline that carries a script costs one round trip, not two."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from queue_manager import QueueManager
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
    """More concurrent requests than pooled Redis connections: they queue for one, none fails."""
    server = await server_factory(redis_max_connections=4)
    qm = QueueManager(address=server.address)
    await qm.register_queue("burst")
    job = await qm.add_job("burst", "j")
    got = await asyncio.gather(*(qm.get_job("burst", job.id) for _ in range(300)))
    assert {j.id for j in got} == {job.id}
    await qm.shutdown()
