"""Bulk streams are written in full or not at all: staged unseen, committed by one write, then published."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from queue_manager import QueueManager
from queue_manager.errors import QueueManagerError
from queue_manager_server.engine import Engine
from queue_manager_server.engine.bulk import BulkStreams
from queue_manager_server.engine.engine import ADD_CHUNK
from queue_manager_server.engine.keys import stream_decision
from queue_manager_server.engine.records import NewJob, QueueRecord
from queue_manager_server.errors import QueueNotFound
from tests.procs import Procs
from tests.rawworker import eventually


def jobs(n: int, tag: str = "j") -> list[NewJob]:
    return [NewJob(id=f"{tag}{i}", name="n", data=b'{"i":%d}' % i) for i in range(n)]


async def staged(engine: Engine, queue: str) -> dict[bytes, bytes]:
    return dict(await engine.redis.hgetall(engine.keys(queue).bulk))


async def test_staged_jobs_are_invisible_until_published(engine: Engine) -> None:
    await engine.register_queue("b", {})
    bulk = BulkStreams(engine)
    batch = jobs(1200)
    await bulk._stage("s1", [("b", batch)], [])
    assert (await engine.metrics("b")).waiting == 0
    assert await engine.redis.exists(engine.keys("b").job("j0")) == 0
    assert list(await staged(engine, "b")) == [b"s1"]
    # Two publishers at once (the writer and a janitor): every job once, in stream order.
    assert await bulk.commit("s1")
    created = await asyncio.gather(bulk.publish_staged("b", "s1"), bulk.publish_staged("b", "s1"))
    assert sum(created) == 1200
    waiting, _ = await engine.list_jobs("b", "waiting", 0, 2000)
    assert [j.id for j in waiting] == [j.id for j in batch]
    assert await staged(engine, "b") == {}
    assert await engine.redis.exists(engine.keys("b").staged("s1")) == 0


async def test_a_stream_left_idle_is_rolled_back_and_cannot_commit(engine: Engine) -> None:
    await engine.register_queue("b", {})
    bulk = BulkStreams(engine)
    await bulk._stage("s2", [("b", jobs(700))], [])
    assert await bulk.resolve("b", idle_ms=60_000) == (0, 0)  # not idle yet: left alone
    await asyncio.sleep(0.05)
    assert await bulk.resolve("b", idle_ms=10) == (0, 1)
    assert not await bulk.commit("s2")  # the writer comes back too late: its commit loses
    assert (await engine.metrics("b")).waiting == 0
    assert await staged(engine, "b") == {}


async def test_a_committed_stream_is_finished_by_the_janitor(engine: Engine) -> None:
    await engine.register_queue("b1", {})
    await engine.register_queue("b2", {})
    bulk = BulkStreams(engine)
    await bulk._stage("s3", [("b1", jobs(600, "x")), ("b2", jobs(600, "y"))], [])
    assert await bulk.commit("s3")
    assert not await bulk.roll_back("s3")
    assert await bulk.resolve("b1", idle_ms=0) == (1, 0)
    assert await bulk.resolve("b2", idle_ms=0) == (1, 0)
    assert [(await engine.metrics(q)).waiting for q in ("b1", "b2")] == [600, 600]


async def test_write_fails_whole_when_a_queue_disappears(engine: Engine) -> None:
    await engine.register_queue("b1", {})
    await engine.register_queue("b2", {})
    check = engine.get_queue
    gone: list[str] = []

    async def check_then_obliterate(queue: str) -> QueueRecord:
        record = await check(queue)
        if queue == "b2" and not gone:  # the queue goes away between the checks and the writes
            gone.append(queue)
            await engine.obliterate("b2", force=True)
        return record

    engine.get_queue = check_then_obliterate  # type: ignore[method-assign]
    bulk = BulkStreams(engine)
    with pytest.raises(QueueNotFound):
        await bulk.write([("b1", jobs(3000)), ("b2", jobs(600, "g"))])
    await bulk.wait_background()
    assert (await engine.metrics("b1")).waiting == 0
    assert await staged(engine, "b1") == {}
    assert await engine.redis.keys(engine.keys("b1").staged_prefix + "*") == []


async def test_a_stream_runs_in_the_order_it_was_sent(engine: Engine) -> None:
    """Staged chunks are published in stream order, so jobs of one level run in the order they were sent."""
    await engine.register_queue("b", {})
    sent = [NewJob(id="", name=str(i), data=b"{}", priority=1 + i % 2) for i in range(5 * ADD_CHUNK + 7)]
    result = await BulkStreams(engine).write([("b", sent)])
    claimed = await engine.claim("b", len(sent), "t", "w", 30_000)
    order = [int(j.name) for j in claimed.jobs]
    assert order == [i for i in range(len(sent)) if i % 2 == 0] + [i for i in range(len(sent)) if i % 2 == 1]
    assert [j.id for j in sorted(claimed.jobs, key=lambda j: int(j.name))] == result.ids


async def test_obliterate_drops_staged_streams(engine: Engine) -> None:
    await engine.register_queue("b", {})
    bulk = BulkStreams(engine)
    await bulk._stage("s4", [("b", jobs(600))], [])
    await engine.obliterate("b", force=False)
    assert await engine.redis.exists(engine.keys("b").staged("s4"), engine.keys("b").bulk) == 0
    assert await bulk.commit("s4")
    assert await bulk.publish_staged("b", "s4") == 0  # nothing resurrects the queue


async def _kill_during_bulk(
    procs: Procs, redis_url: str, prefix: str, redis: Redis, engine: Engine, after_commit: bool
) -> int:
    """Kills the server (SIGKILL) in the middle of a 50,000-job stream; returns the jobs visible after a
    restart, once janitors have resolved what the stream left behind."""
    fast_janitor = ("--janitor-interval-ms", "200", "--bulk-idle-ms", "500")
    srv = await procs.server(redis_url, prefix, 0, *fast_janitor)
    port = int(srv.address.rsplit(":", 1)[1])
    qm = QueueManager(address=srv.address)
    await qm.register_queue("big")
    payload = [{"name": "n", "data": {"i": i}, "options": {"job_id": f"k{i}"}} for i in range(50_000)]
    adding = asyncio.create_task(qm.add_bulk("big", payload))
    bulk_key = engine.keys("big").bulk

    async def moment() -> bool:
        sids = await redis.hkeys(bulk_key)
        if not sids or not after_commit:
            return bool(sids)
        return bool(await redis.get(stream_decision(prefix, sids[0].decode())))

    await eventually(moment, timeout=30)
    srv.kill()
    await srv.wait()
    with pytest.raises(QueueManagerError):
        await adding
    await qm.shutdown()
    again = await procs.server(redis_url, prefix, port, *fast_janitor)

    async def resolved() -> bool:
        return not await redis.exists(bulk_key)

    await eventually(resolved, timeout=30)
    visible = (await engine.metrics("big")).waiting
    # Sending the stream again (same ids) completes it without duplicates.
    qm = QueueManager(address=again.address)
    assert len(await qm.add_bulk("big", payload)) == 50_000
    assert (await engine.metrics("big")).waiting == 50_000
    await qm.shutdown()
    return visible


async def test_server_killed_while_staging_leaves_nothing(
    procs: Procs, redis_url: str, prefix: str, redis: Redis, engine: Engine
) -> None:
    assert await _kill_during_bulk(procs, redis_url, prefix, redis, engine, after_commit=False) in (0, 50_000)


async def test_server_killed_after_commit_leaves_everything(
    procs: Procs, redis_url: str, prefix: str, redis: Redis, engine: Engine
) -> None:
    assert await _kill_during_bulk(procs, redis_url, prefix, redis, engine, after_commit=True) == 50_000
