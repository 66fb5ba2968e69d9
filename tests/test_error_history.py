"""Per-attempt error history (Job.errors) against a real Valkey and real servers: the kinds of failed runs in
order (raised, timed out, lease expired, worker gone), its length (a job's own, the queue's default, none),
truncation, RetryJob, the CLI, and removals leaving nothing behind."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from redis.asyncio import Redis

from queue_manager import Job, JobErrorKind, JobState, QueueManager
from queue_manager.cli import main
from queue_manager.v1 import jobs_pb2, queue_service_pb2, queue_service_pb2_grpc, types_pb2
from queue_manager.v1 import worker_service_pb2 as pb
from queue_manager_server.engine.keys import QueueKeys
from tests.conftest import RunningServer, ServerFactory
from tests.rawworker import RawWorker, eventually, lease

WAIT = 20.0  # generous bound for anything awaited


def _ref(j: pb.LeasedJob) -> dict[str, str]:
    return {"queue_name": j.job.queue_name, "job_id": j.job.id, "lease_token": j.lease_token}


async def until_state(qm: QueueManager, queue: str, job_id: str, state: JobState) -> Job:
    job = await qm.wait_for_job(queue, job_id, timeout=WAIT)
    assert job.state is state, job
    return job


async def fail_next(w: RawWorker, message: str, stacktrace: str = "") -> pb.LeasedJob:
    """Takes the next job (one credit) and reports its run failed."""
    w.report(pb.WorkerReport(credits=1))
    (leased,) = await w.jobs(1, timeout=WAIT)
    w.report(
        pb.WorkerReport(failures=[pb.JobFailure(**_ref(leased), message=message, stacktrace=stacktrace)])
    )
    return leased


async def fail_times(server: RunningServer, qm: QueueManager, queue: str, job_id: str, n: int) -> Job:
    """Fails the job's next n runs (messages "boom 1"…, stack traces "trace 1"…) and returns it after."""
    made = (await qm.get_job(queue, job_id)).attempts_made
    w = RawWorker(server.address, [queue], worker_id="w-fail")
    try:
        await w.connect()
        for i in range(1, n + 1):
            await fail_next(w, f"boom {i}", f"trace {i}")

        async def recorded() -> bool:
            return (await qm.get_job(queue, job_id)).attempts_made == made + n

        # The last report is in before the stream closes (a run open at the close would count as lost).
        await eventually(recorded, timeout=WAIT)
    finally:
        await w.close()
    return await qm.get_job(queue, job_id)


async def test_failed_runs_are_kept_in_order_with_how_each_ended(server_factory: ServerFactory) -> None:
    server = await server_factory(lease_ms=1_000, reaper_interval_ms=100)
    async with QueueManager(address=server.address) as qm:
        await qm.register_queue("q", disable_dead_letter=True)
        job = await qm.add_job("q", "x", None, {"attempts": 3, "timeout": 1_500, "max_stalled": 5})
        w1 = RawWorker(server.address, ["q"], worker_id="w1")
        w2 = RawWorker(server.address, ["q"], worker_id="w2")
        w3 = RawWorker(server.address, ["q"], worker_id="w3")
        w4 = RawWorker(server.address, ["q"], worker_id="w4")
        try:
            await w1.connect()
            # Attempt 1: the processor raised.
            await fail_next(w1, "boom 1", "Traceback 1\n  line 1")
            # Attempt 2: the worker keeps its lease but never finishes; the server times the run out.
            w1.report(pb.WorkerReport(credits=1))
            (second,) = await w1.jobs(1, timeout=WAIT)
            while True:
                w1.report(pb.WorkerReport(extensions=[lease(second)]))
                m = await w1.recv(timeout=WAIT)
                if m.WhichOneof("kind") == "command":
                    assert m.command.type == pb.SERVER_COMMAND_TYPE_CANCEL_JOB
                    break
                await asyncio.sleep(0.2)  # the heartbeat interval of a worker with 1 s leases
            await w1.close()
            # Attempt 3, first run: its worker goes silent; the lease expires and the reaper takes it back.
            await w2.connect(credits=1)
            await w2.jobs(1, timeout=WAIT)
            # Attempt 3, second run: its worker's stream ends while it runs.
            await w3.connect(credits=1)
            await w3.jobs(1, timeout=WAIT)
            await w3.close()
            # Attempt 3, third run: raised again, the last attempt: failed for good.
            await w4.connect()
            await fail_next(w4, "boom 3", "Traceback 3")
            failed = await until_state(qm, "q", job.id, JobState.FAILED)
        finally:
            for w in (w1, w2, w3, w4):
                await w.close()
    errors = failed.errors
    assert [(e.attempt, e.kind, e.worker_id) for e in errors] == [
        (1, JobErrorKind.ERROR, "w1"),
        (2, JobErrorKind.TIMEOUT, "w1"),
        (3, JobErrorKind.STALLED, "w2"),
        (3, JobErrorKind.STALLED, "w3"),
        (3, JobErrorKind.ERROR, "w4"),
    ]
    assert [e.message for e in errors] == [
        "boom 1",
        "job timed out after 1.5s",
        "lease expired: the worker stopped extending it",
        "run lost: its worker went away or gave it up unfinished",
        "boom 3",
    ]
    assert [e.stacktrace for e in errors] == ["Traceback 1\n  line 1", "", "", "", "Traceback 3"]
    times = [e.time for e in errors]
    assert all(t is not None for t in times) and times == sorted(times)  # type: ignore[type-var]
    # The last failure is also where it always was.
    assert (failed.failed_reason, failed.stacktrace, failed.attempts_made) == ("boom 3", "Traceback 3", 3)
    assert failed.stalled_count == 2


async def test_a_cancel_that_stops_a_run_is_recorded_as_cancelled(server: RunningServer) -> None:
    async with QueueManager(address=server.address) as qm:
        await qm.register_queue("q")
        job = await qm.add_job("q", "x")
        w = RawWorker(server.address, ["q"], worker_id="w1")
        try:
            await w.connect(credits=1)
            (leased,) = await w.jobs(1, timeout=WAIT)
            await qm.cancel_job("q", job.id, "not needed")
            await w.until("command", timeout=WAIT)
            w.report(pb.WorkerReport(cancelled=[lease(leased)]))
            done = await until_state(qm, "q", job.id, JobState.CANCELLED)
        finally:
            await w.close()
    [error] = done.errors
    assert (error.attempt, error.kind, error.worker_id) == (1, JobErrorKind.CANCELLED, "w1")
    assert error.message == "cancelled: not needed"


async def test_the_history_keeps_the_last_n_of_the_job_or_queue_and_cuts_long_texts(
    server: RunningServer, redis: Redis
) -> None:
    async with QueueManager(address=server.address) as qm:
        await qm.register_queue("q", default_job_options={"error_history": 2}, disable_dead_letter=True)
        # The queue's default: the last 2 of 3 failed runs.
        by_default = await qm.add_job("q", "x", None, {"attempts": 3})
        job = await fail_times(server, qm, "q", by_default.id, 3)
        assert [(e.attempt, e.message, e.stacktrace) for e in job.errors] == [
            (2, "boom 2", "trace 2"),
            (3, "boom 3", "trace 3"),
        ]
        assert job.options.error_history is None  # the job has none of its own
        # The job's own setting wins; 0 keeps none (the last failure stays in failed_reason/stacktrace).
        own = await qm.add_job("q", "x", None, {"attempts": 4, "error_history": 3})
        assert [e.attempt for e in (await fail_times(server, qm, "q", own.id, 4)).errors] == [2, 3, 4]
        none = await qm.add_job("q", "x", None, {"attempts": 2, "error_history": 0})
        job = await fail_times(server, qm, "q", none.id, 2)
        assert (job.state, job.errors, job.failed_reason, job.options.error_history) == (
            JobState.FAILED,
            [],
            "boom 2",
            0,
        )
        assert not await redis.hexists(QueueKeys(server.prefix, "q").job(none.id), "eh")
        # Texts are cut as the last failure's are: 10,000 characters of message, 50,000 of stack trace.
        long = await qm.add_job("q", "x")
        w = RawWorker(server.address, ["q"])
        try:
            await w.connect()
            await fail_next(w, "m" * 12_000, "s" * 60_000)
            job = await until_state(qm, "q", long.id, JobState.FAILED)
        finally:
            await w.close()
        [error] = job.errors
        assert (len(error.message), len(error.stacktrace)) == (10_000, 50_000)
        assert (error.message, error.stacktrace) == (job.failed_reason, job.stacktrace)


async def test_a_history_length_out_of_range_is_refused_precisely(server: RunningServer) -> None:
    async with QueueManager(address=server.address) as qm:
        await qm.register_queue("q")
        with pytest.raises(ValueError, match="error_history must be between 0 and 100, got 101"):
            await qm.add_job("q", "x", None, {"error_history": 101})
        with pytest.raises(ValueError, match="error_history must be between 0 and 100, got -1"):
            await qm.register_queue("q", default_job_options={"error_history": -1})
    # What another client may send: the server's own check.
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = queue_service_pb2_grpc.QueueServiceStub(channel)
        request = jobs_pb2.AddJobRequest(
            queue_name="q", job=jobs_pb2.NewJob(name="x", options=types_pb2.JobOptions(error_history=101))
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.AddJob(request)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "options.error_history: 101 is above the maximum of 100" in str(info.value.details())
        config = types_pb2.QueueConfig(default_job_options=types_pb2.JobOptions(error_history=500))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.RegisterQueue(queue_service_pb2.RegisterQueueRequest(name="q", config=config))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "default_job_options.error_history: 500 is above the maximum of 100" in str(
            info.value.details()
        )


async def test_retry_keeps_the_history_and_counts_attempts_afresh(server: RunningServer) -> None:
    async with QueueManager(address=server.address) as qm:
        await qm.register_queue("q", disable_dead_letter=True)
        added = await qm.add_job("q", "x", None, {"attempts": 2})
        job = await fail_times(server, qm, "q", added.id, 2)
        assert job.state is JobState.FAILED
        retried = await qm.retry_job("q", added.id)
        assert retried.state is JobState.WAITING and retried.attempts_made == 0
        assert [e.attempt for e in retried.errors] == [1, 2]
        job = await fail_times(server, qm, "q", added.id, 1)
        assert [(e.attempt, e.message) for e in job.errors] == [(1, "boom 1"), (2, "boom 2"), (1, "boom 1")]


async def _keys_of(redis: Redis, prefix: str, job_id: str) -> list[str]:
    return [
        k.decode() async for k in redis.scan_iter(match=f"{prefix}:*", count=1000) if job_id in k.decode()
    ]


async def test_removing_a_job_with_a_history_leaves_nothing_behind(
    server: RunningServer, redis: Redis
) -> None:
    async with QueueManager(address=server.address) as qm:
        for name in ("q", "o"):
            await qm.register_queue(name, disable_dead_letter=True)
        await qm.register_queue("r", disable_dead_letter=True, failed_retention={"count": 1})

        async def failed_job(queue: str, job_id: str) -> str:
            await qm.add_job(queue, "x", None, {"job_id": job_id, "attempts": 2})
            job = await fail_times(server, qm, queue, job_id, 2)
            assert len(job.errors) == 2 and await _keys_of(redis, server.prefix, job_id)
            return job_id

        removed = await failed_job("q", "hist-removed")
        assert await qm.remove_job("q", removed) is JobState.FAILED
        cleaned = await failed_job("q", "hist-cleaned")
        assert await qm.clean_queue("q", 0, JobState.FAILED) == 1
        trimmed = await failed_job("r", "hist-trimmed")
        await failed_job("r", "hist-kept")  # retention keeps 1 failed job: this one
        dropped = await failed_job("o", "hist-obliterated")
        await qm.obliterate_queue("o")
        for job_id in (removed, cleaned, trimmed, dropped):
            assert await _keys_of(redis, server.prefix, job_id) == [], job_id
        assert await _keys_of(redis, server.prefix, "hist-kept")


async def test_cli_jobs_show_prints_the_history(
    server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    async with QueueManager(address=server.address) as qm:
        await qm.register_queue("q", disable_dead_letter=True)
        added = await qm.add_job("q", "x", None, {"attempts": 2})
        await fail_times(server, qm, "q", added.id, 2)

    def run(*argv: str) -> Any:
        capsys.readouterr()
        status = main(["--server", server.address, *argv])
        out, err = capsys.readouterr()
        assert status == 0, err
        return out

    out = await asyncio.to_thread(run, "jobs", "show", "q", added.id)
    assert "errors (2, oldest first):" in out
    lines = out.splitlines()
    first = lines.index(next(line for line in lines if line.startswith("  attempt 1  error  ")))
    assert lines[first].endswith("worker w-fail")
    assert lines[first + 1 : first + 3] == ["    boom 1", "    trace 1"]
    assert lines[first + 3].startswith("  attempt 2  error  ")
    shown = await asyncio.to_thread(run, "-o", "json", "jobs", "get", "q", added.id)
    assert '"kind": "error"' in shown and '"message": "boom 2"' in shown
