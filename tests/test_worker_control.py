"""ControlWorker: quiet, resume, stop and resize real workers, on the server holding their stream or another
one on the same Valkey, and the refusals (services/worker_control.py)."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from queue_manager import (
    JobContext,
    NotFoundError,
    QueueManager,
    SyncQueueManager,
    Worker,
    WorkerState,
)
from queue_manager.v1 import queue_service_pb2 as qpb
from queue_manager.v1 import queue_service_pb2_grpc as qrpc
from queue_manager.v1 import worker_service_pb2 as pb
from queue_manager_server.engine import Engine
from queue_manager_server.engine.workers import WorkerEntry, WorkerStore
from tests.conftest import RunningServer, ServerFactory
from tests.rawworker import RawWorker, eventually


class Gated:
    """A processor whose runs wait until let go; records which worker ran which job."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.running = 0
        self.peak_after_mark = 0
        self.mark = False
        self.gate = asyncio.Event()
        self.changed = asyncio.Condition()

    async def __call__(self, job: JobContext) -> str:
        self.started.append(job.id)
        self.running += 1
        if self.mark:
            self.peak_after_mark = max(self.peak_after_mark, self.running)
        async with self.changed:
            self.changed.notify_all()
        try:
            await self.gate.wait()
        finally:
            self.running -= 1
        return job.id

    async def wait_started(self, n: int, timeout: float = 15.0) -> None:
        async with asyncio.timeout(timeout), self.changed:
            await self.changed.wait_for(lambda: len(self.started) >= n)

    async def wait_running(self, n: int, timeout: float = 15.0) -> None:
        async with asyncio.timeout(timeout), self.changed:
            await self.changed.wait_for(lambda: self.running >= n)


async def start_worker(address: str, queue: str, fn: Gated, concurrency: int, worker_id: str) -> Worker:
    worker = Worker(address, {queue: fn}, concurrency=concurrency, worker_id=worker_id, shutdown_grace=10)
    await worker.start()
    async with asyncio.timeout(15):
        await worker.wait_connected()
    return worker


@pytest.fixture
async def admin(server: RunningServer) -> AsyncIterator[QueueManager]:
    qm = QueueManager(address=server.address)
    await qm.register_queue("q")
    yield qm
    await qm.shutdown()


async def state_of(qm: QueueManager, worker_id: str) -> WorkerState | None:
    listed = {w.worker_id: w for w in await qm.list_workers()}
    return listed[worker_id].state if worker_id in listed else None


async def test_quiet_stops_deliveries_while_jobs_finish_and_resume_restarts_them(
    server: RunningServer, admin: QueueManager, engine: Engine
) -> None:
    a, b = Gated(), Gated()
    worker_a = await start_worker(server.address, "q", a, 2, "wa")
    try:
        await admin.add_job("q", "first", options={"job_id": "a1"})
        await admin.add_job("q", "first", options={"job_id": "a2"})
        await a.wait_started(2)
        done = await admin.quiet_worker("wa")
        assert (done.state, done.changed) == (WorkerState.QUIET, True)
        assert done.server_id == server.settings.server_id
        assert await state_of(admin, "wa") == WorkerState.QUIET  # shown as soon as the call returns
        assert (await admin.quiet_worker("wa")).changed is False
        a.gate.set()  # the jobs it holds finish while it is quiet
        await eventually(lambda: _completed(engine, 2))
        # A second, active worker takes every job added meanwhile; the quiet one, with free slots, none.
        worker_b = await start_worker(server.address, "q", b, 4, "wb")
        for i in range(4):
            await admin.add_job("q", "later", options={"job_id": f"b{i}"})
        await b.wait_started(4)
        assert sorted(a.started) == ["a1", "a2"]
        b.gate.set()
        await worker_b.shutdown(grace=5)
        resumed = await admin.resume_worker("wa")
        assert (resumed.state, resumed.changed) == (WorkerState.ACTIVE, True)
        await admin.add_job("q", "again", options={"job_id": "a3"})
        await a.wait_started(3)
        assert a.started[-1] == "a3" and await state_of(admin, "wa") == WorkerState.ACTIVE
    finally:
        b.gate.set()
        await worker_a.shutdown(grace=5)


async def _completed(engine: Engine, n: int) -> bool:
    return (await engine.metrics("q")).completed >= n


async def test_quiet_survives_a_reconnect(server_factory: ServerFactory) -> None:
    """A quiet worker whose server goes away says quiet in the hello of its next stream."""
    first = await server_factory()
    qm = QueueManager(address=first.address)
    await qm.register_queue("q")
    fn = Gated()
    worker = await start_worker(first.address, "q", fn, 2, "wq")
    try:
        await qm.quiet_worker("wq")
        await first.stop()  # DRAIN; the worker reconnects to the server started on the same address
        second = await server_factory(listen=first.address)
        qm2 = QueueManager(address=second.address)
        await eventually(lambda: _listed_quiet(qm2, "wq"), timeout=20)
        await qm2.add_job("q", "x", options={"job_id": "x1"})
        await eventually(lambda: _waiting(qm2))
        assert fn.started == []  # quiet on the new stream too
        await qm2.resume_worker("wq")
        await fn.wait_started(1)
        await qm2.shutdown()
    finally:
        fn.gate.set()
        await worker.shutdown(grace=5)
        await qm.shutdown()


async def _waiting(qm: QueueManager) -> bool:
    return (await qm.get_queue_metrics("q")).waiting == 1


async def _listed_quiet(qm: QueueManager, worker_id: str) -> bool:
    return await state_of(qm, worker_id) == WorkerState.QUIET


async def test_stop_ends_the_run_without_losing_or_duplicating_a_job(
    server: RunningServer, admin: QueueManager, engine: Engine
) -> None:
    runs: Counter[str] = Counter()
    started = asyncio.Event()

    async def work(job: JobContext) -> None:
        runs[job.id] += 1
        if len(runs) >= 10:
            started.set()
        await asyncio.sleep(0.005)

    ids = await admin.add_bulk("q", [{"name": "n", "data": i} for i in range(300)])
    worker = Worker(server.address, {"q": work}, concurrency=8, worker_id="ws", shutdown_grace=10)
    await worker.start()
    async with asyncio.timeout(15):
        await started.wait()
    done = await admin.stop_worker("ws")
    assert done.state == WorkerState.STOPPING
    async with asyncio.timeout(20):
        await worker.wait_closed()  # its run ends by itself
    assert worker.stopped_by_server
    assert await state_of(admin, "ws") is None  # gone, and it does not come back
    # Another worker takes the rest: every job ran exactly once, none counted a stall.
    rest = Worker(server.address, {"q": work}, concurrency=8, worker_id="wr")
    await rest.start()
    await eventually(lambda: _completed(engine, 300), timeout=30)
    await rest.shutdown(grace=5)
    assert set(runs) == set(ids) and set(runs.values()) == {1}
    m = await engine.metrics("q")
    assert (m.completed, m.stalled_total) == (300, 0)
    with pytest.raises(NotFoundError, match="no connected worker"):
        await admin.quiet_worker("ws")


async def test_a_command_reaches_a_worker_on_another_server(
    server_factory: ServerFactory, redis_url: str, prefix: str
) -> None:
    holder, other = await server_factory(), await server_factory()
    qm_holder = QueueManager(address=holder.address)
    await qm_holder.register_queue("q")
    qm = QueueManager(address=other.address)  # every call below goes through the server without the stream
    fn = Gated()
    worker = await start_worker(holder.address, "q", fn, 1, "far")
    try:
        done = await qm.quiet_worker("far")
        assert (done.server_id, done.state) == (holder.settings.server_id, WorkerState.QUIET)
        assert await state_of(qm, "far") == WorkerState.QUIET
        await qm.resume_worker("far")
        resized = await qm.set_worker_concurrency("far", 3)
        assert (resized.concurrency, resized.changed) == (3, True)
        for i in range(3):
            await qm.add_job("q", "x", options={"job_id": f"f{i}"})
        await fn.wait_running(3)  # three at once on a worker started with one
        assert worker.concurrency == 3
        fn.gate.set()
        with pytest.raises(NotFoundError, match="no connected worker has id 'nobody'"):
            await qm.stop_worker("nobody")
        # A worker listed on a server that died (its entry not expired yet): that server never answers.
        store = WorkerStore(holder.app.workers.registry.scripts, prefix)
        entry = WorkerEntry("ghost", "s1", "dead-server", "h", "python", "1", ["q"], 1, 0, 0, 0)
        await store.workers_seen([entry], [], 60_000)
        assert other.app.worker_control is not None
        other.app.worker_control.answer_timeout_s = 0.5
        with pytest.raises(NotFoundError, match="'dead-server', which did not answer"):
            await qm.quiet_worker("ghost")
        await store.workers_seen([], [("ghost", "s1")], 0)
        stopped = await qm.stop_worker("far")
        assert stopped.state == WorkerState.STOPPING
        async with asyncio.timeout(20):
            await worker.wait_closed()
    finally:
        fn.gate.set()
        await worker.shutdown(grace=5)
        await qm.shutdown()
        await qm_holder.shutdown()


async def test_the_server_holding_the_stream_answers_when_the_registry_names_another(
    server_factory: ServerFactory, prefix: str
) -> None:
    """The registry names a live server that holds no stream of the worker (it reconnected elsewhere and its
    entry is rewritten at the next heartbeat): that server's "not here" waits, so the holder's answer wins."""
    holder, caller, named = await server_factory(), await server_factory(), await server_factory()
    qm = QueueManager(address=caller.address)
    await qm.register_queue("q")
    fn = Gated()
    worker = await start_worker(holder.address, "q", fn, 1, "moved")
    try:
        store = WorkerStore(holder.app.workers.registry.scripts, prefix)
        stale = WorkerEntry("moved", "s0", named.settings.server_id, "h", "python", "1", ["q"], 1, 0, 0, 0)
        await store.workers_seen([stale], [], 60_000)
        done = await qm.quiet_worker("moved")
        assert (done.server_id, done.state) == (holder.settings.server_id, WorkerState.QUIET)
        # The named server's "not here" is still waiting: stopping ends it before Redis closes (published
        # after the close, it opened a connection nobody closed: a ResourceWarning in a later test).
        control = named.app.worker_control
        assert control is not None and control._tasks
        await named.stop()
        assert not control._tasks
    finally:
        fn.gate.set()
        await worker.shutdown(grace=5)
        await qm.shutdown()


async def test_a_lower_concurrency_is_observed_in_deliveries(
    server: RunningServer, admin: QueueManager
) -> None:
    """Runs started after the change are let go one at a time: the worker holds every run it takes, so
    with slots to spare it would show more than one running."""
    fn = Gated()
    worker = await start_worker(server.address, "q", fn, 3, "wl")
    try:
        for i in range(9):
            await admin.add_job("q", "x", options={"job_id": f"l{i}"})
        await fn.wait_running(3)
        done = await admin.set_worker_concurrency("wl", 1)
        assert (done.concurrency, done.changed) == (1, True)
        await eventually(lambda: _concurrency_is(worker, 1))  # the call returns once the command is sent
        listed = {w.worker_id: w for w in await admin.list_workers()}
        assert listed["wl"].concurrency == 1
        first, fn.gate = fn.gate, asyncio.Event()
        fn.mark = True
        first.set()  # the three runs end; those after them wait for the new gate
        for n in range(4, 10):
            await fn.wait_started(n)
            await fn.wait_running(1)
            released, fn.gate = fn.gate, asyncio.Event()
            released.set()
        assert fn.peak_after_mark == 1
    finally:
        fn.gate.set()
        await worker.shutdown(grace=5)


async def expect(code: grpc.StatusCode, call: object, *needles: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    assert info.value.code() == code, info.value.details()
    for needle in needles:
        assert needle in (info.value.details() or ""), info.value.details()


async def test_bad_requests_get_precise_statuses(server: RunningServer, admin: QueueManager) -> None:
    old = RawWorker(server.address, ["q"], "old-worker")  # a hello that lists no command
    await old.connect(credits=1)
    fn = Gated()
    await admin.register_queue("r")
    worker = await start_worker(server.address, "r", fn, 1, "wb")
    try:
        async with grpc.aio.insecure_channel(server.address) as ch:
            stub = qrpc.QueueServiceStub(ch)
            req = qpb.ControlWorkerRequest
            quiet, conc = qpb.WORKER_CONTROL_ACTION_QUIET, qpb.WORKER_CONTROL_ACTION_SET_CONCURRENCY
            bad = grpc.StatusCode.INVALID_ARGUMENT
            await expect(bad, stub.ControlWorker(req(worker_id="wb")), "action")
            await expect(bad, stub.ControlWorker(req(action=quiet)), "worker_id")
            control = stub.ControlWorker
            await expect(bad, control(req(worker_id="wb", action=conc)), "concurrency", "1 to 100,000")
            await expect(bad, control(req(worker_id="wb", action=conc, concurrency=100_001)))
            await expect(bad, control(req(worker_id="wb", action=quiet, concurrency=2)), "leave it 0")
            await expect(grpc.StatusCode.NOT_FOUND, control(req(worker_id="x", action=quiet)), "'x'")
            await expect(
                grpc.StatusCode.FAILED_PRECONDITION,
                stub.ControlWorker(req(worker_id="old-worker", action=quiet)),
                "does not take quiet commands",
                "upgrade",
            )
            await admin.add_job("r", "x", options={"job_id": "r1"})
            await fn.wait_started(1)
            await admin.stop_worker("wb")  # it holds a run: stopping until that ends
            await expect(
                grpc.StatusCode.FAILED_PRECONDITION,
                stub.ControlWorker(req(worker_id="wb", action=quiet)),
                "is stopping",
            )
        # Nothing was sent to the old worker, and it still gets jobs.
        await admin.add_job("q", "x", options={"job_id": "o1"})
        got = await old.recv()
        assert got.WhichOneof("kind") == "delivery", got
        with pytest.raises(ValueError, match="1 to 100,000"):
            await admin.set_worker_concurrency("wb", 0)
    finally:
        fn.gate.set()
        await worker.shutdown(grace=5)
        await old.close()


async def test_the_sync_client_names_the_actions_it_takes(server: RunningServer) -> None:
    # An unknown action raised a bare KeyError('pause'); the known ones reach the server (no such worker).
    def control() -> None:
        with SyncQueueManager(server.address, timeout=10) as qm:
            with pytest.raises(ValueError, match="must be quiet, resume, stop or concurrency, got 'pause'"):
                qm.control_worker("w", "pause")
            with pytest.raises(NotFoundError, match="no connected worker has id 'w'"):
                qm.control_worker("w", "quiet")

    await asyncio.to_thread(control)  # the server runs on this event loop: the blocking client in a thread


async def test_worker_control_needs_an_admin_token_for_every_queue() -> None:
    from queue_manager_server import access

    rule = access.rule_for(access.QUEUE_SERVICE + "ControlWorker")
    assert rule is not None and (rule.permission, rule.all_queues) == ("admin", True)


def test_the_hello_lists_the_commands_the_python_worker_obeys() -> None:
    from queue_manager import worker_stream

    assert set(worker_stream._CONTROL_COMMANDS) == {
        pb.SERVER_COMMAND_TYPE_QUIET,
        pb.SERVER_COMMAND_TYPE_RESUME,
        pb.SERVER_COMMAND_TYPE_STOP,
        pb.SERVER_COMMAND_TYPE_SET_CONCURRENCY,
    }


async def test_cli_commands(
    server: RunningServer, admin: QueueManager, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.test_cli import qm_cli, qm_json, usage_error

    fn = Gated()
    worker = await start_worker(server.address, "q", fn, 2, "cli-w")
    try:
        quiet = await qm_json(capsys, server, "workers", "quiet", "cli-w")
        assert (quiet["worker_id"], quiet["state"], quiet["changed"]) == ("cli-w", "quiet", True)
        listed = await qm_json(capsys, server, "workers", "list")
        assert [(w["worker_id"], w["state"]) for w in listed] == [("cli-w", "quiet")]
        status, out, _ = await qm_cli(capsys, "--server", server.address, "workers", "list")
        assert status == 0 and "STATE" in out.splitlines()[0] and "quiet" in out
        assert (await qm_json(capsys, server, "workers", "resume", "cli-w"))["state"] == "active"
        resized = await qm_json(capsys, server, "workers", "concurrency", "cli-w", "5")
        assert resized["concurrency"] == 5
        await eventually(lambda: _concurrency_is(worker, 5))
        err = await usage_error(capsys, server, "workers", "concurrency", "cli-w", "0")
        assert "argument N: must be whole jobs from 1 to 100000, got '0'" in err, err
        status, _, err = await qm_cli(capsys, "--server", server.address, "workers", "stop", "nobody")
        assert status == 1 and err == (
            "error: NOT_FOUND: no connected worker has id 'nobody'; `qm workers list` (ListWorkers) lists "
            "the connected ones\n"
        ), err
        stopped = await qm_json(capsys, server, "workers", "stop", "cli-w")
        assert stopped["state"] == "stopping"
        async with asyncio.timeout(20):
            await worker.wait_closed()
    finally:
        await worker.shutdown(grace=5)


async def test_http_route(server_factory: ServerFactory) -> None:
    import aiohttp

    server = await server_factory(http_listen="127.0.0.1:0")
    qm = QueueManager(address=server.address)
    await qm.register_queue("q")
    fn = Gated()
    worker = await start_worker(server.address, "q", fn, 2, "web:1")
    base = f"http://{server.app.http_address}/api/v1/workers"
    try:
        async with aiohttp.ClientSession() as http:
            quiet = {"action": "WORKER_CONTROL_ACTION_QUIET"}
            async with http.post(f"{base}/web:1:control", json=quiet) as r:
                body = await r.json()
                assert r.status == 200, body
            assert (body["state"], body["changed"]) == ("WORKER_STATE_QUIET", True)
            async with http.get(base) as r:
                assert [w["state"] for w in (await r.json())["workers"]] == ["WORKER_STATE_QUIET"]
            async with http.post(f"{base}/nobody:control", json=quiet) as r:
                assert (r.status, (await r.json())["code"]) == (404, "NOT_FOUND")
            bad = {"action": "WORKER_CONTROL_ACTION_SET_CONCURRENCY"}
            async with http.post(f"{base}/web:1:control", json=bad) as r:
                body = await r.json()
                assert (r.status, body["code"]) == (400, "INVALID_ARGUMENT") and "concurrency" in body[
                    "message"
                ]
    finally:
        await worker.shutdown(grace=5)
        await qm.shutdown()


async def test_a_pool_does_not_replace_a_process_the_server_stopped(
    server: RunningServer, admin: QueueManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.test_pool import APP, make_pool

    name = f"pool_app_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(APP)
    monkeypatch.syspath_prepend(str(tmp_path))
    await admin.register_queue("pool-work")
    pool = make_pool(name, server, tmp_path, queues=["pool-work"], min_workers=1, max_workers=2)
    pool.policy = replace(pool.policy, scale_up_cooldown=60.0)  # no growing back within the test
    events = pool.events()
    try:
        await pool.start()

        async def connected() -> bool:
            return bool(await admin.list_workers("pool-work"))

        await eventually(connected, timeout=45)  # the child process connects
        (child,) = await admin.list_workers("pool-work")
        assert pool.pids == [int(child.labels["pid"])]
        await admin.stop_worker(child.worker_id)
        async with asyncio.timeout(45):
            while (event := await anext(events)).kind != "exited":
                pass
        assert (event.returncode, event.expected) == (0, True)
        assert "stopped on purpose" in event.reason and "not replaced" in event.reason
        assert (pool.pids, pool.desired_workers) == ([], 0)
    finally:
        await pool.shutdown()


async def _concurrency_is(worker: Worker, n: int) -> bool:
    """Whether the worker has applied a SET_CONCURRENCY command (it reads it from its stream after the
    ControlWorker call that sent it has returned)."""
    return worker.concurrency == n
