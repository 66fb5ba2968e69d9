"""A queue's `w` wake-up is published only when a worker waits for its jobs: a claim that left the queue with
no ready job marks it hungry, and the first job made ready since publishes the event and clears the mark
(common.lua publish_ready). Adds to a queue whose workers are busy, or that has none, publish nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from queue_manager import JobContext, QueueManager
from queue_manager_server.engine.keys import QueueKeys, events_channel
from queue_manager_server.services.dispatcher import IDLE_RECHECK_S
from tests.conftest import RunningServer, ServerFactory
from tests.rawworker import eventually


@pytest.fixture
async def events(redis: Redis, prefix: str) -> AsyncIterator[PubSub]:
    async with redis.pubsub(ignore_subscribe_messages=True) as ps:
        await ps.subscribe(events_channel(prefix))
        yield ps


async def wakeups(ps: PubSub, queue: str) -> int:
    """The `w <queue>` events received so far (after a PING's echo, so every earlier one has arrived)."""
    await ps.ping(b"mark")
    count = 0
    async with asyncio.timeout(10):
        while True:
            message = await ps.get_message(timeout=1.0)
            if message is None:
                continue
            if message["type"] == "pong":
                return count
            if message["type"] == "message" and message["data"] == f"w {queue}".encode():
                count += 1


async def test_adds_nobody_waits_for_publish_nothing(server: RunningServer, events: PubSub) -> None:
    async with QueueManager(server.address, timeout=10) as qm:
        await qm.register_queue("unwatched")
        await qm.add_job("unwatched", "first")  # a new queue is hungry: workers may have come before it
        assert await wakeups(events, "unwatched") == 1
        await asyncio.gather(*(qm.add_job("unwatched", f"j{i}") for i in range(20)))
        await qm.add_bulk("unwatched", [{"name": "b", "data": {"i": i}} for i in range(50)])
        assert await wakeups(events, "unwatched") == 0
        assert (await qm.get_queue_metrics("unwatched")).waiting == 71


async def test_busy_workers_get_no_wakeups_and_an_idle_one_is_woken_from_another_server(
    server_factory: ServerFactory, events: PubSub, redis: Redis, prefix: str
) -> None:
    serving, other = await server_factory(), await server_factory()
    release, started = asyncio.Event(), asyncio.Event()
    done: asyncio.Queue[str] = asyncio.Queue()
    worker = QueueManager(serving.address, concurrency=1, timeout=10)
    producer = QueueManager(other.address, timeout=10)
    await producer.register_queue("watched")
    await producer.add_job("watched", "clears-the-new-queue-mark")

    @worker.processor("watched")
    async def run(job: JobContext) -> None:
        if job.name == "hold":
            started.set()
            await release.wait()
        done.put_nowait(job.name)

    await (await worker.start_workers()).wait_connected()
    try:
        assert await asyncio.wait_for(done.get(), 10) == "clears-the-new-queue-mark"
        meta = QueueKeys(prefix, "watched").meta

        async def marked() -> bool:  # the worker's next claim comes back empty and marks the queue
            return await redis.hget(meta, "hungry") == b"1"

        await eventually(marked)
        await wakeups(events, "watched")
        # The worker's claim found the queue empty: the next add, through the other server, wakes it at once
        # (well before the dispatcher's idle re-check).
        async with asyncio.timeout(IDLE_RECHECK_S / 2):
            await producer.add_job("watched", "hold")
            await started.wait()
        assert await wakeups(events, "watched") == 1
        # Its one slot is taken and its claim was not left short: adds meanwhile publish nothing.
        for i in range(5):
            await producer.add_job("watched", f"later-{i}")
        assert await wakeups(events, "watched") == 0
        release.set()
        async with asyncio.timeout(10):
            names = [await done.get() for _ in range(6)]
        assert sorted(names) == ["hold"] + [f"later-{i}" for i in range(5)]
    finally:
        release.set()
        await worker.shutdown()
        await producer.shutdown()
