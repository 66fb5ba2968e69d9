"""The three measurements of issue 2: bulk add, drain by Python workers, add-to-start latency.

Each returns a plain dict for the report. Every wait is bounded by a timeout that grows with the job
count; a benchmark that cannot finish raises BenchError instead of hanging.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.admin import Admin, BenchError
from bench.stack import Child, Stack, stop_all
from queue_manager import QueueManager


@dataclass(frozen=True)
class Params:
    """What to measure and how hard."""

    jobs: int = 100_000
    workers: int = 2
    concurrency: int = 200
    rate: int = 500
    seconds: float = 10.0
    warmup_seconds: float = 1.0


def _timeout_for(jobs: int) -> float:
    """Generous bound: 30 s plus 2 ms per job (100,000 jobs → 230 s), i.e. fails below ~500 jobs/s."""
    return 30.0 + jobs / 500.0


def _count(ids: Any) -> int | None:
    try:
        return len(ids)
    except TypeError:
        return None


async def bulk(stack: Stack, admin: Admin, p: Params) -> dict[str, Any]:
    """(a) Adds p.jobs jobs through `QueueManager.add_bulk` (the AddJobs client stream)."""
    queue = "bench-bulk"
    await admin.register(queue, keep_completed=max(p.jobs, 10_000))
    jobs = [{"name": "noop", "data": {"i": i}} for i in range(p.jobs)]
    qm = QueueManager(address=stack.address)
    try:
        t0 = time.perf_counter()
        ids = await asyncio.wait_for(qm.add_bulk(queue, jobs), timeout=_timeout_for(p.jobs))
        elapsed = time.perf_counter() - t0
    finally:
        await qm.shutdown()
    returned = _count(ids)
    if returned is not None and returned != p.jobs:
        raise BenchError(f"add_bulk returned {returned} ids for {p.jobs} jobs")
    m = await admin.metrics(queue)
    if m.waiting != p.jobs:
        raise BenchError(f"after add_bulk of {p.jobs} jobs the queue reports {m.waiting} waiting")
    await admin.obliterate(queue)
    return {"jobs": p.jobs, "seconds": round(elapsed, 3), "jobs_per_s": round(p.jobs / elapsed)}


async def _start_workers(stack: Stack, p: Params, queue: str, workdir: Path, latency: bool) -> list[Child]:
    """Starts p.workers bench worker processes and waits (bounded) until each has started its workers."""
    children: list[Child] = []
    ready_files: list[Path] = []
    max_seconds = _timeout_for(p.jobs) + p.seconds + 120
    try:
        for i in range(p.workers):
            ready = workdir / f"{queue}-ready-{i}"
            ready.unlink(missing_ok=True)
            args = [
                "--server",
                stack.address,
                "--queue",
                queue,
                "--concurrency",
                str(p.concurrency),
                "--ready-file",
                str(ready),
                "--max-seconds",
                str(int(max_seconds)),
            ]
            if latency:
                args += ["--latency-file", str(workdir / f"{queue}-latency-{i}.txt")]
            children.append(stack.start_worker(i, args, p.concurrency))
            ready_files.append(ready)
        deadline = time.monotonic() + 60
        while not all(f.exists() for f in ready_files):
            for child in children:
                if not child.alive():
                    raise BenchError(child.describe_exit())
            if time.monotonic() > deadline:
                raise BenchError("bench workers did not start within 60s; see worker logs in " + str(workdir))
            await asyncio.sleep(0.05)
        # The first credits follow the welcome; give them a moment to arrive.
        await asyncio.sleep(0.3)
    except BaseException:
        stop_all(children, timeout=10)
        raise
    return children


async def drain(stack: Stack, admin: Admin, p: Params) -> dict[str, Any]:
    """(b) Pre-adds p.jobs jobs to a paused queue, starts the workers, resumes, times until all completed."""
    queue = "bench-drain"
    await admin.register(queue, keep_completed=max(p.jobs, 10_000))
    await admin.pause(queue)
    qm = QueueManager(address=stack.address)
    try:
        await asyncio.wait_for(
            qm.add_bulk(queue, [{"name": "noop", "data": {"i": i}} for i in range(p.jobs)]),
            timeout=_timeout_for(p.jobs),
        )
    finally:
        await qm.shutdown()
    m = await admin.metrics(queue)
    if m.waiting + m.paused != p.jobs:
        raise BenchError(f"pre-add of {p.jobs} jobs: queue reports waiting {m.waiting}, paused {m.paused}")

    children = await _start_workers(stack, p, queue, stack.workdir, latency=False)
    try:
        await admin.resume(queue)
        elapsed, first, m = await admin.wait_completed(queue, p.jobs, _timeout_for(p.jobs), children)
    finally:
        stop_all(children, timeout=20)
    await admin.obliterate(queue)
    result: dict[str, Any] = {
        "jobs": p.jobs,
        "workers": p.workers,
        "concurrency": p.concurrency,
        "seconds": round(elapsed, 3),
        "jobs_per_s": round(p.jobs / elapsed),
        "first_completion_s": round(first, 3) if first is not None else None,
    }
    if first is not None and elapsed > first:
        result["jobs_per_s_after_first"] = round(p.jobs / (elapsed - first))
    return result


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an already sorted list."""
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


async def _produce(
    qm: QueueManager, queue: str, rate: int, count: int, warmup: bool, add_ms: list[float]
) -> float:
    """Adds count jobs at a steady rate (absolute schedule, so no drift); returns the achieved rate.

    The duration of each add call (request to reply, in ms) is appended to add_ms.
    """
    interval = 1.0 / rate
    in_flight = asyncio.Semaphore(256)
    tasks: set[asyncio.Task[Any]] = set()

    async def add_one(data: dict[str, Any]) -> None:
        try:
            t = time.perf_counter()
            await qm.add_job(queue, "latency", data)
            add_ms.append((time.perf_counter() - t) * 1000)
        finally:
            in_flight.release()

    t0 = time.perf_counter()
    for i in range(count):
        delay = t0 + i * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await in_flight.acquire()
        data: dict[str, Any] = {"t": str(time.time_ns())}
        if warmup:
            data["w"] = 1
        task = asyncio.create_task(add_one(data))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - t0
    return count / elapsed if elapsed > 0 else float("inf")


async def latency(stack: Stack, admin: Admin, p: Params) -> dict[str, Any]:
    """(c) Adds jobs at p.rate/s for p.seconds (after a warm-up); workers record add → processor start."""
    queue = "bench-latency"
    warm = int(p.rate * p.warmup_seconds)
    measured = int(p.rate * p.seconds)
    await admin.register(queue, keep_completed=max(warm + measured, 10_000))
    children = await _start_workers(stack, p, queue, stack.workdir, latency=True)
    qm = QueueManager(address=stack.address)
    try:
        bound = p.warmup_seconds + p.seconds + 60
        add_ms: list[float] = []
        if warm:
            await asyncio.wait_for(_produce(qm, queue, p.rate, warm, True, []), timeout=bound)
        achieved = await asyncio.wait_for(_produce(qm, queue, p.rate, measured, False, add_ms), timeout=bound)
        await admin.wait_completed(queue, warm + measured, 60, children)
    finally:
        try:
            await qm.shutdown()
        finally:
            stop_all(children, timeout=20)

    samples: list[float] = []
    for path in sorted(stack.workdir.glob(f"{queue}-latency-*.txt")):
        for line in path.read_text().splitlines():
            ns, warmup_flag = line.split()[:2]
            if warmup_flag == "0":
                samples.append(int(ns) / 1e6)
    if len(samples) < measured:
        raise BenchError(f"only {len(samples)} of {measured} latency samples were recorded")
    samples.sort()
    add_ms.sort()
    return {
        "jobs": measured,
        "rate": p.rate,
        "achieved_rate": round(achieved, 1),
        "seconds": p.seconds,
        "samples": len(samples),
        "p50_ms": round(_percentile(samples, 50), 3),
        "p90_ms": round(_percentile(samples, 90), 3),
        "p99_ms": round(_percentile(samples, 99), 3),
        "max_ms": round(samples[-1], 3),
        # Share of the latency spent in the AddJob call itself (producer side).
        "add_call_p50_ms": round(_percentile(add_ms, 50), 3),
        "add_call_p99_ms": round(_percentile(add_ms, 99), 3),
    }
