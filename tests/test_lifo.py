"""LIFO jobs (JobOptions.lifo): added at the head of their priority level (their group's level), so the last
added runs first; against a real Valkey (the engine) and a real gRPC server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from queue_manager import QueueManager
from queue_manager.v1 import queue_service_pb2, queue_service_pb2_grpc, types_pb2
from queue_manager_server.engine import Engine
from tests.conftest import RunningServer
from tests.test_cli import qm_json
from tests.test_groups import claim_names, job, register


async def test_lifo_jobs_go_to_the_head_of_their_level(engine: Engine) -> None:
    await register(engine)
    await engine.add_jobs("q", [job("", 0), job("", 1)])
    await engine.add_jobs(
        "q", [job("", 2, lifo=True), job("", 3, lifo=True), job("", 9, lifo=True, priority=5)]
    )
    await engine.add_jobs("q", [job("", 4, lifo=True, delay_ms=1), job("g", 0), job("g", 1, lifo=True)])
    await asyncio.sleep(0.05)  # the delayed LIFO job becomes due: to the head too
    order = [n for _ in range(9) for n in await claim_names(engine, 1)]
    assert order == ["-4", "-3", "-2", "-0", "-1", "g1", "g0", "-9"]
    stored = await engine.add_jobs("q", [job("", 5, lifo=True)], fetch=True)
    assert stored.records[0].text("lf") == "1"


async def test_a_retried_lifo_job_goes_to_the_back(engine: Engine) -> None:
    await register(engine)
    await engine.add_jobs("q", [job("", 0, lifo=True, attempts=2)])
    first = (await engine.claim("q", 1, "t1", "w", 30_000)).jobs[0]
    await engine.add_jobs("q", [job("", 1)])
    await engine.fail("q", [(first.id, "t1", "boom", "", False)])
    assert await claim_names(engine, 5, token="t2") == ["-1", "-0"]


@pytest.fixture
async def qm(server: RunningServer) -> AsyncIterator[QueueManager]:
    client = QueueManager(address=server.address, concurrency=1, shutdown_grace=5.0)
    yield client
    await client.shutdown()


async def test_lifo_through_the_client_and_bad_input(qm: QueueManager, server: RunningServer) -> None:
    await qm.register_queue("l")
    await qm.add_job("l", "old", {"i": 0})
    added = await qm.add_job("l", "new", {"i": 1}, {"lifo": True})
    assert added.options.lifo is True
    assert (await qm.get_job("l", added.id)).options.lifo is True
    jobs, _ = await qm.list_jobs("l", "waiting")
    assert [j.name for j in jobs] == ["new", "old"]
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = queue_service_pb2_grpc.QueueServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.RegisterQueue(
                queue_service_pb2.RegisterQueueRequest(
                    name="l2",
                    config=types_pb2.QueueConfig(default_job_options=types_pb2.JobOptions(lifo=True)),
                )
            )
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "default_job_options.lifo" in (err.value.details() or "")


async def test_qm_add_lifo(server: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    await qm_json(capsys, server, "queues", "register", "lc")
    await qm_json(capsys, server, "add", "lc", "first")
    added = await qm_json(capsys, server, "add", "lc", "second", "--lifo")
    assert added["options"]["lifo"] is True
    listed = await qm_json(capsys, server, "jobs", "list", "lc", "--state", "waiting")
    assert [j["name"] for j in listed["jobs"]] == ["second", "first"]
