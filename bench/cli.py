"""`python -m bench` (`make bench`): Queue Manager on its own Valkey and server, every issue-9 figure.

Rounds run every scenario in turn (so drain and features-on drain of one round are minutes apart), then
each figure is reported as the median of the rounds with min–max. Throughput rounds run Valkey with
persistence off; one more run with the append-only file on is reported apart. `--smoke` runs every
scenario once on a few hundred jobs in a few seconds, asserts no timing, and writes nothing under
bench/results (CI runs it so the harness cannot rot). `--cluster` runs the server with --redis-cluster on a
Valkey Cluster of three primaries instead (bench/drivers.py OursCluster; results in bench/results/cluster.*).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import hashlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from types import FrameType
from typing import Any

from bench import report
from bench.admin import BenchError
from bench.drivers import Driver, Ours, OursCluster
from bench.report import OURS
from bench.scenarios import COMMON, SCENARIOS, Params, run_one

# Issue-9 targets that need no peer (the peer-relative ones are judged by `python -m bench.peers`).
UNARY_RATIO_MAX = 1.5
FEATURES_RATIO_MIN = 0.8
MEMORY_BYTES_MAX = 200
VALKEY_CPU_US_MAX = 10.0
AOF_SCENARIOS = ("bulk", "drain", "single")
TARGETS_TITLE = "Issue-9 targets judged without a peer"
# What --cluster measures: the scenarios whose queue becomes one queue per primary and back.
CLUSTER_SCENARIOS = ("bulk", "drain", "single", "latency")
ORDER = (
    "bulk",
    "drain",
    "features",
    "failures",
    "groups",
    "chains",
    "workflows",
    "single",
    "unary",
    "latency",
    "memory",
)


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=3, help="runs of every scenario (default 3)")
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs for bulk and drain (default 100000)")
    parser.add_argument("--single-jobs", type=int, default=20_000, help="single adds (default 20000)")
    parser.add_argument("--memory-jobs", type=int, default=100_000, help="jobs for memory (default 100000)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--concurrency", type=int, default=200, help="concurrency per worker (default 200)")
    parser.add_argument("--rate", type=int, default=500, help="jobs/s for the latency run (default 500)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the latency run (default 10)")
    parser.add_argument("--server-log-level", default="warning", help="LOG_LEVEL of server and workers")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, Valkey data)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one round, results not saved")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    add_common_args(parser)
    parser.add_argument("--only", help=f"comma-separated scenarios (default all: {','.join(ORDER)})")
    parser.add_argument(
        "--aof",
        choices=["always", "everysec", "none"],
        default="always",
        help="the apart run with the append-only file on: its appendfsync, or none (default always)",
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help=f"on a Valkey Cluster of three primaries (scenarios {','.join(CLUSTER_SCENARIOS)}; no AOF run)",
    )
    parser.add_argument(
        "--cluster-queues",
        type=int,
        default=2,
        help="with --cluster: queues on each primary that every scenario's jobs are spread over (default 2)",
    )
    args = parser.parse_args(argv)
    default = CLUSTER_SCENARIOS if args.cluster else ORDER
    args.names = [n.strip() for n in args.only.split(",")] if args.only else list(default)
    unknown = [n for n in args.names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; choose from {list(ORDER)}")
    if args.cluster:
        if outside := [n for n in args.names if n not in CLUSTER_SCENARIOS]:
            parser.error(f"--cluster runs {list(CLUSTER_SCENARIOS)} only, not {outside}")
        if not 1 <= args.cluster_queues <= 100:
            parser.error("--cluster-queues must be 1..100")
        args.aof = "none"
    check_sizes(parser, args)
    return args


def check_sizes(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not 1 <= args.rounds <= 20:
        parser.error("--rounds must be 1..20")
    if not all(1 <= n <= 10_000_000 for n in (args.jobs, args.single_jobs, args.memory_jobs)):
        parser.error("job counts must be 1..10000000")
    if not 1 <= args.workers <= 64 or not 1 <= args.concurrency <= 10_000:
        parser.error("--workers must be 1..64 and --concurrency 1..10000")
    if not 1 <= args.rate <= 100_000 or not 0 < args.seconds <= 600:
        parser.error("--rate must be 1..100000 and --seconds 0..600")


def params(args: argparse.Namespace) -> Params:
    if args.smoke:
        args.rounds = 1
        return Params(
            jobs=300, single_jobs=200, memory_jobs=500, workers=1, concurrency=50, rate=200, seconds=0.5,
            warmup=0.1, unary_calls=40,
        )  # fmt: skip
    return Params(
        jobs=args.jobs,
        single_jobs=args.single_jobs,
        memory_jobs=args.memory_jobs,
        workers=args.workers,
        concurrency=args.concurrency,
        rate=args.rate,
        seconds=args.seconds,
    )


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "node": _command(["node", "--version"]),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": _cpu_model(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _command(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False).stdout.strip()
    except OSError:
        return ""


def tree_state() -> str:
    """The commit measured, and how many files under server/ and clients/ differ from it (read-only git)."""
    root = Path(__file__).resolve().parent.parent
    head = _command(["git", "-C", str(root), "rev-parse", "--short", "HEAD"]) or "unknown"
    changed = _command(["git", "-C", str(root), "status", "--porcelain", "--", "server", "clients"])
    n = len(changed.splitlines())
    if not n:
        return f"{head} (clean)"
    # A fingerprint of the uncommitted code measured: the diff plus the untracked files' contents.
    digest = hashlib.sha256(
        _command(["git", "-C", str(root), "diff", "HEAD", "--", "server", "clients"]).encode()
    )
    for line in sorted(changed.splitlines()):
        if line.startswith("??"):
            path = root / line[3:].strip()
            files = sorted(path.rglob("*")) if path.is_dir() else [path]
            for f in files:
                if f.is_file() and "__pycache__" not in f.parts:
                    digest.update(f.read_bytes())
    return f"{head} + {n} uncommitted file(s) in server/ and clients/ (fingerprint {digest.hexdigest()[:12]})"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def brief(result: dict[str, Any]) -> str:
    if "error" in result:
        return "ERROR " + result["error"].splitlines()[0]
    shown = {k: round(v, 3) for k, v in result.items() if isinstance(v, float | int) and k != "wall_s"}
    return ", ".join(f"{k} {v:,}" for k, v in list(shown.items())[:6]) + f"  [{result['wall_s']:.1f}s]"


async def rounds(
    drivers: list[Driver], names: list[str], p: Params, n_rounds: int
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Every round runs each scenario on each system in turn; the system order rotates by round."""
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {name: {} for name in names}
    for r in range(n_rounds):
        order = drivers[r % len(drivers) :] + drivers[: r % len(drivers)]
        for name in names:
            for d in order:
                if name not in COMMON and name not in d.extra:
                    continue
                # The harness's own collector pauses would show up as latency: collect now, freeze the rest.
                gc.collect()
                gc.freeze()
                result = await run_one(name, d, p)
                runs[name].setdefault(d.name, []).append(result)
                log(f"round {r + 1}/{n_rounds} {name:<8} {d.name:<14} {brief(result)}")
    return runs


async def sitting(args: argparse.Namespace, workdir: Path, p: Params) -> dict[str, Any]:
    if args.cluster:
        ours: Ours = OursCluster(workdir, args.server_log_level, args.cluster_queues)
    else:
        ours = Ours(workdir, "off", args.server_log_level)
    await ours.start()
    try:
        described = await ours.describe()
        runs = await rounds([ours], args.names, p, args.rounds)
    finally:
        await ours.stop()
    aof: dict[str, Any] = {}
    if args.aof != "none":
        names = [n for n in AOF_SCENARIOS if n in args.names] or ["bulk"]
        durable = Ours(workdir / "aof", args.aof, args.server_log_level)
        await durable.start()
        try:
            log(f"append-only file on (appendfsync {args.aof}), one run each of {', '.join(names)}")
            aof_runs = await rounds([durable], names, p, 1)
        finally:
            await durable.stop()
        aof = {"persistence": f"appendonly yes, appendfsync {args.aof}", "runs": aof_runs}
        aof["summary"] = report.summaries(aof_runs)
    return {"valkey": described["valkey"], "version": described["version"], "runs": runs, "aof": aof}


def verdicts(summary: dict[str, dict[str, Any]]) -> list[tuple[str, float | None, float, bool]]:
    def med(scenario: str, key: str) -> float | None:
        value = summary.get(scenario, {}).get(OURS, {}).get(key)
        return float(value["median"]) if isinstance(value, dict) else None

    return [
        ("one add_job ÷ bare health Check", med("unary", "add_job_over_check"), UNARY_RATIO_MAX, False),
        ("features-on drain ÷ plain drain", med("features", "ratio_to_drain"), FEATURES_RATIO_MIN, True),
        ("Valkey bytes per waiting job", med("memory", "bytes_per_job"), MEMORY_BYTES_MAX, False),
        ("Valkey CPU per drained job (µs)", med("drain", "valkey_cpu_us"), VALKEY_CPU_US_MAX, False),
    ]


def aof_table(aof: dict[str, Any]) -> list[str]:
    rows = ["| Figure | Value |", "|---|---|"]
    for scenario, key, label, _ in report.FIGURES:
        s = aof.get("summary", {}).get(scenario, {}).get(OURS)
        if s and key in s:
            rows.append(f"| {label} | {report.cell(s, key)} |")
    return rows


def _terminate(signum: int, frame: FrameType | None) -> None:
    # Turn SIGTERM into an exception so the finally blocks stop every process we started.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    p = params(args)
    workdir = Path(tempfile.mkdtemp(prefix="qm-bench-"))
    try:
        got = asyncio.run(sitting(args, workdir, p))
    except BenchError as exc:
        sys.exit(f"bench: {exc}\n(work directory kept: {workdir})")
    runs = got["runs"]
    report.add_round_ratios(runs)
    summary = report.summaries(runs)
    checks = verdicts(summary)
    doc: dict[str, Any] = {
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "tree": tree_state(),
        "valkey": got["valkey"],
        "versions": {OURS: got["version"]},
        "params": vars(p),
        "persistence": "off (appendonly no, no RDB)",
        "cluster": f"3 primaries, {args.cluster_queues} queues on each" if args.cluster else "",
        "rounds": args.rounds,
        "systems": [OURS],
        "runs": runs,
        "summary": summary,
        "aof": got["aof"],
        "targets": {name: {"limit": limit, "at_least": at_least} for name, _, limit, at_least in checks},
        "verdicts": {name: value for name, value, _, _ in checks},
        # The issue-9 targets are one server's: a Cluster run reports its figures alone.
        "extra_tables": {} if args.cluster else {TARGETS_TITLE: report.verdict_rows(checks)},
    }
    if got["aof"]:
        title = f"One run with the append-only file on ({got['aof']['persistence']})"
        doc["extra_tables"][title] = aof_table(got["aof"])
    out_dir = workdir / "results" if args.smoke else report.RESULTS_DIR
    json_path, md_path = report.write(doc, "cluster" if args.cluster else "latest", out_dir)
    print(report.markdown(doc))
    failed = [f"{s}/{sys_}" for s, by in summary.items() for sys_, v in by.items() if v.get("errors")]
    if args.smoke:  # every figure the report has a row for must come out of its scenario
        failed += [f"{s}.{key} (not measured)" for s, key in report.missing_figures(summary, OURS)]
    if not args.smoke:
        print(f"results written to {json_path} and {md_path}")
    if args.keep or failed:
        log(f"work directory (logs, Valkey data): {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    if failed:
        sys.exit(f"bench: {', '.join(failed)} failed")
