"""`python -m bench.durability`: what making an add durable costs, measured on the server's own add script.

Starts its own Valkey (the embedded server's launcher and config, 127.0.0.1 only, data in a temporary
directory), registers a queue, and calls ``Engine.add_jobs`` (what AddJob and AddJobs run) for three cases:

  single      one producer, one job per call, one call at a time
  concurrent  32 producers, each one job per call, one call at a time
  bulk        one producer, 2000 jobs per call (four add_jobs scripts in one pipeline)

under three variants, switched with CONFIG SET between runs and interleaved (the order rotates each round):

  everysec          appendfsync everysec, no wait: the weak baseline (a Valkey crash can lose acked adds)
  always            appendfsync always: Valkey answers once the write is fsynced (one fsync per event-loop
                    turn, shared by every write of that turn)
  everysec+waitaof  appendfsync everysec, and WAITAOF 1 0 0 in the same pipeline as the add: the reply waits
                    for the next once-a-second background fsync

Every run is bounded by --seconds and --max-jobs. Between runs the data is flushed and the append-only
file rewritten (automatic rewrites are off), so no run pays for another's data. Prints jobs/s and the
p50/p99 latency of one call per case and variant: the median of the rounds' rates, the percentiles of
all rounds' calls.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from queue_manager.v1 import types_pb2
from queue_manager_server import convert
from queue_manager_server.embedded import EmbeddedValkey
from queue_manager_server.engine import Engine
from queue_manager_server.engine.records import NewJob

QUEUE = "durability"
VARIANTS = ("everysec", "always", "everysec+waitaof")
CASES = ("single", "concurrent", "bulk")
PRODUCERS = 32
BULK = 2000


class WaitAofPipeline(Pipeline):
    """A pipeline that ends with WAITAOF 1 0 0: its reply comes once the local AOF is fsynced."""

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        self.execute_command("WAITAOF", 1, 0, 0)
        results = await super().execute(raise_on_error)
        if int(results[-1][0]) < 1:
            raise RuntimeError(f"WAITAOF answered {results[-1]}: the write is not fsynced")
        return results[:-1]


class WaitAofRedis(Redis):
    """Hands out WaitAofPipeline, so Engine.add_jobs sends WAITAOF with its scripts, in one round trip."""

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        return WaitAofPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)


class Run:
    """One case under one variant: calls and their latencies until time or the job budget runs out."""

    def __init__(self, engine: Engine, seconds: float, max_jobs: int) -> None:
        self.engine = engine
        self.seconds = seconds
        self.max_jobs = max_jobs
        self.latencies: list[float] = []
        self.jobs = 0

    async def producer(self, per_call: int, deadline: float) -> None:
        data = json.dumps({"bench": "durability"}).encode()
        while time.perf_counter() < deadline and self.jobs < self.max_jobs:
            jobs = [NewJob(id="", name="noop", data=data) for _ in range(per_call)]
            t0 = time.perf_counter()
            await self.engine.add_jobs(QUEUE, jobs)
            self.latencies.append(time.perf_counter() - t0)
            self.jobs += per_call

    async def measure(self, producers: int, per_call: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        deadline = t0 + self.seconds
        await asyncio.gather(*(self.producer(per_call, deadline) for _ in range(producers)))
        elapsed = time.perf_counter() - t0
        return {"jobs": self.jobs, "seconds": elapsed, "latencies": self.latencies}


async def prepare(admin: Redis, appendfsync: str) -> None:
    """Empties the database, rewrites the append-only file, registers the queue, sets appendfsync."""
    await admin.flushall()
    await admin.bgrewriteaof()
    for _ in range(600):  # an empty data set rewrites in milliseconds; bounded at 60 s
        info = await admin.info("persistence")
        if not int(info["aof_rewrite_in_progress"]) and not int(info["aof_rewrite_scheduled"]):
            break
        await asyncio.sleep(0.1)
    else:
        raise RuntimeError("the append-only file rewrite did not finish in 60 s")
    fields, _ = convert.queue_meta(types_pb2.QueueConfig(disable_dead_letter=True))
    await Engine(admin, "bench").register_queue(QUEUE, fields)
    await admin.config_set("appendfsync", appendfsync)


async def run_case(
    url: str, admin: Redis, variant: str, case: str, args: argparse.Namespace
) -> dict[str, Any]:
    await prepare(admin, "always" if variant == "always" else "everysec")
    client: Redis = (WaitAofRedis if variant.endswith("waitaof") else Redis).from_url(url)
    try:
        engine = Engine(client, "bench")
        await engine.scripts.load_all()
        run = Run(engine, args.seconds, args.max_jobs)
        producers, per_call = {"single": (1, 1), "concurrent": (PRODUCERS, 1), "bulk": (1, BULK)}[case]
        return await run.measure(producers, per_call)
    finally:
        await client.aclose()


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    latencies = sorted(x for r in runs for x in r["latencies"])
    return {
        "jobs_per_s": round(statistics.median(r["jobs"] / r["seconds"] for r in runs)),
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 3),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 3),
        "calls": len(latencies),
    }


async def main_async(args: argparse.Namespace, workdir: Path) -> dict[str, dict[str, Any]]:
    valkey = EmbeddedValkey(workdir / "valkey", durability="everysec")
    url = await valkey.start()
    admin = Redis.from_url(url)
    raw: dict[tuple[str, str], list[dict[str, Any]]] = {}
    try:
        # Rewrites happen between runs (prepare), never inside one.
        await admin.config_set("auto-aof-rewrite-percentage", 0)
        for round_no in range(args.repeats):
            for case in CASES:
                order = VARIANTS[round_no % 3 :] + VARIANTS[: round_no % 3]
                for variant in order:
                    result = await run_case(url, admin, variant, case, args)
                    raw.setdefault((case, variant), []).append(result)
                    rate = result["jobs"] / result["seconds"]
                    print(f"  round {round_no + 1} {case:<10} {variant:<17} {rate:>9,.0f} jobs/s", flush=True)
    finally:
        await admin.aclose()
        await valkey.stop()
    return {f"{case}/{variant}": summarize(runs) for (case, variant), runs in raw.items()}


def table(summary: dict[str, dict[str, Any]]) -> str:
    lines = [f"{'case':<11}{'variant':<18}{'jobs/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'calls':>8}"]
    for case in CASES:
        for variant in VARIANTS:
            s = summary[f"{case}/{variant}"]
            lines.append(
                f"{case:<11}{variant:<18}{s['jobs_per_s']:>10,}{s['p50_ms']:>10.2f}{s['p99_ms']:>10.2f}"
                f"{s['calls']:>8,}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m bench.durability",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--seconds", type=float, default=3.0, help="length of each run (default 3)")
    p.add_argument("--max-jobs", type=int, default=200_000, help="jobs per run at most (default 200000)")
    p.add_argument("--repeats", type=int, default=2, help="rounds of every case and variant (default 2)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = p.parse_args(argv)
    if not 0 < args.seconds <= 60 or not 1 <= args.repeats <= 10 or not 1 <= args.max_jobs <= 2_000_000:
        p.error("--seconds must be 0..60, --repeats 1..10, --max-jobs 1..2000000")
    with tempfile.TemporaryDirectory(prefix="qm-bench-durability-") as tmp:
        summary = asyncio.run(main_async(args, Path(tmp)))
    print(json.dumps(summary, indent=2) if args.json else table(summary))


if __name__ == "__main__":
    main()
