"""Concurrent add_job calls of one client travel together (messages of one AddJobStream, or AddJobBatch
calls), each with its own outcome."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest
from redis.asyncio import Redis

from queue_manager import (
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    QueueManager,
    QueueManagerError,
)
from queue_manager.adds import _AddStream
from queue_manager.v1 import jobs_pb2 as jpb
from queue_manager.v1 import queue_service_pb2_grpc as qrpc
from queue_manager.v1 import types_pb2
from queue_manager_server.embedded import free_port
from queue_manager_server.services.jobs import JobHandlers
from tests.conftest import RunningServer, ServerFactory
from tests.security_kit import bearer, state, token_file


def _started(server: RunningServer, method: str) -> int:
    return sum(n for labels, n in server.app.grpc_metrics.started.items() if labels[-1] == method)


def _messages(server: RunningServer) -> int:
    """AddJobStream messages received: each carries one lone add or one batch."""
    return sum(n for labels, n in server.app.grpc_metrics.received.items() if labels[-1] == "AddJobStream")


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
    assert _started(server, "AddJobStream") == 1  # one stream carried them all
    assert _started(server, "AddJob") + _started(server, "AddJobBatch") == 0
    assert 1 <= _messages(server) < 300 / 4  # the messages were shared, not one per add


async def test_callers_adding_in_a_loop_keep_sharing_calls(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """50 callers that each add again as soon as their last add is answered (web handlers under load): their
    adds keep travelling together, as two halves under way at once that alternate. No caller's add goes out
    alone beside a batch under way (that made half of the calls carry one add each)."""
    under_way: list[int] = []  # the sizes of the messages sent and not yet answered
    sent: list[
        tuple[int, tuple[int, ...]]
    ] = []  # per message sent, its size and the sizes under way beside it

    real_send = _AddStream.send

    async def send(self: _AddStream, requests: list[jpb.AddJobRequest]) -> Any:
        sent.append((len(requests), tuple(under_way)))
        under_way.append(len(requests))
        try:
            return await real_send(self, requests)
        finally:
            under_way.remove(len(requests))

    monkeypatch.setattr(_AddStream, "send", send)
    async with QueueManager(server.address, timeout=10) as qm:
        await qm.register_queue("looping")
        await qm.add_job("looping", "warm-up")  # a lone add: one message
        assert _messages(server) == 1

        async def caller(c: int) -> list[str]:
            return [(await qm.add_job("looping", f"c{c}-{i}")).name for i in range(20)]

        names = await asyncio.gather(*(caller(c) for c in range(50)))
        assert names == [[f"c{c}-{i}" for i in range(20)] for c in range(50)]
        assert (await qm.get_queue_metrics("looping")).waiting == 1_001
    # Two messages per round of the 50 callers (20 rounds): without the rules (no lone add beside a batch,
    # callers woken together leave together) one caller's adds went alone beside each batch, 60 or more.
    assert _messages(server) - 1 <= 44, _messages(server)
    lone_beside_batch = [(n, beside) for n, beside in sent if n == 1 and any(b > 1 for b in beside)]
    assert not lone_beside_batch, sent
    halves = sum(1 for n, beside in sent if n > 1 and any(b > 1 for b in beside))
    assert halves >= 30, sent  # the halves overlap: one is written while the other's callers add again


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
    assert _messages(server) >= 1


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


async def _producer_of_billing(
    server_factory: ServerFactory, tmp_path: Path
) -> tuple[RunningServer, dict[str, str]]:
    """A server with tokens: "prod" may add to billing-* only; the queues billing-a and orders exist."""
    tokens = token_file(
        tmp_path / "tokens.toml", {"admin": ("admin", ["*"]), "prod": ("producer", ["billing-*"])}
    )
    server = await server_factory(auth_file=str(tmp_path / "tokens.toml"))
    async with QueueManager(server.address, token=tokens["admin"]) as admin:
        await admin.register_queue("billing-a")
        await admin.register_queue("orders")
    return server, tokens


async def test_an_item_out_of_the_tokens_reach_fails_alone(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server, tokens = await _producer_of_billing(server_factory, tmp_path)
    async with QueueManager(server.address, token=tokens["prod"], timeout=10) as qm:
        calls = [qm.add_job("billing-a", f"ok-{i}") for i in range(30)]
        calls.insert(7, qm.add_job("orders", "not-mine"))
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert isinstance(results[7], PermissionDeniedError)
        assert all(not isinstance(r, BaseException) for i, r in enumerate(results) if i != 7)
        assert (await qm.get_queue_metrics("billing-a")).waiting == 30
    # Nothing was refused whole, so no add was sent again one by one.
    assert _started(server, "AddJob") == 0 and _messages(server) <= 4
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


async def _stream_answers(
    call: Any, messages: list[jpb.AddJobStreamRequest]
) -> dict[int, jpb.AddJobStreamResponse]:
    for message in messages:
        await call.write(message)
    answers = {}
    for _ in messages:
        answer = await call.read()
        answers[answer.batch_id] = answer
    return answers


async def test_the_stream_answers_each_item_and_goes_on_past_refusals(
    server_factory: ServerFactory, tmp_path: Path, redis: Redis
) -> None:
    server, tokens = await _producer_of_billing(server_factory, tmp_path)
    mine = jpb.AddJobRequest(queue_name="billing-a", job=jpb.NewJob(name="mine"))
    foreign = jpb.AddJobRequest(queue_name="orders", job=jpb.NewJob(name="n"))
    async with grpc.aio.insecure_channel(server.address) as ch:
        call = qrpc.QueueServiceStub(ch).AddJobStream(metadata=bearer(tokens["prod"]))
        answers = await _stream_answers(
            call,
            [
                jpb.AddJobStreamRequest(batch_id=7, items=[foreign, mine]),
                jpb.AddJobStreamRequest(batch_id=8, items=[mine] * 1_001),  # over the limit: refused whole
                jpb.AddJobStreamRequest(batch_id=9, items=[mine]),  # the stream goes on
            ],
        )
        await call.done_writing()
        assert await call.code() == grpc.StatusCode.OK
    refused, added = answers[7].outcomes
    assert refused.error.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert "items[0].queue_name" in refused.error.message
    assert added.added.created and added.added.job.name == "mine"
    assert len(answers[8].outcomes) == 1_001
    assert {o.error.code for o in answers[8].outcomes} == {grpc.StatusCode.INVALID_ARGUMENT.value[0]}
    assert "at most 1000" in answers[8].outcomes[0].error.message
    assert answers[9].outcomes[0].added.created
    async with QueueManager(server.address, token=tokens["admin"]) as admin:
        assert (await admin.get_queue_metrics("billing-a")).waiting == 2
        assert (await admin.get_queue_metrics("orders")).waiting == 0


async def test_a_server_without_the_stream_gets_unary_calls(server: RunningServer) -> None:
    """A server from before AddJobStream answers it UNIMPLEMENTED: the client goes on with unary calls, and
    the adds that met the refusal are sent so (nothing was written for them)."""
    async with QueueManager(server.address, timeout=10) as qm:
        await qm.register_queue("older")
        channel = grpc.aio.insecure_channel(server.address)
        missing = channel.stream_stream(
            "/queue_manager.v1.QueueService/AddJobStreamOfTheFuture",
            request_serializer=jpb.AddJobStreamRequest.SerializeToString,
            response_deserializer=jpb.AddJobStreamResponse.FromString,
        )
        qm._queue_stub().AddJobStream = missing  # type: ignore[method-assign]
        try:
            jobs = await asyncio.gather(*(qm.add_job("older", f"j-{i}") for i in range(20)))
            assert [j.name for j in jobs] == [f"j-{i}" for i in range(20)]
            assert (await qm.add_job("older", "after")).name == "after"
        finally:
            await channel.close()
        assert (await qm.get_queue_metrics("older")).waiting == 21
    assert _started(server, "AddJob") + _started(server, "AddJobBatch") >= 2
    assert _messages(server) == 0


async def test_a_broken_stream_is_replaced_by_the_next_add(server_factory: ServerFactory) -> None:
    port = free_port()
    first = await server_factory(listen=f"127.0.0.1:{port}")
    async with QueueManager(f"127.0.0.1:{port}", timeout=10) as qm:
        await qm.register_queue("restarts")
        await qm.add_job("restarts", "before")
        await first.stop()
        with pytest.raises(QueueManagerError) as info:  # the stream is gone and no server listens
            await qm.add_job("restarts", "while-down")
        assert info.value.code == grpc.StatusCode.UNAVAILABLE
        second = await server_factory(listen=f"127.0.0.1:{port}")
        async with asyncio.timeout(10):
            while True:  # the channel reconnects in its own time (gRPC's backoff), as for any call
                try:
                    job = await qm.add_job("restarts", "after")
                    break
                except QueueManagerError as exc:
                    assert exc.code == grpc.StatusCode.UNAVAILABLE, exc
                    await asyncio.sleep(0.1)
        assert job.name == "after"
        assert _messages(second) == 1
        jobs, _ = await qm.list_jobs("restarts", "waiting")
        assert sorted(j.name for j in jobs) == ["after", "before"]


@pytest.mark.parametrize(("stage", "written"), [("_submitted", 0), ("_answered", 1)])
async def test_a_fault_in_answering_a_message_fails_its_adds_and_the_stream_goes_on(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch, stage: str, written: int
) -> None:
    """A server bug while answering one message must not leave its adds unanswered until their timeout: they
    fail at once (INTERNAL, with a reference to the server's log), and later adds use the same stream. A
    fault before the adds are handed on writes none of them; one in building the answer comes after."""
    real = getattr(JobHandlers, stage)
    faults = iter([True])

    def faulty(self: JobHandlers, *args: Any) -> Any:
        if next(faults, False):
            raise RuntimeError("a bug")
        return real(self, *args)

    monkeypatch.setattr(JobHandlers, stage, faulty)
    async with QueueManager(server.address, timeout=30) as qm:
        await qm.register_queue("faulty")
        async with asyncio.timeout(5):
            with pytest.raises(QueueManagerError) as info:
                await qm.add_job("faulty", "lost")
        assert info.value.code == grpc.StatusCode.INTERNAL
        assert "reference" in str(info.value) and "a bug" not in str(info.value)
        assert (await qm.add_job("faulty", "kept")).name == "kept"
        assert _messages(server) == 2
        assert (await qm.get_queue_metrics("faulty")).waiting == 1 + written
