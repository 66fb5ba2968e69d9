"""A queue's `w` wake-up is published only when a worker waits for its jobs: a claim that left the queue with
no ready job marks it hungry, and the first job made ready since publishes the event and clears the mark
(common.lua publish_ready). Adds to a queue whose workers are busy, or that has none, publish nothing; nor do
adds whose own folded claim (services/dispatcher.py) left no ready job."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from queue_manager import JobContext, QueueManager
from queue_manager.v1 import jobs_pb2 as jpb
from queue_manager.v1 import queue_service_pb2_grpc as qrpc
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


async def test_an_add_whose_folded_claim_took_every_ready_job_publishes_nothing(
    server: RunningServer, events: PubSub, redis: Redis, prefix: str
) -> None:
    """This server's idle worker waits for the queue: its adds carry the worker's claim, which takes each job
    at once and leaves no ready job, so no waiter anywhere is woken for it, and the queue stays marked
    hungry for the next job."""
    done: asyncio.Queue[str] = asyncio.Queue()
    async with QueueManager(server.address, concurrency=4, timeout=10) as qm:
        await qm.register_queue("own")
        await qm.add_job("own", "clears-the-new-queue-mark")

        @qm.processor("own")
        async def run(job: JobContext) -> None:
            done.put_nowait(job.id)

        await (await qm.start_workers()).wait_connected()
        await asyncio.wait_for(done.get(), 10)
        meta = QueueKeys(prefix, "own").meta

        async def marked() -> bool:  # the worker's claim came back short
            return await redis.hget(meta, "hungry") == b"1"

        await eventually(marked)
        await wakeups(events, "own")
        for i in range(10):
            job = await qm.add_job("own", f"j{i}")
            async with asyncio.timeout(IDLE_RECHECK_S / 2):
                assert await done.get() == job.id
            assert await marked()
        assert await wakeups(events, "own") == 0


async def test_jobs_a_folded_claim_left_ready_wake_another_servers_worker(
    server_factory: ServerFactory, events: PubSub, redis: Redis, prefix: str
) -> None:
    """Two jobs in one call through a server whose worker has one free slot: the claim folded into the add
    takes one, the add publishes, and the other server's idle worker takes the other at once (not at its
    idle re-check). Every job holds its slot to the end, so the first worker cannot take the second job
    after running the first."""
    here, there = await server_factory(), await server_factory()
    release = asyncio.Event()
    seen: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

    def record(where: str) -> Any:
        async def run(job: JobContext) -> None:
            seen.put_nowait((where, job.name))
            await release.wait()

        return run

    near = QueueManager(here.address, concurrency=2, timeout=10)
    far = QueueManager(there.address, concurrency=1, timeout=10)
    try:
        await near.register_queue("split")
        near.processor("split")(record("here"))
        await (await near.start_workers()).wait_connected()
        await near.add_job("split", "hold")  # one of its two slots
        assert await asyncio.wait_for(seen.get(), 10) == ("here", "hold")
        far.processor("split")(record("there"))
        await (await far.start_workers()).wait_connected()
        meta = QueueKeys(prefix, "split").meta

        async def marked() -> bool:  # the far worker's claim found the queue empty
            return await redis.hget(meta, "hungry") == b"1"

        await eventually(marked)
        await wakeups(events, "split")
        items = [jpb.AddJobRequest(queue_name="split", job=jpb.NewJob(name=n)) for n in ("a", "b")]
        async with grpc.aio.insecure_channel(here.address) as channel:
            await qrpc.QueueServiceStub(channel).AddJobBatch(jpb.AddJobBatchRequest(items=items))
        async with asyncio.timeout(IDLE_RECHECK_S / 2):
            got = {await seen.get(), await seen.get()}
        assert {where for where, _ in got} == {"here", "there"}
        assert await wakeups(events, "split") == 1
    finally:
        release.set()
        await near.shutdown()
        await far.shutdown()
