"""Failed runs by kind against a real Valkey and real servers: a run the worker stopped at the job's own
timeout is recorded as timed out (JobFailure.timed_out; the Python worker sets it), the queue counts its
failed runs by kind (raised, timed out by the server or the worker, stalled) in its metrics and on the
Prometheus endpoint, and a job that keeps losing its workers ends in the dead-letter queue (max_stalled)."""

from __future__ import annotations

import asyncio
import logging
import re
import time

import pytest

from queue_manager import JobContext, JobErrorKind, JobState, QueueManager
from queue_manager.v1 import worker_service_pb2 as pb
from queue_manager.worker_runs import Processor
from tests.conftest import RunningServer, ServerFactory, stop_server_timeouts, time_out_now
from tests.rawworker import RawWorker, eventually, lease
from tests.test_cli import qm_cli
from tests.test_prometheus import scrape, value

WAIT = 20.0  # generous bound for anything awaited
# How long a plain-``def`` processor waits for `job.cancelled` (set within a second when the run stops).
STOP_BOUND_S = 5.0


def _ref(j: pb.LeasedJob) -> dict[str, str]:
    return {"queue_name": j.job.queue_name, "job_id": j.job.id, "lease_token": j.lease_token}


def _hanging_processor(
    kind: str, started: asyncio.Event, ended: asyncio.Event, seen: list[bool]
) -> Processor:
    """A processor that runs until its run is stopped, then records `job.cancelled`: async, it awaits a long
    sleep (its task is cancelled); plain ``def``, it polls `job.cancelled` for at most STOP_BOUND_S."""
    loop = asyncio.get_running_loop()
    if kind == "async":

        async def hang(job: JobContext) -> None:
            started.set()
            try:
                await asyncio.sleep(60)
            finally:
                seen.append(job.cancelled)
                ended.set()

        return hang

    def poll(job: JobContext) -> None:
        loop.call_soon_threadsafe(started.set)
        bound = time.monotonic() + STOP_BOUND_S
        while not job.cancelled and time.monotonic() < bound:
            time.sleep(0.01)
        seen.append(job.cancelled)
        loop.call_soon_threadsafe(ended.set)

    return poll


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_a_run_the_python_worker_times_out_is_recorded_and_counted_as_timed_out(
    server: RunningServer, kind: str
) -> None:
    """The worker's own timer ends the run: an async processor's task is cancelled, a plain-``def`` one
    sees `job.cancelled`; the failure is reported with timed_out."""
    await stop_server_timeouts(server)
    async with QueueManager(address=server.address) as qm:
        await qm.register_queue("slow", disable_dead_letter=True)
        started, ended, seen = asyncio.Event(), asyncio.Event(), list[bool]()
        qm.processor("slow")(_hanging_processor(kind, started, ended, seen))
        await qm.start_workers()
        job = await qm.add_job("slow", "x", None, {"timeout": 300, "attempts": 1})
        await asyncio.wait_for(started.wait(), WAIT)
        failed = await qm.wait_for_job("slow", job.id, timeout=WAIT)
        await asyncio.wait_for(ended.wait(), WAIT)
        metrics = await qm.get_queue_metrics("slow")
    assert seen == [True]
    assert failed.state is JobState.FAILED
    [error] = failed.errors
    assert (error.kind, error.message, error.stacktrace) == (
        JobErrorKind.TIMEOUT,
        "job timed out after 0.3s",
        "",
    )
    assert (metrics.timed_out_total, metrics.raised_total, metrics.stalled_total) == (1, 0, 0)


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_a_run_the_server_times_out_first_ends_on_the_python_worker_as_at_its_own_timeout(
    server: RunningServer, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    """The server notices the timeout first (time_out_now: the worker's own timer is 30 s away), and its
    CANCEL_JOB says timed_out: the worker ends the run as at its own timeout (the processor stopped the same
    way, a failure with timed_out reported and logged as a timeout, not a cancel), which the server, having
    recorded the timeout already, rejects as expected: the attempt counts once."""
    caplog.set_level(logging.INFO, "queue_manager.worker")
    async with QueueManager(address=server.address) as qm:
        await qm.register_queue("slow", disable_dead_letter=True)
        started, ended, seen = asyncio.Event(), asyncio.Event(), list[bool]()
        qm.processor("slow")(_hanging_processor(kind, started, ended, seen))
        await qm.start_workers()
        job = await qm.add_job("slow", "x", None, {"timeout": 30_000, "attempts": 1})
        await asyncio.wait_for(started.wait(), WAIT)
        await time_out_now(server, "slow", job.id)
        await asyncio.wait_for(ended.wait(), WAIT)

        def logged(text: str) -> bool:
            return any(text in r.getMessage() for r in caplog.records)

        async def rejected() -> bool:
            return logged("had already ended on the server (timed out there)")

        await eventually(rejected, timeout=WAIT)
        failed = await qm.get_job("slow", job.id)
        metrics = await qm.get_queue_metrics("slow")
    assert seen == [True]
    assert logged(
        f"job slow/{job.id} (x) failed on attempt 1 of 1: job timed out after 30s; no attempts left"
    )
    assert not logged("the server asks to stop it")
    assert failed.state is JobState.FAILED and failed.attempts_made == 1
    assert [(e.kind, e.message) for e in failed.errors] == [(JobErrorKind.TIMEOUT, "job timed out after 30s")]
    assert (metrics.timed_out_total, metrics.raised_total, metrics.stalled_total) == (1, 0, 0)


async def test_failed_runs_are_counted_by_kind_in_metrics_the_cli_and_on_prometheus(
    server_factory: ServerFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """One run raised, one timed out by the server, one timed out by its worker, one stalled (its worker
    gave it up unfinished): every one an attempt retried (after a minute: none runs again here), none a
    failure for good."""
    server = await server_factory(http_listen="127.0.0.1:0", lease_ms=1_000)
    async with QueueManager(address=server.address) as qm:
        await qm.register_queue("q", default_job_options={"attempts": 5, "max_stalled": 5, "backoff": 60_000})
        w = RawWorker(server.address, ["q"], worker_id="w1")
        try:
            await w.connect()
            # Raised.
            raised = await qm.add_job("q", "raised")
            w.report(pb.WorkerReport(credits=1))
            (run,) = await w.jobs(1, timeout=WAIT)
            w.report(pb.WorkerReport(failures=[pb.JobFailure(**_ref(run), message="boom")]))
            # Timed out by the worker (its own deadline).
            by_worker = await qm.add_job("q", "by-worker")
            w.report(pb.WorkerReport(credits=1))
            (run,) = await w.jobs(1, timeout=WAIT)
            w.report(
                pb.WorkerReport(
                    failures=[pb.JobFailure(**_ref(run), message="job timed out after 30s", timed_out=True)]
                )
            )
            # Timed out by the server: the run outlives its timeout; the server tells the worker to stop.
            by_server = await qm.add_job("q", "by-server", None, {"timeout": 200})
            w.report(pb.WorkerReport(credits=1))
            await w.jobs(1, timeout=WAIT)
            await w.until("command", timeout=WAIT)
            # Stalled: started, then handed back unfinished (last: it goes back to the head of waiting).
            stalled = await qm.add_job("q", "stalled")
            w.report(pb.WorkerReport(credits=1))
            (run,) = await w.jobs(1, timeout=WAIT)
            w.report(pb.WorkerReport(abandoned=[lease(run)]))

            async def counted() -> bool:
                m = await qm.get_queue_metrics("q")
                return (m.raised_total, m.timed_out_total, m.stalled_total) == (1, 2, 1)

            await eventually(counted, timeout=WAIT)
        finally:
            await w.close()
        kinds = {
            j.name: [e.kind for e in (await qm.get_job("q", j.id)).errors]
            for j in (raised, by_worker, stalled, by_server)
        }
        metrics = await qm.get_queue_metrics("q")
    assert kinds == {
        "raised": [JobErrorKind.ERROR],
        "by-worker": [JobErrorKind.TIMEOUT],
        "stalled": [JobErrorKind.STALLED],
        "by-server": [JobErrorKind.TIMEOUT],
    }
    assert metrics.failed_total == 0  # every run was retried: the counts are of runs, not of jobs
    status, out, err = await qm_cli(capsys, "--server", server.address, "queues", "metrics", "q")
    assert status == 0, err
    shown = dict(re.findall(r"^(stalled_total|timed_out_total|raised_total)\s+(\d+)\s*$", out, re.M))
    assert shown == {"stalled_total": "1", "timed_out_total": "2", "raised_total": "1"}, out
    text, samples = await scrape(server)
    assert "# TYPE queue_job_runs_raised_total counter" in text
    assert "# TYPE queue_job_runs_timed_out_total counter" in text
    assert value(samples, "queue_job_runs_raised_total", queue="q") == 1
    assert value(samples, "queue_job_runs_timed_out_total", queue="q") == 2
    assert value(samples, "queue_jobs_stalled_total", queue="q") == 1


async def test_a_job_that_keeps_losing_its_workers_is_quarantined_in_the_dead_letter_queue(
    server: RunningServer,
) -> None:
    """max_stalled 2: the third lost run fails the job for good (not retried again) and its dead-letter copy
    says why."""
    async with QueueManager(address=server.address) as qm:
        await qm.register_queue("k9", default_job_options={"max_stalled": 2, "attempts": 10})
        job = await qm.add_job("k9", "poison")
        for i in range(3):
            w = RawWorker(server.address, ["k9"], worker_id=f"w{i}")
            try:
                await w.connect(credits=1)
                await w.jobs(1, timeout=WAIT)
            finally:
                await w.close()  # the stream ends while the run goes on: a lost run

            async def lost(n: int = i + 1) -> bool:
                return (await qm.get_queue_metrics("k9")).stalled_total == n

            await eventually(lost, timeout=WAIT)
        failed = await qm.wait_for_job("k9", job.id, timeout=WAIT)

        async def copied() -> bool:
            return bool((await qm.list_dead_letters())[0])

        await eventually(copied, timeout=WAIT)
        [copy], _ = await qm.list_dead_letters()
    assert failed.state is JobState.FAILED and failed.attempts_made == 0
    assert failed.failed_reason == "job stalled more than the allowed 2 times"
    assert [e.kind for e in failed.errors] == [JobErrorKind.STALLED] * 3
    assert (copy.original_queue, copy.original_job_id) == ("k9", job.id)
    assert copy.failure_reason == "job stalled more than the allowed 2 times"
