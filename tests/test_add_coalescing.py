"""Concurrent AddJob calls share Redis writes (services/adds.py); each caller still gets its own outcome."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
import pytest
from redis.exceptions import ResponseError

from queue_manager.v1 import jobs_pb2 as jpb
from queue_manager.v1 import queue_service_pb2 as qpb
from queue_manager.v1 import queue_service_pb2_grpc as qrpc
from queue_manager.v1 import types_pb2 as t
from queue_manager_server.engine import Engine
from queue_manager_server.engine.records import AddResult, NewJob
from queue_manager_server.services.adds import AddCoalescer, AddOutcome
from tests.conftest import RunningServer

Code = grpc.StatusCode
Groups = Sequence[tuple[str, Sequence[NewJob]]]


@pytest.fixture
async def stub(server: RunningServer) -> AsyncIterator[qrpc.QueueServiceStub]:
    async with grpc.aio.insecure_channel(server.address) as ch:
        s = qrpc.QueueServiceStub(ch)
        await s.RegisterQueue(qpb.RegisterQueueRequest(name="co"))
        yield s


def add(stub: qrpc.QueueServiceStub, queue: str, name: str, data: bytes = b'{"i":1}') -> Any:
    payload = t.Payload(raw=data, content_type="application/json")
    return stub.AddJob(jpb.AddJobRequest(queue_name=queue, job=jpb.NewJob(name=name, data=payload)))


class HeldWrites:
    """Wraps the engine's coalesced write: records each batch and holds the first until released, so the
    adds sent meanwhile queue up for the second."""

    def __init__(self, engine: Engine) -> None:
        self.real = engine.add_jobs_many
        self.batches: list[list[tuple[str, int]]] = []
        self.release = asyncio.Event()
        self.fail_queue = ""  # its group of the second batch: half written, then a script error

    async def __call__(
        self, groups: Groups, fetch: bool = False, claims: Any = (), limited: bool = False
    ) -> list[Any]:
        self.batches.append([(q, len(jobs)) for q, jobs in groups])
        if len(self.batches) == 1:
            await self.release.wait()
        if len(self.batches) == 2 and self.fail_queue:
            (queue, jobs), *_ = groups
            await self.real([(queue, list(jobs)[: len(jobs) // 2])], fetch, limited=limited)
            return [ResponseError("ERR simulated script error mid-batch")]
        return await self.real(groups, fetch, claims, limited)


async def until(check: Any) -> None:
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


def coalescer(server: RunningServer) -> AddCoalescer:
    assert server.app.queue_service is not None
    return server.app.queue_service.adds


async def test_a_bad_job_fails_alone_and_the_others_share_one_write(
    server: RunningServer, stub: qrpc.QueueServiceStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    adds = coalescer(server)
    held = HeldWrites(adds.engine)
    monkeypatch.setattr(adds.engine, "add_jobs_many", held)
    first = asyncio.ensure_future(add(stub, "co", "first"))
    await until(lambda: len(held.batches) == 1)
    good = [asyncio.ensure_future(add(stub, "co", f"j{i}")) for i in range(10)]
    bad = asyncio.ensure_future(add(stub, "co", ""))  # no name: INVALID_ARGUMENT before it joins a batch
    unknown = asyncio.ensure_future(add(stub, "nope", "x"))  # an unregistered queue fails only its caller
    await until(lambda: len(adds._pending) == 11)
    held.release.set()

    assert (await first).created
    answers = await asyncio.gather(*good)
    assert [a.job.name for a in answers] == [f"j{i}" for i in range(10)]
    assert all(a.created and a.job.state == t.JOB_STATE_WAITING for a in answers)
    assert len({a.job.id for a in answers}) == 10
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await bad
    assert info.value.code() == Code.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await unknown
    assert info.value.code() == Code.NOT_FOUND
    assert held.batches == [[("co", 1)], [("co", 10), ("nope", 1)]]
    m = await stub.GetQueueMetrics(qpb.GetQueueMetricsRequest(name="co"))
    assert m.metrics.waiting == 11


async def test_a_failed_batch_is_retried_job_by_job_without_duplicates(
    server: RunningServer, stub: qrpc.QueueServiceStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    adds = coalescer(server)
    held = HeldWrites(adds.engine)
    held.fail_queue = "co"
    monkeypatch.setattr(adds.engine, "add_jobs_many", held)
    first = asyncio.ensure_future(add(stub, "co", "first"))
    await until(lambda: len(held.batches) == 1)
    calls = [asyncio.ensure_future(add(stub, "co", f"j{i}")) for i in range(8)]
    await until(lambda: len(adds._pending) == 8)
    held.release.set()

    await first
    answers = await asyncio.gather(*calls)
    # Half were written before the error: found again by their ids, they still count as this call's own.
    assert all(a.created for a in answers)
    assert [a.job.name for a in answers] == [f"j{i}" for i in range(8)]
    m = await stub.GetQueueMetrics(qpb.GetQueueMetricsRequest(name="co"))
    assert m.metrics.waiting == 9


def write_sizes(adds: AddCoalescer, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of jobs of each coalesced write from now on (the engine's write, spied on)."""
    sizes: list[int] = []
    real = adds.engine.add_jobs_many

    async def spy(
        groups: Groups, fetch: bool = False, claims: Any = (), limited: bool = False
    ) -> list[AddResult | Exception]:
        sizes.append(sum(len(j) for _, j in groups))
        return await real(groups, fetch, claims, limited)

    monkeypatch.setattr(adds.engine, "add_jobs_many", spy)
    return sizes


async def test_a_lone_add_is_written_at_once(
    server: RunningServer, stub: qrpc.QueueServiceStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An idle server writes a lone add in its own batch, without waiting for company."""
    sizes = write_sizes(coalescer(server), monkeypatch)
    for i in range(5):
        assert (await add(stub, "co", f"s{i}")).created
    assert sizes == [1, 1, 1, 1, 1]


async def test_a_batch_that_finds_the_server_idle_is_written_at_once(
    server: RunningServer, stub: qrpc.QueueServiceStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of adds (a stream message's, an AddJobBatch call's) handed over while nothing is being written
    starts its write before its caller goes on (the stream's next read comes after it); a batch handed over
    in the same turn waits for that write instead of joining it."""
    adds = coalescer(server)
    sizes = write_sizes(adds, monkeypatch)

    def batch(names: list[str]) -> list[tuple[str, NewJob]]:
        return [("co", NewJob(id="", name=name, data=b'{"i":1}')) for name in names]

    first = adds.submit_all(batch(["a", "b", "c"]))
    assert adds._in_flight == 1  # under way already, before this caller yields to the event loop
    second = adds.submit_all(batch(["d", "e"]))
    assert adds._in_flight == 1 and len(adds._pending) == 2
    written = [o for group in await asyncio.gather(first, second) for o in group]
    assert [o.record.fields["name"] for o in written if isinstance(o, AddOutcome)] == [
        b"a",
        b"b",
        b"c",
        b"d",
        b"e",
    ]
    assert sizes == [3, 2]


async def test_a_stopping_server_writes_the_adds_it_took_before_closing_redis(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stop waits for a coalesced write under way: one started after Redis was closed would open a
    connection of its own that nobody closes (a ResourceWarning at garbage collection)."""
    adds = coalescer(server)
    await adds.engine.register_queue("co", {})
    held = HeldWrites(adds.engine)
    monkeypatch.setattr(adds.engine, "add_jobs_many", held)
    outcomes = adds.submit_all([("co", NewJob(id="", name="late", data=b'{"i":1}'))])
    await until(lambda: len(held.batches) == 1)
    stopping = asyncio.ensure_future(server.stop())
    done, _ = await asyncio.wait([stopping], timeout=1.0)
    assert not done, "the server closed Redis with a write under way"
    held.release.set()
    await stopping
    (outcome,) = await outcomes
    assert not isinstance(outcome, Exception)
    assert outcome.record.text("name") == "late"


async def test_waiting_for_idle_covers_a_lone_add_and_gives_up_after_its_timeout(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """wait_idle waits for a lone add written by its caller's own task (no write task to wait for), returns
    after its timeout with the write still held, and is woken when a lone caller gives up before writing."""
    adds = coalescer(server)
    await adds.engine.register_queue("co", {})
    held = HeldWrites(adds.engine)
    monkeypatch.setattr(adds.engine, "add_jobs_many", held)
    lone = asyncio.create_task(adds.add("co", NewJob(id="", name="lone", data=b'{"i":1}')))
    await until(lambda: len(held.batches) == 1)
    await adds.wait_idle(0.05)  # gives up: the write is still held
    waiting = asyncio.ensure_future(adds.wait_idle(10))
    done, _ = await asyncio.wait([waiting], timeout=0.2)
    assert not done and not lone.done()
    held.release.set()
    await asyncio.wait_for(waiting, 5)
    assert (await lone).record.text("name") == "lone"

    gone = asyncio.create_task(adds.add("co", NewJob(id="", name="gone", data=b'{"i":2}')))
    waiting = asyncio.ensure_future(adds.wait_idle(10))
    await asyncio.sleep(0)  # the add waits its turn to gather company, the waiter for idle
    gone.cancel()
    await asyncio.wait_for(waiting, 5)  # woken by the cancelled add, not by its 10 s timeout
    assert gone.cancelled() and len(held.batches) == 1
