"""`python -m bench.hops [bench options]`: where the add→start latency goes, hop by hop.

Runs the ``latency`` scenario (``python -m bench --only latency``, its options passed through) with the
hop tracer of bench/hops_trace.py installed in the server and worker processes, then joins the records by
job id and prints each hop's p50/p90/p99 in ms. Wall clocks of different processes are compared, which
is fine on one machine. Warm-up jobs (the first --warmup-jobs by stamp) are left out.
"""

from __future__ import annotations

import argparse
import bisect
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from bench.measure import percentile
from bench.stack import REPO_ROOT

SITE = REPO_ROOT / "bench" / "hops_site"
# How long after an add's write its queue's pub/sub wake-up may come to count as the add's own (ns): less
# than the 2 ms between two adds of the latency run.
SUB_WINDOW_NS = 1_500_000
# (label, from event, to event), in the order the job meets them.
HOPS = (
    ("client: add_job called → its call sent", "stamp", "clsend"),
    ("client call sent → server AddJob handler", "clsend", "handler"),
    ("server: handler → coalescer", "handler", "add"),
    ("coalescer: taken → Redis write sent", "add", "send"),
    ("Redis add round trip (sent → reply parsed)", "send", "written"),
    ("server: reply parsed → answer built", "written", "answer"),
    ("answer built → client read it", "answer", "clrecv"),
    ("client: add_job call, sent → answer read", "clsend", "clrecv"),
    ("pub/sub wake-up reached notifier (from send)", "send", "sub"),
    ("claim sent (from the add's send)", "send", "claim"),
    ("claim sent (from the pub/sub wake-up)", "sub", "claim"),
    ("claim round trip", "claim", "claimed"),
    ("claimed → delivery yielded to gRPC", "claimed", "yield"),
    ("gRPC stream: yielded → worker read it", "yield", "recv"),
    ("worker: read → processor start", "recv", "start"),
    ("total: add_job called → processor start", "stamp", "start"),
)


def load(directory: Path) -> tuple[dict[str, dict[str, int]], list[int], int]:
    """Per job id its events; the times of the pub/sub wake-ups; how many claims came back empty."""
    jobs: dict[str, dict[str, int]] = defaultdict(dict)
    subs: list[int] = []
    sent: dict[int, int] = {}  # the producer's stamp -> when its client sent the add
    empty = 0
    for path in directory.glob("*.hops"):
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) != 3:
                continue
            event, key, ns = parts[0], parts[1], int(parts[2])
            if event == "sub":
                subs.append(ns)
            elif event == "empty":
                empty += 1
            elif event == "clsend":
                if key.isdigit():
                    sent.setdefault(int(key), ns)
            else:
                jobs[key].setdefault(event, ns)
    subs.sort()
    for events in jobs.values():
        if events.get("stamp") in sent:
            events["clsend"] = sent[events["stamp"]]
        if "send" in events:
            # The first wake-up after the add's write, if it came within SUB_WINDOW_NS: an add published
            # none when no worker waited, or when the claim folded into it took every ready job.
            i = bisect.bisect_left(subs, events["send"])
            if i < len(subs) and subs[i] - events["send"] < SUB_WINDOW_NS:
                events["sub"] = subs[i]
    return jobs, subs, empty


def report(directory: Path, warmup_jobs: int) -> tuple[str, list[str]]:
    """The table, and the hops no job recorded (but the pub/sub ones: a wake-up is published only when a
    worker waits, so a run may have none)."""
    jobs, _, empty = load(directory)
    complete = sorted((e for e in jobs.values() if "stamp" in e and "start" in e), key=lambda e: e["stamp"])
    measured = complete[warmup_jobs:]
    lines = [
        f"{len(measured)} jobs (of {len(complete)} started, {warmup_jobs} warm-up left out); "
        f"{empty} claims came back empty (whole run)",
        "",
    ]
    missing: list[str] = []
    lines.append(f"| {'hop':<48} | {'p50 ms':>7} | {'p90 ms':>7} | {'p99 ms':>7} |")
    lines.append(f"|{'-' * 50}|{'-' * 9}|{'-' * 9}|{'-' * 9}|")
    for label, a, b in HOPS:
        values = sorted((e[b] - e[a]) / 1e6 for e in measured if a in e and b in e)
        if not values:
            lines.append(f"| {label:<48} | {'—':>7} | {'—':>7} | {'—':>7} |")
            if "sub" not in (a, b):
                missing.append(label)
            continue
        p50, p90, p99 = (percentile(values, q) for q in (50, 90, 99))
        lines.append(f"| {label:<48} | {p50:7.3f} | {p90:7.3f} | {p99:7.3f} |")
    if not measured:
        missing.append("every hop (no job was traced from its add to its start)")
    return "\n".join(lines), missing


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", default="", help="analyse this folder of .hops files instead of running")
    parser.add_argument("--warmup-jobs", type=int, default=500)
    parser.add_argument(
        "--check",
        action="store_true",
        help="fail when a hop has no record (make bench-smoke: the tracer's "
        "patches still fit the code they wrap)",
    )
    args, rest = parser.parse_known_args()
    if args.dir:
        print(report(Path(args.dir), args.warmup_jobs)[0])
        return
    directory = Path(tempfile.mkdtemp(prefix="qm-hops-"))
    env = dict(os.environ)
    env["BENCH_HOPS_DIR"] = str(directory)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SITE), env.get("PYTHONPATH", "")) if p)
    argv = [sys.executable, "-m", "bench", "--rounds", "1", "--only", "latency", *rest]
    subprocess.run(argv, env=env, cwd=REPO_ROOT, check=True, stdout=subprocess.DEVNULL)
    print(f"hop records in {directory}")
    text, missing = report(directory, args.warmup_jobs)
    print(text)
    if args.check and missing:
        sys.exit(f"bench.hops: no records for: {'; '.join(missing)}")


if __name__ == "__main__":
    main()
