"""Several servers on one Redis: background loops everywhere, skewed clocks, nothing lost or doubled."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator

import grpc
from google.protobuf.duration_pb2 import Duration

from queue_manager.v1 import jobs_pb2 as jpb
from queue_manager.v1 import queue_service_pb2 as qpb
from queue_manager.v1 import queue_service_pb2_grpc as jrpc
from queue_manager.v1 import queue_service_pb2_grpc as qrpc
from queue_manager.v1 import types_pb2 as t
from queue_manager.v1 import worker_service_pb2 as pb
from queue_manager_server.engine import Engine
from tests.conftest import ServerFactory
from tests.procs import ROOT, Procs
from tests.rawworker import RawWorker, eventually, lease


async def setup_queue(address: str, n: int = 0, **opts: object) -> list[str]:
    async with grpc.aio.insecure_channel(address) as ch:
        await qrpc.QueueServiceStub(ch).RegisterQueue(qpb.RegisterQueueRequest(name="q"))

        async def stream() -> AsyncIterator[jpb.AddBulkRequest]:
            for start in range(0, n, 250):
                yield jpb.AddBulkRequest(
                    queue_name="q",
                    jobs=[
                        jpb.NewJob(name=f"j{i}", options=t.JobOptions(**opts))  # type: ignore[arg-type]
                        for i in range(start, min(n, start + 250))
                    ],
                )

        return list((await jrpc.QueueServiceStub(ch).AddBulk(stream())).job_ids) if n else []


async def consume(
    w: RawWorker, done: Counter[str], stop: asyncio.Event, crash_after: int = 0, mine: set[str] | None = None
) -> None:
    """Completes every job it gets, returning a credit each time; optionally vanishes mid-way."""
    seen = 0
    while not stop.is_set():
        try:
            m = await w.recv(timeout=0.5)
        except TimeoutError:
            continue
        if m.WhichOneof("kind") != "delivery":
            continue
        for j in m.delivery.jobs:
            seen += 1
            if mine is not None:
                mine.add(j.job.id)
            if crash_after and seen > crash_after:
                await w.close()  # crash while holding jobs
                return
            w.report(
                pb.WorkerReport(
                    credits=1,
                    completions=[
                        pb.JobCompletion(queue_name="q", job_id=j.job.id, lease_token=j.lease_token)
                    ],
                )
            )
            done[j.job.id] += 1


async def test_three_servers_all_loops_nothing_lost_nothing_doubled(
    server_factory: ServerFactory, engine: Engine
) -> None:
    servers = [await server_factory() for _ in range(3)]
    ids = await setup_queue(servers[0].address, 600)
    workers = [RawWorker(s.address, ["q"], f"w{i}") for i, s in enumerate(servers)]
    for w in workers:
        await w.connect(credits=20)
    done: Counter[str] = Counter()
    stop = asyncio.Event()
    crashed: set[str] = set()
    tasks = [asyncio.create_task(consume(workers[0], done, stop, crash_after=50, mine=crashed))]
    tasks += [asyncio.create_task(consume(w, done, stop)) for w in workers[1:]]

    async def all_completed() -> bool:
        return (await engine.metrics("q")).completed == 600

    await eventually(all_completed, timeout=60)
    stop.set()
    await asyncio.gather(*tasks)
    m = await engine.metrics("q")
    assert (m.waiting, m.active, m.delayed, m.failed) == (0, 0, 0, 0)
    # Every job ran; only jobs held by the crashed worker may have run twice (at-least-once).
    assert set(done) == set(ids)
    assert {i for i, n in done.items() if n > 1} <= crashed
    assert (await engine.metrics("q")).stalled_total >= 1
    for w in workers[1:]:
        await w.close()


async def test_clock_skew_of_30s_between_servers(
    procs: Procs, redis_url: str, prefix: str, engine: Engine
) -> None:
    """Server B runs 30 s ahead. Leases and delays use Redis time: B neither reclaims nor starts early."""
    a = await procs.server(redis_url, prefix, 0, "--lease-ms", "1500")
    b = await procs.server(
        redis_url,
        prefix,
        0,
        "--lease-ms",
        "1500",
        env={"QM_TEST_CLOCK_SKEW_S": "30", "PYTHONPATH": f"{ROOT / 'tests' / 'skew'}:{ROOT}"},
    )
    await setup_queue(a.address)
    w = RawWorker(b.address, ["q"])
    await w.connect(credits=1)
    added = time.perf_counter()
    async with grpc.aio.insecure_channel(a.address) as ch:
        r = await jrpc.QueueServiceStub(ch).AddJob(
            jpb.AddJobRequest(
                queue_name="q",
                job=jpb.NewJob(name="d", options=t.JobOptions(delay=Duration(nanos=500_000_000))),
            )
        )
    (j,) = await w.jobs(1, timeout=10)
    assert time.perf_counter() - added >= 0.49
    # Hold the job 4 s (past the 1.5 s lease), extending every 0.4 s: both reapers must leave it alone.
    deadline = time.perf_counter() + 4
    while time.perf_counter() < deadline:
        w.report(pb.WorkerReport(extensions=[lease(j)]))
        ack = await w.until("ack")
        assert ack.ack.results[0].code == 0
        await asyncio.sleep(0.4)
    rec = await engine.get_job("q", r.job.id)
    assert rec.text("st") == "active" and rec.int("stc") == 0
    w.report(
        pb.WorkerReport(
            completions=[pb.JobCompletion(queue_name="q", job_id=j.job.id, lease_token=j.lease_token)]
        )
    )
    w.half_close()
    await w.wait_end()
    assert (await engine.get_job("q", r.job.id)).text("st") == "completed"
    await w.close()
