"""Real processes for failure tests: servers and workers we can SIGTERM or SIGKILL by PID."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from queue_manager_server.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    address: str = ""
    log: Path | None = None

    def terminate(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)

    async def wait(self, timeout: float = 30.0) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (rc := self.popen.poll()) is None:
            if loop.time() > deadline:
                self.kill()
                raise AssertionError(f"process {self.popen.pid} did not exit in {timeout}s")
            await asyncio.sleep(0.05)
        return rc

    def output(self) -> str:
        return self.log.read_text() if self.log and self.log.exists() else ""


@dataclass
class Procs:
    """Tracks every process a test starts, and kills what is left at the end."""

    tmp: Path
    started: list[Proc] = field(default_factory=list)

    def spawn(self, args: list[str], env: dict[str, str] | None = None, name: str = "proc") -> Proc:
        log = self.tmp / f"{name}-{len(self.started)}.log"
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        with log.open("wb") as out:
            popen = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=full_env, cwd=self.tmp)
        p = Proc(popen, log=log)
        self.started.append(p)
        return p

    async def server(
        self, redis_url: str, prefix: str, port: int = 0, *extra: str, env: dict[str, str] | None = None
    ) -> Proc:
        port = port or free_port()
        p = self.spawn(
            [
                sys.executable,
                "-m",
                "queue_manager_server",
                "--listen",
                f"127.0.0.1:{port}",
                "--redis-url",
                redis_url,
                "--key-prefix",
                prefix,
                "--reaper-interval-ms",
                "200",
                # No HTTP port unless a test asks (extra comes later and wins): servers run side by side.
                "--http-listen",
                "off",
                *extra,
            ],
            env=env,
            name="server",
        )
        p.address = f"127.0.0.1:{port}"
        await wait_serving(p)
        return p

    async def embedded_server(
        self, data_dir: Path, *extra: str, env: dict[str, str] | None = None, wait: bool = True
    ) -> Proc:
        """A `qm serve` with no Redis configured: it runs its own Valkey in data_dir (wait: until serving)."""
        port = free_port()
        no_redis = {"REDIS_URL": "", "QM_REDIS_URL": "", "REDIS_HOST": ""}  # empty counts as unset
        argv = [sys.executable, "-m", "queue_manager_server", "--listen", f"127.0.0.1:{port}"]
        argv += ["--http-listen", "off"]  # no HTTP port unless a test asks (extra wins)
        p = self.spawn(
            [*argv, "--data-dir", str(data_dir), "--reaper-interval-ms", "200", *extra],
            env={**no_redis, **(env or {})},
            name="server",
        )
        p.address = f"127.0.0.1:{port}"
        if wait:
            await wait_serving(p)
        return p

    def cleanup(self) -> None:
        for p in self.started:
            p.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.popen.wait(5)


async def wait_serving(p: Proc, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    async with grpc.aio.insecure_channel(p.address) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while True:
            assert p.popen.poll() is None, f"server exited:\n{p.output()}"
            try:
                r = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if r.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            assert asyncio.get_running_loop().time() < deadline, f"server not serving:\n{p.output()}"
            await asyncio.sleep(0.05)


async def run_to_end(args: Sequence[str], cwd: Path, env: dict[str, str], timeout: float) -> tuple[int, str]:
    """Runs a command (a client's own test suite) to its end with stdout and stderr together, killed if it
    outlasts `timeout` (TimeoutError). Returns its exit status and its output."""
    proc = await asyncio.create_subprocess_exec(
        *args, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")
