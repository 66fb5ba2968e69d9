"""Cancel and server-enforced timeouts against a real Valkey and real servers: jobs waiting, delayed, paused
and running (async and plain-def processors), workers that never answer, two servers, the CLI."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import grpc
import pytest
from redis.asyncio import Redis

from queue_manager import (
    FailedPreconditionError,
    Job,
    JobContext,
    JobState,
    NotFoundError,
    QueueManager,
)
from queue_manager.cli import main
from queue_manager.v1 import worker_service_pb2 as pb
from queue_manager_server.engine.keys import QueueKeys
from tests.conftest import RunningServer, ServerFactory
from tests.rawworker import RawWorker, lease

WAIT = 20.0  # generous bound for anything awaited


@pytest.fixture
async def qm(server: RunningServer) -> AsyncIterator[QueueManager]:
    client = QueueManager(address=server.address, concurrency=2, shutdown_grace=5.0)
    yield client
    await client.shutdown()


async def until_state(qm: QueueManager, queue: str, job_id: str, state: JobState) -> Job:
    """The job once it finished (followed with WaitForJob), checked to be in `state`."""
    job = await qm.wait_for_job(queue, job_id, timeout=WAIT)
    assert job.state is state, job
    return job


async def command(w: RawWorker, timeout: float = WAIT) -> pb.ServerCommand:
    return (await w.until("command", timeout)).command


# ---- cancel: jobs that are not running ------------------------------------------------------------


async def test_cancel_of_waiting_delayed_and_paused_jobs_is_immediate(
    qm: QueueManager, redis: Redis, server: RunningServer
) -> None:
    await qm.register_queue("q")
    await qm.register_queue("held")
    waiting = await qm.add_job("q", "w")
    delayed = await qm.add_job("q", "d", None, {"delay": 60_000})
    await qm.pause_queue("held")
    paused = await qm.add_job("held", "p")

    a = await qm.cancel_job("q", waiting.id, "not needed")
    b = await qm.cancel_job("q", delayed.id)
    c = await qm.cancel_job("held", paused.id, "queue retired")
    assert [j.state for j in (a, b, c)] == [JobState.CANCELLED] * 3
    assert (a.cancel_reason, b.cancel_reason, c.cancel_reason) == ("not needed", "", "queue retired")
    assert a.finished_at is not None and not a.cancel_requested

    m = await qm.get_queue_metrics("q")
    assert (m.waiting, m.delayed, m.cancelled) == (0, 0, 2)
    assert (await qm.get_queue_metrics("held")).paused == 0
    listed, _ = await qm.list_jobs("q", JobState.CANCELLED)
    # Newest first, like failed jobs; two cancels within one millisecond tie, and then the larger id is first.
    newest_first = sorted((b, a), key=lambda j: (j.finished_at, j.id), reverse=True)
    assert [j.id for j in listed] == [j.id for j in newest_first]

    # A cancelled job is finished: nothing claims it, a second cancel is refused, unknown ids are not found.
    with pytest.raises(FailedPreconditionError, match="already cancelled"):
        await qm.cancel_job("q", waiting.id)
    with pytest.raises(NotFoundError):
        await qm.cancel_job("q", "no-such-job")
    with pytest.raises(NotFoundError):
        await qm.cancel_job("no-such-queue", waiting.id)
    keys = QueueKeys(server.prefix, "q")
    assert [await redis.llen(level) for level in keys.waiting_levels] == [0] * 5
    assert await redis.zcard(keys.delayed) == 0

    assert await qm.clean_queue("q", 0, JobState.CANCELLED) == 2
    assert (await qm.get_queue_metrics("q")).cancelled == 0


async def test_cancelled_chain_job_hands_off_at_once(
    qm: QueueManager, redis: Redis, server: RunningServer
) -> None:
    await qm.register_queue("first")
    await qm.register_queue("second")
    job = await qm.add_job(
        "first", "a", None, {"chain_to": [{"queue_name": "second", "job_name": "b"}], "delay": 60_000}
    )
    await qm.cancel_job("first", job.id)
    # The flow hand-off ran with the cancel (not left to the janitor): outbox empty, no link added.
    assert await redis.llen(QueueKeys(server.prefix, "first").flow_outbox) == 0
    assert (await qm.get_queue_metrics("second")).waiting == 0


# ---- cancel: running jobs ------------------------------------------------------------------------


async def test_cancel_of_a_running_async_job_cancels_its_task_via_another_server(
    server_factory: ServerFactory,
) -> None:
    worker_side, other = await server_factory(), await server_factory()
    started, saw_cancel = asyncio.Event(), asyncio.Event()
    async with (
        QueueManager(address=worker_side.address, shutdown_grace=5.0) as qm,
        QueueManager(address=other.address) as admin,
    ):
        await qm.register_queue("long")

        @qm.processor("long")
        async def run(job: JobContext) -> str:
            started.set()
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                saw_cancel.set()
                raise
            return "finished"

        await qm.start_workers()
        job = await qm.add_job("long", "x")
        async with asyncio.timeout(WAIT):
            await started.wait()
        # Cancelled through the other server: the event reaches the server holding the lease.
        asked = await admin.cancel_job("long", job.id, "user pressed stop")
        assert asked.state is JobState.ACTIVE and asked.cancel_requested
        # Well before the first heartbeat (10 s with the default 30 s lease), which would also tell it.
        async with asyncio.timeout(5):
            await saw_cancel.wait()
        done = await until_state(admin, "long", job.id, JobState.CANCELLED)
        assert done.cancel_reason == "user pressed stop" and done.result is None
        assert done.stalled_count == 0
        m = await admin.get_queue_metrics("long")
        assert (m.active, m.waiting, m.failed, m.cancelled) == (0, 0, 0, 1)


async def test_cancel_of_a_running_sync_job_sets_job_cancelled(qm: QueueManager) -> None:
    await qm.register_queue("sync")
    started = threading.Event()
    seen: list[bool] = []

    @qm.processor("sync")
    def run(job: JobContext) -> str:
        started.set()
        deadline = time.monotonic() + WAIT
        while not job.cancelled and time.monotonic() < deadline:
            time.sleep(0.01)
        seen.append(job.cancelled)
        return "stopped early"

    await qm.start_workers()
    job = await qm.add_job("sync", "x")
    await asyncio.to_thread(started.wait, WAIT)
    await qm.cancel_job("sync", job.id)
    done = await until_state(qm, "sync", job.id, JobState.CANCELLED)
    assert seen == [True]
    assert done.result is None  # a run that ends after CANCEL_JOB is reported cancelled, not completed


async def test_cancel_of_a_worker_that_never_answers_ends_when_its_lease_runs_out(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(lease_ms=1_000)
    async with QueueManager(address=server.address) as qm:
        await qm.register_queue("q")
        job = await qm.add_job("q", "x", None, {"max_stalled": 5})
        w = RawWorker(server.address, ["q"])
        try:
            await w.connect(credits=1)
            (leased,) = await w.jobs(1)
            await qm.cancel_job("q", job.id, "stop")
            told = await command(w)
            assert told.type == pb.SERVER_COMMAND_TYPE_CANCEL_JOB
            assert told.job == lease(leased) and told.reason == "cancelled: stop"
            assert not told.timed_out  # an operator's cancel: the worker reports the run cancelled
            # The worker neither stops nor heartbeats: the reaper ends the job cancelled, not waiting.
            done = await until_state(qm, "q", job.id, JobState.CANCELLED)
            assert done.stalled_count == 0 and (await qm.get_queue_metrics("q")).waiting == 0
            # Its late completion is refused.
            w.report(pb.WorkerReport(completions=[pb.JobCompletion(**_ref(leased))]))
            ack = await w.until("ack")
            assert ack.ack.results[0].code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
        finally:
            await w.close()


async def test_a_completion_that_arrives_first_wins(server: RunningServer) -> None:
    async with QueueManager(address=server.address) as qm:
        await qm.register_queue("q")
        job = await qm.add_job("q", "x")
        w = RawWorker(server.address, ["q"])
        try:
            await w.connect(credits=1)
            (leased,) = await w.jobs(1)
            await qm.cancel_job("q", job.id)
            await command(w)
            w.report(pb.WorkerReport(completions=[pb.JobCompletion(**_ref(leased))]))
            done = await until_state(qm, "q", job.id, JobState.COMPLETED)
            assert done.cancel_requested  # asked, but the run finished first
            with pytest.raises(FailedPreconditionError, match="already completed"):
                await qm.cancel_job("q", job.id)
        finally:
            await w.close()


async def test_a_failure_with_attempts_left_ends_a_cancel_requested_job_cancelled(
    server: RunningServer,
) -> None:
    async with QueueManager(address=server.address) as qm:
        await qm.register_queue("q")
        job = await qm.add_job("q", "x", None, {"attempts": 3})
        w = RawWorker(server.address, ["q"])
        try:
            await w.connect(credits=1)
            (leased,) = await w.jobs(1)
            await qm.cancel_job("q", job.id)
            w.report(pb.WorkerReport(failures=[pb.JobFailure(**_ref(leased), message="interrupted")]))
            done = await until_state(qm, "q", job.id, JobState.CANCELLED)  # recorded, but not retried
            assert (done.failed_reason, done.attempts_made) == ("interrupted", 1)
        finally:
            await w.close()


async def test_a_reported_stop_ends_the_job_cancelled_and_a_pending_cancel_is_told_again(
    server: RunningServer, redis: Redis
) -> None:
    async with QueueManager(address=server.address) as qm:
        await qm.register_queue("q")
        job = await qm.add_job("q", "x")
        w = RawWorker(server.address, ["q"])
        try:
            await w.connect(credits=1)
            (leased,) = await w.jobs(1)
            await qm.cancel_job("q", job.id)
            await command(w)
            # A lost event is made good by the next heartbeat: its ack comes with CANCEL_JOB again.
            w.report(pb.WorkerReport(extensions=[lease(leased)]))
            again = await command(w)
            assert again.job == lease(leased) and not again.timed_out
            w.report(pb.WorkerReport(cancelled=[lease(leased)]))
            done = await until_state(qm, "q", job.id, JobState.CANCELLED)
            assert done.stalled_count == 0
            # Run again, the job carries no pending cancel: an extension is acked, no CANCEL_JOB before it.
            assert not (await qm.retry_job("q", job.id)).cancel_requested
            w.report(pb.WorkerReport(credits=1))
            (rerun,) = await w.jobs(1)
            w.report(pb.WorkerReport(extensions=[lease(rerun)]))
            reply = await w.recv()
            assert reply.WhichOneof("kind") == "ack" and reply.ack.results[0].code == 0
        finally:
            await w.close()


# ---- server-enforced timeouts --------------------------------------------------------------------


async def test_timeout_on_a_worker_that_never_answers_fails_and_retries(
    server: RunningServer, redis: Redis
) -> None:
    async with QueueManager(address=server.address) as qm:
        await qm.register_queue("q")
        job = await qm.add_job("q", "x", None, {"timeout": 300, "attempts": 2})
        w = RawWorker(server.address, ["q"])
        try:
            await w.connect(credits=2)
            (first,) = await w.jobs(1)
            told = await command(w)
            assert told.type == pb.SERVER_COMMAND_TYPE_CANCEL_JOB and told.job == lease(first)
            assert told.reason == "job timed out after 0.3s"
            assert told.timed_out  # the worker ends the run as at its own timeout, not as a cancel
            # Retried per its attempts: the second run is a new attempt, not a redelivery.
            (second,) = await w.jobs(1)
            assert second.job.id == job.id and second.job.attempts_made == 1 and not second.redelivery
            again = await command(w)
            assert again.job == lease(second) and again.timed_out
            failed = await until_state(qm, "q", job.id, JobState.FAILED)
            assert failed.failed_reason == "job timed out after 0.3s" and failed.attempts_made == 2
            assert failed.finished_at and failed.processed_at
            assert failed.finished_at - failed.processed_at >= timedelta(milliseconds=300)
            # The late report of the first run is refused; nothing is left to time out.
            w.report(pb.WorkerReport(failures=[pb.JobFailure(**_ref(first), message="late")]))
            ack = await w.until("ack")
            assert ack.ack.results[0].code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
            assert await redis.zcard(QueueKeys(server.prefix, "q").deadlines) == 0
        finally:
            await w.close()


async def test_runs_that_end_in_time_leave_no_deadline(
    qm: QueueManager, redis: Redis, server: RunningServer
) -> None:
    await qm.register_queue("q")
    outcomes = iter(["ok", "fail"])

    @qm.processor("q")
    async def run(job: JobContext) -> str:
        if next(outcomes) == "fail":
            raise RuntimeError("boom")
        return "ok"

    await qm.start_workers(concurrency=1)
    done = await qm.add_job("q", "a", None, {"timeout": 60_000})
    failed = await qm.add_job("q", "b", None, {"timeout": 60_000})
    await until_state(qm, "q", done.id, JobState.COMPLETED)
    await until_state(qm, "q", failed.id, JobState.FAILED)
    assert await redis.zcard(QueueKeys(server.prefix, "q").deadlines) == 0


# ---- CLI -----------------------------------------------------------------------------------------


async def test_cli_cancel_and_concurrency(server: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    async def qm_json(*argv: str) -> Any:
        capsys.readouterr()
        status = await asyncio.to_thread(main, ["--server", server.address, "-o", "json", *argv])
        out, err = capsys.readouterr()
        assert status == 0, err
        return json.loads(out)

    queue = await qm_json("queues", "register", "cli-c", "--concurrency", "3")
    assert queue["config"]["concurrency"] == 3
    job = await qm_json("add", "cli-c", "x")
    cancelled = await qm_json("jobs", "cancel", "cli-c", job["id"], "--reason", "typo")
    assert (cancelled["state"], cancelled["cancel_reason"]) == ("cancelled", "typo")
    listed = await qm_json("jobs", "list", "cli-c", "--state", "cancelled")
    assert [j["id"] for j in listed["jobs"]] == [job["id"]]


def _ref(j: pb.LeasedJob) -> dict[str, str]:
    return {"queue_name": j.job.queue_name, "job_id": j.job.id, "lease_token": j.lease_token}
