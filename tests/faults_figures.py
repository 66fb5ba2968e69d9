"""Produces the figures of docs/durability.md: ``python -m tests.faults_figures [--rounds N]``.

1. Recovery times: the worker-crash and server-crash scenarios of the fault suite, run with the default
   30 s lease (``QM_FAULTS_LEASE_MS=30000``), their reports collected through ``QM_FAULTS_REPORT``; and the
   Valkey scenarios (kill -9 and restart, 20 s outage, full) with their own short leases.
2. Loss per persistence setting: ``tests/test_durability.py`` (Valkey killed with kill -9 inside a
   background fsync while 8 producers add, 3 kills per run) run `rounds` times with ``QM_DURABILITY=always``
   and with ``everysec``; and the ledger's Valkey-kill scenario with ``appendfsync`` always and everysec.
3. Failover: a primary and a replica (asynchronous replication, as Redis and Valkey replicate); 8
   producers add through a server on the primary, the primary is killed with kill -9, the replica is
   promoted, and every acknowledged add is looked up on it.

Prints one JSON object per figure and a summary. Loopback only; it starts its own Valkeys and servers and
stops them by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from queue_manager import QueueManager
from queue_manager.errors import QueueManagerError
from queue_manager_server.engine.keys import QueueKeys
from tests.ledger.faultkit import Valkey, until
from tests.procs import ROOT, Procs

PYTEST = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider"]


def run_pytest(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    done = subprocess.run(
        [*PYTEST, *args], cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=900
    )
    return done.returncode, done.stdout + done.stderr


def scenarios(report: Path, select: str, lease_ms: int | None) -> list[dict[str, Any]]:
    """Runs fault scenarios and returns their JSON reports."""
    report.unlink(missing_ok=True)
    env = {"QM_FAULTS_REPORT": str(report)}
    if lease_ms:
        env["QM_FAULTS_LEASE_MS"] = str(lease_ms)
    rc, out = run_pytest(["tests", "-m", "faults", "-k", select], env)
    if rc:
        print(out[-3000:], file=sys.stderr)
    lines = report.read_text().splitlines() if report.exists() else []
    return [json.loads(line) for line in lines]


def durability_rounds(mode: str, rounds: int) -> dict[str, Any]:
    """tests/test_durability.py's kill test `rounds` times under one QM_DURABILITY: lost adds per run."""
    test = "tests/test_durability.py::test_acknowledged_adds_survive_valkey_killed_mid_fsync"
    lost, acked, fsyncs = [], 0, 0
    for _ in range(rounds):
        rc, out = run_pytest([test], {"QM_DURABILITY": mode})
        m = re.search(r"(\d+) of (\d+) acknowledged adds lost \((\d+) of \d+ kills", out)
        if m:
            lost.append(int(m[1]))
            acked += int(m[2])
            fsyncs += int(m[3])
        elif rc == 0:
            lost.append(0)
        else:
            raise SystemExit(f"test_durability failed for another reason:\n{out[-3000:]}")
    return {"figure": f"loss, QM_DURABILITY={mode}", "runs": rounds, "kills": 3 * rounds,
            "lost_per_run": lost, "runs_losing": sum(n > 0 for n in lost),
            "acked_in_failed_runs": acked, "kills_inside_fsync_in_failed_runs": fsyncs}  # fmt: skip


async def failover(tmp: Path, seconds: float = 2.0) -> dict[str, Any]:
    """Acknowledged adds missing on a promoted replica after the primary is killed under load."""
    primary, replica = Valkey(tmp / "primary"), Valkey(tmp / "replica")
    await primary.start()
    await replica.start()
    procs = Procs(tmp)
    raw = Redis.from_url(replica.url)
    try:
        await raw.execute_command("REPLICAOF", "127.0.0.1", primary.port)

        async def linked() -> bool:
            return bool((await raw.info("replication")).get("master_link_status") == "up")

        await until(linked, "the replica to catch up", 30)
        srv = await procs.server(primary.url, "fo", 0, "--log-level", "WARNING")
        qm = QueueManager(address=srv.address, timeout=5)
        await qm.register_queue("fo")
        acked: list[str] = []
        stop = asyncio.Event()

        async def produce(n: int) -> None:
            i = 0
            while not stop.is_set():
                try:
                    await qm.add_job("fo", "x", {"pad": "x" * 512}, {"job_id": f"p{n}-{i}"})
                except QueueManagerError:
                    return
                acked.append(f"p{n}-{i}")
                i += 1

        tasks = [asyncio.create_task(produce(n)) for n in range(8)]
        await asyncio.sleep(seconds)
        await primary.kill()
        stop.set()
        await asyncio.gather(*tasks)
        await raw.execute_command("REPLICAOF", "NO", "ONE")
        keys = QueueKeys("fo", "fo")
        pipe = raw.pipeline(transaction=False)
        for job_id in acked:
            pipe.exists(keys.job(job_id))
        missing = sum(1 for found in await pipe.execute() if not found)
        await qm.close()
        return {"figure": "failover (async replica promoted after kill -9 of the primary)",
                "acked": len(acked), "missing_on_replica": missing}  # fmt: skip
    finally:
        await raw.aclose()
        procs.cleanup()
        await replica.stop()


async def main(args: argparse.Namespace) -> None:
    figures: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="qm-figures-") as d:
        tmp = Path(d)
        recovery = "worker_killed_holding_many_jobs or three_servers_one_killed"
        for r in scenarios(tmp / "recovery.jsonl", recovery, 30_000):
            figures.append({"figure": f"{r['scenario']} (30 s lease)", **r["figures"], "lost": r["lost"]})
        for fsync in ("always", "everysec"):
            os.environ["QM_FAULTS_APPENDFSYNC"] = fsync
            for r in scenarios(tmp / f"valkey-{fsync}.jsonl", "valkey_killed", None):
                counts = r["counts"]
                figures.append({"figure": f"{r['scenario']} (appendfsync {fsync})", "acked": counts["acked"],
                                "lost": r["lost"], "rerun_jobs": counts.get("rerun_jobs", 0),
                                **r["figures"]})  # fmt: skip
        os.environ.pop("QM_FAULTS_APPENDFSYNC")
        for r in scenarios(tmp / "valkey.jsonl", "unavailable or full", None):
            figures.append({"figure": r["scenario"], "lost": r["lost"], **r["figures"]})
        for mode in ("always", "everysec"):
            figures.append(durability_rounds(mode, args.rounds))
        for _ in range(args.rounds):
            (tmp / "fo").mkdir(exist_ok=True)
            figures.append(await failover(Path(tempfile.mkdtemp(dir=tmp / "fo"))))
    when = time.strftime("%Y-%m-%d %H:%M")
    print(f"figures of {when} (python -m tests.faults_figures --rounds {args.rounds}):")
    for f in figures:
        print(json.dumps(f))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="runs of each loss measurement")
    asyncio.run(main(p.parse_args()))
