"""`python -m bench.profile SCENARIO`: a py-spy profile of our server (or one worker) under one scenario.

py-spy comes from the benchmark-only virtualenv (bench/.venv-peers, `make bench-peers` installs it). The
server runs on its own Valkey (persistence off); py-spy samples it while the scenario runs, and the
collapsed stacks are summarised: the functions with the most samples on top of the stack (self) and on
the stack at all (inclusive). Raw stacks are kept in bench/results/profile-<scenario>-<target>.txt.

Scenarios: single (50 concurrent add_job), unary (one call at a time), bulk, drain, features, latency.
With --cluster the server runs with --redis-cluster on a Valkey Cluster of three primaries, as
`python -m bench --cluster` runs it (bulk, drain, single, latency).
With --target worker, py-spy attaches to the scenario's first worker process (`python -m bench.worker`) as
soon as it starts, before its queue is released (drain, features, latency).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import sys
import tempfile
from collections import Counter
from pathlib import Path

import psutil

from bench.cli import CLUSTER_SCENARIOS
from bench.drivers import Ours, OursCluster
from bench.report import RESULTS_DIR
from bench.scenarios import SCENARIOS, Params, run_one
from bench.stack import REPO_ROOT

PY_SPY = REPO_ROOT / "bench" / ".venv-peers" / "bin" / "py-spy"
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def short(frame: str) -> str:
    """`func (path/to/site-packages/pkg/mod.py:12)` → `pkg/mod.py:func`."""
    m = _FRAME.match(frame)
    if not m:
        return frame
    path = m["file"]
    for marker in ("site-packages/", "queue_manager_server/", "queue_manager/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker.startswith("queue"):
                path = marker + path
            break
    return f"{path}:{m['func']}"


def summarise(raw: str, top: int) -> list[str]:
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        frames = [short(f) for f in stack.split(";") if f and not f.startswith("process ")]
        if not frames:
            continue
        total += count
        self_time[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    out = [f"{total} samples", "", "self (top of stack):"]
    out += [f"  {n / total:6.1%}  {f}" for f, n in self_time.most_common(top)]
    out += ["", "inclusive (anywhere on the stack):"]
    out += [f"  {n / total:6.1%}  {f}" for f, n in inclusive.most_common(top * 2)]
    return out


async def _first_worker() -> int:
    """The pid of this process's first `bench.worker` child, polled for until it starts."""
    me = psutil.Process()
    while True:
        for child in me.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if "bench.worker" in child.cmdline():
                    return child.pid
        await asyncio.sleep(0.01)


async def _record(pid: int, rate: int, raw: Path) -> asyncio.subprocess.Process:
    argv = [str(PY_SPY), "record", "--pid", str(pid), "--format", "raw", "--rate", str(rate)]
    argv += ["--output", str(raw), "--nonblocking"]
    return await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )


async def _stop(spy: asyncio.subprocess.Process) -> None:
    if spy.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(spy.pid, signal.SIGINT)  # py-spy writes its output on SIGINT
    try:
        await asyncio.wait_for(spy.wait(), timeout=30)
    except TimeoutError:
        os.kill(spy.pid, signal.SIGKILL)
        await spy.wait()


async def profile(
    scenario: str, target: str, p: Params, rate: int, workdir: Path, cluster: bool = False
) -> Path:
    ours = OursCluster(workdir) if cluster else Ours(workdir)
    await ours.start()
    spies: list[asyncio.subprocess.Process] = []
    raw = RESULTS_DIR / f"profile-{scenario}-{target}{'-cluster' if cluster else ''}.txt"

    async def attach_worker() -> None:
        spies.append(await _record(await _first_worker(), rate, raw))

    watcher: asyncio.Task[None] | None = None
    try:
        if target == "worker":
            watcher = asyncio.create_task(attach_worker())
        else:
            spies.append(await _record(ours.server_pids()[0], rate, raw))
            await asyncio.sleep(1.0)
        result = await run_one(scenario, ours, p)
        print(f"{scenario}: {result}", file=sys.stderr)
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        for spy in spies:
            await _stop(spy)
        await ours.stop()
    if not spies:
        raise SystemExit(f"{scenario} started no worker process to profile")
    return raw


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("scenario", choices=[s for s in SCENARIOS if s != "memory"])
    parser.add_argument("--target", choices=["server", "worker"], default="server")
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs (bulk, drain, features, single)")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--cluster", action="store_true", help="on a Valkey Cluster of three primaries")
    args = parser.parse_args()
    if args.cluster and args.scenario not in CLUSTER_SCENARIOS:
        parser.error(f"--cluster runs {', '.join(CLUSTER_SCENARIOS)} only")
    if not PY_SPY.exists():
        sys.exit(f"{PY_SPY} is missing: run `make bench-peers` (or pip install py-spy into it) first")
    p = Params(jobs=args.jobs, single_jobs=args.jobs, unary_calls=args.jobs // 10 or 1, seconds=5.0)
    with tempfile.TemporaryDirectory(prefix="qm-profile-") as tmp:
        raw = asyncio.run(profile(args.scenario, args.target, p, args.rate, Path(tmp), args.cluster))
    print("\n".join(summarise(raw.read_text(), args.top)))
    print(f"raw stacks: {raw}")


if __name__ == "__main__":
    main()
