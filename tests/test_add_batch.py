"""Concurrent add_job calls of one client travel together in AddJobBatch calls, each with its own outcome."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from redis.asyncio import Redis

from queue_manager import (
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    QueueManager,
)
from queue_manager.v1 import jobs_pb2 as jpb
from queue_manager.v1 import queue_service_pb2_grpc as qrpc
from queue_manager.v1 import types_pb2
from tests.conftest import RunningServer, ServerFactory
from tests.security_kit import bearer, state, token_file


def _started(server: RunningServer, method: str) -> int:
    return sum(n for labels, n in server.app.grpc_metrics.started.items() if labels[-1] == method)


async def test_concurrent_adds_share_calls_and_each_gets_its_job(server: RunningServer) -> None:
    async with QueueManager(server.address, timeout=10) as qm:
        await qm.register_queue("batched")
        jobs = await asyncio.gather(*(qm.add_job("batched", f"job-{i}", {"i": i}) for i in range(300)))
        assert [j.name for j in jobs] == [f"job-{i}" for i in range(300)]
        assert [j.data for j in jobs] == [{"i": i} for i in range(300)]
        assert len({j.id for j in jobs}) == 300
        for job in jobs[::37]:  # each caller's job is the stored one
            assert (await qm.get_job("batched", job.id)).data == job.data
        assert (await qm.get_queue_metrics("batched")).waiting == 300
    batches, singles = _started(server, "AddJobBatch"), _started(server, "AddJob")
    assert batches >= 1
    assert batches + singles < 300 / 4  # the calls were shared, not one per add


async def test_callers_adding_in_a_loop_keep_sharing_calls(server: RunningServer) -> None:
    """50 callers that each add again as soon as their last add is answered (web handlers under load): their
    adds keep travelling together. No caller's add goes out alone beside a batch under way (that made half
    of the calls carry one add each)."""
    async with QueueManager(server.address, timeout=10) as qm:
        await qm.register_queue("looping")
        batches0, singles0 = _started(server, "AddJobBatch"), _started(server, "AddJob")
        await qm.add_job("looping", "warm-up")  # a lone add is a plain AddJob
        assert (_started(server, "AddJobBatch"), _started(server, "AddJob")) == (batches0, singles0 + 1)
        batches0, singles0 = _started(server, "AddJobBatch"), _started(server, "AddJob")

        async def caller(c: int) -> list[str]:
            return [(await qm.add_job("looping", f"c{c}-{i}")).name for i in range(20)]

        names = await asyncio.gather(*(caller(c) for c in range(50)))
        assert names == [[f"c{c}-{i}" for i in range(20)] for c in range(50)]
        assert (await qm.get_queue_metrics("looping")).waiting == 1_001
    batches = _started(server, "AddJobBatch") - batches0
    singles = _started(server, "AddJob") - singles0
    assert singles <= 3, (singles, batches)
    assert batches <= 2 * 20, (singles, batches)  # about one per round of the 50 callers


async def test_each_caller_gets_its_own_error(server_factory: ServerFactory, redis: Redis) -> None:
    server = await server_factory(max_payload_bytes=1_000)
    async with QueueManager(server.address, timeout=10) as qm:
        await qm.register_queue("mixed")
        calls = [qm.add_job("mixed", f"ok-{i}") for i in range(20)]
        calls.insert(5, qm.add_job("no-such-queue", "lost"))
        calls.insert(9, qm.add_job("mixed", "big", "x" * 2_000))  # over the server's payload limit
        calls.insert(12, qm.add_job("mixed", "dup", None, {"job_id": "same"}))
        calls.insert(13, qm.add_job("mixed", "dup-again", None, {"job_id": "same"}))
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert isinstance(results[5], NotFoundError) and "no-such-queue" in str(results[5])
        assert isinstance(results[9], InvalidArgumentError) and "1000 bytes" in str(results[9])
        dup, again = results[12], results[13]
        assert not isinstance(dup, BaseException) and not isinstance(again, BaseException)
        assert dup.id == again.id == "same" and again.name == "dup"  # the second found the first
        ok = [r for i, r in enumerate(results) if i not in (5, 9, 12, 13)]
        assert all(not isinstance(r, BaseException) for r in ok)
        assert (await qm.get_queue_metrics("mixed")).waiting == 21
    assert not [k async for k in redis.scan_iter(match=f"{server.prefix}:*no-such-queue*")]
    assert _started(server, "AddJobBatch") >= 1


async def test_a_batch_over_the_limit_is_refused_whole(server: RunningServer, redis: Redis) -> None:
    async with QueueManager(server.address) as qm:
        await qm.register_queue("big")
    before = await state(redis, server.prefix)
    items = [jpb.AddJobRequest(queue_name="big", job=jpb.NewJob(name="n")) for _ in range(1_001)]
    async with grpc.aio.insecure_channel(server.address) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await qrpc.QueueServiceStub(ch).AddJobBatch(jpb.AddJobBatchRequest(items=items))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "at most 1000" in (info.value.details() or "")
        assert await state(redis, server.prefix) == before  # refused whole: nothing written
        # Per item: the status AddJob would have ended with, and the others are added.
        response = await qrpc.QueueServiceStub(ch).AddJobBatch(
            jpb.AddJobBatchRequest(
                items=[
                    items[0],
                    jpb.AddJobRequest(queue_name="big"),
                    jpb.AddJobRequest(queue_name="Bad Name"),
                ]
            )
        )
    added, missing, bad = response.outcomes
    assert added.HasField("added") and added.added.created
    assert missing.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and "job" in missing.error.message
    assert bad.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and "queue" in bad.error.message
    async with QueueManager(server.address) as qm:
        assert (await qm.get_queue_metrics("big")).waiting == 1  # only the one good job


async def test_an_item_out_of_the_tokens_reach_fails_alone(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    tokens = token_file(
        tmp_path / "tokens.toml", {"admin": ("admin", ["*"]), "prod": ("producer", ["billing-*"])}
    )
    server = await server_factory(auth_file=str(tmp_path / "tokens.toml"))
    async with QueueManager(server.address, token=tokens["admin"]) as admin:
        await admin.register_queue("billing-a")
        await admin.register_queue("orders")
    singles = _started(server, "AddJob")
    async with QueueManager(server.address, token=tokens["prod"], timeout=10) as qm:
        calls = [qm.add_job("billing-a", f"ok-{i}") for i in range(30)]
        calls.insert(7, qm.add_job("orders", "not-mine"))
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert isinstance(results[7], PermissionDeniedError)
        assert all(not isinstance(r, BaseException) for i, r in enumerate(results) if i != 7)
        assert (await qm.get_queue_metrics("billing-a")).waiting == 30
    # The batch was not refused whole, so its adds were not sent again one by one (only the first two adds
    # of the burst went out alone).
    assert _started(server, "AddJob") - singles <= 2
    link = types_pb2.ChainLink(queue_name="orders", job_name="next")
    chained = jpb.NewJob(name="c", options=types_pb2.JobOptions(chain_to=[link]))
    async with grpc.aio.insecure_channel(server.address) as ch:
        response = await qrpc.QueueServiceStub(ch).AddJobBatch(
            jpb.AddJobBatchRequest(
                items=[
                    jpb.AddJobRequest(queue_name="orders", job=jpb.NewJob(name="n")),
                    jpb.AddJobRequest(queue_name="billing-a", job=jpb.NewJob(name="mine")),
                    jpb.AddJobRequest(queue_name="billing-a", job=chained),
                ]
            ),
            metadata=bearer(tokens["prod"]),
        )
    foreign, mine, chain = response.outcomes
    assert foreign.error.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert "items[0].queue_name" in foreign.error.message and "'orders'" in foreign.error.message
    assert mine.HasField("added") and mine.added.job.name == "mine"
    assert chain.error.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert "items[2].job.options.chain_to[0].queue_name" in chain.error.message


async def test_a_cancelled_caller_does_not_disturb_the_others(server: RunningServer) -> None:
    async with QueueManager(server.address, timeout=10) as qm:
        await qm.register_queue("cancel")
        tasks = [asyncio.create_task(qm.add_job("cancel", f"j-{i}")) for i in range(100)]
        await asyncio.sleep(0)
        tasks[50].cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(results[50], asyncio.CancelledError)
        assert all(not isinstance(r, BaseException) for i, r in enumerate(results) if i != 50)
        waiting = (await qm.get_queue_metrics("cancel")).waiting
        assert waiting in (99, 100)  # a cancelled add may or may not have left already
