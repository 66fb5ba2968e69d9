"""Instruments: worker progress and exact per-id counts, CPU of processes and of Valkey, summaries.

The machine is shared and noisy, so every figure is kept per run and summarised as median and min–max;
only ratios within one sitting are compared.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from redis.asyncio import Redis

from bench.admin import BenchError


@dataclass
class Progress:
    """What the worker processes of one run reported (bench/recorder.py stat files), summed."""

    count: int = 0
    side: int = 0
    first_ns: int = 0
    last_ns: int = 0
    cpu_s: float = 0.0
    processes: int = 0

    @property
    def seconds(self) -> float:
        return (self.last_ns - self.first_ns) / 1e9 if self.first_ns and self.last_ns else 0.0


def read_progress(out_dir: Path, tag: str) -> Progress:
    p = Progress()
    firsts: list[int] = []
    for path in out_dir.glob(f"{tag}-*.stat"):
        try:
            stat = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # replaced while we read it: the next poll sees it
        p.count += int(stat["count"])
        p.side += int(stat.get("side", 0))
        p.cpu_s += float(stat["cpu_s"])
        p.processes += 1
        if stat["first_ns"]:
            firsts.append(int(stat["first_ns"]))
        p.last_ns = max(p.last_ns, int(stat["last_ns"]))
    p.first_ns = min(firsts) if firsts else 0
    return p


async def wait_progress(
    out_dir: Path,
    tag: str,
    target: int,
    limit_s: float,
    alive: Callable[[], str | None],
    poll: float = 0.05,
) -> Progress:
    """Waits until the workers report target jobs done (bounded); alive() names a dead child, if any."""
    deadline = time.monotonic() + limit_s
    while True:
        p = read_progress(out_dir, tag)
        if p.count >= target:
            return p
        dead = alive()
        if dead:
            raise BenchError(f"{dead}\n(done {p.count}/{target})")
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {limit_s:.0f}s: workers report {p.count}/{target} jobs done")
        await asyncio.sleep(poll)


def read_lines(out_dir: Path, tag: str) -> list[str]:
    lines: list[str] = []
    for path in sorted(out_dir.glob(f"{tag}-*.ids")):
        lines += path.read_text().splitlines()
    return lines


def check_exactly_once(lines: Sequence[str], expected: int) -> None:
    """Every job counted by its own id: none twice, none missed (by count: ids are the system's own)."""
    ids = Counter(line.split(" ", 1)[0] for line in lines)
    twice = [i for i, n in ids.items() if n > 1]
    if twice:
        raise BenchError(f"{len(twice)} jobs ran more than once (e.g. {twice[:3]})")
    if len(ids) != expected:
        raise BenchError(f"{len(ids)} distinct jobs ran, {expected} expected")


class CpuMeter:
    """CPU seconds (user + system) used by a set of processes, their children included, between marks."""

    def __init__(self, pids: Iterable[int]) -> None:
        self._procs = [psutil.Process(pid) for pid in pids]
        self._start = self._now()

    def _now(self) -> float:
        total = 0.0
        for proc in self._procs:
            members = [proc]
            with contextlib.suppress(psutil.Error):
                members += proc.children(recursive=True)
            for member in members:
                try:
                    t = member.cpu_times()
                    total += t.user + t.system
                except psutil.Error:
                    continue  # gone: its time is lost, which only under-counts an exiting process
        return total

    def elapsed(self) -> float:
        return self._now() - self._start


async def valkey_cpu(redis: Redis) -> float:
    """Valkey's own CPU seconds so far (INFO cpu: used_cpu_sys + used_cpu_user, main and threads)."""
    info = await redis.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


# Commands of the harness and of connecting (INFO, CONFIG, HELLO, CLIENT SETINFO), not of the work measured.
_HARNESS_COMMANDS = frozenset({"info", "config", "client", "hello"})


async def valkey_commands(redis: Redis) -> int:
    """Commands Valkey has run so far (INFO commandstats): each script call and each command a script ran,
    the harness's own and connection set-up left out. Unlike CPU time, the count does not depend on how fast
    the machine is this hour."""
    info = await redis.info("commandstats")
    return sum(
        int(stats["calls"])
        for name, stats in info.items()
        if name.removeprefix("cmdstat_").split("|")[0] not in _HARNESS_COMMANDS
    )


async def valkey_memory(redis: Redis) -> int:
    info = await redis.info("memory")
    return int(info["used_memory"])


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an already sorted list."""
    rank = max(1, -(-q * len(sorted_values) // 100))
    return sorted_values[int(min(rank, len(sorted_values))) - 1]


def summarise(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per numeric key of the runs: median, min, max and the values; other keys from the first run."""
    out: dict[str, Any] = {"runs": len(runs)}
    if not runs:
        return out
    keys = [k for k in runs[0] if all(k in r for r in runs)]
    for key in keys:
        values = [r[key] for r in runs]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            out[key] = {
                "median": round(statistics.median(values), 4),
                "min": round(min(values), 4),
                "max": round(max(values), 4),
                "values": [round(v, 4) for v in values],
            }
        else:
            out[key] = values[0]
    return out


def median(summary: dict[str, Any], key: str) -> float | None:
    value = summary.get(key)
    if isinstance(value, dict) and "median" in value:
        return float(value["median"])
    return None
