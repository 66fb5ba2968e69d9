"""Runs that ask to run again later (DelayedError / WorkerReport.delays): a durable sleep between the steps of
a long job, with no attempt used and an optional checkpoint of its data, against a real server and Valkey."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from queue_manager import DelayedError, JobContext, JobState, QueueManager
from queue_manager.v1 import types_pb2
from queue_manager.v1 import worker_service_pb2 as pb
from tests.conftest import RunningServer, ServerFactory
from tests.rawworker import RawWorker, lease

WAIT = 20.0


@pytest.fixture
async def qm(server: RunningServer) -> AsyncIterator[QueueManager]:
    client = QueueManager(address=server.address, concurrency=4, shutdown_grace=5.0)
    yield client
    await client.shutdown()


async def until_state(qm: QueueManager, queue: str, job_id: str, *states: JobState) -> Any:
    async with asyncio.timeout(WAIT):
        while True:
            job = await qm.get_job(queue, job_id)
            if job.state in states:
                return job
            await asyncio.sleep(0.02)


async def test_a_job_sleeps_between_steps_with_its_checkpoint_and_no_attempt_used(qm: QueueManager) -> None:
    await qm.register_queue("steps")
    runs: list[tuple[Any, int, bool, float]] = []
    delayed = asyncio.Event()

    @qm.processor("steps")
    async def step(job: JobContext) -> Any:
        runs.append((job.data, job.attempts_made, job.redelivery, time.monotonic()))
        if job.data["step"] == 1:
            delayed.set()
            raise DelayedError(0.4, data={"step": 2, "rows": 100})
        return {"done": job.data["rows"]}

    await qm.start_workers()
    job = await qm.add_job("steps", "import", {"step": 1}, {"attempts": 1})
    async with asyncio.timeout(WAIT):
        await delayed.wait()
    waiting = await until_state(qm, "steps", job.id, JobState.DELAYED)
    assert waiting.data == {"step": 2, "rows": 100} and waiting.attempts_made == 0
    assert waiting.run_at is not None
    done = await until_state(qm, "steps", job.id, JobState.COMPLETED)
    assert done.result == {"done": 100} and done.attempts_made == 1
    assert [(d, a, r) for d, a, r, _ in runs] == [
        ({"step": 1}, 0, False),
        ({"step": 2, "rows": 100}, 0, False),
    ]
    assert runs[1][3] - runs[0][3] >= 0.4


async def test_without_data_the_job_keeps_its_own_and_a_zero_delay_runs_it_again_at_once(
    qm: QueueManager,
) -> None:
    await qm.register_queue("again")
    seen: list[Any] = []

    @qm.processor("again")
    async def poll(job: JobContext) -> int:
        seen.append(job.data)
        if len(seen) < 3:
            raise DelayedError(timedelta(0))
        return len(seen)

    await qm.start_workers()
    job = await qm.add_job("again", "poll", {"url": "x"})
    done = await until_state(qm, "again", job.id, JobState.COMPLETED)
    assert done.result == 3 and seen == [{"url": "x"}] * 3 and done.attempts_made == 1


async def test_a_sleeping_job_frees_its_groups_slot_and_holds_nothing_back(qm: QueueManager) -> None:
    await qm.register_queue("tenants", group_limits={"concurrency": 1})
    started: list[str] = []
    second_started = asyncio.Event()

    @qm.processor("tenants")
    async def run(job: JobContext) -> None:
        started.append(job.name)
        if job.name == "long":
            raise DelayedError(60)
        second_started.set()

    await qm.start_workers()
    long = await qm.add_job("tenants", "long", None, {"group": "t1"})
    await until_state(qm, "tenants", long.id, JobState.DELAYED)
    await qm.add_job("tenants", "next", None, {"group": "t1"})
    async with asyncio.timeout(WAIT):
        await second_started.wait()
    assert started == ["long", "next"]


async def test_data_that_cannot_be_stored_fails_the_attempt_with_why(server_factory: ServerFactory) -> None:
    server = await server_factory(max_payload_bytes=1000)
    qm = QueueManager(address=server.address, concurrency=2, shutdown_grace=5.0)
    try:
        await qm.register_queue("big")

        @qm.processor("big")
        async def grow(job: JobContext) -> None:
            if job.name == "huge":
                raise DelayedError(1, data="x" * 5000)
            raise DelayedError(1, data={1, 2})  # a set is not JSON

        await qm.start_workers()
        huge = await qm.add_job("big", "huge", None, {"attempts": 1})
        odd = await qm.add_job("big", "odd", None, {"attempts": 1})
        failed = await until_state(qm, "big", huge.id, JobState.FAILED)
        assert failed.failed_reason.startswith("delay rejected: data: ")
        assert "1000" in failed.failed_reason
        failed = await until_state(qm, "big", odd.id, JobState.FAILED)
        assert "set" in failed.failed_reason
    finally:
        await qm.shutdown()


async def test_a_delay_under_a_stale_lease_is_refused_and_changes_nothing(server: RunningServer) -> None:
    qm = QueueManager(address=server.address)
    try:
        await qm.register_queue("raw")
        job = await qm.add_job("raw", "j", {"v": 1})
        w = RawWorker(server.address, ["raw"])
        await w.connect(credits=1)
        (leased,) = await w.jobs(1)
        stale = lease(leased)
        stale.lease_token = "not-the-token"
        w.report(pb.WorkerReport(delays=[pb.JobDelay(lease=stale, delay={"seconds": 5})]))
        ack = (await w.until("ack")).ack
        assert [(r.lease.job_id, r.code) for r in ack.results] == [
            (job.id, grpc.StatusCode.FAILED_PRECONDITION.value[0])
        ]
        assert (await qm.get_job("raw", job.id)).state is JobState.ACTIVE
        # The real lease: the job waits, its data replaced in the same step.
        data = types_pb2.Payload(json=struct_pb2.Value(struct_value={"v": 2}))
        w.report(pb.WorkerReport(delays=[pb.JobDelay(lease=lease(leased), delay={"seconds": 30}, data=data)]))
        stored = await until_state(qm, "raw", job.id, JobState.DELAYED)
        assert stored.data == {"v": 2} and stored.attempts_made == 0
        assert (await qm.get_queue_metrics("raw")).active == 0
        await w.close()
    finally:
        await qm.shutdown()


def test_bad_delays_are_refused_where_they_are_raised() -> None:
    with pytest.raises(ValueError, match="delay must be 0 to 10 years in seconds, got -1"):
        DelayedError(-1)
    with pytest.raises(TypeError, match="delay must be seconds or a timedelta, not str"):
        DelayedError("5")  # type: ignore[arg-type]
    assert DelayedError(2.5).delay == timedelta(seconds=2.5)
    assert DelayedError(1).data is DelayedError.KEEP
