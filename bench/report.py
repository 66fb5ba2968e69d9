"""Summaries, ratios, issue-9 verdicts and the Markdown table of a benchmark sitting.

Runs are kept as ``runs[scenario][system] = [one dict per round]``. Ratios between systems are taken per
round (both figures from the same round, minutes apart) and then summarised, which holds up better on a
shared, noisy machine than a ratio of medians.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.measure import summarise

OURS = "queue-manager"
RESULTS_DIR = Path(__file__).resolve().parent / "results"

# (scenario, key, label, higher is better)
FIGURES: list[tuple[str, str, str, bool]] = [
    ("bulk", "jobs_per_s", "bulk add (jobs/s)", True),
    ("drain", "jobs_per_s", "drain, no-op jobs (jobs/s)", True),
    ("drain", "worker_cpu_us", "drain CPU per job: workers (µs)", False),
    ("drain", "server_cpu_us", "drain CPU per job: server (µs)", False),
    ("drain", "valkey_cpu_us", "drain CPU per job: Valkey (µs)", False),
    ("drain", "valkey_commands", "drain: Valkey commands per job (script calls and what they ran)", False),
    ("drain", "total_cpu_us", "drain CPU per job: all processes (µs)", False),
    ("features", "jobs_per_s", "drain with features on (jobs/s)", True),
    ("features", "ratio_to_drain", "features-on drain ÷ plain drain (same round)", True),
    ("failures", "jobs_per_s", "drain, every job failing once then completing (jobs/s)", True),
    ("failures", "ratio_to_drain", "drain with every job failing once ÷ plain drain (same round)", True),
    ("failures", "worker_cpu_us", "failing once: worker CPU per job (µs)", False),
    ("failures", "server_cpu_us", "failing once: server CPU per job (µs)", False),
    ("failures", "valkey_cpu_us", "failing once: Valkey CPU per job (µs)", False),
    ("groups", "jobs_per_s", "drain of jobs in 100 fairness groups (jobs/s)", True),
    ("groups", "ratio_to_drain", "grouped drain ÷ plain drain (same round)", True),
    ("groups", "valkey_cpu_us", "grouped drain: Valkey CPU per job (µs)", False),
    ("chains", "jobs_per_s", "drain of two-job chains, runs (jobs/s)", True),
    ("chains", "ratio_to_drain", "chain runs ÷ plain drain (same round)", True),
    ("workflows", "runs_created_per_s", "execute_workflow, 50 callers (runs/s)", True),
    ("workflows", "jobs_per_s", "two-step workflows, step runs (jobs/s)", True),
    ("workflows", "ratio_to_drain", "workflow step runs ÷ plain drain (same round)", True),
    ("single", "jobs_per_s", "single adds, 50 in flight, one process (jobs/s)", True),
    ("single", "call_mean_ms", "single adds: one call's mean under load (ms)", False),
    ("single", "server_cpu_us", "single adds: server CPU per add (µs)", False),
    ("single", "valkey_cpu_us", "single adds: Valkey CPU per add (µs)", False),
    ("single", "valkey_commands", "single adds: Valkey commands per add", False),
    ("unary", "check_mean_ms", "bare unary round trip, health Check (ms)", False),
    ("unary", "add_job_mean_ms", "one add_job call, mean (ms)", False),
    ("unary", "raw_add_job_mean_ms", "raw AddJob stub call, mean (ms)", False),
    ("unary", "get_queue_mean_ms", "GetQueue call, mean (ms)", False),
    ("unary", "add_job_over_check", "add_job ÷ health Check", False),
    ("latency", "p50_ms", "add→start latency p50 at 500 jobs/s (ms)", False),
    ("latency", "p99_ms", "add→start latency p99 at 500 jobs/s (ms)", False),
    ("latency", "max_ms", "add→start latency max (ms)", False),
    ("latency", "add_mean_ms", "add call mean during the latency run (ms)", False),
    ("latency", "server_cpu_us", "latency run: server CPU per job, add to completion (µs)", False),
    ("latency", "valkey_cpu_us", "latency run: Valkey CPU per job, add to completion (µs)", False),
    ("latency", "valkey_commands", "latency run: Valkey commands per job, add to completion", False),
    ("latency", "producer_cpu_us", "latency run: producer CPU per job (µs)", False),
    ("latency", "worker_cpu_us", "latency run: workers' CPU per job, delivery to completion (µs)", False),
    ("latency", "total_cpu_us", "latency run: CPU per job, all processes (µs)", False),
    ("memory", "bytes_per_job", "Valkey memory per waiting job (bytes)", False),
    ("memory", "job_key_bytes", "of which the job hash, MEMORY USAGE (bytes)", False),
    ("memory", "padded_bytes_per_job", "per waiting job with a 200-byte text in its data (bytes)", False),
    (
        "memory",
        "padded_bytes_per_job_at_default",
        "the same at Valkey's default hash-max-listpack-value, 64 (bytes)",
        False,
    ),
]


def missing_figures(summary: dict[str, dict[str, Any]], system: str) -> list[tuple[str, str]]:
    """The (scenario, key) of FIGURES that a scenario run for `system` left out of its summary."""
    return [
        (scenario, key)
        for scenario, key, _, _ in FIGURES
        if system in summary.get(scenario, {}) and key not in summary[scenario][system]
    ]


def add_round_ratios(runs: dict[str, dict[str, list[dict[str, Any]]]]) -> None:
    """ratio_to_drain of features, failures, chains and workflows: each such run against the plain drain of
    the same round."""
    for scenario in ("features", "failures", "groups", "chains", "workflows"):
        for system, feats in runs.get(scenario, {}).items():
            drains = runs.get("drain", {}).get(system, [])
            for feat, plain in zip(feats, drains, strict=False):
                if "jobs_per_s" in feat and "jobs_per_s" in plain:
                    feat["ratio_to_drain"] = feat["jobs_per_s"] / plain["jobs_per_s"]


def summarise_ok(rs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """summarise() of the runs that worked, with the errors of the others."""
    s = summarise([r for r in rs if "error" not in r])
    s["errors"] = [r["error"] for r in rs if "error" in r]
    return s


def summaries(runs: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, dict[str, Any]]:
    return {
        scenario: {system: summarise_ok(rs) for system, rs in by_system.items()}
        for scenario, by_system in runs.items()
    }


def ratios(runs: dict[str, dict[str, list[dict[str, Any]]]], peer: str) -> dict[str, dict[str, Any]]:
    """Per figure, ours ÷ peer per round (≥ 1 means ours is better, whichever way the figure points)."""
    out: dict[str, dict[str, Any]] = {}
    for scenario, key, _label, higher in FIGURES:
        mine = runs.get(scenario, {}).get(OURS, [])
        theirs = runs.get(scenario, {}).get(peer, [])
        values = []
        for a, b in zip(mine, theirs, strict=False):
            if key in a and key in b and a[key] and b[key]:
                values.append(a[key] / b[key] if higher else b[key] / a[key])
        if values:
            out[f"{scenario}.{key}"] = {
                "median": round(statistics.median(values), 3),
                "min": round(min(values), 3),
                "max": round(max(values), 3),
            }
    return out


def cell(summary: dict[str, Any] | None, key: str) -> str:
    value = (summary or {}).get(key)
    if not isinstance(value, dict):
        return "—"
    med, lo, hi = value["median"], value["min"], value["max"]
    digits = 0 if abs(med) >= 100 else 1 if abs(med) >= 10 else 2
    fmt = f"{{:,.{digits}f}}"
    if len(value["values"]) == 1:
        return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(lo)}–{fmt.format(hi)})"


def ratio_cell(r: dict[str, Any] | None) -> str:
    if not r:
        return "—"
    return f"{r['median']:.2f}× ({r['min']:.2f}–{r['max']:.2f})"


def markdown(doc: dict[str, Any]) -> str:
    """One table: a row per figure, a column per system, then ours ÷ each peer."""
    systems: list[str] = doc["systems"]
    peers = [s for s in systems if s != OURS]
    sums: dict[str, dict[str, Any]] = doc["summary"]
    head = ["Figure", *systems, *(f"ours vs {p}" for p in peers)]
    lines = [
        f"Benchmark {doc['timestamp']} — {doc['machine']['cpus']} CPUs, Python {doc['machine']['python']}, "
        f"Valkey {doc.get('valkey', '?')}, persistence {doc['persistence']}, "
        f"{doc['rounds']} rounds (median, min–max); tree {doc.get('tree', '?')}",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for scenario, key, label, _higher in FIGURES:
        if scenario not in sums:
            continue
        row = [cell(sums[scenario].get(s), key) for s in systems]
        if all(c == "—" for c in row):
            continue
        rats = [ratio_cell(doc.get("ratios", {}).get(p, {}).get(f"{scenario}.{key}")) for p in peers]
        lines.append("| " + " | ".join([label, *row, *rats]) + " |")
    if peers:
        lines.append("")
        lines.append(
            "Ratios are per round, ≥ 1× means Queue Manager is better (faster, fewer bytes, less CPU)."
        )
    for scenario, by_system in sums.items():
        for system, s in by_system.items():
            for err in s.get("errors", []):
                lines.append(f"\n**{scenario} / {system} failed:** {err.splitlines()[0]}")
    for name, block in doc.get("extra_tables", {}).items():
        lines += ["", f"### {name}", "", *block]
    return "\n".join(lines) + "\n"


def write(doc: dict[str, Any], stem: str, out_dir: Path = RESULTS_DIR) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = (out_dir / f"{stem}.json", out_dir / f"{stem}.md")
    for path, text in zip(paths, (json.dumps(doc, indent=2) + "\n", markdown(doc)), strict=True):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return paths


def verdict_rows(checks: Sequence[tuple[str, float | None, float, bool]]) -> list[str]:
    """Markdown rows: (target, measured, limit, measured must be ≥ limit)."""
    rows = ["| Target | Measured | Limit | Met |", "|---|---|---|---|"]
    for name, value, limit, at_least in checks:
        if value is None:
            rows.append(f"| {name} | — | {'≥' if at_least else '≤'} {limit:g} | not measured |")
            continue
        met = value >= limit if at_least else value <= limit
        miss = "yes" if met else f"no ({value / limit:.2f}× the limit)"
        rows.append(f"| {name} | {value:,.3g} | {'≥' if at_least else '≤'} {limit:g} | {miss} |")
    return rows
