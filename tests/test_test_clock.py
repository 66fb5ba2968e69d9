"""The deterministic test mode (queue_manager_server.testing): a real server on a clock the test moves, so
delays, backoffs, schedules, rate limits and timeouts happen at once with no real waiting, while leases keep
to real time; and a normal server whose scripts never read the test clock."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from queue_manager import JobContext, JobState, NotFoundError, QueueManager
from queue_manager_server.app import App, StartupError
from queue_manager_server.components.maintenance import Reaper
from queue_manager_server.config import Settings
from queue_manager_server.engine import Engine
from queue_manager_server.engine.keys import clock_offset
from queue_manager_server.engine.scripts import Scripts, _source
from queue_manager_server.testing import TestServer
from tests.conftest import RunningServer

HOUR = timedelta(hours=1)
# Generous bounds on real-time waits (a worker picking up a job it was woken for); the clock moves by hours.
WAIT = 20.0


@pytest.fixture
async def server(redis_url: str, prefix: str) -> AsyncIterator[TestServer]:
    """A TestServer on the session's Valkey under this test's key prefix (the first test: its own Valkey)."""
    async with TestServer(redis_url=redis_url, key_prefix=prefix) as s:
        yield s


async def state(qm: QueueManager, queue: str, job_id: str) -> JobState | None:
    return (await qm.get_job(queue, job_id)).state


async def test_a_job_delayed_an_hour_is_waiting_right_after_the_hour_and_not_before() -> None:
    """Through the public entry point as a user has it: its own embedded Valkey, no settings."""
    async with TestServer() as server:
        qm = server.queue_manager()
        await qm.register_queue("emails")
        job = await qm.add_job("emails", "send", {"to": "a@example.com"}, {"delay": HOUR})
        start = await server.clock.now()
        assert abs(start - datetime.now(UTC)) < timedelta(seconds=5)
        await server.clock.advance(3540)
        assert await state(qm, "emails", job.id) is JobState.DELAYED
        moved = await server.clock.advance(timedelta(seconds=60))
        # No waiting: the next line sees the job waiting.
        assert await state(qm, "emails", job.id) is JobState.WAITING
        assert moved - start >= HOUR and await server.clock.offset() == HOUR
        # Python's reads of Redis time see the clock too: a job added now is stamped an hour on.
        later = await qm.add_job("emails", "send")
        created = (await qm.get_job("emails", later.id)).created_at
        assert created is not None and created - start >= HOUR


async def until_state(qm: QueueManager, queue: str, job_id: str, wanted: JobState) -> None:
    async with asyncio.timeout(WAIT):
        while True:
            if await state(qm, queue, job_id) is wanted:
                return
            await asyncio.sleep(0.02)


async def test_a_connected_worker_runs_a_delayed_job_once_the_clock_passes_it(server: TestServer) -> None:
    qm = server.queue_manager()
    await qm.register_queue("reports")
    ran = asyncio.Event()

    @qm.processor("reports")
    async def build(job: JobContext) -> str:
        ran.set()
        return "built"

    await qm.start_workers()
    job = await qm.add_job("reports", "nightly", None, {"delay": HOUR})
    await server.clock.advance(HOUR - timedelta(minutes=1))
    assert await state(qm, "reports", job.id) is JobState.DELAYED and not ran.is_set()
    await server.clock.advance(60)
    assert await state(qm, "reports", job.id) is not JobState.DELAYED
    async with asyncio.timeout(WAIT):
        await ran.wait()
        done = await qm.wait_for_job("reports", job.id)
    assert done.state is JobState.COMPLETED and done.result == "built"


async def test_a_retry_after_a_ten_minute_backoff_runs_after_ten_minutes_not_nine(server: TestServer) -> None:
    qm = server.queue_manager()
    await qm.register_queue("payments")
    runs: list[int] = []
    second = asyncio.Event()

    @qm.processor("payments")
    async def charge(job: JobContext) -> str:
        runs.append(job.attempts_made)
        if len(runs) == 1:
            raise RuntimeError("card processor down")
        second.set()
        return "charged"

    await qm.start_workers()
    options: dict[str, Any] = {"attempts": 2, "backoff": {"type": "fixed", "delay": timedelta(minutes=10)}}
    job = await qm.add_job("payments", "charge", None, options)
    await until_state(qm, "payments", job.id, JobState.DELAYED)
    await server.clock.advance(timedelta(minutes=9))
    assert await state(qm, "payments", job.id) is JobState.DELAYED and runs == [0]
    await server.clock.advance(timedelta(minutes=1))
    assert await state(qm, "payments", job.id) is not JobState.DELAYED
    async with asyncio.timeout(WAIT):
        await second.wait()
        done = await qm.wait_for_job("payments", job.id)
    assert done.state is JobState.COMPLETED and runs == [0, 1]


@pytest.mark.parametrize("kind", ["cron", "every"])
async def test_a_schedule_fires_at_its_next_time_and_moves_on(server: TestServer, kind: str) -> None:
    qm = server.queue_manager()
    await qm.register_queue("hourly")
    # To half past the hour first: the next whole hour is then 30 minutes away, whenever the test runs.
    now = await server.clock.now()
    await server.clock.advance((timedelta(minutes=30 - now.minute, seconds=-now.second)) % HOUR)
    when: dict[str, Any] = {"cron": "0 * * * *"} if kind == "cron" else {"every": HOUR}
    created = await qm.add_schedule("hourly", "digest", job_name="digest", **when)
    first = created.next_run_at
    assert first is not None and created.run_count == 0
    now = await server.clock.now()
    await server.clock.advance(first - now - timedelta(seconds=1))
    assert (await qm.get_schedule("hourly", "digest")).run_count == 0
    await server.clock.advance(1)
    fired = await qm.get_schedule("hourly", "digest")
    assert fired.run_count == 1 and fired.next_run_at == first + HOUR
    assert fired.last_job_id is not None
    assert await state(qm, "hourly", fired.last_job_id) is JobState.WAITING
    await server.clock.advance(HOUR)
    again = await qm.get_schedule("hourly", "digest")
    assert again.run_count == 2 and again.next_run_at == first + 2 * HOUR


async def test_a_rate_limit_window_refills_when_the_clock_passes_it(server: TestServer) -> None:
    qm = server.queue_manager()
    await qm.register_queue("api", rate_limit={"max": 1, "duration": HOUR})
    ran: list[str] = []
    started = asyncio.Event()

    @qm.processor("api")
    async def call(job: JobContext) -> None:
        ran.append(job.id)
        started.set()

    await qm.start_workers()
    first = await qm.add_job("api", "call")
    async with asyncio.timeout(WAIT):
        await started.wait()
        await qm.wait_for_job("api", first.id)
    started.clear()
    second = await qm.add_job("api", "call")
    await server.clock.advance(timedelta(minutes=59))
    assert await state(qm, "api", second.id) is JobState.WAITING and ran == [first.id]
    await server.clock.advance(timedelta(minutes=1))
    async with asyncio.timeout(WAIT):
        await started.wait()
        await qm.wait_for_job("api", second.id)
    assert ran == [first.id, second.id]


async def test_a_run_past_its_timeout_fails_at_once_but_a_lease_keeps_real_time(server: TestServer) -> None:
    qm = server.queue_manager()
    await qm.register_queue("jobs")
    release = asyncio.Event()
    running = asyncio.Event()

    @qm.processor("jobs")
    async def work(job: JobContext) -> str:
        running.set()
        if job.name == "slow":
            await asyncio.sleep(3600)  # real time: the server's timeout must end it, not this
        await release.wait()
        return "done"

    await qm.start_workers()
    steady = await qm.add_job("jobs", "steady")
    async with asyncio.timeout(WAIT):
        await running.wait()
    running.clear()
    slow = await qm.add_job("jobs", "slow", None, {"timeout": timedelta(minutes=30)})
    async with asyncio.timeout(WAIT):
        await running.wait()
    # Two hours on: the slow run is past its timeout; the steady one's lease (30 s, real time) is not lost.
    await server.clock.advance(2 * HOUR)
    failed = await qm.get_job("jobs", slow.id)
    assert failed.state is JobState.FAILED and "timed out" in (failed.failed_reason or "")
    assert await state(qm, "jobs", steady.id) is JobState.ACTIVE
    # The reaper recovers what its own look finds expired: none here.
    (reaper,) = [c for c in server.app.components if isinstance(c, Reaper)]
    await reaper.tick()
    assert (await qm.get_job("jobs", steady.id)).stalled_count == 0
    release.set()
    async with asyncio.timeout(WAIT):
        done = await qm.wait_for_job("jobs", steady.id)
    assert done.state is JobState.COMPLETED and done.result == "done" and done.attempts_made == 1


async def test_a_job_unclaimed_past_its_expiry_has_ended_when_advance_returns(server: TestServer) -> None:
    qm = server.queue_manager()
    await qm.register_queue("offers")
    job = await qm.add_job("offers", "offer", None, {"expire_after": HOUR})
    await server.clock.advance(HOUR - timedelta(minutes=1))
    assert await state(qm, "offers", job.id) is JobState.WAITING
    await server.clock.advance(60)
    expired = await qm.get_job("offers", job.id)
    assert expired.state is JobState.CANCELLED and expired.cancel_reason.startswith("expired: ")


async def test_finished_jobs_past_the_queues_retention_age_are_removed(server: TestServer) -> None:
    qm = server.queue_manager()
    await qm.register_queue("kept", completed_retention={"age": timedelta(days=1)})

    @qm.processor("kept")
    async def run(job: JobContext) -> None:
        return None

    await qm.start_workers()
    job = await qm.add_job("kept", "x")
    async with asyncio.timeout(WAIT):
        await qm.wait_for_job("kept", job.id)
    await server.clock.advance(timedelta(hours=23))
    assert await state(qm, "kept", job.id) is JobState.COMPLETED
    await server.clock.advance(timedelta(hours=1, seconds=1))
    with pytest.raises(NotFoundError):
        await qm.get_job("kept", job.id)


async def test_workers_and_event_watches_stay_alive_across_a_jump(
    server: TestServer, redis: Redis, prefix: str
) -> None:
    """Their deadlines are renewed by real time: a jump of a day must not make a connected worker gone from
    the registry, nor stop a watched queue's job events until the next renewal."""
    qm = server.queue_manager()
    await qm.register_queue("watched")

    @qm.processor("watched")
    async def run(job: JobContext) -> None:
        return None

    await qm.start_workers()
    async with asyncio.timeout(WAIT):  # the registry entry is written shortly after the hello
        while True:
            if await qm.list_workers("watched"):
                break
            await asyncio.sleep(0.02)
    async with qm.watch_job_events("watched") as events:
        await server.clock.advance(timedelta(days=1))
        assert len(await qm.list_workers("watched")) == 1
        deadline = int(await redis.hget(Engine(redis, prefix).keys("watched").meta, "evw") or 0)
        now = await server.clock.now()
        assert deadline > now.timestamp() * 1000
        job = await qm.add_job("watched", "x")
        async with asyncio.timeout(WAIT):
            async for event in events:
                if event.job_id == job.id and event.type == "added":
                    break


@pytest.mark.parametrize(
    ("amount", "error"),
    [
        (-1, ValueError),
        (timedelta(seconds=-1), ValueError),
        (math.inf, ValueError),
        (math.nan, ValueError),
        ("60", TypeError),
        (True, TypeError),
    ],
)
async def test_the_clock_never_goes_back(server: TestServer, amount: Any, error: type[Exception]) -> None:
    await server.clock.advance(10)
    with pytest.raises(error, match=r"forward|seconds"):
        await server.clock.advance(amount)
    assert await server.clock.offset() == timedelta(seconds=10)


async def test_a_normal_servers_scripts_never_read_the_test_clock(
    server_factory: Any, redis: Redis, prefix: str
) -> None:
    """Without Settings.test_clock the scripts are the files as they are (TIME alone), and an offset left in
    the key changes nothing; with it, every TIME a script reads goes through the offset."""
    normal, clocked = Scripts(redis), Scripts(redis, "t:test-clock")
    for name in Scripts.NAMES:
        text = normal.get(name).script
        assert text == _source(name) and "test_clock" not in text and "test-clock" not in text, name
        if "redis.call('TIME')" in text:
            clocked_text = clocked.get(name).script
            assert clocked_text.count("redis.call('TIME')") == 1, name  # the helper's own
            assert "redis.call('GET', \"t:test-clock\")" in clocked_text, name
    running: RunningServer = await server_factory()
    await redis.set(clock_offset(prefix), 10 * 24 * 3600 * 1000)  # ten days, if anything read it
    qm = QueueManager(address=running.address)
    try:
        await qm.register_queue("plain")
        job = await qm.add_job("plain", "x", None, {"delay": HOUR})
        added = await qm.get_job("plain", job.id)
        assert added.run_at is not None and added.run_at - datetime.now(UTC) < HOUR + timedelta(minutes=1)
    finally:
        await qm.shutdown()


async def test_the_test_clock_is_refused_on_a_cluster() -> None:
    settings = Settings(
        listen="127.0.0.1:0", redis_url="redis://127.0.0.1:1", redis_cluster=True, test_clock=True
    )
    with pytest.raises(StartupError, match="single Redis/Valkey server, not a Cluster"):
        await App(settings).start()
    client = RedisCluster.from_url("redis://127.0.0.1:1")  # never connected
    with pytest.raises(ValueError, match="another hash slot"):
        Engine(client, "t", test_clock=True)
