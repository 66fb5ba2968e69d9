"""How a worker of several queues shares its slots (WorkerHello.queue_weights / strict_order; the dispatcher's
_room): strict priority and weights, against a real server, Valkey and Python workers."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

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
    yield client
    await client.shutdown()


class Runs:
    """Processors that record each start and hold the run until released."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.running: Counter[str] = Counter()
        self.release = asyncio.Event()
        self._changed = asyncio.Condition()

    def processor(self, queue: str):  # type: ignore[no-untyped-def]
        async def run(job: JobContext) -> None:
            self.started.append(queue)
            self.running[queue] += 1
            async with self._changed:
                self._changed.notify_all()
            await self.release.wait()
            self.running[queue] -= 1

        return run

    async def until(self, check) -> None:  # type: ignore[no-untyped-def]
        async with asyncio.timeout(WAIT), self._changed:
            await self._changed.wait_for(check)


async def test_strict_order_takes_a_queue_only_while_none_before_it_has_jobs(qm: QueueManager) -> None:
    for q in ("hi", "lo"):
        await qm.register_queue(q)
    await qm.add_bulk("lo", [{"name": "l"} for _ in range(6)])
    await qm.add_bulk("hi", [{"name": "h"} for _ in range(4)])
    started: list[str] = []
    gate: asyncio.Queue[None] = asyncio.Queue()
    begun = asyncio.Condition()

    def processor(queue: str):  # type: ignore[no-untyped-def]
        async def run(job: JobContext) -> None:
            started.append(queue)
            async with begun:
                begun.notify_all()
            await gate.get()

        return run

    async def starts(n: int) -> None:
        async with asyncio.timeout(WAIT), begun:
            await begun.wait_for(lambda: len(started) >= n)

    worker = Worker(
        qm.address, {"lo": processor("lo"), "hi": processor("hi")}, concurrency=3, queue_order=["hi", "lo"]
    )
    await worker.start()
    try:
        # Three slots, four hi jobs: every slot goes to hi (lo's loop, running beside hi's, takes none).
        await starts(3)
        await asyncio.sleep(0.2)
        assert started == ["hi"] * 3
        for _ in range(3):
            gate.put_nowait(None)
        await starts(6)  # the last hi job, then lo once hi has none
        assert started == ["hi"] * 4 + ["lo"] * 2
        # A hi job added while lo jobs run is the next to start, before the lo jobs left.
        await qm.add_job("hi", "late")
        gate.put_nowait(None)
        await starts(7)
        assert started[-1] == "hi"
    finally:
        for _ in range(10):
            gate.put_nowait(None)
        await worker.shutdown()


async def test_weights_share_the_slots_and_an_idle_queue_leaves_its_share(qm: QueueManager) -> None:
    for q in ("a", "b", "c"):
        await qm.register_queue(q)
    runs = Runs()
    await qm.add_bulk("a", [{"name": "x"} for _ in range(20)])
    await qm.add_bulk("b", [{"name": "x"} for _ in range(20)])
    worker = Worker(
        qm.address,
        {q: runs.processor(q) for q in ("a", "b", "c")},
        concurrency=8,
        queue_weights={"a": 3, "b": 1, "c": 4},
    )
    await worker.start()
    try:
        # c has nothing ready: its share (half) goes to a and b, 3 to 1.
        await runs.until(lambda: sum(runs.running.values()) == 8)
        await asyncio.sleep(0.2)  # nothing more starts: every slot is taken
        assert dict(runs.running) == {"a": 6, "b": 2}
    finally:
        runs.release.set()
        await worker.shutdown()


async def test_a_lone_busy_queue_takes_every_slot(qm: QueueManager) -> None:
    for q in ("a", "b"):
        await qm.register_queue(q)
    runs = Runs()
    await qm.add_bulk("b", [{"name": "x"} for _ in range(10)])
    worker = Worker(
        qm.address, {q: runs.processor(q) for q in ("a", "b")}, concurrency=4, queue_weights={"a": 3}
    )
    await worker.start()
    try:
        await runs.until(lambda: runs.running["b"] == 4)
    finally:
        runs.release.set()
        await worker.shutdown()


async def test_bad_shares_are_refused_by_the_client_and_the_server(server: RunningServer) -> None:
    fns = {"a": lambda job: None, "b": lambda job: None}
    with pytest.raises(ValueError, match="queue_weights names 'z', which has no processor on this worker"):
        Worker(server.address, fns, queue_weights={"z": 1})
    with pytest.raises(ValueError, match=r"queue_weights\['a'\] must be 1 to 1,000, got 0"):
        Worker(server.address, fns, queue_weights={"a": 0})
    with pytest.raises(ValueError, match="queue_order must name each of the worker's queues once"):
        Worker(server.address, fns, queue_order=["a"])
    with pytest.raises(ValueError, match="give queue_weights or queue_order, not both"):
        Worker(server.address, fns, queue_weights={"a": 2}, queue_order=["a", "b"])
    qm = QueueManager(address=server.address)
    try:
        await qm.register_queue("a")
        await qm.register_queue("b")
    finally:
        await qm.shutdown()
    bad = [
        (
            pb.WorkerHello(worker_id="w", queues=["a"], queue_weights={"b": 2}),
            "which is not one of the worker's",
        ),
        (
            pb.WorkerHello(worker_id="w", queues=["a", "b"], queue_weights={"a": 5000}),
            "5000 must be 1 to 1,000",
        ),
        (
            pb.WorkerHello(worker_id="w", queues=["a", "b"], queue_weights={"a": 2}, strict_order=True),
            "give weights or strict_order, not both",
        ),
    ]
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = rpc.WorkerServiceStub(channel)
        for hello, words in bad:
            call = stub.Connect(iter([pb.ConnectRequest(hello=hello)]))
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call.read()
            assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert words in (err.value.details() or "")


def test_the_worker_command_and_the_pool_pass_the_shares_on() -> None:
    """``qm worker --weight Q=N`` / ``--strict`` (with --queue in order) reach the Worker, and a pool's child
    processes get the same flags."""
    from queue_manager.cli import _parser as build_parser
    from queue_manager.pool import WorkerManager

    args = build_parser().parse_args(["worker", "m:qm", "--weight", "a=3", "--weight", "b=1"])
    assert args.weight == [("a", 3), ("b", 1)] and not args.strict
    with pytest.raises(SystemExit):
        build_parser().parse_args(["worker", "m:qm", "--weight", "a"])
    pool = WorkerManager("tests.shares_app:qm", queue_order=["hi", "lo"])
    argv = pool._argv()
    assert argv[argv.index("worker") :] == [
        "worker", "tests.shares_app:qm", "--concurrency", "10", "--grace", "30",
        "--queue", "hi", "--queue", "lo", "--strict", "--stop-on-stdin-eof",
    ]  # fmt: skip
    pool = WorkerManager("tests.shares_app:qm", queue_weights={"hi": 5})
    argv = pool._argv()
    assert argv[argv.index("--queue") :] == [
        "--queue",
        "hi",
        "--queue",
        "lo",
        "--weight",
        "hi=5",
        "--stop-on-stdin-eof",
    ]


async def test_strict_order_takes_a_delayed_job_of_a_queue_before_it_once_due(qm: QueueManager) -> None:
    from queue_manager import JobState

    for q in ("hi", "lo"):
        await qm.register_queue(q)
    await qm.add_bulk("lo", [{"name": "l"} for _ in range(3)])
    due = await qm.add_job("hi", "later", None, {"delay": 300})
    started: list[str] = []
    gate: asyncio.Queue[None] = asyncio.Queue()
    begun = asyncio.Condition()

    def processor(queue: str):  # type: ignore[no-untyped-def]
        async def run(job: JobContext) -> None:
            started.append(queue)
            async with begun:
                begun.notify_all()
            await gate.get()

        return run

    worker = Worker(
        qm.address, {"hi": processor("hi"), "lo": processor("lo")}, concurrency=1, queue_order=["hi", "lo"]
    )
    await worker.start()
    try:
        async with asyncio.timeout(WAIT), begun:
            await begun.wait_for(lambda: started == ["lo"])  # nothing ready in hi yet
        async with asyncio.timeout(WAIT):  # the delayed hi job falls due (the promoter makes it waiting)
            while True:
                if (await qm.get_job("hi", due.id)).state is JobState.WAITING:
                    break
                await asyncio.sleep(0.02)
        gate.put_nowait(None)
        async with asyncio.timeout(WAIT), begun:
            await begun.wait_for(lambda: len(started) == 2)
        assert started == ["lo", "hi"]
    finally:
        for _ in range(5):
            gate.put_nowait(None)
        await worker.shutdown()


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--weight", "hi=0"], "argument --weight: expected QUEUE=N with N a whole number from 1 to 1,000"),
        (["--weight", "hi=1001"], "from 1 to 1,000, got 'hi=1001'"),
        (["--weight", "nope=3"], "--weight nope=3: this worker does not run 'nope'; it runs hi, lo"),
        (["--queue", "hi", "--weight", "lo=3"], "--weight lo=3: this worker does not run 'lo'; it runs hi"),
        (["--weight", "hi=2", "--weight", "hi=3"], "--weight gives 'hi' twice"),
        (["--strict", "--queue", "hi", "--queue", "lo", "--queue", "hi"], "--queue 'hi' is given twice"),
        (["--autoscale", "1:2", "--weight", "nope=3"], "this worker does not run 'nope'"),
        (["--weight", "hi=2", "--strict", "--queue", "hi"], "give --weight or --strict, not both"),
    ],
)
def test_the_worker_command_refuses_bad_shares_naming_the_flag(
    flags: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad --weight or --strict is refused before anything connects, by flag name and with the range or
    the worker's queues (not by Worker's queue_weights / queue_order arguments), exit status 2."""
    from queue_manager.cli import main

    try:
        status = main(["--server", "127.0.0.1:1", "worker", "tests.shares_app:qm", *flags])
    except SystemExit as exc:  # argparse's own refusals
        status = int(exc.code or 0)
    err = capsys.readouterr().err
    assert status == 2, err
    assert words in err and "queue_weights" not in err and "queue_order" not in err, err
