"""The worker stream protocol on a real server: hello, credits, push, fencing, release, drain."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable

import grpc
import pytest

from queue_manager.v1 import jobs_pb2 as jpb
from queue_manager.v1 import queue_service_pb2 as qpb
from queue_manager.v1 import queue_service_pb2_grpc as jrpc
from queue_manager.v1 import queue_service_pb2_grpc as qrpc
from queue_manager.v1 import types_pb2 as t
from queue_manager.v1 import worker_service_pb2 as pb
from queue_manager_server.engine import Engine
from tests.conftest import RunningServer, ServerFactory
from tests.rawworker import RawWorker, eventually, lease


@pytest.fixture
async def stubs(server: RunningServer) -> AsyncIterator[tuple[qrpc.QueueServiceStub, jrpc.QueueServiceStub]]:
    async with grpc.aio.insecure_channel(server.address) as ch:
        q = qrpc.QueueServiceStub(ch)
        await q.RegisterQueue(qpb.RegisterQueueRequest(name="q"))
        yield q, jrpc.QueueServiceStub(ch)


async def add(jobs: jrpc.QueueServiceStub, n: int, **opts: object) -> list[str]:
    ids = []
    for i in range(n):
        r = await jobs.AddJob(
            jpb.AddJobRequest(queue_name="q", job=jpb.NewJob(name=f"j{i}", options=t.JobOptions(**opts)))
        )  # type: ignore[arg-type]
        ids.append(r.job.id)
    return ids


async def test_first_message_must_be_hello(server: RunningServer) -> None:
    async with grpc.aio.insecure_channel(server.address) as ch:
        from queue_manager.v1 import worker_service_pb2_grpc as rpc

        async def reqs() -> AsyncIterator[pb.ConnectRequest]:
            yield pb.ConnectRequest(report=pb.WorkerReport(credits=1))

        call = rpc.WorkerServiceStub(ch).Connect(reqs())
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call.read()
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "hello" in (info.value.details() or "")


async def test_unknown_queue_in_hello_is_not_found(server: RunningServer) -> None:
    w = RawWorker(server.address, ["missing"])
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await w.connect()
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    await w.close()


async def test_never_more_jobs_than_credits(
    server: RunningServer, stubs: tuple[qrpc.QueueServiceStub, jrpc.QueueServiceStub]
) -> None:
    _, jobs = stubs
    await add(jobs, 10)
    w = RawWorker(server.address, ["q"])
    await w.connect(credits=3)
    got = await w.jobs(3)
    assert len(got) == 3
    # An extension forces a round trip; a surplus delivery would have been queued before its ack.
    w.report(pb.WorkerReport(extensions=[lease(got[0])]))
    ack = await w.recv()
    assert ack.WhichOneof("kind") == "ack", ack
    assert ack.ack.results[0].code == 0
    # Returning credits with completions brings more jobs.
    w.report(
        pb.WorkerReport(
            credits=2,
            completions=[
                pb.JobCompletion(queue_name="q", job_id=j.job.id, lease_token=j.lease_token) for j in got
            ],
        )
    )
    assert len(await w.jobs(2)) == 2
    await w.close()


async def test_idle_worker_gets_new_job_pushed(
    server: RunningServer, stubs: tuple[qrpc.QueueServiceStub, jrpc.QueueServiceStub]
) -> None:
    _, jobs = stubs
    w = RawWorker(server.address, ["q"])
    await w.connect(credits=5)
    await asyncio.sleep(0.2)  # the worker is idle, its dispatcher asleep
    start = time.perf_counter()
    (job_id,) = await add(jobs, 1)
    (j,) = await w.jobs(1, timeout=5)
    assert j.job.id == job_id and time.perf_counter() - start < 1.0
    await w.close()


async def test_job_added_on_another_server_reaches_worker(
    server_factory: ServerFactory, stubs: tuple[qrpc.QueueServiceStub, jrpc.QueueServiceStub]
) -> None:
    other = await server_factory()
    w = RawWorker(other.address, ["q"])
    await w.connect(credits=1)
    _, jobs = stubs
    (job_id,) = await add(jobs, 1)
    (j,) = await w.jobs(1, timeout=5)
    assert j.job.id == job_id
    await w.close()


async def test_delayed_job_starts_on_time(
    server: RunningServer, stubs: tuple[qrpc.QueueServiceStub, jrpc.QueueServiceStub]
) -> None:
    from google.protobuf.duration_pb2 import Duration

    _, jobs = stubs
    w = RawWorker(server.address, ["q"])
    await w.connect(credits=1)
    start = time.perf_counter()
    await add(jobs, 1, delay=Duration(nanos=300_000_000))
    await w.jobs(1, timeout=5)
    elapsed = time.perf_counter() - start
    assert 0.29 <= elapsed < 0.8, elapsed
    await w.close()


async def test_stale_token_completion_is_failed_precondition(
    server: RunningServer,
    stubs: tuple[qrpc.QueueServiceStub, jrpc.QueueServiceStub],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="queue_manager_server.reports")
    _, jobs = stubs
    await add(jobs, 1)
    w = RawWorker(server.address, ["q"])
    await w.connect(credits=1)
    (j,) = await w.jobs(1)
    w.report(
        pb.WorkerReport(completions=[pb.JobCompletion(queue_name="q", job_id=j.job.id, lease_token="stale")])
    )
    ack = await w.until("ack")
    (r,) = ack.ack.results
    assert r.code == grpc.StatusCode.FAILED_PRECONDITION.value[0] and "not held" in r.message
    # The log names the status the worker was told, not the script's code (-3).
    (logged,) = [rec for rec in caplog.records if rec.getMessage() == "report item rejected"]
    assert (logged.status, logged.job_id) == ("FAILED_PRECONDITION", j.job.id)  # type: ignore[attr-defined]
    assert not hasattr(logged, "code")
    got = await jobs.GetJob(jpb.GetJobRequest(queue_name="q", job_id=j.job.id))
    assert got.job.state == t.JOB_STATE_ACTIVE
    await w.close()


async def test_stream_end_returns_held_jobs_at_once(
    server: RunningServer, engine: Engine, stubs: tuple[qrpc.QueueServiceStub, jrpc.QueueServiceStub]
) -> None:
    _, jobs = stubs
    ids = await add(jobs, 3)
    w = RawWorker(server.address, ["q"])
    await w.connect(credits=3)
    await w.jobs(3)
    await w.close()  # cut, as a crash would

    async def all_waiting() -> bool:
        return [(await engine.get_job("q", i)).state for i in ids] == ["waiting"] * 3

    await eventually(all_waiting, timeout=3)
    assert [(await engine.get_job("q", i)).int("stc") for i in ids] == [1, 1, 1]
    w2 = RawWorker(server.address, ["q"], "raw-2")
    await w2.connect(credits=3)
    again = await w2.jobs(3)
    assert all(j.redelivery for j in again)
    await w2.close()


async def test_failure_with_do_not_retry_and_progress(
    server: RunningServer, stubs: tuple[qrpc.QueueServiceStub, jrpc.QueueServiceStub]
) -> None:
    from google.protobuf import struct_pb2

    _, jobs = stubs
    (job_id,) = await add(jobs, 1, attempts=5)
    w = RawWorker(server.address, ["q"])
    await w.connect(credits=1)
    (j,) = await w.jobs(1)
    w.report(
        pb.WorkerReport(progress=[pb.JobProgress(lease=lease(j), progress=struct_pb2.Value(number_value=50))])
    )
    w.report(pb.WorkerReport(extensions=[lease(j)]))
    await w.until("ack")
    got = await jobs.GetJob(jpb.GetJobRequest(queue_name="q", job_id=job_id))
    assert got.job.progress.number_value == 50
    w.report(
        pb.WorkerReport(
            failures=[
                pb.JobFailure(
                    queue_name="q",
                    job_id=job_id,
                    lease_token=j.lease_token,
                    message="bad input",
                    stacktrace="tb",
                    do_not_retry=True,
                )
            ]
        )
    )
    w.half_close()
    await w.wait_end()
    got = await jobs.GetJob(jpb.GetJobRequest(queue_name="q", job_id=job_id))
    assert (
        got.job.state == t.JOB_STATE_FAILED
        and got.job.failed_reason == "bad input"
        and got.job.attempts_made == 1
    )
    await w.close()


async def test_graceful_shutdown_drains_workers(server_factory: ServerFactory, engine: Engine) -> None:
    srv = await server_factory(shutdown_grace_ms=5_000)
    async with grpc.aio.insecure_channel(srv.address) as ch:
        await qrpc.QueueServiceStub(ch).RegisterQueue(qpb.RegisterQueueRequest(name="q"))
        jobs = jrpc.QueueServiceStub(ch)
        await add(jobs, 2)
    w = RawWorker(srv.address, ["q"])
    await w.connect(credits=2)
    ja, jb = await w.jobs(2)
    stopping = asyncio.create_task(srv.stop())
    cmd = await w.until("command")
    assert cmd.command.type == pb.SERVER_COMMAND_TYPE_DRAIN
    # The worker finishes one job within the grace period and releases the other unstarted.
    w.report(
        pb.WorkerReport(
            completions=[pb.JobCompletion(queue_name="q", job_id=ja.job.id, lease_token=ja.lease_token)],
            releases=[lease(jb)],
        )
    )
    w.half_close()
    await w.wait_end()
    await stopping
    assert (await engine.get_job("q", ja.job.id)).state == "completed"
    rb = await engine.get_job("q", jb.job.id)
    assert rb.state == "waiting" and rb.int("stc") == 0
    await w.close()


async def test_leases_held_at_shutdown_go_over_to_the_workers_next_stream(
    server_factory: ServerFactory, engine: Engine
) -> None:
    """A server that stops while a worker still runs a job leaves the lease held: no stall is counted and the
    job is not delivered again. The worker extends the lease on its next stream, to another server, which
    takes it over: the completion is accepted there, and when that stream ends the lease is released."""
    srv = await server_factory(shutdown_grace_ms=300, lease_ms=20_000)
    async with grpc.aio.insecure_channel(srv.address) as ch:
        await qrpc.QueueServiceStub(ch).RegisterQueue(qpb.RegisterQueueRequest(name="q"))
        ids = await add(jrpc.QueueServiceStub(ch), 2)
    w = RawWorker(srv.address, ["q"])
    await w.connect(credits=2)
    ja, jb = await w.jobs(2)
    await srv.stop()  # the worker ignores the drain: both runs go on
    for j in (ja, jb):
        rec = await engine.get_job("q", j.job.id)
        assert (rec.state, rec.int("stc")) == ("active", 0)
    await w.close()

    other = await server_factory(lease_ms=20_000)
    w2 = RawWorker(other.address, ["q"])
    await w2.connect(credits=0)
    w2.report(pb.WorkerReport(extensions=[lease(ja), lease(jb)]))
    ack = await w2.until("ack")
    assert [r.code for r in ack.ack.results] == [0, 0]
    w2.report(
        pb.WorkerReport(
            completions=[pb.JobCompletion(queue_name="q", job_id=ja.job.id, lease_token=ja.lease_token)]
        )
    )

    async def state(job_id: str) -> str:
        return (await engine.get_job("q", job_id)).state

    await eventually(lambda: _is(state(ja.job.id), "completed"))
    assert (await engine.get_job("q", ja.job.id)).int("stc") == 0
    await w2.close()  # the stream ends: the lease it took over goes back (a stall: its worker is gone)
    await eventually(lambda: _is(state(jb.job.id), "waiting"))
    assert (await engine.get_job("q", jb.job.id)).int("stc") == 1
    assert sorted(ids) == sorted([ja.job.id, jb.job.id])


async def _is(value: Awaitable[str], expected: str) -> bool:
    return await value == expected


async def test_abandoned_job_counts_a_stall_and_is_redelivered(
    server: RunningServer, engine: Engine, stubs: tuple[qrpc.QueueServiceStub, jrpc.QueueServiceStub]
) -> None:
    _, jobs = stubs
    (job_id,) = await add(jobs, 1)
    w = RawWorker(server.address, ["q"])
    await w.connect(credits=1)
    (j,) = await w.jobs(1)
    w.report(pb.WorkerReport(abandoned=[lease(j)], credits=1))
    (again,) = await w.jobs(1)
    assert again.job.id == job_id and again.redelivery and again.job.stalled_count == 1
    await w.close()


async def test_rate_limit_spaces_deliveries(server: RunningServer) -> None:
    from google.protobuf.duration_pb2 import Duration

    async with grpc.aio.insecure_channel(server.address) as ch:
        limit = t.RateLimit(max=5, duration=Duration(seconds=1))
        await qrpc.QueueServiceStub(ch).RegisterQueue(
            qpb.RegisterQueueRequest(name="limited", config=t.QueueConfig(rate_limit=limit))
        )
        stub = jrpc.QueueServiceStub(ch)
        for i in range(10):
            await stub.AddJob(jpb.AddJobRequest(queue_name="limited", job=jpb.NewJob(name=f"r{i}")))
    w = RawWorker(server.address, ["limited"])
    await w.connect(credits=10)
    start = time.perf_counter()
    arrivals: list[float] = []
    while len(arrivals) < 10:
        got = await w.jobs(1, timeout=10)
        arrivals += [time.perf_counter() - start] * len(got)
    # The bucket holds a tenth of max (at least 1 token: the burst), refilled at one token per 200 ms: one
    # job at once, then job k not before k*0.2 s.
    assert arrivals[0] < 0.5
    for k in range(1, 10):
        assert arrivals[k] >= k * 0.2 - 0.02, arrivals
    assert arrivals[-1] < 3.0, arrivals
    await w.close()


async def test_scripts_reload_after_redis_forgets_them(
    server: RunningServer, engine: Engine, stubs: tuple[qrpc.QueueServiceStub, jrpc.QueueServiceStub]
) -> None:
    """A Redis restart or failover empties the script cache (NOSCRIPT); every path reloads transparently."""
    _, jobs = stubs
    await engine.redis.script_flush()
    (job_id,) = await add(jobs, 1)  # pipelined add
    w = RawWorker(server.address, ["q"])
    await w.connect(credits=1)
    await engine.redis.script_flush()
    (j,) = await w.jobs(1)  # claim
    await engine.redis.script_flush()
    w.report(
        pb.WorkerReport(
            completions=[pb.JobCompletion(queue_name="q", job_id=job_id, lease_token=j.lease_token)]
        )
    )
    w.half_close()
    await w.wait_end()
    assert (await engine.get_job("q", job_id)).state == "completed"
    await w.close()


async def test_last_progress_and_completion_in_one_report(
    server: RunningServer, stubs: tuple[qrpc.QueueServiceStub, jrpc.QueueServiceStub]
) -> None:
    from google.protobuf import struct_pb2

    _, jobs = stubs
    (job_id,) = await add(jobs, 1)
    w = RawWorker(server.address, ["q"])
    await w.connect(credits=1)
    (j,) = await w.jobs(1)
    w.report(
        pb.WorkerReport(
            progress=[pb.JobProgress(lease=lease(j), progress=struct_pb2.Value(number_value=100))],
            completions=[pb.JobCompletion(queue_name="q", job_id=job_id, lease_token=j.lease_token)],
        )
    )
    w.half_close()
    await w.wait_end()
    got = await jobs.GetJob(jpb.GetJobRequest(queue_name="q", job_id=job_id))
    assert got.job.state == t.JOB_STATE_COMPLETED and got.job.progress.number_value == 100
    await w.close()
