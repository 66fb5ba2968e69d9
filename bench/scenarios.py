"""The measurements of issue 9, the same for every system (a `bench.drivers.Driver`).

Each scenario returns one run's figures as a flat dict of numbers; the caller repeats and summarises.
Every wait is bounded by a timeout that grows with the job count, so a system that cannot finish raises
BenchError instead of hanging. Jobs are counted by their own ids in the workers (bench/recorder.py): none
twice, none missed; throughput clocks run from the first job start to the last job end.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.admin import BenchError
from bench.drivers import Driver, Ours, stop_workers
from bench.measure import (
    CpuMeter,
    check_exactly_once,
    percentile,
    read_lines,
    valkey_memory,
    wait_progress,
)
from queue_manager_server.embedded import JOB_HASH_SETTING, JOB_HASH_VALUE_MAX


@dataclass(frozen=True)
class Params:
    """What to measure and how hard."""

    jobs: int = 100_000  # bulk, drain, features
    single_jobs: int = 20_000  # single adds under concurrency
    inflight: int = 50
    memory_jobs: int = 100_000
    workers: int = 2
    concurrency: int = 200
    rate: int = 500
    seconds: float = 10.0
    warmup: float = 1.0
    unary_calls: int = 2_000  # per kind of call


def timeout_for(jobs: int) -> float:
    """Generous bound: 30 s plus 5 ms per job (100,000 jobs → 530 s), i.e. fails below ~200 jobs/s."""
    return 30.0 + jobs / 200.0


class Marks:
    """CPU of the server processes and of Valkey (every node of a Cluster) between two points, per job."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self.valkey0 = 0.0
        self.commands0 = 0
        self.server: CpuMeter | None = None

    async def begin(self) -> None:
        self.server = CpuMeter(self.driver.server_pids())
        self.valkey0 = await self.driver.valkey_cpu()
        self.commands0 = await self.driver.valkey_commands()

    async def per_job(self, jobs: int) -> dict[str, float]:
        assert self.server is not None
        valkey = await self.driver.valkey_cpu() - self.valkey0
        commands = await self.driver.valkey_commands() - self.commands0
        out = {"valkey_cpu_us": valkey / jobs * 1e6, "valkey_commands": commands / jobs}
        if self.driver.server_pids():
            out["server_cpu_us"] = self.server.elapsed() / jobs * 1e6
        return out


def _fresh_dir(driver: Driver, name: str) -> Path:
    out = driver.workdir / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    return out


async def _check_waiting(driver: Driver, queue: str, expected: int) -> None:
    waiting = await driver.waiting(queue)
    if waiting != expected:
        raise BenchError(f"{driver.name}: {waiting} jobs waiting in {queue} after adding {expected}")


async def bulk(d: Driver, p: Params) -> dict[str, Any]:
    """Adds p.jobs jobs with the system's bulk API (ours: the AddBulk client stream)."""
    queue = "bench-bulk"
    await d.prepare(queue)
    marks = Marks(d)
    await marks.begin()
    r = await d.produce("bulk", queue, timeout_for(p.jobs), jobs=p.jobs)
    cpu = await marks.per_job(p.jobs)
    await _check_waiting(d, queue, p.jobs)
    await d.cleanup(queue)
    return {"jobs_per_s": p.jobs / r["seconds"], "producer_cpu_us": r["cpu_s"] / p.jobs * 1e6, **cpu}


async def single(d: Driver, p: Params) -> dict[str, Any]:
    """p.single_jobs single adds from one producer process with p.inflight callers at once."""
    queue = "bench-single"
    await d.prepare(queue)
    marks = Marks(d)
    await marks.begin()
    r = await d.produce("single", queue, timeout_for(p.single_jobs), jobs=p.single_jobs, inflight=p.inflight)
    cpu = await marks.per_job(p.single_jobs)
    await _check_waiting(d, queue, int(r["jobs"]))
    await d.cleanup(queue)
    out = {"jobs_per_s": p.single_jobs / r["seconds"], "producer_cpu_us": r["cpu_s"] / p.single_jobs * 1e6}
    for key in ("call_mean_ms", "call_p50_ms", "call_p99_ms"):
        if key in r:
            out[key] = r[key]
    return out | cpu


async def _timed_drain(
    d: Driver, p: Params, queue: str, mode: str, jobs: int, release: list[str]
) -> dict[str, Any]:
    """Starts the workers on a filled queue, releases it, and times the drain by the workers' records."""
    out_dir = _fresh_dir(d, f"run-{queue}")
    limit = timeout_for(jobs)
    marks = Marks(d)
    await marks.begin()
    children = await d.start_workers(queue, mode, p.workers, p.concurrency, out_dir, limit + 120)
    try:
        for name in release:
            await d.release(name)

        def dead() -> str | None:
            return next((c.describe_exit() for c in children if not c.alive()), None)

        progress = await wait_progress(out_dir, "w", jobs, limit, dead)
        cpu = await marks.per_job(jobs)
    finally:
        await stop_workers(children, d.stop_grace)
    check_exactly_once(read_lines(out_dir, "w"), jobs)
    if progress.seconds <= 0:
        raise BenchError(f"{d.name}: no job start/end times were recorded")
    return _with_total_cpu(
        {"jobs_per_s": jobs / progress.seconds, "worker_cpu_us": progress.cpu_s / jobs * 1e6, **cpu}
    )


def _with_total_cpu(result: dict[str, Any]) -> dict[str, Any]:
    """The result with ``total_cpu_us``: the sum of every process's CPU per job it holds."""
    result["total_cpu_us"] = sum(v for k, v in result.items() if k.endswith("_cpu_us"))
    return result


async def _drain_of(d: Driver, p: Params, queue: str, made_by: str, run_as: str) -> dict[str, Any]:
    """p.jobs jobs written by the producer's `made_by` mode up front (ours: to a paused queue), then drained
    by p.workers processes in worker mode `run_as`."""
    await d.prepare(queue, paused=True)
    await d.produce(made_by, queue, timeout_for(p.jobs), jobs=p.jobs)
    result = await _timed_drain(d, p, queue, run_as, p.jobs, [queue])
    await d.cleanup(queue)
    return result


async def drain(d: Driver, p: Params) -> dict[str, Any]:
    """p.jobs no-op jobs added up front, then drained."""
    return await _drain_of(d, p, "bench-drain", "bulk", "noop")


async def features(d: Driver, p: Params) -> dict[str, Any]:
    """Drain with priorities 1–5 mixed, every 10th job failing once, and a rate-limited queue beside it."""
    if not isinstance(d, Ours):
        raise BenchError("features is measured for Queue Manager only")
    queue, side = "bench-features", "bench-features-rl"
    await d.prepare(queue, paused=True)
    await d.prepare(side, paused=True, rate_limited=True)
    side_jobs = max(1, p.jobs // 10)
    await d.produce("features", queue, timeout_for(p.jobs), jobs=p.jobs, side_queue=side, side_jobs=side_jobs)
    result = await _timed_drain(d, p, f"{queue}+{side}", "features", p.jobs, [queue, side])
    await d.cleanup(queue)
    await d.cleanup(side)
    return result


async def failures(d: Driver, p: Params) -> dict[str, Any]:
    """Drain where every job fails its first attempt and completes on its retry (no backoff): what the
    failure path costs beside a run. Counted by the jobs' successful runs, two runs each."""
    if not isinstance(d, Ours):
        raise BenchError("failures is measured for Queue Manager only")
    return await _drain_of(d, p, "bench-failures", "failures", "features")


async def groups(d: Driver, p: Params) -> dict[str, Any]:
    """Drain of no-op jobs spread over 100 fairness groups (JobOptions.group), taken in turns."""
    if not isinstance(d, Ours):
        raise BenchError("groups is measured for Queue Manager only")
    return await _drain_of(d, p, "bench-groups", "groups", "noop")


async def _linked_drain(
    d: Driver, p: Params, name: str, items: int, **produce: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A drain whose jobs each lead to one more, in a second queue (a chain link, a workflow's next step):
    `items` first jobs written by the producer's `name` mode while their queue is paused, then both queues'
    2 × items runs timed as a drain. Returns the drain's figures and the producer's."""
    if not isinstance(d, Ours):
        raise BenchError(f"{name} is measured for Queue Manager only")
    queue, side = f"bench-{name}", f"bench-{name}-next"
    await d.prepare(queue, paused=True)
    await d.prepare(side)
    made = await d.produce(name, queue, timeout_for(items), jobs=items, side_queue=side, **produce)
    result = await _timed_drain(d, p, f"{queue}+{side}", "linked", 2 * items, [queue])
    await d.cleanup(queue)
    await d.cleanup(side)
    return result, made


async def chains(d: Driver, p: Params) -> dict[str, Any]:
    """Drain of two-job chains: p.jobs / 2 jobs, each chaining one link in a second queue that the server adds
    when the job completes (the flow hand-off); p.jobs runs in all, as in the plain drain."""
    result, _ = await _linked_drain(d, p, "chains", max(1, p.jobs // 2))
    return result


async def workflows(d: Driver, p: Params) -> dict[str, Any]:
    """Two-step workflow runs: p.jobs / 10 runs executed by p.inflight callers while their first queue is
    paused, each a step whose success starts a step in a second queue; the step runs timed as a drain."""
    runs = max(1, p.jobs // 10)
    result, made = await _linked_drain(d, p, "workflows", runs, inflight=p.inflight)
    result["runs_created_per_s"] = runs / made["seconds"]
    return result


async def latency(d: Driver, p: Params) -> dict[str, Any]:
    """Jobs added one by one at p.rate/s (after a warm-up); workers record add stamp → processor start."""
    queue = "bench-latency"
    await d.prepare(queue)
    warm, measured = int(p.rate * p.warmup), int(p.rate * p.seconds)
    out_dir = _fresh_dir(d, "run-latency")
    bound = p.warmup + p.seconds + 60
    children = await d.start_workers(queue, "latency", p.workers, p.concurrency, out_dir, bound + 120)
    marks = Marks(d)
    await marks.begin()
    try:
        r = await d.produce("latency", queue, bound, rate=p.rate, seconds=p.seconds, warmup=p.warmup)

        def dead() -> str | None:
            return next((c.describe_exit() for c in children if not c.alive()), None)

        progress = await wait_progress(out_dir, "w", warm + measured, 60, dead)
        # Every job's add, claim, delivery and completion at a low rate, warm-up included.
        cpu = await marks.per_job(warm + measured)
    finally:
        await stop_workers(children, d.stop_grace)
    lines = read_lines(out_dir, "w")
    check_exactly_once(lines, warm + measured)
    samples = sorted(int(ns) / 1e6 for _, ns, w in (line.split() for line in lines) if w == "0")
    if len(samples) != measured:
        raise BenchError(f"{d.name}: {len(samples)} of {measured} latency samples were recorded")
    await d.cleanup(queue)
    out = {
        "p50_ms": percentile(samples, 50),
        "p90_ms": percentile(samples, 90),
        "p99_ms": percentile(samples, 99),
        "max_ms": samples[-1],
        "achieved_rate": r["achieved_rate"],
        **cpu,
    }
    # The producer's and the workers' CPU per job too: at a low rate every process wakes for every job, and
    # what all of them spend on a machine of two cores is what a job's wake-ups queue behind.
    jobs = warm + measured
    if "cpu_s" in r:
        out["producer_cpu_us"] = r["cpu_s"] / jobs * 1e6
    out["worker_cpu_us"] = progress.cpu_s / jobs * 1e6
    _with_total_cpu(out)
    for key in ("add_mean_ms", "add_p50_ms", "add_p99_ms"):
        if key in r:
            out[key] = r[key]
    return out


# The text in each job's data for the memory figures of larger jobs (ours): longer than the 64 bytes up to
# which Valkey's default keeps a hash compact, as most real payloads are.
MEMORY_PAD = 200


async def _filled(d: Driver, queue: str, jobs: int, pad: int = 0) -> float:
    """Valkey used_memory delta per waiting job after adding `jobs` jobs ``{"i": n}`` (with a text of `pad`
    bytes) in bulk to a fresh queue, which stays filled."""
    await d.prepare(queue)
    assert d.redis is not None
    before = await valkey_memory(d.redis)
    await d.produce("bulk", queue, timeout_for(jobs), jobs=jobs, **({"pad": pad} if pad else {}))
    after = await valkey_memory(d.redis)
    await _check_waiting(d, queue, jobs)
    return (after - before) / jobs


async def memory(d: Driver, p: Params) -> dict[str, Any]:
    """Valkey used_memory delta per waiting job after adding p.memory_jobs jobs ``{"i": n}`` in bulk. Ours
    also: the job hash's share, and jobs with a MEMORY_PAD-byte text in their data, on this Valkey (the
    hash encoding limit `qm serve` gives its own: embedded.JOB_HASH_VALUE_MAX) and at Valkey's default."""
    queue = "bench-memory"
    out: dict[str, Any] = {"bytes_per_job": await _filled(d, queue, p.memory_jobs)}
    if isinstance(d, Ours):
        detail = await d.memory_detail(queue)
        out["job_key_bytes"] = detail.get("job_key_bytes_mean", 0.0)
        out["detail"] = detail
    await d.cleanup(queue)
    if isinstance(d, Ours):
        assert d.redis is not None
        limits = {"padded_bytes_per_job": JOB_HASH_VALUE_MAX, "padded_bytes_per_job_at_default": 64}
        try:
            for key, limit in limits.items():
                await d.redis.config_set(JOB_HASH_SETTING, limit)
                out[key] = await _filled(d, queue, p.memory_jobs, MEMORY_PAD)
                await d.cleanup(queue)
        finally:
            await d.redis.config_set(JOB_HASH_SETTING, JOB_HASH_VALUE_MAX)
    return out


async def unary(d: Driver, p: Params) -> dict[str, Any]:
    """Mean latency of one call at a time: add_job vs the bare health Check (and raw AddJob, GetQueue)."""
    if not isinstance(d, Ours):
        raise BenchError("unary is measured for Queue Manager only")
    queue = "bench-unary"
    await d.prepare(queue)
    r = await d.produce("unary", queue, 300, jobs=p.unary_calls)
    await d.cleanup(queue)
    r.pop("cpu_s", None)
    r.pop("calls_each", None)
    return r


Scenario = Callable[[Driver, Params], Awaitable[dict[str, Any]]]
SCENARIOS: dict[str, Scenario] = {
    "bulk": bulk,
    "drain": drain,
    "features": features,
    "failures": failures,
    "groups": groups,
    "chains": chains,
    "workflows": workflows,
    "single": single,
    "unary": unary,
    "latency": latency,
    "memory": memory,
}
# Scenarios every system runs (the others are ours only).
COMMON = ("bulk", "drain", "single", "latency", "memory")


async def run_one(name: str, d: Driver, p: Params) -> dict[str, Any]:
    """One run of one scenario, with its wall time; a failure becomes {"error": ...}."""
    t0 = time.monotonic()
    try:
        result = await SCENARIOS[name](d, p)
    except BenchError as exc:
        result = {"error": str(exc)}
    result["wall_s"] = time.monotonic() - t0
    return result
