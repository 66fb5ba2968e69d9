"""Changing a job's data after it was added (UpdateJobData) end to end: waiting, delayed and active jobs, a
processor's checkpoint fenced by its lease, finished jobs refused, the payload limit, the plain mark that
claims trust, the HTTP route and ``qm jobs update-data``.

A real server on a real Valkey, driven through the Python client and worker, and a raw worker stream where
the lease must be seen exactly.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import pytest
from redis.asyncio import Redis

from queue_manager import (
    FailedPreconditionError,
    InvalidArgumentError,
    JobContext,
    JobState,
    NotFoundError,
    QueueManager,
    SyncQueueManager,
)
from queue_manager.v1 import jobs_pb2, queue_service_pb2_grpc, types_pb2
from queue_manager.v1 import worker_service_pb2 as wpb
from queue_manager_server.engine import Engine
from tests.conftest import RunningServer, ServerFactory
from tests.rawworker import RawWorker, eventually
from tests.test_cli import qm_cli, qm_json
from tests.test_client_e2e import Calls

WAIT = 20.0


@pytest.fixture
async def qm(server: RunningServer) -> AsyncIterator[QueueManager]:
    client = QueueManager(address=server.address, concurrency=4, shutdown_grace=5.0)
    yield client
    await client.shutdown()


async def wait(qm: QueueManager, queue: str, job_id: str) -> Any:
    return await qm.wait_for_job(queue, job_id, timeout=WAIT)


async def test_waiting_jobs_run_with_their_new_data_added_alone_or_in_a_bulk(
    qm: QueueManager, engine: Engine, redis: Redis
) -> None:
    await qm.register_queue("upd")
    alone = await qm.add_job("upd", "alone", {"v": 1})
    bulk = await qm.add_bulk("upd", [{"name": "bulk", "data": {"v": 1}}, {"name": "other", "data": {"v": 1}}])
    as_bytes = await qm.add_job("upd", "bytes-to-json", b"\x00raw")
    changed = await qm.update_job_data("upd", alone.id, {"v": 2})
    assert (changed.data, changed.state) == ({"v": 2}, JobState.WAITING)
    # Bytes on jobs stored plain (common.lua PLAIN: a claim reads no content type): the mark must go.
    await qm.update_job_data("upd", bulk[0], b"[1, 2]")
    await qm.update_job_data("upd", bulk[1], None)
    await qm.update_job_data("upd", as_bytes.id, ["json", "now"])
    keys = engine.keys("upd")
    assert await redis.hmget(keys.job(bulk[0]), ["ct", "p"]) == [b"application/octet-stream", b"0"]
    assert await redis.hget(keys.job(as_bytes.id), "ct") is None  # a hash without 'ct' holds JSON
    seen = Calls()

    @qm.processor("upd")
    async def work(job: JobContext) -> None:
        seen.add((job.name, job.data))

    await qm.start_workers()
    await seen.wait_for(4)
    assert sorted(seen.items, key=lambda x: x[0]) == [
        ("alone", {"v": 2}),
        ("bulk", b"[1, 2]"),
        ("bytes-to-json", ["json", "now"]),
        ("other", None),
    ]
    assert (await wait(qm, "upd", bulk[0])).data == b"[1, 2]"


async def test_a_delayed_job_keeps_its_state_and_runs_with_the_new_data(qm: QueueManager) -> None:
    await qm.register_queue("later")
    job = await qm.add_job("later", "remind", {"hours": 1}, {"delay": 3_600_000, "attempts": 2})
    changed = await qm.update_job_data("later", job.id, {"hours": 2})
    assert (changed.state, changed.data, changed.max_attempts) == (JobState.DELAYED, {"hours": 2}, 2)
    assert changed.run_at == job.run_at
    qm.register_processor("later", lambda j: j.data["hours"] * 10)
    await qm.start_workers()
    await qm.promote_job("later", job.id)
    assert (await wait(qm, "later", job.id)).result == 20


async def test_a_checkpoint_saved_by_the_processor_is_where_the_retry_resumes(qm: QueueManager) -> None:
    await qm.register_queue("steps")
    runs = Calls()

    @qm.processor("steps")
    async def work(job: JobContext) -> str:
        runs.add(dict(job.data))
        step = job.data["step"]
        while step < 3:
            step += 1
            await job.update_data({"step": step})
            assert job.data == {"step": step}  # the context holds what it saved
            if step == 2 and job.attempts_made == 0:
                raise RuntimeError("crashed after step 2")
        return f"done at {step}"

    job = await qm.add_job("steps", "long", {"step": 0}, {"attempts": 2})
    await qm.start_workers()
    done = await wait(qm, "steps", job.id)
    assert (done.state, done.result, done.data) == (JobState.COMPLETED, "done at 3", {"step": 3})
    assert runs.items == [{"step": 0}, {"step": 2}]  # the retry starts from the checkpoint


async def test_a_plain_def_processor_saves_from_its_thread(qm: QueueManager) -> None:
    await qm.register_queue("threads")
    runs = Calls()

    @qm.processor("threads")
    def work(job: JobContext) -> None:  # runs in a thread: update_data blocks until the server answered
        runs.add(job.data)
        if job.attempts_made == 0:
            job.update_data("saved")
            assert job.data == "saved"
            raise RuntimeError("again")

    job = await qm.add_job("threads", "t", "start", {"attempts": 2})
    await qm.start_workers()
    assert (await wait(qm, "threads", job.id)).state is JobState.COMPLETED
    assert runs.items == ["start", "saved"]


async def test_an_update_from_outside_leaves_the_running_attempt_alone(qm: QueueManager) -> None:
    await qm.register_queue("live")
    runs = Calls()
    gate = asyncio.Event()

    @qm.processor("live")
    async def work(job: JobContext) -> None:
        runs.add(job.data)
        if job.attempts_made == 0:
            await gate.wait()
            runs.add(job.data)
            raise RuntimeError("first run fails")

    job = await qm.add_job("live", "x", "old", {"attempts": 2})
    await qm.start_workers()
    await runs.wait_for(1)
    changed = await qm.update_job_data("live", job.id, "new")
    assert (changed.state, changed.data) == (JobState.ACTIVE, "new")
    gate.set()
    assert (await wait(qm, "live", job.id)).state is JobState.COMPLETED
    assert runs.items == ["old", "old", "new"]


async def test_a_lost_lease_cannot_change_the_next_attempts_data(server: RunningServer) -> None:
    async with grpc.aio.insecure_channel(server.address) as ch:
        stub = queue_service_pb2_grpc.QueueServiceStub(ch)
        qm = SyncQueueManager(server.address)
        try:
            await asyncio.to_thread(qm.register_queue, "fence")
            added = await asyncio.to_thread(qm.add_job, "fence", "x", {"step": 0})
        finally:
            qm.close()
        first = RawWorker(server.address, ["fence"], worker_id="first")
        await first.connect(credits=1)
        (leased,) = await first.jobs(1)
        await first.close()  # the stream is gone: the server puts the job back

        async def waiting() -> bool:
            got = await stub.GetJob(jobs_pb2.GetJobRequest(queue_name="fence", job_id=added.id))
            return got.job.state == types_pb2.JOB_STATE_WAITING

        await eventually(waiting)
        stale = jobs_pb2.UpdateJobDataRequest(
            queue_name="fence", job_id=added.id, lease_token=leased.lease_token
        )
        stale.data.json.string_value = "from the lost run"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.UpdateJobData(stale)
        assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "was lost" in (err.value.details() or "") and "waiting now" in (err.value.details() or "")

        second = RawWorker(server.address, ["fence"], worker_id="second")
        await second.connect(credits=1)
        (again,) = await second.jobs(1)
        assert again.job.data.raw == b'{"step":0}'  # untouched by the lost run
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.UpdateJobData(stale)  # active again, under another lease
        assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        current = jobs_pb2.UpdateJobDataRequest()
        current.CopyFrom(stale)
        current.lease_token = again.lease_token
        answer = await stub.UpdateJobData(current)
        assert answer.job.data.json.string_value == "from the lost run"
        second.report(
            wpb.WorkerReport(
                completions=[
                    wpb.JobCompletion(queue_name="fence", job_id=added.id, lease_token=again.lease_token)
                ]
            )
        )
        second.half_close()
        await second.wait_end()
        await second.close()


async def test_finished_missing_and_oversized_are_refused_and_change_nothing(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(max_payload_bytes=100)
    qm = QueueManager(address=server.address, concurrency=2, shutdown_grace=5.0)
    try:
        await qm.register_queue("fin")
        qm.register_processor("fin", lambda j: (_ for _ in ()).throw(RuntimeError("no")) if j.data else "ok")
        done = await qm.add_job("fin", "ok", 0)
        failed = await qm.add_job("fin", "bad", 1)
        cancelled = await qm.add_job("fin", "later", 0, {"delay": 3_600_000})
        await qm.cancel_job("fin", cancelled.id)
        await qm.start_workers()
        assert (await wait(qm, "fin", done.id)).state is JobState.COMPLETED
        assert (await wait(qm, "fin", failed.id)).state is JobState.FAILED
        for job_id, state in ((done.id, "completed"), (failed.id, "failed"), (cancelled.id, "cancelled")):
            with pytest.raises(FailedPreconditionError, match=f"is {state}; only the data of a job that has"):
                await qm.update_job_data("fin", job_id, "too late")
        with pytest.raises(NotFoundError, match="not found"):
            await qm.update_job_data("fin", "no-such-job", 1)
        with pytest.raises(NotFoundError, match="not registered"):
            await qm.update_job_data("no-such-queue", "x", 1)
        waiting = await qm.add_job("fin", "w", {"keep": True}, {"delay": 3_600_000})
        with pytest.raises(InvalidArgumentError, match="data: is 102 bytes; the limit is 100"):
            await qm.update_job_data("fin", waiting.id, "x" * 100)
        with pytest.raises(TypeError):
            await qm.update_job_data("fin", waiting.id, {1, 2})
        async with grpc.aio.insecure_channel(server.address) as ch:
            stub = queue_service_pb2_grpc.QueueServiceStub(ch)
            bad: list[tuple[jobs_pb2.UpdateJobDataRequest, str]] = [
                (jobs_pb2.UpdateJobDataRequest(queue_name="fin", job_id=waiting.id), "data: is required"),
                (
                    jobs_pb2.UpdateJobDataRequest(
                        queue_name="fin",
                        job_id=waiting.id,
                        data=types_pb2.Payload(raw=b"{not json", content_type="application/json"),
                    ),
                    "data",
                ),
                (jobs_pb2.UpdateJobDataRequest(queue_name="fin", job_id="a b"), "job_id"),
            ]
            for request, why in bad:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.UpdateJobData(request)
                assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
                assert why in (err.value.details() or "")
        assert (await qm.get_job("fin", waiting.id)).data == {"keep": True}
        assert (await qm.get_job("fin", done.id)).data == 0
    finally:
        await qm.shutdown()


async def test_a_chained_child_gets_its_own_link_data_and_the_parents_result(qm: QueueManager) -> None:
    await qm.register_queue("first")
    await qm.register_queue("next")
    seen = Calls()

    @qm.processor("first")
    async def first(job: JobContext) -> str:
        await job.update_data({"saved": True})
        return "parent result"

    @qm.processor("next")
    async def following(job: JobContext) -> None:
        assert job.parent is not None
        seen.add((job.data, job.parent.result))

    link = {"queue_name": "next", "job_name": "n", "data": {"link": 1}}
    parent = await qm.add_job("first", "p", {"saved": False}, {"chain_to": [link]})
    await qm.start_workers()
    await seen.wait_for(1)
    assert seen.items == [({"link": 1}, "parent result")]
    assert (await qm.get_job("first", parent.id)).data == {"saved": True}


async def test_http_route_and_cli(server_factory: ServerFactory, capsys: pytest.CaptureFixture[str]) -> None:
    server = await server_factory(http_listen="127.0.0.1:0")
    base = f"http://{server.app.http_address}/api/v1/queues"
    async with aiohttp.ClientSession() as session:
        await session.put(f"{base}/web")
        async with session.post(f"{base}/web/jobs", json={"job": {"name": "x"}}) as response:
            job_id = (await response.json())["job"]["id"]
        body = {"data": {"raw": "AAE=", "content_type": "application/x-thing"}}
        async with session.post(f"{base}/web/jobs/{job_id}:updateData", json=body) as response:
            answer = await response.json()
            assert response.status == 200, answer
        assert answer["job"]["data"] == {"raw": "AAE=", "content_type": "application/x-thing"}
        async with session.post(f"{base}/web/jobs/nope:updateData", json=body) as response:
            assert (response.status, (await response.json())["code"]) == (404, "NOT_FOUND")
        async with session.post(f"{base}/web/jobs/{job_id}:updateData", json={}) as response:
            assert (response.status, (await response.json())["code"]) == (400, "INVALID_ARGUMENT")

    changed = await qm_json(capsys, server, "jobs", "update-data", "web", job_id, "--data", '{"to": "ü"}')
    assert (changed["id"], changed["data"], changed["state"]) == (job_id, {"to": "ü"}, "waiting")
    status, _, err = await qm_cli(
        capsys, "--server", server.address, "jobs", "update-data", "web", job_id, "--data", "{nope"
    )
    assert status == 2 and "--data is not valid JSON" in err
    status, _, err = await qm_cli(
        capsys, "--server", server.address, "jobs", "update-data", "web", "nope", "--data", "1"
    )
    assert status == 1 and "NOT_FOUND" in err and "'nope' not found" in err
    await qm_json(capsys, server, "jobs", "cancel", "web", job_id)
    status, _, err = await qm_cli(
        capsys, "--server", server.address, "jobs", "update-data", "web", job_id, "--data", "1"
    )
    assert status == 1 and "FAILED_PRECONDITION" in err and "is cancelled" in err
