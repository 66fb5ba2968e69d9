"""Timed pauses (PauseQueueRequest.resume_after / resume_at, and PauseGroup's): the queue or group resumes by
itself at its time, once, whichever server gets there first; a resume, a plain pause or a new timed pause
clears or replaces the time. On the test clock (queue_manager_server.testing): nothing waits in real time."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from redis.asyncio import Redis

from queue_manager import JobContext, JobState, QueueManager
from queue_manager.v1 import queue_service_pb2, queue_service_pb2_grpc
from queue_manager_server.engine.clock import TestClockStorage
from queue_manager_server.engine.pauses import Pauses
from queue_manager_server.testing import TestServer
from tests.test_cli import qm_cli, usage_error
from tests.test_test_clock import until_state

# Generous bound on real-time waits (a worker picking up a job it was woken for); the clock moves by minutes.
WAIT = 20.0
MINUTE = timedelta(minutes=1)


@pytest.fixture
async def server(redis_url: str, prefix: str) -> AsyncIterator[TestServer]:
    async with TestServer(redis_url=redis_url, key_prefix=prefix) as s:
        yield s


async def paused(qm: QueueManager, queue: str) -> bool:
    return (await qm.get_queue(queue)).paused


async def test_a_timed_pause_resumes_the_queue_at_its_time_and_not_before(server: TestServer) -> None:
    qm = server.queue_manager()
    await qm.register_queue("deploys")
    start = await server.clock.now()
    queue = await qm.pause_queue("deploys", resume_after=timedelta(minutes=15))
    assert queue.paused and queue.paused_until is not None
    assert timedelta(minutes=15) <= queue.paused_until - start < timedelta(minutes=15, seconds=5)
    assert (await qm.get_queue("deploys")).paused_until == queue.paused_until
    # The metrics (the dashboard's stream) carry it too.
    assert (await qm.get_queue_metrics("deploys")).paused_until == queue.paused_until
    job = await qm.add_job("deploys", "migrate")
    assert (await qm.get_job("deploys", job.id)).state is JobState.PAUSED

    await server.clock.advance(timedelta(minutes=14))
    assert await paused(qm, "deploys")
    await server.clock.advance(timedelta(minutes=1, seconds=5))
    after = await qm.get_queue("deploys")
    assert not after.paused and after.paused_until is None
    assert (await qm.get_job("deploys", job.id)).state is JobState.WAITING
    metrics = await qm.get_queue_metrics("deploys")
    assert not metrics.is_paused and metrics.waiting == 1 and metrics.paused == 0
    assert metrics.paused_until is None


async def test_resume_at_a_time_resumes_then(server: TestServer) -> None:
    qm = server.queue_manager()
    await qm.register_queue("at")
    when = (await server.clock.now() + timedelta(hours=2)).replace(microsecond=0)
    queue = await qm.pause_queue("at", resume_at=when)
    assert queue.paused_until == when
    await server.clock.advance(timedelta(hours=1, minutes=59))
    assert await paused(qm, "at")
    await server.clock.advance(timedelta(minutes=2))
    assert not await paused(qm, "at")


async def test_jobs_added_while_paused_go_to_a_connected_worker_as_the_pause_lifts(
    server: TestServer, redis: Redis
) -> None:
    """The resume itself wakes the dispatchers (resume_due.lua publishes ``w``): here it is run as another
    server's timer would run it, with no clock_moved catch-up of this server to claim again."""
    qm = server.queue_manager()
    await qm.register_queue("work")
    ran = asyncio.Event()

    @qm.processor("work")
    async def handle(job: JobContext) -> str:
        ran.set()
        return "done"

    await qm.start_workers()
    await qm.pause_queue("work", resume_after=10 * MINUTE)
    job = await qm.add_job("work", "later")
    await server.clock.advance(5 * MINUTE)
    assert not ran.is_set() and (await qm.get_job("work", job.id)).state is JobState.PAUSED
    # The clock moved without the server's catch-up: only a resume can hand the job out now.
    await TestClockStorage(server.app.engine).advance(6 * 60_000)
    async with redis.pubsub(ignore_subscribe_messages=True) as channel:
        await channel.subscribe(server.app.engine.channel)
        resumed = await Pauses(server.app.engine).resume_due("work")
        assert resumed.lifted == 1
        # The wake-up every server's dispatcher listens for, published by the resume itself.
        async with asyncio.timeout(WAIT):
            while True:
                message = await channel.get_message(timeout=1.0)
                if message is not None and message["data"] == b"w work":
                    break
    async with asyncio.timeout(WAIT):
        await ran.wait()
    await until_state(qm, "work", job.id, JobState.COMPLETED)


async def test_the_pause_lifts_once_whichever_of_two_servers_gets_there_first(
    redis_url: str, prefix: str
) -> None:
    async with (
        TestServer(redis_url=redis_url, key_prefix=prefix) as one,
        TestServer(redis_url=redis_url, key_prefix=prefix) as two,
    ):
        qm = one.queue_manager()
        await qm.register_queue("shared")
        await qm.pause_queue("shared", resume_after=MINUTE)
        # Both servers' timers learn of it (the ``p`` event); both try at the same moment once it is due.
        await TestClockStorage(one.app.engine).advance(61_000)
        engines = [one.app.engine, two.app.engine] * 5
        results = await asyncio.gather(*(Pauses(e).resume_due("shared") for e in engines))
        assert sum(r.lifted for r in results) == 1
        assert not await paused(qm, "shared")
        # Paused again by hand: a late timer of either server changes nothing, nor does either's catch-up.
        await two.queue_manager().pause_queue("shared")
        await asyncio.gather(one.app.clock_moved(), two.app.clock_moved())
        assert sum([(await Pauses(e).resume_due("shared")).lifted for e in engines]) == 0
        assert await paused(qm, "shared")


async def test_both_servers_arm_their_timers_from_the_pause_event(redis_url: str, prefix: str) -> None:
    async with (
        TestServer(redis_url=redis_url, key_prefix=prefix) as one,
        TestServer(redis_url=redis_url, key_prefix=prefix) as two,
    ):
        timers = [next(c for c in s.app.components if c.name == "pause_timer") for s in (one, two)]
        for timer in timers:  # their rescans stopped: only the pause's announcement can arm them now
            assert timer._task is not None
            timer._task.cancel()
        await one.queue_manager().register_queue("armed")
        await one.queue_manager().pause_queue("armed", resume_after=MINUTE)
        async with asyncio.timeout(WAIT):
            while True:
                if all("armed" in t._due for t in timers):
                    break
                await asyncio.sleep(0.02)


async def test_a_manual_resume_clears_the_time(server: TestServer) -> None:
    qm = server.queue_manager()
    await qm.register_queue("manual")
    await qm.pause_queue("manual", resume_after=10 * MINUTE)
    resumed = await qm.resume_queue("manual")
    assert not resumed.paused and resumed.paused_until is None
    again = await qm.pause_queue("manual")  # by hand, no time: the old timer must not lift it
    assert again.paused and again.paused_until is None
    await server.clock.advance(11 * MINUTE)
    assert await paused(qm, "manual")


async def test_a_plain_pause_over_a_timed_one_clears_the_time(server: TestServer) -> None:
    qm = server.queue_manager()
    await qm.register_queue("plain")
    await qm.pause_queue("plain", resume_after=10 * MINUTE)
    assert (await qm.pause_queue("plain")).paused_until is None
    await server.clock.advance(11 * MINUTE)
    assert await paused(qm, "plain")


async def test_pausing_again_replaces_the_time(server: TestServer) -> None:
    qm = server.queue_manager()
    await qm.register_queue("again")
    first = await qm.pause_queue("again", resume_after=10 * MINUTE)
    later = await qm.pause_queue("again", resume_after=30 * MINUTE)
    assert first.paused_until is not None and later.paused_until is not None
    assert later.paused_until - first.paused_until >= 19 * MINUTE
    await server.clock.advance(11 * MINUTE)
    assert await paused(qm, "again")
    await server.clock.advance(20 * MINUTE)
    assert not await paused(qm, "again")
    # A shorter time replaces a longer one too.
    await qm.pause_queue("again", resume_after=60 * MINUTE)
    await qm.pause_queue("again", resume_after=5 * MINUTE)
    await server.clock.advance(6 * MINUTE)
    assert not await paused(qm, "again")


async def test_a_timed_group_pause_lifts_and_its_jobs_run(server: TestServer) -> None:
    qm = server.queue_manager()
    await qm.register_queue("tenants")
    ran: list[str] = []
    done = asyncio.Event()

    @qm.processor("tenants")
    async def handle(job: JobContext) -> None:
        ran.append(job.name)
        if job.name == "a":
            done.set()

    await qm.start_workers()
    info = await qm.pause_group("tenants", "acme", resume_after=5 * MINUTE)
    assert info.paused and info.paused_until is not None
    (listed,) = (await qm.list_groups("tenants"))[0]
    assert listed.paused_until == info.paused_until
    job = await qm.add_job("tenants", "a", options={"group": "acme"})
    await server.clock.advance(4 * MINUTE)
    assert (await qm.get_job("tenants", job.id)).state is JobState.WAITING and not ran
    await server.clock.advance(2 * MINUTE)
    async with asyncio.timeout(WAIT):
        await done.wait()
    (listed,) = (await qm.list_groups("tenants"))[0] or [None]
    assert listed is None or (not listed.paused and listed.paused_until is None)
    assert (await qm.get_queue_metrics("tenants")).groups_paused == 0


async def test_a_manual_group_resume_or_plain_pause_clears_its_time(server: TestServer) -> None:
    qm = server.queue_manager()
    await qm.register_queue("g")
    await qm.pause_group("g", "one", resume_after=MINUTE)
    assert (await qm.resume_group("g", "one")).paused_until is None
    await qm.pause_group("g", "one")
    await qm.pause_group("g", "two", resume_after=MINUTE)
    assert (await qm.pause_group("g", "two")).paused_until is None
    await server.clock.advance(2 * MINUTE)
    groups, _ = await qm.list_groups("g")
    assert [(g.name, g.paused, g.paused_until) for g in groups] == [("one", True, None), ("two", True, None)]


def _duration(seconds: int, nanos: int = 0) -> Duration:
    return Duration(seconds=seconds, nanos=nanos)


def _at(when: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(when)
    return ts


async def test_bad_pause_times_are_refused_with_a_clear_message(server: TestServer) -> None:
    qm = server.queue_manager()
    await qm.register_queue("bad")
    now = await server.clock.now()
    day = timedelta(days=1)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"resume_after": _duration(60), "resume_at": _at(now + day)}, "not both"),
        ({"resume_after": _duration(0)}, "resume_after: must be positive"),
        ({"resume_after": _duration(-5)}, "resume_after: must be positive"),
        ({"resume_after": _duration(367 * 86400)}, "366-day maximum"),
        ({"resume_at": _at(now - MINUTE)}, "is not in the future"),
        ({"resume_at": _at(now + 367 * day)}, "more than 366 days ahead"),
    ]
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = queue_service_pb2_grpc.QueueServiceStub(channel)
        for fields, text in cases:
            for request in (
                queue_service_pb2.PauseQueueRequest(name="bad", **fields),
                queue_service_pb2.PauseGroupRequest(queue_name="bad", group="x", **fields),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.PauseQueue(request) if isinstance(
                        request, queue_service_pb2.PauseQueueRequest
                    ) else await stub.PauseGroup(request)
                assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT, fields
                assert text in (caught.value.details() or ""), caught.value.details()
        # Nothing was written: the queue is not paused, and no group was made.
        assert not await paused(qm, "bad")
        assert (await qm.list_groups("bad"))[0] == []
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.PauseQueue(
                queue_service_pb2.PauseQueueRequest(name="nope", resume_after=_duration(60))
            )
        assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    # The client refuses what it can tell before the call.
    with pytest.raises(ValueError, match="not both"):
        await qm.pause_queue("bad", resume_after=1000, resume_at=now + day)
    with pytest.raises(ValueError, match="more than 0"):
        await qm.pause_queue("bad", resume_after=0)


async def test_a_past_resume_at_says_to_resume_what_the_call_pauses(server: TestServer) -> None:
    # PauseGroup answered "resume the queue now", which sent people to resume the whole queue.
    await server.queue_manager().register_queue("past")
    past = _at(await server.clock.now() - MINUTE)
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = queue_service_pb2_grpc.QueueServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.PauseQueue(queue_service_pb2.PauseQueueRequest(name="past", resume_at=past))
        assert (caught.value.details() or "").endswith("give a later time, or resume the queue now")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.PauseGroup(
                queue_service_pb2.PauseGroupRequest(queue_name="past", group="g", resume_at=past)
            )
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert (caught.value.details() or "").endswith("give a later time, or resume the group now")


async def test_the_http_route_takes_resume_after_in_its_body(redis_url: str, prefix: str) -> None:
    async with TestServer(redis_url=redis_url, key_prefix=prefix, http_listen="127.0.0.1:0") as server:
        await server.queue_manager().register_queue("web")
        base = f"http://{server.app.http_address}/api/v1/queues/web"
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{base}:pause", json={"resume_after": "900s"}) as response:
                body = await response.json()
                assert response.status == 200, body
            assert body["queue"]["paused"] and "paused_until" in body["queue"]
            async with session.post(f"{base}:pause", json={"resume_after": "0s"}) as response:
                assert response.status == 400
                assert "must be positive" in json.dumps(await response.json())
        await server.clock.advance(16 * MINUTE)
        assert not await paused(server.queue_manager(), "web")


async def test_qm_queues_pause_for_and_until(server: TestServer, capsys: pytest.CaptureFixture[str]) -> None:
    qm = server.queue_manager()
    await qm.register_queue("cli")
    status, out, err = await qm_cli(
        capsys, "--server", server.address, "-o", "json", "queues", "pause", "cli", "--for", "15m"
    )
    assert status == 0, err
    shown = json.loads(out)
    assert shown["paused"] and shown["paused_until"]
    until = (await server.clock.now() + timedelta(hours=3)).replace(microsecond=0)
    text = until.isoformat().replace("+00:00", "Z")
    status, out, err = await qm_cli(
        capsys, "--server", server.address, "-o", "json", "queues", "pause", "cli", "--until", text
    )
    assert status == 0, err
    assert (await qm.get_queue("cli")).paused_until == until
    status, out, err = await qm_cli(capsys, "--server", server.address, "queues", "list")
    assert status == 0 and f"until {until.isoformat()}" in out, out
    status, out, err = await qm_cli(
        capsys, "--server", server.address, "-o", "json", "groups", "pause", "cli", "acme", "--for", "1h"
    )
    assert status == 0, err
    assert json.loads(out)["paused_until"]
    err = await usage_error(capsys, server, "queues", "pause", "cli", "--for", "1m", "--until", text)
    assert "not allowed with argument" in err
    assert "366d" in await usage_error(capsys, server, "queues", "pause", "cli", "--for", "400d")
    past = (await server.clock.now() - timedelta(hours=1)).isoformat()
    status, out, err = await qm_cli(
        capsys, "--server", server.address, "queues", "pause", "cli", "--until", past
    )
    assert status != 0 and "not in the future" in err
    assert datetime.now(UTC) < (await qm.get_queue("cli")).paused_until
