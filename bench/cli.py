"""`python -m bench`: runs the benchmarks on a private Valkey and server, prints and saves the figures."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import FrameType
from typing import Any

from bench import scenarios
from bench.admin import Admin, BenchError
from bench.stack import Stack

RESULTS_DIR = Path(__file__).resolve().parent / "results"

# Targets of issue 2 on the 2-core reference machine (server, Valkey and workers on one host).
TARGETS = {"bulk_jobs_per_s": 25_000, "drain_jobs_per_s": 10_000, "latency_p99_ms": 10.0}

Scenario = Callable[[Stack, Admin, scenarios.Params], Awaitable[dict[str, Any]]]
SCENARIOS: dict[str, Scenario] = {
    "bulk": scenarios.bulk,
    "drain": scenarios.drain,
    "latency": scenarios.latency,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs for bulk and drain (default 100000)")
    parser.add_argument("--only", choices=sorted(SCENARIOS), help="run one benchmark only")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--concurrency", type=int, default=200, help="concurrency per worker (default 200)")
    parser.add_argument("--rate", type=int, default=500, help="jobs/s for the latency run (default 500)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the latency run (default 10)")
    parser.add_argument("--server-log-level", default="warning", help="LOG_LEVEL of server and workers")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, Valkey data)")
    parser.add_argument(
        "--durability",
        choices=["always", "everysec"],
        default="always",
        help="appendfsync of the bench's Valkey, as qm serve --durability (default always)",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.jobs <= 10_000_000:
        parser.error("--jobs must be between 1 and 10000000")
    if not 1 <= args.workers <= 64 or not 1 <= args.concurrency <= 10_000:
        parser.error("--workers must be 1..64 and --concurrency 1..10000")
    if not 1 <= args.rate <= 100_000 or not 0 < args.seconds <= 600:
        parser.error("--rate must be 1..100000 and --seconds 0..600")
    return args


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
    }


def verdicts(results: dict[str, Any]) -> dict[str, bool]:
    out: dict[str, bool] = {}
    if "jobs_per_s" in results.get("bulk", {}):
        out["bulk"] = results["bulk"]["jobs_per_s"] >= TARGETS["bulk_jobs_per_s"]
    if "jobs_per_s" in results.get("drain", {}):
        out["drain"] = results["drain"]["jobs_per_s"] >= TARGETS["drain_jobs_per_s"]
    if "p99_ms" in results.get("latency", {}):
        out["latency"] = results["latency"]["p99_ms"] <= TARGETS["latency_p99_ms"]
    return out


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    params = scenarios.Params(
        jobs=args.jobs,
        workers=args.workers,
        concurrency=args.concurrency,
        rate=args.rate,
        seconds=args.seconds,
    )
    names = [args.only] if args.only else list(SCENARIOS)
    stack = Stack(
        workdir,
        key_prefix=f"bench{os.getpid()}",
        server_log_level=args.server_log_level,
        durability=args.durability,
    )
    results: dict[str, Any] = {}
    try:
        stack.start_valkey()
        stack.start_server()
        assert stack.server is not None
        admin = Admin(stack.address)
        try:
            ready_s = await admin.wait_ready(stack.server, limit_s=60)
            log(
                args,
                f"server ready at {stack.address} in {ready_s:.1f}s "
                f"(Redis {stack.redis_url}, appendfsync {args.durability})",
            )
            for name in names:
                # The harness's own collector pauses (it holds every id of the previous scenario) would
                # show up in the figures as latency: collect now and freeze what survives.
                gc.collect()
                gc.freeze()
                log(args, f"running {name} …")
                t0 = time.monotonic()
                try:
                    results[name] = await SCENARIOS[name](stack, admin, params)
                except BenchError as exc:
                    results[name] = {"error": str(exc)}
                log(args, f"  {name} done in {time.monotonic() - t0:.1f}s: {results[name]}")
        finally:
            await admin.close()
    finally:
        stack.stop()
    return results


def log(args: argparse.Namespace, message: str) -> None:
    print(message, file=sys.stderr if args.json else sys.stdout, flush=True)


def report_text(doc: dict[str, Any]) -> str:
    r, ok = doc["results"], doc["meets_targets"]
    m = doc["machine"]
    lines = [
        f"Queue Manager benchmark — {m['cpus']} CPUs, Python {m['python']}, {doc['timestamp']}, "
        f"durability {doc['params'].get('durability', 'everysec')}"
    ]

    def mark(name: str) -> str:
        return "" if name not in ok else ("  ok" if ok[name] else "  BELOW TARGET")

    if "bulk" in r:
        b = r["bulk"]
        lines.append(
            f"  bulk add   {b['error']}"
            if "error" in b
            else f"  bulk add   {b['jobs_per_s']:>9,} jobs/s   ({b['jobs']:,} jobs in {b['seconds']:.2f} s)"
            f"   target ≥ {TARGETS['bulk_jobs_per_s']:,}{mark('bulk')}"
        )
    if "drain" in r:
        d = r["drain"]
        lines.append(
            f"  drain      {d['error']}"
            if "error" in d
            else f"  drain      {d['jobs_per_s']:>9,} jobs/s   ({d['jobs']:,} jobs in {d['seconds']:.2f} s, "
            f"{d['workers']} workers × {d['concurrency']})"
            f"   target ≥ {TARGETS['drain_jobs_per_s']:,}{mark('drain')}"
        )
    if "latency" in r:
        la = r["latency"]
        lines.append(
            f"  latency    {la['error']}"
            if "error" in la
            else f"  latency    p50 {la['p50_ms']:.2f} ms   p99 {la['p99_ms']:.2f} ms"
            f"   max {la['max_ms']:.2f} ms"
            f"   ({la['samples']:,} jobs at {la['achieved_rate']:.0f}/s;"
            f" AddJob call p50 {la['add_call_p50_ms']:.2f} / p99 {la['add_call_p99_ms']:.2f} ms)"
            f"   target p99 ≤ {TARGETS['latency_p99_ms']:.0f} ms{mark('latency')}"
        )
    return "\n".join(lines)


def write_results(doc: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / "latest.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)
    return path


def _terminate(signum: int, frame: FrameType | None) -> None:
    # Turn SIGTERM into an exception so the finally blocks stop every process we started.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    workdir = Path(tempfile.mkdtemp(prefix="qm-bench-"))
    try:
        results = asyncio.run(run(args, workdir))
    except BenchError as exc:
        sys.exit(f"bench: {exc}\n(work directory kept: {workdir})")
    doc: dict[str, Any] = {
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "params": {
            k: getattr(args, k) for k in ("jobs", "workers", "concurrency", "rate", "seconds", "durability")
        },
        "results": results,
        "targets": TARGETS,
        "meets_targets": verdicts(results),
    }
    path = write_results(doc)
    failed = [name for name, res in results.items() if "error" in res]
    if args.keep or failed:
        log(args, f"work directory (logs, Valkey data): {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(report_text(doc))
        shown = path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path
        print(f"results written to {shown}")
    if failed:
        sys.exit(f"bench: {', '.join(failed)} could not run")
