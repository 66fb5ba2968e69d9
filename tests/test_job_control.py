"""Job control and visibility end to end: logs, waiting for a result, retry, promote, priority, attempts.

A real server on a real Valkey, driven through the Python client and worker (and a raw worker stream where
the server side must be seen exactly).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from queue_manager import (
    FailedPreconditionError,
    InvalidArgumentError,
    JobContext,
    JobPriority,
    JobState,
    NotFoundError,
    QueueManager,
)
from queue_manager.v1 import jobs_pb2, queue_service_pb2, queue_service_pb2_grpc, types_pb2
from queue_manager.v1 import worker_service_pb2 as wpb
from queue_manager_server.engine import Engine
from queue_manager_server.engine.job_control import LOG_KEEP, LOG_LINE_CHARS, JobControl
from queue_manager_server.services.job_control import RECHECK_S
from tests.conftest import RunningServer
from tests.rawworker import RawWorker, lease
from tests.test_client_e2e import Calls

WAIT = 20.0


@pytest.fixture
async def qm(server: RunningServer) -> AsyncIterator[QueueManager]:
    client = QueueManager(address=server.address, concurrency=4, shutdown_grace=5.0)
    yield client
    await client.shutdown()


async def wait(qm: QueueManager, queue: str, job_id: str) -> Any:
    return await qm.wait_for_job(queue, job_id, timeout=WAIT)


# ---- logs -------------------------------------------------------------------------------------------


async def test_processor_logs_show_in_get_job_and_page_through_get_job_logs(qm: QueueManager) -> None:
    await qm.register_queue("logs")

    @qm.processor("logs")
    def work(job: JobContext) -> str:  # a plain def: runs in a thread, log() must be safe there
        for i in range(30):
            job.log(f"line {i}")
        return "done"

    job = await qm.add_job("logs", "x")
    await qm.start_workers()
    assert (await wait(qm, "logs", job.id)).state is JobState.COMPLETED

    stored = await qm.get_job("logs", job.id)
    assert stored.log_count == 30
    assert [line.message for line in stored.logs] == [f"line {i}" for i in range(10, 30)]
    assert all(line.time is not None for line in stored.logs)
    assert stored.logs[0].time <= stored.logs[-1].time  # type: ignore[operator]

    pages: list[list[str]] = []
    token = ""
    while True:
        lines, token = await qm.get_job_logs("logs", job.id, page_size=8, page_token=token)
        pages.append([line.message for line in lines])
        if not token:
            break
    assert [len(p) for p in pages] == [8, 8, 8, 6]
    assert [m for p in pages for m in p] == [f"line {i}" for i in range(30)]


async def test_async_processor_awaits_log_and_lines_come_before_the_outcome(qm: QueueManager) -> None:
    await qm.register_queue("alogs")

    @qm.processor("alogs")
    async def work(job: JobContext) -> None:
        await job.log("starting")
        job.log(12345)  # type: ignore[arg-type]  # not a str: logged as str(value)
        raise RuntimeError("boom")

    job = await qm.add_job("alogs", "x")
    await qm.start_workers()
    failed = await wait(qm, "alogs", job.id)
    assert failed.state is JobState.FAILED
    assert [line.message for line in failed.logs] == ["starting", "12345"]


async def test_log_bound_line_cut_and_stable_page_tokens(engine: Engine) -> None:
    from tests.test_engine import job, register

    await register(engine)
    control = JobControl(engine)
    await engine.add_jobs("q", [job("x")])
    (j,) = (await engine.claim("q", 1, "tok", "w", 30_000)).jobs
    assert await control.add_logs("q", [(j.id, "tok", [(0, "x" * LOG_LINE_CHARS)])]) == [0]
    first = await control.job_logs("q", j.id, 0, 2)
    assert (first.first, first.end, first.kept) == (0, 1, 1)
    # A page read, then old lines dropped: the next page continues by line number, not by list index.
    for start in range(1, LOG_KEEP + 50, 500):
        lines = [(1_000 + n, f"line {n}") for n in range(start, min(start + 500, LOG_KEEP + 50))]
        assert await control.add_logs("q", [(j.id, "tok", lines)]) == [0]
    page = await control.job_logs("q", j.id, 0, 3)
    assert (page.first, page.end, page.kept) == (50, LOG_KEEP + 50, LOG_KEEP)
    assert [(x.time_ms, x.text) for x in page.lines] == [
        (1_050, "line 50"),
        (1_051, "line 51"),
        (1_052, "line 52"),
    ]
    tail = await control.job_view("q", j.id)
    assert (
        tail.log_count == LOG_KEEP and tail.logs[-1].text == f"line {LOG_KEEP + 49}" and len(tail.logs) == 20
    )


async def test_log_lines_of_a_stale_lease_are_rejected(server: RunningServer, engine: Engine) -> None:
    async with grpc.aio.insecure_channel(server.address) as ch:
        stub = queue_service_pb2_grpc.QueueServiceStub(ch)
        await stub.RegisterQueue(queue_service_pb2.RegisterQueueRequest(name="stale"))
        added = await stub.AddJob(jobs_pb2.AddJobRequest(queue_name="stale", job=jobs_pb2.NewJob(name="x")))
        w = RawWorker(server.address, ["stale"])
        await w.connect(credits=1)
        (leased,) = await w.jobs(1)
        line = types_pb2.JobLogLine(message="too long " + "y" * 3000)
        stale = wpb.LeaseRef(queue_name="stale", job_id=added.job.id, lease_token="not-the-token")
        w.report(
            wpb.WorkerReport(logs=[wpb.JobLogs(lease=stale, lines=[types_pb2.JobLogLine(message="bad")])])
        )
        ack = await w.until("ack")
        assert [r.code for r in ack.ack.results] == [grpc.StatusCode.FAILED_PRECONDITION.value[0]]
        w.report(wpb.WorkerReport(logs=[wpb.JobLogs(lease=lease(leased), lines=[line])]))
        w.report(
            wpb.WorkerReport(
                completions=[
                    wpb.JobCompletion(queue_name="stale", job_id=added.job.id, lease_token=leased.lease_token)
                ]
            )
        )
        w.half_close()
        await w.wait_end()
        await w.close()
        got = (await stub.GetJob(jobs_pb2.GetJobRequest(queue_name="stale", job_id=added.job.id))).job
        assert got.log_count == 1
        assert [len(x.message) for x in got.logs] == [LOG_LINE_CHARS]  # cut to the limit, "bad" never stored
        assert got.logs[0].message.startswith("too long ")


async def test_logs_go_with_the_job(qm: QueueManager, engine: Engine) -> None:
    await qm.register_queue("gone")
    keys = engine.keys("gone")

    @qm.processor("gone")
    async def work(job: JobContext) -> None:
        job.log("hello")

    kept = await qm.add_job("gone", "kept")
    dropped = await qm.add_job("gone", "dropped", options={"remove_on_complete": True})
    # Followed before it runs: a job removed as it finishes still ends the wait in the state it finished in.
    follow = qm.watch_job("gone", dropped.id, timeout=WAIT)
    assert (await anext(follow)).state is JobState.WAITING
    await qm.start_workers()
    assert (await wait(qm, "gone", kept.id)).state is JobState.COMPLETED
    assert [j.state async for j in follow][-1] is JobState.COMPLETED
    with pytest.raises(NotFoundError):  # too late to follow it now
        await wait(qm, "gone", dropped.id)
    assert await engine.redis.exists(keys.logs(kept.id)) == 1
    assert await engine.redis.exists(keys.logs(dropped.id), keys.job(dropped.id)) == 0
    assert await qm.remove_job("gone", kept.id) is JobState.COMPLETED
    assert await engine.redis.exists(keys.logs(kept.id)) == 0
    with pytest.raises(NotFoundError):
        await qm.get_job_logs("gone", kept.id)


async def test_a_follower_waits_for_the_late_event_of_a_job_removed_as_it_finished(
    server: RunningServer, qm: QueueManager
) -> None:
    """Pub/sub lags the script that published: a follower woken by something else (a re-check, a
    resubscription) can find the job already removed while its last event still says "active". It waits for
    the event naming the state the job finished in rather than answering NOT_FOUND."""
    await qm.register_queue("late")
    waiters = server.app.queue_service.waiters
    real_notify = waiters.notify
    held: list[asyncio.TimerHandle] = []

    def late_notify(queue: str, job_id: str, state: str) -> None:
        if state != "completed":
            real_notify(queue, job_id, state)
            return
        waiters.notify_all()  # woken before the event: the read finds the job gone, the event says "active"
        held.append(asyncio.get_running_loop().call_later(0.3, real_notify, queue, job_id, state))

    waiters.notify = late_notify  # type: ignore[method-assign]

    @qm.processor("late")
    async def work(job: JobContext) -> None:
        pass

    job = await qm.add_job("late", "x", options={"remove_on_complete": True})
    follow = qm.watch_job("late", job.id, timeout=WAIT)
    assert (await anext(follow)).state is JobState.WAITING
    await qm.start_workers()
    states = [j.state async for j in follow]
    assert states[-1] is JobState.COMPLETED
    assert held, "the completed event was not held back: the test did not make the race"


# ---- waiting for a job ------------------------------------------------------------------------------


async def test_wait_for_job_returns_when_the_job_completes(qm: QueueManager) -> None:
    await qm.register_queue("w")
    job = await qm.add_job("w", "x", {"n": 2})
    seen: list[JobState | None] = []
    first = asyncio.Event()

    async def watch() -> None:
        async for j in qm.watch_job("w", job.id):
            seen.append(j.state)
            first.set()

    watcher = asyncio.create_task(watch())
    waiter = asyncio.create_task(qm.wait_for_job("w", job.id))
    async with asyncio.timeout(WAIT):
        await first.wait()  # both calls follow the job before any worker exists

    @qm.processor("w")
    async def work(j: JobContext) -> int:
        return int(j.data["n"]) * 21

    loop = asyncio.get_running_loop()
    started = loop.time()
    await qm.start_workers()
    async with asyncio.timeout(WAIT):
        done = await waiter
        await watcher
    assert (done.state, done.result, done.attempts_made) == (JobState.COMPLETED, 42, 1)
    assert seen[0] is JobState.WAITING and seen[-1] is JobState.COMPLETED
    assert loop.time() - started < RECHECK_S  # pushed by the server, not found by a periodic re-check


async def test_wait_for_job_times_out_with_the_unfinished_state(qm: QueueManager) -> None:
    await qm.register_queue("idle")
    job = await qm.add_job("idle", "x", options={"delay": 3_600_000})
    with pytest.raises(TimeoutError, match="still delayed"):
        await qm.wait_for_job("idle", job.id, timeout=0.2)
    states = [j.state async for j in qm.watch_job("idle", job.id, timeout=0.2)]
    assert states == [JobState.DELAYED]
    with pytest.raises(NotFoundError):
        await qm.wait_for_job("idle", "no-such-job", timeout=1)


async def test_wait_for_job_follows_retries_to_the_final_failure(qm: QueueManager) -> None:
    await qm.register_queue("wf")
    runs = Calls()

    seen_active = asyncio.Event()

    @qm.processor("wf")
    async def work(job: JobContext) -> None:
        runs.add(job.attempts_made)
        if job.attempts_made == 0:
            # The first run lasts until the watcher has seen it active: a run that ends within the
            # watcher's read of the job is otherwise never shown active (only state changes are sent).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(seen_active.wait(), WAIT)
        raise RuntimeError(f"boom {job.attempts_made}")

    job = await qm.add_job("wf", "x", options={"attempts": 2, "backoff": 50})
    states = []
    await qm.start_workers()
    async for j in qm.watch_job("wf", job.id, timeout=WAIT):
        states.append(j.state)
        if j.state is JobState.ACTIVE:
            seen_active.set()
    assert states[-1] is JobState.FAILED and JobState.ACTIVE in states
    failed = await qm.get_job("wf", job.id)
    assert (failed.failed_reason, failed.attempts_made) == ("boom 1", 2)
    assert runs.items == [0, 1]


# ---- retry, promote, priority -----------------------------------------------------------------------


async def test_retry_job_runs_a_failed_job_again_with_attempts_counted_afresh(qm: QueueManager) -> None:
    await qm.register_queue("r")
    fail = {"on": True}

    @qm.processor("r")
    async def work(job: JobContext) -> str:
        if fail["on"]:
            raise RuntimeError("not yet")
        return f"ok after {job.attempts_made}"

    job = await qm.add_job("r", "x", options={"attempts": 2})
    await qm.start_workers()
    failed = await wait(qm, "r", job.id)
    assert (failed.state, failed.attempts_made) == (JobState.FAILED, 2)
    with pytest.raises(FailedPreconditionError, match="is failed; only delayed"):
        await qm.promote_job("r", job.id)
    fail["on"] = False
    again = await qm.retry_job("r", job.id)
    assert again.state in (JobState.WAITING, JobState.ACTIVE)
    assert (again.attempts_made, again.stalled_count, again.failed_reason) == (0, 0, "not yet")
    done = await wait(qm, "r", job.id)
    assert (done.state, done.result, done.attempts_made) == (JobState.COMPLETED, "ok after 0", 1)
    with pytest.raises(FailedPreconditionError, match="is completed; only failed or cancelled"):
        await qm.retry_job("r", job.id)
    with pytest.raises(NotFoundError):
        await qm.retry_job("r", "no-such-job")


async def test_retry_failed_returns_the_count_and_the_jobs_run_again(qm: QueueManager) -> None:
    await qm.register_queue("ra")
    fail = {"on": True}
    runs = Calls()

    @qm.processor("ra")
    async def work(job: JobContext) -> None:
        runs.add(job.id)
        if fail["on"]:
            raise RuntimeError("down")

    ids = [(await qm.add_job("ra", f"j{i}")).id for i in range(3)]
    await qm.start_workers()
    for job_id in ids:
        assert (await wait(qm, "ra", job_id)).state is JobState.FAILED
    fail["on"] = False
    assert await qm.retry_failed("ra") == 3
    for job_id in ids:
        assert (await wait(qm, "ra", job_id)).state is JobState.COMPLETED
    assert sorted(runs.items) == sorted(ids * 2)
    assert await qm.retry_failed("ra") == 0
    assert await qm.retry_failed("ra", "cancelled") == 0
    with pytest.raises(ValueError, match="'failed' or 'cancelled'"):
        await qm.retry_failed("ra", "waiting")
    with pytest.raises(NotFoundError):
        await qm.retry_failed("no-such-queue")


async def test_promote_makes_a_delayed_job_run_now(qm: QueueManager) -> None:
    await qm.register_queue("p")
    job = await qm.add_job("p", "later", options={"delay": 3_600_000})
    assert job.state is JobState.DELAYED
    promoted = await qm.promote_job("p", job.id)
    assert promoted.state is JobState.WAITING and promoted.run_at is None
    with pytest.raises(FailedPreconditionError, match="is waiting; only delayed"):
        await qm.promote_job("p", job.id)
    qm.register_processor("p", lambda j: "ran")
    await qm.start_workers()
    assert (await wait(qm, "p", job.id)).result == "ran"
    with pytest.raises(NotFoundError):
        await qm.promote_job("p", "no-such-job")


async def test_change_priority_reorders_waiting_jobs_keeping_their_age(qm: QueueManager) -> None:
    await qm.register_queue("prio")
    x = await qm.add_job("prio", "x", options={"priority": "low"})
    await qm.add_job("prio", "y", options={"priority": "high"})
    await qm.add_job("prio", "z", options={"priority": "high"})
    w = await qm.add_job("prio", "w")
    d = await qm.add_job("prio", "d", options={"delay": 3_600_000, "priority": "background"})
    changed = await qm.change_priority("prio", x.id, JobPriority.HIGH)
    assert changed.priority is JobPriority.HIGH and changed.options.priority is JobPriority.HIGH
    await qm.change_priority("prio", w.id, "critical")
    waiting, _ = await qm.list_jobs("prio", "waiting")
    # w is critical now; x joins the high level ahead of y and z, because it was added before them.
    assert [j.name for j in waiting] == ["w", "x", "y", "z"]
    assert (await qm.change_priority("prio", d.id, 1)).state is JobState.DELAYED
    await qm.promote_job("prio", d.id)  # a delayed job takes its new level when it becomes due
    waiting, _ = await qm.list_jobs("prio", "waiting")
    assert [j.name for j in waiting] == ["w", "d", "x", "y", "z"]
    order = Calls()
    gate = asyncio.Event()

    @qm.processor("prio")
    async def work(job: JobContext) -> None:
        order.add(job.name)
        await gate.wait()

    await qm.start_workers(concurrency=1)
    await order.wait_for(1)
    with pytest.raises(FailedPreconditionError, match="is active; only a waiting or delayed"):
        await qm.change_priority("prio", w.id, "low")
    gate.set()
    await order.wait_for(5)
    assert order.items == ["w", "d", "x", "y", "z"]
    with pytest.raises(ValueError):
        await qm.change_priority("prio", x.id, 9)


# ---- attempts made ----------------------------------------------------------------------------------


async def test_attempts_made_counts_finished_runs_and_retries_are_unchanged(qm: QueueManager) -> None:
    await qm.register_queue("att")
    seen = Calls()

    @qm.processor("att")
    async def work(job: JobContext) -> str:
        seen.add((job.name, job.attempts_made, job.redelivery))
        if (job.name == "flaky" and job.attempts_made < 2) or job.name == "broken":
            raise RuntimeError("no")
        return "ok"

    once = await qm.add_job("att", "once", options={"attempts": 3})
    flaky = await qm.add_job("att", "flaky", options={"attempts": 3})
    broken = await qm.add_job("att", "broken", options={"attempts": 3})
    await qm.start_workers()
    assert ((await wait(qm, "att", once.id)).attempts_made) == 1  # a completed first run shows 1
    flaky_done = await wait(qm, "att", flaky.id)
    assert (flaky_done.state, flaky_done.attempts_made) == (JobState.COMPLETED, 3)
    broken_done = await wait(qm, "att", broken.id)
    assert (broken_done.state, broken_done.attempts_made) == (JobState.FAILED, 3)
    runs = {name: [(a, r) for n, a, r in seen.items if n == name] for name in ("once", "flaky", "broken")}
    # attempts=3 still means at most 3 runs; the processor sees the failed runs before it, never a redelivery.
    assert runs == {
        "once": [(0, False)],
        "flaky": [(0, False), (1, False), (2, False)],
        "broken": [(0, False), (1, False), (2, False)],
    }


# ---- bad input --------------------------------------------------------------------------------------


async def test_bad_input_gets_clear_statuses(qm: QueueManager, server: RunningServer) -> None:
    await qm.register_queue("bad")
    job = await qm.add_job("bad", "x")
    for call in (
        qm.get_job_logs("bad", "nope"),
        qm.get_job_logs("nope", "nope"),
        qm.change_priority("bad", "nope", 1),
        qm.wait_for_job("nope", "x", timeout=1),
    ):
        with pytest.raises(NotFoundError):
            await call
    with pytest.raises(InvalidArgumentError, match="page_token"):
        await qm.get_job_logs("bad", job.id, page_token="bm90LWEtdG9rZW4=")
    async with grpc.aio.insecure_channel(server.address) as ch:
        stub = queue_service_pb2_grpc.QueueServiceStub(ch)
        bad_requests: list[tuple[Any, Any, str]] = [
            (stub.RetryFailedJobs, jobs_pb2.RetryFailedJobsRequest(queue_name="bad", state=1), "state"),
            (
                stub.ChangeJobPriority,
                jobs_pb2.ChangeJobPriorityRequest(queue_name="bad", job_id=job.id),
                "priority",
            ),
            (
                stub.GetJobLogs,
                jobs_pb2.GetJobLogsRequest(queue_name="bad", job_id=job.id, page_size=1001),
                "page_size",
            ),
            (stub.RetryJob, jobs_pb2.RetryJobRequest(queue_name="bad", job_id="a b"), "job_id"),
            (stub.PromoteJob, jobs_pb2.PromoteJobRequest(queue_name="b{x}", job_id="a"), "queue_name"),
        ]
        for method, request, field in bad_requests:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await method(request)
            assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT and field in (
                err.value.details() or ""
            )
        stream = stub.WaitForJob(jobs_pb2.WaitForJobRequest(queue_name="bad", job_id="nope"))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stream.read()
        assert err.value.code() is grpc.StatusCode.NOT_FOUND


# ---- qm jobs ------------------------------------------------------------------------------------------


async def test_qm_jobs_control_commands(
    qm: QueueManager, server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.test_cli import qm_cli, qm_json

    await qm.register_queue("cli")
    fail = {"on": True}

    @qm.processor("cli")
    async def work(job: JobContext) -> str:
        job.log(f"run {job.attempts_made}")
        if fail["on"]:
            raise RuntimeError("cli boom")
        return "fine"

    added = await qm_json(
        capsys, server, "add", "cli", "x", "--dedup-key", "once", "--dedup-ttl", "60000", "--delay", "3600000"
    )
    assert (await qm_json(capsys, server, "add", "cli", "y", "--dedup-key", "once"))["id"] == added["id"]
    status, _, err = await qm_cli(
        capsys, "--server", server.address, "jobs", "wait", "cli", added["id"], "--timeout", "100"
    )
    assert status == 124 and "still delayed" in err
    changed = await qm_json(capsys, server, "jobs", "priority", "cli", added["id"], "high")
    assert (changed["priority"], changed["state"]) == ("high", "delayed")
    await qm.start_workers()
    assert (await qm_json(capsys, server, "jobs", "promote", "cli", added["id"]))["id"] == added["id"]
    status, out, _ = await qm_cli(
        capsys, "--server", server.address, "-o", "json", "jobs", "wait", "cli", added["id"]
    )
    assert status == 1 and '"failed_reason": "cli boom"' in out
    fail["on"] = False
    assert (await qm_json(capsys, server, "jobs", "retry", "cli", added["id"]))["attempts_made"] == 0
    status, out, _ = await qm_cli(capsys, "--server", server.address, "jobs", "wait", "cli", added["id"])
    assert status == 0 and "fine" in out
    logs = await qm_json(capsys, server, "jobs", "logs", "cli", added["id"], "--page-size", "1", "--all")
    assert [line["message"] for line in logs["lines"]] == ["run 0", "run 0"] and logs["next_page_token"] == ""
    assert await qm_json(capsys, server, "jobs", "retry-all", "cli") == {
        "queue": "cli",
        "state": "failed",
        "retried": 0,
    }
    status, out, _ = await qm_cli(capsys, "--server", server.address, "jobs", "logs", "cli", added["id"])
    assert status == 0 and out.splitlines()[0].split() == ["TIME", "MESSAGE"] and out.count("run 0") == 2
    status, _, err = await qm_cli(capsys, "--server", server.address, "add", "cli", "z", "--dedup-ttl", "5")
    assert status == 2 and "--dedup-ttl needs --dedup-key" in err


async def test_a_cancelled_job_ends_the_wait_and_can_be_retried(qm: QueueManager, engine: Engine) -> None:
    await qm.register_queue("cx")
    jobs = [await qm.add_job("cx", f"j{i}", options={"dedup": f"k{i}"}) for i in range(3)]
    follow = qm.watch_job("cx", jobs[0].id, timeout=WAIT)
    assert (await anext(follow)).state is JobState.WAITING
    await qm.cancel_job("cx", jobs[0].id, "not needed")
    assert [j.state async for j in follow] == [JobState.CANCELLED]
    assert await engine.redis.exists(engine.keys("cx").dedup("k0")) == 0  # cancelling finishes the job
    again = await qm.retry_job("cx", jobs[0].id)
    assert (again.state, again.cancel_requested) == (JobState.WAITING, False)
    for job in jobs[1:]:
        await qm.cancel_job("cx", job.id)
    assert await qm.retry_failed("cx") == 0
    assert await qm.retry_failed("cx", JobState.CANCELLED) == 2
    waiting, _ = await qm.list_jobs("cx", "waiting")
    # j0 was retried on its own first; j1 and j2 oldest finish first, which two cancels in one millisecond
    # share (the set then orders them by their random ids).
    names = [j.name for j in waiting]
    assert names[0] == "j0" and sorted(names[1:]) == ["j1", "j2"]


async def test_retrying_failed_jobs_in_bulk_writes_each_job_twice_and_each_list_once(engine: Engine) -> None:
    """RetryFailedJobs after an outage may put back many thousands of jobs, a thousand per script call: per
    job one read (which also skips a job already gone) and two writes, the failed set and each level's list
    once per call (it ran six commands per job: an EXISTS, a ZREM and an RPUSH among them)."""
    from tests.test_engine import commands_of, job, register

    await register(engine)
    control = JobControl(engine)
    await engine.add_jobs("q", [job(f"j{i}", priority=2 + i % 2) for i in range(20)])
    claimed = (await engine.claim("q", 20, "t", "w", 30_000)).jobs
    failed = await engine.fail("q", [(j.id, "t", "boom", "", False) for j in claimed])
    assert [code for code, _ in failed] == [2] * 20
    # A failed job deleted meanwhile (its hash gone, its id still in the failed set) is skipped.
    await engine.redis.delete(engine.keys("q").job(claimed[-1].id))

    async def retry() -> None:
        assert await control.retry_jobs("q", "failed") == 19

    ran = await commands_of(engine, retry)
    # One HMGET is the queue's own check (which reads its job events' watch deadline too: common.lua watched).
    assert (ran["hmget"], ran["hdel"], ran["hset"], ran["rpush"], ran["zrem"]) == (21, 19, 19, 2, 1), ran
    assert "exists" not in ran or ran["exists"] <= 1, ran  # not one per job
    again = (await engine.claim("q", 20, "t2", "w", 30_000)).jobs
    # Their level's first in the order they failed (all in one millisecond here: by id), level 2 first.
    assert {j.id for j in again[:10]} == {j.id for j in claimed[:10]}
    assert {j.id for j in again[10:]} == {j.id for j in claimed[10:-1]}
    assert all(j.attempts_made == 0 for j in again)
    assert (await engine.metrics("q")).failed == 0
