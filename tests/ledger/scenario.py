"""One fault scenario's harness: its journal directory, its worker processes and producers, the check.

A scenario starts ledger workers (``tests/ledger/worker.py``) as processes it can SIGKILL, SIGSTOP or
SIGTERM by pid, producers in the test's own process, waits for conditions by bounded polling of the
journals or of Redis, and ends with `Scenario.check`, which prints the ledger summary and returns the
report. The lease and reaper settings the scenarios use are here; ``QM_FAULTS_LEASE_MS`` overrides the lease
of the recovery scenarios (``make fault-figures`` runs them with the default 30 s lease).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from queue_manager import QueueManager
from tests.ledger.checker import Expect, Report, check
from tests.ledger.faultkit import until
from tests.ledger.journal import Journal
from tests.ledger.producer import Producer
from tests.procs import Proc, Procs

# Short leases keep every scenario within seconds: a lost job comes back after about LEASE_MS.
LEASE_MS = 1_500
REAPER_MS = 200
# The lease of the scenarios that measure recovery time (their figures are published).
RECOVERY_LEASE_MS = int(os.environ.get("QM_FAULTS_LEASE_MS", "2000"))
# Bound for anything a scenario awaits.
WAIT = 60.0


def server_args(lease_ms: int = LEASE_MS, *extra: str) -> tuple[str, ...]:
    """Flags of a scenario's server processes: the lease, a fast reaper and janitor, quiet logs."""
    return (
        "--lease-ms", str(lease_ms), "--reaper-interval-ms", str(REAPER_MS),
        "--janitor-interval-ms", "500", "--bulk-idle-ms", "1000", "--log-level", "WARNING", *extra,
    )  # fmt: skip


def target(*addresses: str) -> str:
    """A gRPC target over several servers: the channel uses the first that answers and fails over."""
    if len(addresses) == 1:
        return addresses[0]
    return "ipv4:" + ",".join(addresses)


class Scenario:
    """Processes, producers and journals of one scenario."""

    def __init__(self, name: str, procs: Procs, tmp: Path) -> None:
        self.name = name
        self.procs = procs
        self.dir = tmp / "ledger"
        self.dir.mkdir(exist_ok=True)
        self.producers: list[Producer] = []
        self.clients: list[QueueManager] = []
        self.figures: dict[str, float] = {}

    def worker(
        self,
        server: str,
        queues: list[str],
        worker_id: str,
        *,
        concurrency: int = 10,
        run_ms: int = 20,
        grace: float = 30.0,
        keepalive_ms: int = 0,
    ) -> Proc:
        """Starts a ledger worker process journalling to ``worker-<id>.jsonl``."""
        argv = [
            sys.executable, "-m", "tests.ledger.worker", "--server", server, "--queues", ",".join(queues),
            "--journal", str(self.dir / f"worker-{worker_id}.jsonl"), "--id", worker_id,
            "--concurrency", str(concurrency), "--run-ms", str(run_ms), "--grace", str(grace),
            "--keepalive-ms", str(keepalive_ms),
        ]  # fmt: skip
        return self.procs.spawn(
            argv,
            env={"LOG_LEVEL": os.environ.get("QM_FAULTS_WORKER_LOG", "WARNING")},
            name=f"worker-{worker_id}",
        )

    def producer(self, address: str, name: str = "main", timeout: float = 5.0) -> Producer:
        p = Producer(address, Journal(self.dir / f"producer-{name}.jsonl"), timeout=timeout)
        self.producers.append(p)
        return p

    def client(self, address: str, timeout: float = 10.0) -> QueueManager:
        c = QueueManager(address=address, timeout=timeout)
        self.clients.append(c)
        return c

    def records(
        self, event: str | None = None, worker: str | None = None, after: float = 0.0
    ) -> list[dict[str, Any]]:
        """Journal records so far, optionally of one event kind and one worker, written after the
        wall-clock time `after`."""
        return [
            r
            for r in Journal.read(self.dir)
            if (event is None or r["ev"] == event)
            and (worker is None or r.get("w") == worker)
            and r["t"] >= after
        ]

    async def wait_records(
        self,
        what: str,
        count: int,
        event: str,
        worker: str | None = None,
        timeout: float = WAIT,
        after: float = 0.0,
    ) -> list[dict[str, Any]]:
        """Waits until the journals hold at least `count` records of `event` (of `worker`, written after
        `after`)."""

        async def enough() -> list[dict[str, Any]] | None:
            found = self.records(event, worker, after)
            return found if len(found) >= count else None

        return await until(enough, what, timeout)

    async def wait_connected(
        self, client: QueueManager, worker_ids: list[str], after: float = 0.0, timeout: float = WAIT
    ) -> None:
        """Waits until the servers list a stream of every one of these workers (welcomed), opened after
        the wall-clock time `after` (a reconnection) if given."""

        async def listed() -> bool:
            streams = await client.list_workers()
            fresh = {w.worker_id for w in streams if w.connect_time and w.connect_time.timestamp() > after}
            return set(worker_ids) <= fresh

        await until(listed, f"workers {worker_ids} to connect", timeout)

    async def wait_finished(
        self, client: QueueManager, queues: list[str], total: int | Callable[[], int], timeout: float = WAIT
    ) -> None:
        """Waits until the queues hold `total` finished jobs and nothing waiting, delayed or active."""

        seen: dict[str, tuple[int, ...]] = {}

        async def settled() -> bool:
            for q in queues:
                m = await client.get_queue_metrics(q)
                seen[q] = (m.waiting, m.delayed, m.active, m.completed, m.failed)
            busy = any(sum(counts[:3]) for counts in seen.values())
            return not busy and sum(c[3] + c[4] for c in seen.values()) >= (
                total() if callable(total) else total
            )

        try:
            await until(settled, f"{queues} to finish their jobs", timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; (waiting, delayed, active, completed, failed): {seen}") from None

    def mark(self) -> float:
        """Wall-clock time, comparable with the journals' ``t``."""
        return time.time()

    async def check(self, redis: Redis, prefix: str, expect: Expect) -> Report:
        """Runs the ledger check, prints its summary (and records it for the docs), returns it."""
        report = await check(self.name, redis, prefix, self.dir, expect)
        report.figures.update(self.figures)
        report.publish()
        return report

    async def close(self) -> None:
        for p in self.producers:
            await p.close()
        for c in self.clients:
            await c.close()
        for p in self.producers:
            p.journal.close()
