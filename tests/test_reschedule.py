"""Changing when a job runs (RescheduleJob) end to end: a delayed job's new run time, a waiting job made
delayed, a time that has come, other states refused, fairness groups, priority-bounded queues, expiry, the
HTTP route and ``qm jobs reschedule``.

A real server on a real Valkey, driven through the Python client and worker, with Redis read directly where
the lists a job sits in must be seen exactly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import grpc
import pytest
from redis.asyncio import Redis

from queue_manager import (
    FailedPreconditionError,
    JobContext,
    JobPriority,
    JobState,
    NotFoundError,
    QueueManager,
    SyncQueueManager,
)
from queue_manager.v1 import jobs_pb2, queue_service_pb2_grpc
from queue_manager_server.engine import Engine
from queue_manager_server.engine.aging import Aging
from tests.conftest import RunningServer, ServerFactory
from tests.test_cli import qm_cli, qm_json, usage_error
from tests.test_client_e2e import Calls

WAIT = 20.0
HOUR = timedelta(hours=1)


@pytest.fixture
async def qm(server: RunningServer) -> AsyncIterator[QueueManager]:
    client = QueueManager(address=server.address, concurrency=4, shutdown_grace=5.0)
    yield client
    await client.shutdown()


async def wait(qm: QueueManager, queue: str, job_id: str) -> Any:
    return await qm.wait_for_job(queue, job_id, timeout=WAIT)


def _near(at: datetime | None, expected: datetime, slack: timedelta = timedelta(seconds=5)) -> bool:
    return at is not None and abs(at - expected) < slack


async def _groups(qm: QueueManager, queue: str) -> dict[str, int]:
    """The queue's fairness groups and their waiting jobs."""
    groups, _ = await qm.list_groups(queue)
    return {g.name: g.waiting for g in groups}


async def _lists(redis: Redis, prefix: str, queue: str) -> list[list[str]]:
    """The queue's waiting lists, first level first (engine/keys.py waiting_levels)."""
    levels = [f"{prefix}:{{{queue}}}:waiting:{p}" for p in range(1, 6)]
    return [[i.decode() for i in await redis.lrange(level, 0, -1)] for level in levels]


async def test_a_delayed_job_takes_its_new_run_time_and_runs_then(qm: QueueManager) -> None:
    await qm.register_queue("later")
    job = await qm.add_job("later", "x", {"n": 1}, {"delay": HOUR, "priority": "high"})
    now = datetime.now(UTC)
    later = await qm.reschedule_job("later", job.id, delay=2 * HOUR)
    assert later.state is JobState.DELAYED and _near(later.run_at, now + 2 * HOUR)
    at = (now + 3 * HOUR).replace(microsecond=123_000)
    fixed = await qm.reschedule_job("later", job.id, run_at=at)
    assert fixed.state is JobState.DELAYED and fixed.run_at == at
    assert (fixed.priority, fixed.data) == (JobPriority.HIGH, {"n": 1})  # nothing else changes
    ran = Calls()

    @qm.processor("later")
    async def work(ctx: JobContext) -> str:
        ran.add(ctx.id)
        return "ran"

    await qm.start_workers()
    sooner = await qm.reschedule_job("later", job.id, delay=300)  # earlier than the timer armed before
    assert sooner.state is JobState.DELAYED and sooner.run_at is not None
    done = await wait(qm, "later", job.id)
    assert done.state is JobState.COMPLETED and done.processed_at >= sooner.run_at
    assert ran.items == [job.id]


async def test_a_waiting_job_becomes_delayed_and_a_time_that_has_come_makes_it_waiting(
    qm: QueueManager, server: RunningServer
) -> None:
    await qm.register_queue("w")
    a, b, c = [await qm.add_job("w", name) for name in ("a", "b", "c")]
    delayed = await qm.reschedule_job("w", b.id, delay=HOUR)
    assert delayed.state is JobState.DELAYED and _near(delayed.run_at, datetime.now(UTC) + HOUR)
    waiting, _ = await qm.list_jobs("w", "waiting")
    assert [j.id for j in waiting] == [a.id, c.id]
    m = await qm.get_queue_metrics("w")
    assert (m.waiting, m.delayed) == (2, 1)
    # A time that has come leaves a waiting job where it is, and makes a delayed one waiting at the back.
    assert (await qm.reschedule_job("w", a.id, delay=0)).state is JobState.WAITING
    past = datetime.now(UTC) - HOUR
    back = await qm.reschedule_job("w", b.id, run_at=past)
    assert back.state is JobState.WAITING and back.run_at is None
    waiting, _ = await qm.list_jobs("w", "waiting")
    assert [j.id for j in waiting] == [a.id, c.id, b.id]
    # A paused queue's waiting job is delayed the same way.
    await qm.pause_queue("w")
    assert (await qm.reschedule_job("w", c.id, delay=HOUR)).state is JobState.DELAYED
    m = await qm.get_queue_metrics("w")
    assert (m.waiting + m.paused, m.delayed) == (2, 1)

    # The sync client says the same.
    def sync_reschedule() -> JobState | None:
        with SyncQueueManager(server.address) as client:
            return client.reschedule_job("w", c.id, delay=timedelta(minutes=5)).state

    assert await asyncio.to_thread(sync_reschedule) is JobState.DELAYED


async def test_other_states_and_bad_requests_are_refused_and_change_nothing(
    qm: QueueManager, server: RunningServer
) -> None:
    await qm.register_queue("r")
    gate = asyncio.Event()
    started = asyncio.Event()

    @qm.processor("r")
    async def work(ctx: JobContext) -> str:
        started.set()
        await gate.wait()
        return "done"

    running = await qm.add_job("r", "running")
    await qm.start_workers(concurrency=1)
    await asyncio.wait_for(started.wait(), WAIT)
    with pytest.raises(
        FailedPreconditionError, match="is active; only a waiting or delayed job can be rescheduled"
    ):
        await qm.reschedule_job("r", running.id, delay=HOUR)
    gate.set()
    assert (await wait(qm, "r", running.id)).state is JobState.COMPLETED
    with pytest.raises(FailedPreconditionError, match="is completed; only a waiting or delayed"):
        await qm.reschedule_job("r", running.id, run_at=datetime.now(UTC) + HOUR)
    assert (await qm.get_job("r", running.id)).run_at is None
    with pytest.raises(NotFoundError, match="nope"):
        await qm.reschedule_job("r", "nope", delay=1)
    with pytest.raises(NotFoundError):
        await qm.reschedule_job("no-such-queue", "x", delay=1)
    with pytest.raises(ValueError, match="exactly one of delay"):
        await qm.reschedule_job("r", running.id)
    with pytest.raises(ValueError, match="exactly one of delay"):
        await qm.reschedule_job("r", running.id, delay=1, run_at=datetime.now(UTC))
    with pytest.raises(ValueError, match="delay must be at least 0 ms"):
        await qm.reschedule_job("r", running.id, delay=-1)

    # What the client checks first, the server refuses too, naming the field.
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = queue_service_pb2_grpc.QueueServiceStub(channel)
        neither = jobs_pb2.RescheduleJobRequest(queue_name="r", job_id=running.id)
        negative = jobs_pb2.RescheduleJobRequest(queue_name="r", job_id=running.id)
        negative.delay.seconds = -5
        before_1970 = jobs_pb2.RescheduleJobRequest(queue_name="r", job_id=running.id)
        before_1970.run_time.seconds = -1
        for request, field in ((neither, "run_time"), (negative, "delay"), (before_1970, "run_time")):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.RescheduleJob(request)
            assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert (caught.value.details() or "").startswith(field), caught.value.details()


async def test_a_grouped_job_leaves_its_group_while_delayed_and_takes_its_turn_when_due(
    qm: QueueManager,
) -> None:
    await qm.register_queue("g")
    first = await qm.add_job("g", "first", None, {"group": "acme"})
    second = await qm.add_job("g", "second", None, {"group": "acme"})
    await qm.add_job("g", "other", None, {"group": "globex"})
    assert (await qm.reschedule_job("g", first.id, delay=HOUR)).state is JobState.DELAYED
    assert await _groups(qm, "g") == {"acme": 1, "globex": 1}
    assert (await qm.reschedule_job("g", second.id, delay=HOUR)).state is JobState.DELAYED
    assert await _groups(qm, "g") == {"globex": 1}
    ran = Calls()

    @qm.processor("g")
    async def work(ctx: JobContext) -> None:
        ran.add(ctx.name)

    await qm.start_workers(concurrency=1)
    await ran.wait_for(1)
    assert ran.items == ["other"]
    await qm.reschedule_job("g", second.id, delay=0)  # waiting now, in its group's list again
    await qm.reschedule_job("g", first.id, delay=200)
    for job in (first, second):
        assert (await wait(qm, "g", job.id)).state is JobState.COMPLETED
    assert sorted(ran.items) == ["first", "other", "second"]
    assert set((await _groups(qm, "g")).values()) <= {0}


async def test_on_a_priority_bounded_queue_a_moved_job_is_found_and_goes_back_to_its_own_level(
    qm: QueueManager, server: RunningServer, redis: Redis
) -> None:
    prefix, q = server.prefix, "bounded"
    await qm.register_queue(q, priority_bounds={"background": 60_000})
    old = await qm.add_job(q, "old", None, {"priority": "background"})
    normal = await qm.add_job(q, "n")
    await redis.hset(f"{prefix}:{{{q}}}:job:{old.id}", "ts", int(time.time() * 1000) - 120_000)
    await Aging(Engine(redis, prefix)).age_waiting(q)  # past its bound: moved to the first level
    assert await _lists(redis, prefix, q) == [[old.id], [], [normal.id], [], []]
    assert (await qm.reschedule_job(q, old.id, delay=HOUR)).state is JobState.DELAYED
    assert await _lists(redis, prefix, q) == [[], [], [normal.id], [], []]
    back = await qm.reschedule_job(q, old.id, delay=0)
    assert back.state is JobState.WAITING and back.priority is JobPriority.BACKGROUND
    # Its wait counts from now: it goes to its own level, not past its bound again.
    await Aging(Engine(redis, prefix)).age_waiting(q)
    assert await _lists(redis, prefix, q) == [[], [], [normal.id], [], [old.id]]


async def test_an_expiry_counts_from_the_new_run_time(qm: QueueManager) -> None:
    await qm.register_queue("exp")
    job = await qm.add_job("exp", "x", None, {"expire_after": 60_000})
    at = (datetime.now(UTC) + HOUR).replace(microsecond=0)
    moved = await qm.reschedule_job("exp", job.id, run_at=at)
    assert moved.expires_at == at + timedelta(minutes=1)
    sooner = at - timedelta(minutes=30)
    assert (await qm.reschedule_job("exp", job.id, run_at=sooner)).expires_at == sooner + timedelta(minutes=1)
    now = datetime.now(UTC)
    promoted = await qm.reschedule_job("exp", job.id, delay=0)
    assert promoted.state is JobState.WAITING and _near(promoted.expires_at, now + timedelta(minutes=1))


async def test_http_route_and_cli(server_factory: ServerFactory, capsys: pytest.CaptureFixture[str]) -> None:
    server = await server_factory(http_listen="127.0.0.1:0")
    base = f"http://{server.app.http_address}/api/v1/queues"
    async with aiohttp.ClientSession() as session:
        await session.put(f"{base}/web")
        async with session.post(f"{base}/web/jobs", json={"job": {"name": "x"}}) as response:
            job_id = (await response.json())["job"]["id"]
        async with session.post(f"{base}/web/jobs/{job_id}:reschedule", json={"delay": "3600s"}) as response:
            answer = await response.json()
            assert response.status == 200, answer
        assert answer["job"]["state"] == "JOB_STATE_DELAYED" and "run_time" in answer["job"]
        async with session.post(f"{base}/web/jobs/nope:reschedule", json={"delay": "1s"}) as response:
            assert (response.status, (await response.json())["code"]) == (404, "NOT_FOUND")
        async with session.post(f"{base}/web/jobs/{job_id}:reschedule", json={}) as response:
            assert (response.status, (await response.json())["code"]) == (400, "INVALID_ARGUMENT")

    moved = await qm_json(capsys, server, "jobs", "reschedule", "web", job_id, "--delay", "5m")
    assert moved["state"] == "delayed" and _near(
        datetime.fromisoformat(moved["run_at"]), datetime.now(UTC) + timedelta(minutes=5)
    )
    at = "2030-01-31T08:00:00+01:00"
    moved = await qm_json(capsys, server, "jobs", "reschedule", "web", job_id, "--at", at)
    assert datetime.fromisoformat(moved["run_at"]) == datetime.fromisoformat(at)
    err = await usage_error(capsys, server, "jobs", "reschedule", "web", job_id, "--at", "tomorrow")
    assert "argument --at: must be an ISO 8601 time" in err
    err = await usage_error(capsys, server, "jobs", "reschedule", "web", job_id, "--delay", "soon")
    assert "argument --delay: must be a duration" in err
    err = await usage_error(capsys, server, "jobs", "reschedule", "web", job_id)
    assert "one of the arguments --delay --at is required" in err
    await qm_json(capsys, server, "jobs", "cancel", "web", job_id)
    status, _, err = await qm_cli(
        capsys, "--server", server.address, "jobs", "reschedule", "web", job_id, "--delay", "1s"
    )
    assert status == 1 and "FAILED_PRECONDITION" in err and "is cancelled" in err
