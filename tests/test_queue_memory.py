"""Per-queue memory estimates against a real Valkey and real servers (memory_estimate.lua, engine/memory.py):
the estimate follows the jobs a queue holds and their size, tells queues apart, falls when jobs go, is
measured at most once per interval (however often the metrics are read), and shows in ``qm queues metrics``
and on the Prometheus endpoint."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from typing import Any
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis

from queue_manager import JobState, QueueManager
from queue_manager_server.engine import Engine
from queue_manager_server.engine.memory import JOB_SAMPLES
from queue_manager_server.security import redis_acl
from tests.conftest import RunningServer, ServerFactory
from tests.rawworker import eventually
from tests.test_cli import qm_cli
from tests.test_engine import register
from tests.test_prometheus import scrape, value

JOBS = 2_000
PAYLOAD = "x" * 1_000  # with the JSON quotes, 1 KB of data a job
WAIT = 30.0  # generous bound for anything awaited


async def used_memory(redis: Redis) -> int:
    return int((await redis.info("memory"))["used_memory"])


async def memory_usage_calls(redis: Redis) -> int:
    stats: dict[str, Any] = await redis.info("commandstats")
    return int(stats.get("cmdstat_memory|usage", {}).get("calls", 0))


async def add_jobs(qm: QueueManager, queue: str, n: int, data: Any = PAYLOAD) -> None:
    for start in range(0, n, 500):
        await qm.add_bulk(queue, [{"name": "j", "data": data} for _ in range(start, min(n, start + 500))])


async def test_the_estimate_follows_the_bytes_the_jobs_hold(
    server_factory: ServerFactory, redis: Redis
) -> None:
    """2,000 jobs of 1 KB: the estimate grows by the growth of used_memory, within 35%."""
    server = await server_factory(memory_estimate_ms=0)
    async with QueueManager(address=server.address) as qm:
        await qm.register_queue("big")
        empty = (await qm.get_queue_metrics("big")).memory_bytes
        before = await used_memory(redis)
        await add_jobs(qm, "big", JOBS)
        after = await used_memory(redis)
        grown = (await qm.get_queue_metrics("big")).memory_bytes
    assert empty < 20_000, empty  # the queue's own few keys
    assert abs((grown - empty) - (after - before)) <= 0.35 * (after - before), (grown, empty, after, before)
    assert grown - empty > JOBS * len(PAYLOAD)


async def test_the_estimate_counts_every_state_and_falls_when_jobs_go(
    server_factory: ServerFactory, redis: Redis
) -> None:
    """Jobs finished with large results count with their results; cleaning them gives the memory back."""
    server = await server_factory(memory_estimate_ms=0)
    async with QueueManager(address=server.address) as qm:
        await qm.register_queue("q")
        await add_jobs(qm, "q", 600, data=None)
        small = (await qm.get_queue_metrics("q")).memory_bytes

        @qm.processor("q")
        async def work(job: Any) -> str:
            return PAYLOAD * 4

        worker = await qm.start_workers()
        try:

            async def finished_all() -> bool:
                return (await qm.get_queue_metrics("q")).completed == 600

            await eventually(finished_all, timeout=WAIT)
        finally:
            await worker.shutdown()
        finished = (await qm.get_queue_metrics("q")).memory_bytes
        assert finished - small > 600 * len(PAYLOAD) * 4 * 0.8, (finished, small)
        assert await qm.clean_queue("q", 0, JobState.COMPLETED) == 600
        cleaned = (await qm.get_queue_metrics("q")).memory_bytes
    assert cleaned < 20_000, (cleaned, small, finished)


async def test_two_queues_are_told_apart(server_factory: ServerFactory) -> None:
    server = await server_factory(memory_estimate_ms=0)
    async with QueueManager(address=server.address) as qm:
        for name in ("heavy", "light", "empty"):
            await qm.register_queue(name)
        await add_jobs(qm, "heavy", 500, data="y" * 4_000)
        await add_jobs(qm, "light", 500, data="y" * 100)
        by_queue = {m.queue_name: m.memory_bytes for m in await qm.get_all_metrics()}
        await qm.obliterate_queue("heavy")
        after = {m.queue_name: m.memory_bytes for m in await qm.get_all_metrics()}
    assert by_queue["heavy"] > 500 * 4_000
    assert 500 * 100 < by_queue["light"] < by_queue["heavy"] / 5, by_queue
    assert by_queue["empty"] < 20_000, by_queue
    assert "heavy" not in after and after["light"] == pytest.approx(by_queue["light"], rel=0.1), after


async def test_the_estimate_is_measured_at_most_once_per_interval(
    server_factory: ServerFactory, redis: Redis
) -> None:
    """The default 30 s: metrics read again and again, through either of two servers (and the metrics
    stream, and a scrape), show the one kept estimate; no MEMORY USAGE goes to Redis until it expires."""
    a = await server_factory(http_listen="127.0.0.1:0")
    b = await server_factory()
    async with QueueManager(address=a.address) as qm, QueueManager(address=b.address) as other:
        await qm.register_queue("q", disable_dead_letter=True)  # the only queue: its estimate the only one
        await add_jobs(qm, "q", 100)
        calls = await memory_usage_calls(redis)
        first = (await qm.get_queue_metrics("q")).memory_bytes
        measured = await memory_usage_calls(redis)
        await add_jobs(qm, "q", 400)
        again = [(await qm.get_queue_metrics("q")).memory_bytes for _ in range(3)]
        again += [(await other.get_queue_metrics("q")).memory_bytes]
        again += [m.memory_bytes for m in await other.get_all_metrics()]
        text, samples = await scrape(a)
        assert "# TYPE queue_memory_bytes gauge" in text
        async for snapshot in qm.watch_metrics(["q"], interval=0.1):
            again.append(snapshot.metrics[0].memory_bytes)
            break
        still = await memory_usage_calls(redis)
    assert first > 100 * len(PAYLOAD)
    assert measured - calls > JOB_SAMPLES  # the queue's keys and its sampled jobs
    assert still == measured
    assert again == [first] * 6
    assert value(samples, "queue_memory_bytes", queue="q") == first


async def test_a_queue_obliterated_and_registered_again_is_measured_afresh(server: RunningServer) -> None:
    async with QueueManager(address=server.address) as qm:
        await qm.register_queue("q", disable_dead_letter=True)
        await add_jobs(qm, "q", 300)
        full = (await qm.get_queue_metrics("q")).memory_bytes
        await qm.obliterate_queue("q")
        await qm.register_queue("q", disable_dead_letter=True)
        empty = (await qm.get_queue_metrics("q")).memory_bytes
    assert full > 300 * len(PAYLOAD) and empty < 20_000, (full, empty)


async def test_a_due_estimate_is_measured_again(server_factory: ServerFactory) -> None:
    server = await server_factory(memory_estimate_ms=200)
    async with QueueManager(address=server.address) as qm:
        await qm.register_queue("q")
        first = (await qm.get_queue_metrics("q")).memory_bytes
        await add_jobs(qm, "q", 200)
        assert (await qm.get_queue_metrics("q")).memory_bytes == first
        await asyncio.sleep(0.3)  # the interval itself is what is tested
        assert (await qm.get_queue_metrics("q")).memory_bytes > first + 200 * len(PAYLOAD)


async def test_the_estimate_costs_the_same_commands_however_many_jobs_wait(
    engine: Engine, redis: Redis
) -> None:
    """The script's commands do not grow with the jobs: the same MEMORY USAGE calls for 200 jobs and for
    20,000 (ids seeded straight into a level list, their hashes alike)."""
    await register(engine, "q", disable_dead_letter=True)
    k = engine.keys("q")

    async def seed(n: int) -> None:
        pipe = redis.pipeline(transaction=False)
        for i in range(n):
            pipe.rpush(k.waiting_levels[2], f"s{i}")
            pipe.hset(k.job(f"s{i}"), mapping={"n": "j", "d": PAYLOAD, "ts": "1"})
        await pipe.execute()

    async def cost() -> tuple[int, int]:
        calls = await memory_usage_calls(redis)
        estimate = await engine.memory_estimate("q", 0, seed=7)
        return estimate, await memory_usage_calls(redis) - calls

    await seed(200)
    few, few_calls = await cost()
    await seed(19_800)
    many, many_calls = await cost()
    assert few_calls == many_calls
    assert 0.8 < (many / few) / 100 < 1.2, (few, many)


async def test_qm_queues_metrics_shows_the_estimate(
    server_factory: ServerFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    server = await server_factory(memory_estimate_ms=0)
    async with QueueManager(address=server.address) as qm:
        await qm.register_queue("q")
        await add_jobs(qm, "q", 100)
        expected = (await qm.get_queue_metrics("q")).memory_bytes
    status, out, err = await qm_cli(capsys, "--server", server.address, "queues", "metrics", "q")
    assert status == 0, err
    [shown] = re.findall(r"^memory_bytes\s+(\d+)\s*$", out, re.M)
    assert abs(int(shown) - expected) < expected * 0.2, out
    status, out, err = await qm_cli(capsys, "--server", server.address, "queues", "metrics")
    assert status == 0, err
    header, *rows = out.splitlines()
    assert header.split()[-1] == "MEMORY_BYTES", out
    [row] = [r.split() for r in rows if r.startswith("q ")]
    assert int(row[-1]) > 100 * len(PAYLOAD), out
    status, out, err = await qm_cli(capsys, "--server", server.address, "-o", "json", "queues", "metrics")
    assert status == 0, err
    [q] = [m for m in json.loads(out) if m["queue_name"] == "q"]
    assert q["memory_bytes"] > 100 * len(PAYLOAD)


async def test_grouped_and_delayed_jobs_count_too(server_factory: ServerFactory) -> None:
    """Jobs in fairness groups' lists and in the delayed set are sampled as the level lists' are."""
    server = await server_factory(memory_estimate_ms=0)
    async with QueueManager(address=server.address) as qm:
        await qm.register_queue("q", disable_dead_letter=True)
        empty = (await qm.get_queue_metrics("q")).memory_bytes
        grouped = [
            {"name": "j", "data": PAYLOAD, "options": {"group": f"tenant-{i % 40}"}} for i in range(400)
        ]
        await qm.add_bulk("q", grouped)
        with_groups = (await qm.get_queue_metrics("q")).memory_bytes
        await qm.add_bulk(
            "q", [{"name": "j", "data": PAYLOAD, "options": {"delay": 3600}} for _ in range(400)]
        )
        with_delayed = (await qm.get_queue_metrics("q")).memory_bytes
    assert 400 * len(PAYLOAD) < with_groups - empty < 400 * len(PAYLOAD) * 2.5, (empty, with_groups)
    assert 400 * len(PAYLOAD) < with_delayed - with_groups < 400 * len(PAYLOAD) * 2.5, (
        with_groups,
        with_delayed,
    )


async def test_the_estimate_works_on_a_cluster(on_cluster: ServerFactory) -> None:
    """Every key the script reads shares the queue's hash tag, so it runs on the queue's primary."""
    server = await on_cluster(memory_estimate_ms=0)
    async with QueueManager(address=server.address) as qm:
        for name in ("a", "b", "c"):
            await qm.register_queue(name, disable_dead_letter=True)
            await add_jobs(qm, name, 100 * (ord(name) - ord("a") + 1))
        by_queue = {m.queue_name: m.memory_bytes for m in await qm.get_all_metrics()}
    assert by_queue["a"] > 100 * len(PAYLOAD), by_queue
    assert by_queue["a"] < by_queue["b"] < by_queue["c"], by_queue


async def test_a_redis_user_refused_memory_usage_still_gets_its_metrics(
    server_factory: ServerFactory, redis: Redis, redis_url: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A managed Redis whose ACL refuses MEMORY USAGE: the metrics are served, the estimate is 0 and the
    server's log says why, once."""
    user, password = f"qm-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    rules = redis_acl(user, password, prefix).replace(" +memory|usage", "")
    await redis.execute_command("ACL", "SETUSER", *rules.split())
    parts = urlsplit(redis_url)
    try:
        server = await server_factory(redis_url=f"redis://{user}:{password}@{parts.hostname}:{parts.port}/0")
        async with QueueManager(address=server.address) as qm:
            await qm.register_queue("q", disable_dead_letter=True)
            await add_jobs(qm, "q", 10)
            metrics = [await qm.get_queue_metrics("q") for _ in range(3)]
    finally:
        await redis.execute_command("ACL", "DELUSER", user)
    assert [(m.waiting, m.memory_bytes) for m in metrics] == [(10, 0)] * 3
    assert caplog.text.count("cannot estimate the queues' memory (MEMORY USAGE refused") == 1, caplog.text


async def test_a_clean_or_a_drain_drops_the_kept_estimate(server: RunningServer) -> None:
    """With the estimate kept for its default 30 s, a clean or a drain that removed jobs is seen at the next
    read, not up to half a minute later."""
    async with QueueManager(address=server.address) as qm:
        for name in ("cleaned", "drained"):
            await qm.register_queue(name)
            await add_jobs(qm, name, 500)
        full = {name: (await qm.get_queue_metrics(name)).memory_bytes for name in ("cleaned", "drained")}
        assert await qm.clean_queue("cleaned", 0, JobState.WAITING) == 500
        assert await qm.drain_queue("drained") == 500
        after = {name: (await qm.get_queue_metrics(name)).memory_bytes for name in ("cleaned", "drained")}
    for name in ("cleaned", "drained"):
        assert full[name] > 500 * len(PAYLOAD) and after[name] < full[name] / 10, (name, full, after)
