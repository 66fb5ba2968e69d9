"""Fault scenarios on server processes, judged by the ledger (``make test-faults``).

A server killed with ``kill -9`` in the middle of a bulk add (the client retries with the same job ids on
another server: every acknowledged job exists exactly once); three servers sharing one Redis with one of
them killed while plain jobs, chains, workflows and a schedule flow (nothing lost, each chain link and
workflow step added once, each schedule occurrence fired once, the killed server's workers carry on
through the others).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from queue_manager_server.engine import Engine
from tests.ledger.checker import Chain, Expect, Schedule, Workflow
from tests.ledger.faultkit import until
from tests.ledger.producer import Job, numbered
from tests.ledger.scenario import RECOVERY_LEASE_MS, WAIT, Scenario, server_args, target
from tests.procs import Procs

pytestmark = pytest.mark.faults


@pytest.fixture
async def scenario(request: pytest.FixtureRequest, procs: Procs, tmp_path: Path) -> AsyncIterator[Scenario]:
    s = Scenario(request.node.name.removeprefix("test_"), procs, tmp_path)
    yield s
    await s.close()


async def test_server_killed_during_a_bulk_add(
    scenario: Scenario, procs: Procs, redis_url: str, prefix: str, redis: Redis, engine: Engine
) -> None:
    """kill -9 of the server writing a 20,000-job bulk stream (and serving single adds and a worker): the
    producer retries the stream and its single adds with the same ids through the other server; every
    acknowledged job exists once and runs to completion."""
    s = scenario
    doomed = await procs.server(redis_url, prefix, 0, *server_args(RECOVERY_LEASE_MS))
    other = await procs.server(redis_url, prefix, 0, *server_args(RECOVERY_LEASE_MS))
    both = target(doomed.address, other.address)  # the first that answers: the doomed one, until it dies
    admin = s.client(other.address)
    await admin.register_queue("bulk", completed_retention=100_000)
    s.worker(both, ["bulk"], "w-doomed", concurrency=50, run_ms=1)
    s.worker(other.address, ["bulk"], "w-other", concurrency=50, run_ms=1)
    await s.wait_connected(admin, ["w-doomed", "w-other"])
    bulk_producer, single_producer = s.producer(both, "bulk", timeout=30), s.producer(both, "single")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    stream = numbered("b", 20_000)
    adding = asyncio.create_task(bulk_producer.add_until_known("bulk", stream, deadline, bulk=True))
    singles = asyncio.create_task(
        single_producer.pump("bulk", numbered("one", 400), concurrency=4, deadline=deadline, pace_s=0.01)
    )

    async def staging() -> bool:
        return bool(await redis.hlen(engine.keys("bulk").bulk))

    await until(staging, "the bulk stream to be staging", WAIT)
    doomed.kill()
    await doomed.wait()
    assert await adding == "ack"
    await singles
    assert bulk_producer.tally.outcomes["unknown"] == 20_000, "the stream did not break with the server"
    acked = bulk_producer.tally.outcomes["ack"] + single_producer.tally.outcomes["ack"]
    assert acked == 20_400
    await s.wait_finished(admin, ["bulk"], 20_400)
    report = await s.check(redis, prefix, Expect(["bulk"], max_runs=2))
    assert report.ok, report.summary()
    # Runs repeat only where the killed server took an outcome with it: at most the jobs its worker held.
    assert report.counts["rerun_jobs"] <= 50


def chain(i: int) -> Job:
    links = [
        {"queue_name": "second", "job_name": "link-1"},
        {"queue_name": "third", "job_name": "link-2"},
    ]
    return Job(id=f"chain-{i}", name="chain", data={"i": i}, options={"chain_to": links})


def workflow(run: int) -> dict[str, Any]:
    """a (main) -> on success b and c (second); d (third) once both b and c completed."""
    return {
        "name": f"fan-in-{run}",
        "steps": [
            {
                "key": "a",
                "queue_name": "main",
                "job_name": "a",
                "on_success": [
                    {"key": "b", "queue_name": "second", "job_name": "b"},
                    {"key": "c", "queue_name": "second", "job_name": "c"},
                ],
            },
            {"key": "d", "queue_name": "third", "job_name": "d", "depends_on": ["b", "c"]},
        ],
    }


async def test_three_servers_one_killed_with_flows(
    scenario: Scenario, procs: Procs, redis_url: str, prefix: str, redis: Redis, engine: Engine
) -> None:
    """Three servers on one Redis, a worker on each, plain jobs, chains, workflows and a schedule flowing;
    one server is killed with kill -9. Its worker fails over to the others and carries on, the jobs whose
    outcome died with it come back when their leases run out, and the flows owe nothing."""
    s = scenario
    servers = [await procs.server(redis_url, prefix, 0, *server_args(RECOVERY_LEASE_MS)) for _ in range(3)]
    doomed = servers[0]
    admin = s.client(servers[1].address)
    queues = ["main", "second", "third"]
    for q in queues:
        await admin.register_queue(q, default_job_options={"max_stalled": 5})
    # The doomed server's worker and producer fail over to the others; the rest stay where they are.
    everywhere = target(*(srv.address for srv in servers))
    s.worker(everywhere, queues, "w0", concurrency=20, run_ms=30)
    s.worker(servers[1].address, queues, "w1", concurrency=20, run_ms=30)
    s.worker(servers[2].address, queues, "w2", concurrency=20, run_ms=30)
    await s.wait_connected(admin, ["w0", "w1", "w2"])
    await admin.add_schedule("main", "tick", every=timedelta(seconds=1), limit=6, job_name="tick")
    p0, p2 = s.producer(everywhere, "p0"), s.producer(servers[2].address, "p2")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    chains = [chain(i) for i in range(30)]
    runs = [f"run-{i}" for i in range(6)]
    for run_id in runs:
        await admin.execute_workflow(workflow(int(run_id[4:])), run_id=run_id)
    pumps = [
        asyncio.create_task(
            p0.pump("main", numbered("p", 300), concurrency=2, deadline=deadline, pace_s=0.02)
        ),
        asyncio.create_task(
            p2.pump("main", numbered("q", 300), concurrency=2, deadline=deadline, pace_s=0.02)
        ),
        asyncio.create_task(p2.pump("main", chains, concurrency=1, deadline=deadline, pace_s=0.05)),
    ]
    await s.wait_records("a third of the plain jobs to run", 200, "done")
    held = {r.id for r in (await engine.list_jobs("main", "active", 0, 1000))[0]}
    killed_at = s.mark()
    doomed.kill()
    await doomed.wait()
    await asyncio.gather(*pumps)
    await s.wait_connected(admin, ["w0"], after=killed_at)
    s.figures["worker_reconnected_s"] = round(s.mark() - killed_at, 3)
    # Plain 600, chains 30 x 3, workflows 6 x 4 steps, the schedule's 6 runs.
    total = 600 + 90 + 24 + 6
    await s.wait_finished(admin, queues, total)
    finished = [await admin.get_job("main", job_id) for job_id in held]
    ends = [j.finished_at.timestamp() for j in finished if j.finished_at is not None]
    s.figures["held_jobs_finished_s"] = round(max(ends) - killed_at, 3) if ends else 0.0
    expect = Expect(
        queues,
        max_runs=2,
        chains=[Chain("main", j.id, ["second", "third"]) for j in chains],
        workflows=[
            Workflow(run_id, {"a": "main", "b": "second", "c": "second", "d": "third"}) for run_id in runs
        ],
        schedules=[Schedule("main", "tick", runs=6, every_ms=1000)],
    )
    report = await s.check(redis, prefix, expect)
    assert report.ok, report.summary()
    assert report.counts["derived"] == 60 + 24 + 6
    assert report.counts["rerun_jobs"] <= 20
