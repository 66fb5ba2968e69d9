"""`WorkerManager` and ``qm worker --autoscale`` against a real server, with real worker processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import psutil
import pytest

from queue_manager import JobState, PoolEvent, QueueManager, WorkerManager
from queue_manager.children import RestartPacer
from queue_manager.cli import main
from tests.conftest import RunningServer, ServerFactory
from tests.ledger.faultkit import until as eventually

WAIT = 45.0

APP = """
import asyncio
import os
import time

from queue_manager import QueueManager

qm = QueueManager()
LOG = os.environ.get("POOL_TEST_LOG", os.devnull)


@qm.processor("pool-work")
async def work(job):
    with open(LOG + ".started", "a") as started:
        started.write(f"{job.id}\\n")
    await asyncio.sleep(job.data["sleep"])
    with open(LOG, "a") as log:  # one short append per finished run: lines from all processes stay whole
        log.write(f"{job.id} {os.getpid()} {time.time()}\\n")
    return os.getpid()


@qm.processor("pool-kill")
async def kill_me(job):
    if not job.redelivery:
        await asyncio.sleep(600)  # the test kills this process first
    return "redelivered"
"""


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh module (its own QueueManager) importable here and in the pool's processes."""
    name = f"pool_app_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(APP)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def pool_env(tmp_path: Path) -> dict[str, str]:
    return {"POOL_TEST_LOG": str(tmp_path / "runs.log"), "PYTHONPATH": os.pathsep.join(sys.path)}


def make_pool(app: str, server: RunningServer, tmp_path: Path, **kwargs: object) -> WorkerManager:
    settings: dict[str, object] = {
        "server": server.address,
        "concurrency": 2,
        "max_cpu": None,  # the test machine is shared: its load must not hold the pool back
        "max_memory": None,
        "interval": 0.2,
        "scale_up_cooldown": 0.5,
        "scale_down_delay": 1.0,
        "restart_delay": 0.2,
        "grace": 10.0,
        "env": pool_env(tmp_path),
        "cwd": tmp_path,
        **kwargs,
    }
    return WorkerManager(app, **settings)  # type: ignore[arg-type]


async def until(
    events: AsyncIterator[PoolEvent], pool: WorkerManager, check: Callable[[WorkerManager], bool]
) -> list[PoolEvent]:
    """Reads events until ``check(pool)`` holds (checked first too); returns those read."""
    seen: list[PoolEvent] = []
    async with asyncio.timeout(WAIT):
        while not check(pool):
            seen.append(await anext(events))
    return seen


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def test_grows_with_a_backlog_shrinks_when_idle_and_runs_every_job_once(
    server: RunningServer, app: str, tmp_path: Path
) -> None:
    client = QueueManager(server.address)
    await client.register_queue("pool-work")
    ids = await client.add_bulk("pool-work", [{"name": "w", "data": {"sleep": 0.3}} for _ in range(80)])
    pool = make_pool(app, server, tmp_path, queues=["pool-work"], min_workers=1, max_workers=3)
    events = pool.events()
    started: list[int] = []
    try:
        await pool.start()
        seen = await until(events, pool, lambda p: len(p.pids) == 3)
        assert pool.desired_workers == 3 and pool.workers == 3
        started += [e.pid for e in seen if e.kind == "started" and e.pid]
        assert "80 job(s) waiting or running need 40 process(es) of 2; capped at max 3" in [
            e.reason for e in seen if e.kind == "desired"
        ]

        # Empty again: after the delay the pool stops its extra processes, gracefully.
        seen = await until(events, pool, lambda p: p.desired_workers == 1 and len(p.pids) == 1)
        exits = [e for e in seen if e.kind == "exited"]
        async with asyncio.timeout(WAIT):
            while len(exits) < 2:  # both can end before the test reads the first one's event
                event = await anext(events)
                exits += [event] if event.kind == "exited" else []
        assert len(exits) == 2 and all(e.expected and e.returncode == 0 for e in exits), exits
        assert pool.workers == 1
        metrics = await client.get_queue_metrics("pool-work")
        assert (metrics.completed_total, metrics.waiting, metrics.active) == (80, 0, 0)
        assert metrics.stalled_total == 0

        runs = [line.split() for line in (tmp_path / "runs.log").read_text().splitlines()]
        assert Counter(run[0] for run in runs) == Counter(ids)  # every job ran once: none lost, none twice
        assert len({run[1] for run in runs}) >= 2, "the backlog was worked by more than one process"
    finally:
        await pool.shutdown()
        await client.shutdown()
    assert [e async for e in events][-1].kind == "exited"  # the stream ends at shutdown
    assert started and all(gone(pid) for pid in started)
    assert pool.pids == []


async def test_beside_another_worker_on_its_queue_the_pool_sizes_for_its_share(
    server: RunningServer, app: str, tmp_path: Path
) -> None:
    """A worker outside the pool with 50 slots on the same queue: 40 jobs are the pool's share of 2 (one
    process of 2), not 20 processes' worth (capped at 3), as if it were the queue's only consumer."""
    client = QueueManager(server.address)
    await client.register_queue("pool-work")
    started = asyncio.Event()

    @client.processor("pool-work")
    async def elsewhere(job: object) -> None:
        started.set()
        await asyncio.sleep(2.0)

    other = await client.start_workers("pool-work", concurrency=50)
    decided: list[PoolEvent] = []
    pool = make_pool(
        app, server, tmp_path, queues=["pool-work"], min_workers=1, max_workers=3, on_event=decided.append
    )
    try:
        await client.add_bulk("pool-work", [{"name": "w", "data": {"sleep": 2.0}} for _ in range(40)])
        async with asyncio.timeout(WAIT):
            await started.wait()
        await pool.start()

        async def looked() -> bool:
            return "other slot(s)" in pool.reason  # a decision is not an event when it changes nothing

        await eventually(looked, "the pool to decide beside the other worker", WAIT)
        assert "beside 50 other slot(s) needs 1 process(es)" in pool.reason, pool.reason

        async def done() -> bool:
            return (await client.get_queue_metrics("pool-work")).completed_total == 40

        await eventually(done, "the 40 jobs to complete", WAIT)  # the pool looked all the while they ran
        assert pool.desired_workers == 1, pool.reason
        assert [e.desired for e in decided if e.kind == "desired"] in ([], [1]), decided
    finally:
        await pool.shutdown()
        await other.shutdown()
        await client.shutdown()


async def test_a_killed_process_is_replaced_and_its_job_recovered(
    server_factory: ServerFactory, app: str, tmp_path: Path
) -> None:
    server = await server_factory(lease_ms=3_000)  # the lease is the backstop; the stream's end comes first
    client = QueueManager(server.address)
    await client.register_queue("pool-kill")
    pool = make_pool(app, server, tmp_path, queues=["pool-kill"], min_workers=1, max_workers=1)
    events = pool.events()
    try:
        await pool.start()
        job = await client.add_job("pool-kill", "k")
        async with asyncio.timeout(WAIT):
            async for seen in client.watch_job("pool-kill", job.id):
                if seen.state is JobState.ACTIVE:
                    break
        victim = int(seen.worker_id.rsplit("-", 2)[1])  # {host}-{pid}-{hex}
        assert pool.pids == [victim]
        os.kill(victim, signal.SIGKILL)

        read = await until(events, pool, lambda p: bool(p.pids) and p.pids != [victim])
        exited = next(e for e in read if e.kind == "exited")
        assert (exited.pid, exited.returncode, exited.expected) == (victim, -signal.SIGKILL, False)
        assert "exited unexpectedly (killed by SIGKILL)" in exited.reason
        assert read[-1].kind == "started" and read[-1].pid != victim

        done = await client.wait_for_job("pool-kill", job.id, timeout=WAIT)
        assert (done.state, done.result, done.stalled_count) == (JobState.COMPLETED, "redelivered", 1)
        replacement = pool.pids
    finally:
        await pool.shutdown()
        await client.shutdown()
    assert gone(victim) and all(gone(pid) for pid in replacement)


async def test_shutdown_lets_running_jobs_finish(server: RunningServer, app: str, tmp_path: Path) -> None:
    client = QueueManager(server.address)
    await client.register_queue("pool-work")
    pool = make_pool(app, server, tmp_path, queues=["pool-work"], min_workers=1, max_workers=1)
    try:
        await pool.start()
        job = await client.add_job("pool-work", "slow", {"sleep": 2.0})
        # Running, not only leased: a job delivered as the stop began goes back unstarted (no stall), as it
        # should, and the test would wait for nothing.
        started = tmp_path / "runs.log.started"

        async def running() -> bool:
            return started.exists() and job.id in started.read_text().split()

        await eventually(running, "the job to start in a worker process", WAIT)
        pids = pool.pids
        await pool.shutdown(grace=20.0)
        done = await client.get_job("pool-work", job.id)
        assert (done.state, done.stalled_count) == (JobState.COMPLETED, 0)
        assert all(gone(pid) for pid in pids)
    finally:
        await pool.shutdown()
        await client.shutdown()


def test_constructor_refuses_what_it_cannot_run(app: str) -> None:
    with pytest.raises(ValueError, match=r"min_workers \(3\) must not be more than max_workers \(2\)"):
        WorkerManager(app, min_workers=3, max_workers=2)
    with pytest.raises(ValueError, match="has no processor for queue\\(s\\) nope"):
        WorkerManager(app, queues=["pool-work", "nope"])
    with pytest.raises(ValueError, match="target_wait names queue\\(s\\) the pool does not work: other"):
        WorkerManager(app, queues=["pool-work"], target_wait={"other": 5})
    with pytest.raises(ValueError, match=r"interval must be 0\.1 to 60 seconds"):
        WorkerManager(app, interval=0.01)
    with pytest.raises(ValueError, match="cannot import 'no_such_module_here'"):
        WorkerManager("no_such_module_here")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--autoscale", "5:2"], "argument --autoscale: MIN (5) must not be more than MAX (2)"),
        (["--autoscale=-1:2"], "argument --autoscale: MIN must be 0 or more, got -1"),
        (["--autoscale", "0:0"], "argument --autoscale: MAX must be at least 1, got 0"),
        (["--autoscale", "one:4"], "argument --autoscale: MIN and MAX must be whole numbers, e.g. 1:8"),
        (["--autoscale", "4"], "argument --autoscale: expected MIN:MAX, e.g. 1:8, got '4'"),
        (["--autoscale", "10,3"], "got '10,3' (Celery's MAX,MIN order is not used)"),
        (["--autoscale", "1:2", "--max-cpu", "0"], "argument --max-cpu: expected a percentage above 0"),
        (
            ["--autoscale", "1:2", "--max-memory", "lots"],
            "argument --max-memory: expected a percentage or 'off'",
        ),
        (
            ["--autoscale", "1:2", "--target-wait", "0"],
            "argument --target-wait: expected more than 0 seconds",
        ),
        (
            ["--autoscale", "1:2", "--scale-down-delay", "-3"],
            "argument --scale-down-delay: expected a finite",
        ),
        (["--target-wait", "5"], "qm: error: --target-wait needs --autoscale MIN:MAX"),
        (
            ["--autoscale", "1:2", "--queue", "nope"],
            "error: INVALID_ARGUMENT: 'APP' has no processor for queue(s) nope",
        ),
    ],
)
def test_cli_refuses_bad_autoscale_options(
    app: str, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        status = main(["worker", app, *argv])
    except SystemExit as exc:  # argparse's own refusals
        status = int(exc.code or 0)
    err = capsys.readouterr().err
    assert status in (1, 2)
    assert message.replace("APP", app) in err, err
    assert "Traceback" not in err


def test_cli_bad_import_path_with_autoscale(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["worker", "no_such_module_here", "--autoscale", "1:2"]) == 2
    assert "qm: error: cannot import 'no_such_module_here'" in capsys.readouterr().err


async def test_cli_pool_stops_its_processes_on_sigterm_and_they_stop_if_it_is_killed(
    server: RunningServer, app: str, tmp_path: Path
) -> None:
    client = QueueManager(server.address)
    await client.register_queue("pool-work")
    await client.register_queue("pool-kill")
    argv = [sys.executable, "-m", "queue_manager.cli", "--server", server.address, "worker", app]
    argv += ["--queue", "pool-work", "--autoscale", "2:2", "--max-cpu", "off", "--max-memory", "off"]
    env = {**os.environ, **pool_env(tmp_path)}
    children: list[int] = []
    pool: asyncio.subprocess.Process | None = None
    try:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pool = await asyncio.create_subprocess_exec(*argv, cwd=tmp_path, env=env)
            children = await connected_pids(client, lambda n: n == 2)
            assert all(pid in {c.pid for c in psutil.Process(pool.pid).children()} for pid in children)
            pool.send_signal(sig)
            assert await asyncio.wait_for(pool.wait(), WAIT) == (0 if sig == signal.SIGTERM else -sig)
            # Killed, the pool cannot stop them: each sees its stdin close and shuts down by itself.
            await connected_pids(client, lambda n: n == 0)
            async with asyncio.timeout(WAIT):
                while True:  # they are not our children: no exit to await
                    if all(gone(pid) for pid in children):
                        break
                    await asyncio.sleep(0.05)
    finally:
        if pool is not None and pool.returncode is None:
            pool.kill()
            await pool.wait()
        for pid in children:  # only when the test failed: its orphans must not outlive it
            with contextlib.suppress(psutil.NoSuchProcess):
                child = psutil.Process(pid)
                if app in " ".join(child.cmdline()):
                    child.kill()
        await client.shutdown()


async def connected_pids(client: QueueManager, count_ok: Callable[[int], bool]) -> list[int]:
    """The pids of the workers of pool-work once their number satisfies ``count_ok`` (server-pushed)."""
    async with asyncio.timeout(WAIT):
        async for snapshot in client.watch_metrics("pool-work", interval=0.1, include_workers=True):
            pids = [int(w.labels["pid"]) for w in snapshot.workers if "pool-work" in w.queues]
            if count_ok(len(pids)):
                return pids
    raise AssertionError("the metrics stream ended")


async def test_replacements_of_processes_that_keep_dying_back_off() -> None:
    pacer = RestartPacer(first_delay=1.0, max_delay=8.0)
    assert [pacer.died(0.5) for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert 7.0 < pacer.wait() <= 8.0
    assert pacer.died(8.0) == 0.0 and pacer.wait() == 0.0  # one that ran long is replaced at once
    assert pacer.died(None) == 1.0  # could not start: counts as dying young
