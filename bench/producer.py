"""Our producer process: `python -m bench.producer MODE --server ADDR --queue Q ...`; prints one JSON line.

Modes (each times itself; the process start is never measured). --queue may name several queues,
comma-separated (the benchmark's Cluster mode: queues on each primary); bulk, single and latency spread their
jobs over them in turn, the other modes take the first.

- ``bulk``: --jobs jobs ``{"i": n}`` through `QueueManager.add_bulk` (the AddBulk client stream).
- ``features``: like bulk, with priorities 1–5 mixed, every 10th job named to fail its first attempt
  (``attempts=2``, no backoff), plus --side-jobs jobs on --side-queue.
- ``failures``: like bulk, every job named to fail its first attempt (``attempts=2``, no backoff).
- ``chains``: like bulk, each job chaining one link, a job in --side-queue added when it completes.
- ``workflows``: --jobs `execute_workflow` calls from --inflight concurrent callers, each run a step in
  --queue whose success starts a step in --side-queue.
- ``single``: --jobs `add_job` calls from --inflight concurrent callers in this one process.
- ``latency``: `add_job` at --rate jobs/s (absolute schedule) for --warmup then --seconds, data carrying the
  wall clock in ns (``t``) and a warm-up mark (``w``).
- ``unary``: one call in flight at a time, in interleaved blocks: the bare health ``Check``, `add_job`,
  the raw ``AddJob`` stub and ``GetQueue``; their mean latencies.
"""

from __future__ import annotations

# Before grpc: on import, the client chooses how grpc reads its sockets (queue_manager/_grpc_io.py), which
# grpc fixes when it is first imported. A producer that imported grpc first read every answer on grpc's
# EventEngine threads, one thread wake-up more per message than our clients make.
import queue_manager  # noqa: F401

# isort: split
import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench import FAILS_ONCE
from bench.measure import percentile
from queue_manager import QueueManager
from queue_manager.requests import add_job_request
from queue_manager.v1 import queue_service_pb2, queue_service_pb2_grpc


def _call_stats(ms: list[float], prefix: str) -> dict[str, float]:
    ms = sorted(ms)
    return {
        f"{prefix}_mean_ms": round(statistics.fmean(ms), 4),
        f"{prefix}_p50_ms": round(percentile(ms, 50), 4),
        f"{prefix}_p99_ms": round(percentile(ms, 99), 4),
    }


async def bulk(qm: QueueManager, a: argparse.Namespace) -> dict[str, Any]:
    pad = {"s": "x" * a.pad} if a.pad else {}
    jobs = [{"name": "noop", "data": {"i": i, **pad}} for i in range(a.jobs)]
    n = len(a.queues)
    t0 = time.perf_counter()
    added = await asyncio.gather(*(qm.add_bulk(q, jobs[k::n]) for k, q in enumerate(a.queues)))
    elapsed = time.perf_counter() - t0
    return {"jobs": sum(len(ids) for ids in added), "seconds": elapsed}


async def features(qm: QueueManager, a: argparse.Namespace) -> dict[str, Any]:
    jobs: list[dict[str, Any]] = []
    for i in range(a.jobs):
        # The name marks the jobs that fail once: the processor tells them apart without decoding the data,
        # which the plain drain's processor never does either (the ratio compares the queue's features).
        name = FAILS_ONCE if i % 10 == 0 else "mixed"
        jobs.append({"name": name, "data": {"i": i}, "options": {"priority": 1 + i % 5, "attempts": 2}})
    side = [{"name": "limited", "data": {"i": i}} for i in range(a.side_jobs)]
    t0 = time.perf_counter()
    ids = await qm.add_bulk(a.queue, jobs)
    if side:
        await qm.add_bulk(a.side_queue, side)
    return {"jobs": len(ids), "seconds": time.perf_counter() - t0}


# Fairness groups the groups mode spreads its jobs over (a tenant each): the rotation takes one job of each
# in turn, so a claim of 100 touches 100 groups.
GROUPS = 100


async def groups(qm: QueueManager, a: argparse.Namespace) -> dict[str, Any]:
    jobs = [
        {"name": "grouped", "data": {"i": i}, "options": {"group": f"tenant-{i % GROUPS}"}}
        for i in range(a.jobs)
    ]
    t0 = time.perf_counter()
    ids = await qm.add_bulk(a.queue, jobs)
    return {"jobs": len(ids), "seconds": time.perf_counter() - t0}


async def failures(qm: QueueManager, a: argparse.Namespace) -> dict[str, Any]:
    jobs = [{"name": FAILS_ONCE, "data": {"i": i}, "options": {"attempts": 2}} for i in range(a.jobs)]
    t0 = time.perf_counter()
    ids = await qm.add_bulk(a.queue, jobs)
    return {"jobs": len(ids), "seconds": time.perf_counter() - t0}


async def chains(qm: QueueManager, a: argparse.Namespace) -> dict[str, Any]:
    jobs = [
        {
            "name": "parent",
            "data": {"i": i},
            "options": {"chain_to": [{"queue_name": a.side_queue, "job_name": "link", "data": {"i": i}}]},
        }
        for i in range(a.jobs)
    ]
    t0 = time.perf_counter()
    ids = await qm.add_bulk(a.queue, jobs)
    return {"jobs": len(ids), "seconds": time.perf_counter() - t0}


async def workflows(qm: QueueManager, a: argparse.Namespace) -> dict[str, Any]:
    counter = iter(range(a.jobs))

    async def caller() -> None:
        for i in counter:
            step = {"key": "first", "queue_name": a.queue, "job_name": "first", "data": {"i": i}}
            step["on_success"] = [{"key": "next", "queue_name": a.side_queue, "job_name": "next"}]
            await qm.execute_workflow({"name": "two steps", "steps": [step]})

    t0 = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(a.inflight)))
    return {"jobs": a.jobs, "seconds": time.perf_counter() - t0}


async def single(qm: QueueManager, a: argparse.Namespace) -> dict[str, Any]:
    counter = iter(range(a.jobs))
    ms: list[float] = []

    queues, n = a.queues, len(a.queues)

    async def caller() -> None:
        for i in counter:
            t = time.perf_counter()
            await qm.add_job(queues[i % n], "noop", {"i": i})
            ms.append((time.perf_counter() - t) * 1000)

    await qm.add_job(queues[0], "warm", {"i": -1})  # channel up before the clock starts
    t0 = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(a.inflight)))
    elapsed = time.perf_counter() - t0
    return {"jobs": len(ms) + 1, "seconds": elapsed, **_call_stats(ms, "call")}


async def _steady(
    qm: QueueManager, queues: list[str], rate: int, count: int, warm: bool, ms: list[float]
) -> float:
    interval = 1.0 / rate
    in_flight = asyncio.Semaphore(256)
    tasks: set[asyncio.Task[None]] = set()

    async def add_one(queue: str) -> None:
        try:
            # The clock starts as add_job is called, as BullMQ's starts as Queue.add is: a task starts a turn
            # of the event loop after its creation (Node runs an async function at once, up to its first
            # await), and that turn is the benchmark's pacing, not the add.
            data: dict[str, Any] = {"t": str(time.time_ns())}
            if warm:
                data["w"] = 1
            t = time.perf_counter()
            await qm.add_job(queue, "latency", data)
            ms.append((time.perf_counter() - t) * 1000)
        finally:
            in_flight.release()

    t0 = time.perf_counter()
    for i in range(count):
        delay = t0 + i * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await in_flight.acquire()
        task = asyncio.create_task(add_one(queues[i % len(queues)]))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)
    return count / (time.perf_counter() - t0)


async def latency(qm: QueueManager, a: argparse.Namespace) -> dict[str, Any]:
    warm, measured = int(a.rate * a.warmup), int(a.rate * a.seconds)
    if warm:
        await _steady(qm, a.queues, a.rate, warm, True, [])
    ms: list[float] = []
    achieved = await _steady(qm, a.queues, a.rate, measured, False, ms)
    return {
        "jobs": warm + measured,
        "measured": measured,
        "achieved_rate": achieved,
        **_call_stats(ms, "add"),
    }


async def unary(qm: QueueManager, a: argparse.Namespace) -> dict[str, Any]:
    channel = grpc.aio.insecure_channel(a.server)
    health = health_pb2_grpc.HealthStub(channel)
    queues = queue_service_pb2_grpc.QueueServiceStub(channel)
    raw_add = add_job_request(a.queue, "raw", {"i": 0}, None)  # built once: no client work per call
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "check": lambda: health.Check(health_pb2.HealthCheckRequest(service="")),
        "add_job": lambda: qm.add_job(a.queue, "noop", {"i": 0}),
        "raw_add_job": lambda: queues.AddJob(raw_add),
        "get_queue": lambda: queues.GetQueue(queue_service_pb2.GetQueueRequest(name=a.queue)),
    }
    ms: dict[str, list[float]] = {name: [] for name in calls}
    try:
        for call in calls.values():  # warm every path once
            await call()
        per_block = max(1, a.jobs // a.blocks)
        for _ in range(a.blocks):
            for name, call in calls.items():
                for _ in range(per_block):
                    t = time.perf_counter()
                    await call()
                    ms[name].append((time.perf_counter() - t) * 1000)
    finally:
        await channel.close()
    out: dict[str, Any] = {"calls_each": len(ms["check"])}
    for name, values in ms.items():
        out[f"{name}_mean_ms"] = round(statistics.fmean(values), 4)
    out["add_job_over_check"] = out["add_job_mean_ms"] / out["check_mean_ms"]
    out["raw_add_job_over_check"] = out["raw_add_job_mean_ms"] / out["check_mean_ms"]
    return out


MODES: dict[str, Callable[[QueueManager, argparse.Namespace], Awaitable[dict[str, Any]]]] = {
    "bulk": bulk,
    "chains": chains,
    "workflows": workflows,
    "features": features,
    "failures": failures,
    "groups": groups,
    "single": single,
    "latency": latency,
    "unary": unary,
}


async def main_async(a: argparse.Namespace) -> dict[str, Any]:
    qm = QueueManager(address=a.server, timeout=60.0)
    try:
        cpu0 = time.process_time()
        result = await MODES[a.mode](qm, a)
        result["cpu_s"] = time.process_time() - cpu0
        return result
    finally:
        await qm.shutdown()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=sorted(MODES))
    p.add_argument("--server", required=True)
    p.add_argument("--queue", required=True, help="a queue, or several comma-separated")
    p.add_argument("--side-queue", default="")
    p.add_argument("--side-jobs", type=int, default=0)
    p.add_argument("--jobs", type=int, default=1000)
    p.add_argument("--inflight", type=int, default=50)
    p.add_argument("--rate", type=int, default=500)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--blocks", type=int, default=10)
    p.add_argument("--pad", type=int, default=0, help="bulk: a text of this many bytes in each job's data")
    a = p.parse_args()
    a.queues = a.queue.split(",")
    a.queue = a.queues[0]
    print(json.dumps(asyncio.run(main_async(a))), flush=True)


if __name__ == "__main__":
    main()
