"""Worker tiers (WorkerHello.tier; the dispatcher's _in_turn, _dispatch_once and _fold): a queue's jobs go to
workers of a lower tier first, and to a higher tier only while the lower ones have no free slot (BullMQ's
"prefer some workers, use others only when they are busy"). Real server, Valkey and Python workers."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable

import grpc
import pytest

from queue_manager import JobContext, QueueManager, Worker
from queue_manager.v1 import worker_service_pb2 as pb
from queue_manager.v1 import worker_service_pb2_grpc as rpc
from tests.conftest import RunningServer

WAIT = 20.0


@pytest.fixture
async def qm(server: RunningServer) -> AsyncIterator[QueueManager]:
    client = QueueManager(address=server.address, shutdown_grace=5.0)
    await client.register_queue("t")
    yield client
    await client.shutdown()


class Held:
    """Processors that record which worker started each job and hold the run until released."""

    def __init__(self) -> None:
        self.on: dict[str, str] = {}
        self.release = asyncio.Event()
        self._changed = asyncio.Condition()

    def processor(self, worker: str) -> Callable[[JobContext], object]:
        async def run(job: JobContext) -> None:
            self.on[job.id] = worker
            async with self._changed:
                self._changed.notify_all()
            await self.release.wait()

        return run

    async def started(self, n: int) -> Counter[str]:
        async with asyncio.timeout(WAIT), self._changed:
            await self._changed.wait_for(lambda: len(self.on) >= n)
        return Counter(self.on.values())


async def _workers(server: RunningServer, held: Held, tiers: dict[str, int]) -> list[Worker]:
    workers = [
        Worker(server.address, {"t": held.processor(name)}, concurrency=4, worker_id=name, tier=tier)
        for name, tier in tiers.items()
    ]
    for w in workers:
        await w.start()
        async with asyncio.timeout(WAIT):
            await w.wait_connected()
    claims = server.app.dispatcher
    assert claims is not None
    # A worker grants its credits once welcomed: an add before they arrive would find its slots taken.
    async with asyncio.timeout(WAIT):
        while sum(s.credits for s in claims.all_sessions()) < 4 * len(workers):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    return workers


async def _stop(held: Held, workers: list[Worker]) -> None:
    held.release.set()
    for w in workers:
        await w.shutdown(grace=5)


@pytest.mark.parametrize("preferred", ["spot", "steady"])
async def test_jobs_one_by_one_go_to_the_lower_tier_until_it_is_full(
    qm: QueueManager, server: RunningServer, preferred: str
) -> None:
    """Adds one at a time (each folded into its add's claim, or claimed by the queue's loop): every job goes
    to the worker of tier 0 while it has a free slot, whichever connected first, then to tier 1."""
    held = Held()
    other = "steady" if preferred == "spot" else "spot"
    workers = await _workers(
        server, held, {"spot": int(preferred != "spot"), "steady": int(preferred == "spot")}
    )
    try:
        for i in range(4):
            await qm.add_job("t", f"j{i}")
            await held.started(i + 1)
        assert Counter(held.on.values()) == {preferred: 4}
        for i in range(4, 7):
            await qm.add_job("t", f"j{i}")
            await held.started(i + 1)
        assert Counter(held.on.values()) == {preferred: 4, other: 3}
    finally:
        await _stop(held, workers)


async def test_a_backlog_fills_the_lower_tier_first(qm: QueueManager, server: RunningServer) -> None:
    """Claims serve the sessions in tier order, each round (without tiers they take turns first)."""
    held = Held()
    workers = await _workers(server, held, {"burst": 1, "home": 0})
    claims = server.app.dispatcher
    assert claims is not None
    try:
        rounds = [[s.worker_id for s in claims._in_turn("t")] for _ in range(3)]
        assert rounds == [["home", "burst"]] * 3
        await qm.add_bulk("t", [{"name": f"j{i}"} for i in range(6)])
        assert await held.started(6) == {"home": 4, "burst": 2}
    finally:
        await _stop(held, workers)


async def test_the_higher_tier_takes_jobs_once_the_lower_one_leaves(
    qm: QueueManager, server: RunningServer
) -> None:
    held = Held()
    workers = await _workers(server, held, {"home": 0, "burst": 1})
    try:
        await workers[0].shutdown(grace=1)
        await qm.add_bulk("t", [{"name": f"j{i}"} for i in range(3)])
        assert await held.started(3) == {"burst": 3}
    finally:
        await _stop(held, workers)


async def test_the_worker_list_shows_each_workers_tier(qm: QueueManager, server: RunningServer) -> None:
    held = Held()
    workers = await _workers(server, held, {"home": 0, "burst": 3})
    try:
        listed = {w.worker_id: w.tier for w in await qm.list_workers()}
        assert listed == {"home": 0, "burst": 3}
    finally:
        await _stop(held, workers)


async def test_a_bad_tier_is_refused_by_the_client_and_the_server(
    qm: QueueManager, server: RunningServer
) -> None:
    fns = {"t": lambda job: None}
    with pytest.raises(ValueError, match="tier must be 0 to 100, got 101"):
        Worker(server.address, fns, tier=101)
    with pytest.raises(TypeError, match="tier must be a whole number from 0 to 100"):
        Worker(server.address, fns, tier=1.5)  # type: ignore[arg-type]
    async with grpc.aio.insecure_channel(server.address) as channel:
        hello = pb.WorkerHello(worker_id="w", queues=["t"], tier=101)
        call = rpc.WorkerServiceStub(channel).Connect(iter([pb.ConnectRequest(hello=hello)]))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call.read()
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "hello.tier" in (err.value.details() or "") and "101 must be 0 to 100" in (
        err.value.details() or ""
    )


def test_the_worker_command_and_the_pool_pass_the_tier_on(capsys: pytest.CaptureFixture[str]) -> None:
    from queue_manager.cli import _parser as build_parser
    from queue_manager.cli import main
    from queue_manager.pool import WorkerManager

    assert build_parser().parse_args(["worker", "m:qm", "--tier", "2"]).tier == 2
    assert build_parser().parse_args(["worker", "m:qm"]).tier == 0
    for bad in ("101", "-1", "x"):
        with pytest.raises(SystemExit) as exited:
            main(["--server", "127.0.0.1:1", "worker", "tests.shares_app:qm", "--tier", bad])
        assert exited.value.code == 2
        assert "--tier" in capsys.readouterr().err
    argv = WorkerManager("tests.shares_app:qm", tier=1)._argv()
    assert argv[-3:] == ["--tier", "1", "--stop-on-stdin-eof"]
    assert "--tier" not in WorkerManager("tests.shares_app:qm")._argv()
