"""`python -m bench.peers` (`make bench-peers`): Queue Manager beside BullMQ, Dramatiq and taskiq.

Every system gets its own Valkey from the same binary (persistence off). Each round runs every common
scenario (bulk, drain, single, latency, memory) on each system in turn, the system order rotating, so
the figures compared were taken minutes apart; ratios are per round. Then `ghz` drives our server from
outside (AddJob, GetQueue and the health Check at 50 in flight) and reports server CPU per call.
Results go to bench/results/peers.json and peers.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import cli as bench_cli
from bench import ghz, report
from bench.admin import BenchError
from bench.drivers import Driver, Ours
from bench.peers.drivers import PEERS, BullMQ, Dramatiq, Taskiq
from bench.report import OURS
from bench.scenarios import COMMON, Params

DRAIN_RATIO_MIN = 1.5
BULK_RATIO_MIN = 1.5
SINGLE_RATIO_MIN = 1.0
GHZ_ADD_OVER_CHECK_MAX = 2.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__)
    bench_cli.add_common_args(parser)
    parser.set_defaults(jobs=50_000, memory_jobs=50_000, single_jobs=20_000)
    parser.add_argument("--peers", default="bullmq,dramatiq,taskiq", help="comma-separated peers")
    parser.add_argument("--only", help=f"comma-separated scenarios (default {','.join(COMMON)})")
    parser.add_argument("--ghz-calls", type=int, default=5_000, help="calls per ghz run (0: skip ghz)")
    parser.add_argument("--ghz-concurrency", type=int, default=50)
    args = parser.parse_args(argv)
    args.peer_names = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = [p for p in args.peer_names if p not in PEERS]
    if unknown:
        parser.error(f"unknown peer(s) {unknown}; choose from {sorted(PEERS)}")
    args.names = [n.strip() for n in args.only.split(",")] if args.only else list(COMMON)
    if any(n not in COMMON for n in args.names):
        parser.error(f"--only takes scenarios from {list(COMMON)}")
    bench_cli.check_sizes(parser, args)
    return args


def make_peer(name: str, workdir: Path, workers: int) -> Driver:
    if name == "bullmq":
        return BullMQ(workdir)
    if name == "dramatiq":
        return Dramatiq(workdir, processes=workers)
    return Taskiq(workdir, processes=workers)


async def ghz_rounds(ours: Ours, args: argparse.Namespace, rounds: int) -> dict[str, list[dict[str, Any]]]:
    binary = ghz.find_ghz()
    if binary is None or args.ghz_calls <= 0:
        bench_cli.log("ghz: skipped (not installed, or --ghz-calls 0)")
        return {}
    await ours.prepare("bench-ghz")
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in ghz.CALLS}
    pid = ours.server_pids()[0]
    for r in range(rounds):
        for kind in ghz.CALLS:
            try:
                result = await ghz.run_call(
                    binary, ours.address, kind, args.ghz_calls, args.ghz_concurrency, pid, ours.workdir
                )
            except BenchError as exc:
                result = {"error": str(exc)}
            runs[kind].append(result)
            bench_cli.log(f"round {r + 1}/{rounds} ghz {kind:<9} {bench_cli.brief({**result, 'wall_s': 0})}")
    for check, add in zip(runs["check"], runs["add_job"], strict=True):
        if "server_cpu_us" in check and "server_cpu_us" in add:
            add["server_cpu_over_check"] = add["server_cpu_us"] / check["server_cpu_us"]
    await ours.cleanup("bench-ghz")
    return runs


async def sitting(args: argparse.Namespace, workdir: Path, p: Params) -> dict[str, Any]:
    ours = Ours(workdir, "off", args.server_log_level)
    peers = [make_peer(name, workdir, p.workers) for name in args.peer_names]
    drivers: list[Driver] = [ours, *peers]
    started: list[Driver] = []
    try:
        for d in drivers:
            await d.start()
            started.append(d)
        versions = {d.name: (await d.describe()) for d in drivers}
        runs = await bench_cli.rounds(drivers, args.names, p, args.rounds)
        ghz_runs = await ghz_rounds(ours, args, args.rounds)
    finally:
        for d in reversed(started):
            await d.stop()
    return {"versions": versions, "runs": runs, "ghz": ghz_runs}


def verdicts(doc: dict[str, Any]) -> list[tuple[str, float | None, float, bool]]:
    ratios = doc["ratios"].get("bullmq", {})

    def rat(key: str) -> float | None:
        value = ratios.get(key)
        return float(value["median"]) if value else None

    def med(scenario: str, key: str) -> float | None:
        value = doc["summary"].get(scenario, {}).get(OURS, {}).get(key)
        return float(value["median"]) if isinstance(value, dict) else None

    add = doc["ghz_summary"].get("add_job", {}).get("server_cpu_over_check")
    return [
        ("latency p50 vs BullMQ (BullMQ ÷ ours)", rat("latency.p50_ms"), 1.0, True),
        ("latency p99 vs BullMQ (BullMQ ÷ ours)", rat("latency.p99_ms"), 1.0, True),
        ("drain vs BullMQ (ours ÷ BullMQ)", rat("drain.jobs_per_s"), DRAIN_RATIO_MIN, True),
        ("total CPU per drained job (BullMQ worker+Valkey ÷ ours)", rat("drain.total_cpu_us"), 1.0, True),
        ("Valkey CPU per drained job (µs)", med("drain", "valkey_cpu_us"), 10.0, False),
        ("bulk add vs BullMQ (ours ÷ BullMQ)", rat("bulk.jobs_per_s"), BULK_RATIO_MIN, True),
        (
            "single adds, 50 in flight, vs BullMQ (ours ÷ BullMQ)",
            rat("single.jobs_per_s"),
            SINGLE_RATIO_MIN,
            True,
        ),
        ("Valkey bytes per waiting job", med("memory", "bytes_per_job"), 200.0, False),
        (
            "ghz: server CPU per AddJob ÷ per health Check",
            float(add["median"]) if isinstance(add, dict) else None,
            GHZ_ADD_OVER_CHECK_MAX,
            False,
        ),
    ]


def ghz_table(ghz_summary: dict[str, Any]) -> list[str]:
    rows = ["| Call (ghz, 50 in flight) | calls/s | mean ms | p99 ms | server CPU per call (µs) |"]
    rows.append("|---|---|---|---|---|")
    for kind, s in ghz_summary.items():
        cells = [report.cell(s, k) for k in ("calls_per_s", "mean_ms", "p99_ms", "server_cpu_us")]
        rows.append(f"| {ghz.CALLS[kind][0]} | " + " | ".join(cells) + " |")
    add = ghz_summary.get("add_job", {})
    if "server_cpu_over_check" in add:
        rows += ["", f"Server CPU per AddJob ÷ per Check: {report.cell(add, 'server_cpu_over_check')}"]
    return rows


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    p = bench_cli.params(args)
    workdir = Path(tempfile.mkdtemp(prefix="qm-bench-peers-"))
    try:
        got = asyncio.run(sitting(args, workdir, p))
    except BenchError as exc:
        sys.exit(f"bench.peers: {exc}\n(work directory kept: {workdir})")
    runs = got["runs"]
    summary = report.summaries(runs)
    systems = [OURS, *args.peer_names]
    ghz_summary = {kind: report.summarise_ok(rs) for kind, rs in got["ghz"].items()}
    doc: dict[str, Any] = {
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": bench_cli.machine(),
        "tree": bench_cli.tree_state(),
        "valkey": got["versions"][OURS]["valkey"],
        "versions": {name: v["version"] for name, v in got["versions"].items()},
        "params": vars(p),
        "persistence": "off (appendonly no, no RDB)",
        "rounds": args.rounds,
        "systems": systems,
        "runs": runs,
        "summary": summary,
        "ratios": {peer: report.ratios(runs, peer) for peer in args.peer_names},
        "ghz_runs": got["ghz"],
        "ghz_summary": ghz_summary,
    }
    checks = verdicts(doc)
    doc["verdicts"] = {name: value for name, value, _, _ in checks}
    doc["extra_tables"] = {"Issue-9 targets (against BullMQ where relative)": report.verdict_rows(checks)}
    if ghz_summary:
        doc["extra_tables"]["External client: ghz against our server"] = ghz_table(ghz_summary)
    out_dir = workdir / "results" if args.smoke else report.RESULTS_DIR
    json_path, md_path = report.write(doc, "peers", out_dir)
    print(report.markdown(doc))
    print(f"results written to {json_path} and {md_path}")
    failed = [f"{s}/{sys_}" for s, by in summary.items() for sys_, v in by.items() if v.get("errors")]
    if args.keep or failed:
        bench_cli.log(f"work directory (logs, Valkey data): {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    if failed:
        sys.exit(f"bench.peers: {', '.join(failed)} failed")
