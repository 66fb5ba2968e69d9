"""The external-client view: `ghz` (a Go gRPC load tester, no Python client in the way) against our server.

`make bench-peers` installs it with ``go install github.com/bojand/ghz/cmd/ghz@v0.93.0`` into
bench/.tools/bin. For each call it reports calls/s, latency and the
server's CPU per call (psutil, the server process only), at --concurrency calls in flight. ghz reads our
contract from a descriptor set that grpcio-tools compiles from proto/ (ghz v0.93 cannot resolve symbols
through the server's v1alpha reflection, and its own .proto parser refuses proto3 ``optional`` fields); the
health service from its .proto file.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import json
import os
import shutil
import signal
from pathlib import Path
from typing import Any

from bench.admin import BenchError
from bench.measure import CpuMeter

GHZ_VERSION = "v0.93.0"
BENCH_DIR = Path(__file__).resolve().parent
TOOLS_BIN = BENCH_DIR / ".tools" / "bin"
PROTO_ROOT = BENCH_DIR.parent / "proto"
HEALTH_PROTO = BENCH_DIR / "proto" / "health.proto"
SERVICE_PROTO = PROTO_ROOT / "queue_manager" / "v1" / "queue_service.proto"

# The cheapest unary call (the health Check), the add under test, and a one-HGETALL read of our own.
CALLS: dict[str, tuple[str, dict[str, Any]]] = {
    "check": ("grpc.health.v1.Health.Check", {"service": ""}),
    "add_job": (
        "queue_manager.v1.QueueService.AddJob",
        {"queue_name": "bench-ghz", "job": {"name": "noop", "data": {"json": {"i": 1}}}},
    ),
    "get_queue": ("queue_manager.v1.QueueService.GetQueue", {"name": "bench-ghz"}),
}


def service_protoset(out: Path) -> Path:
    """Our contract as a FileDescriptorSet (with its imports) in `out`, for ghz's --protoset."""
    from grpc_tools import protoc

    path = out / "queue_manager.protoset"
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    args = ["protoc", f"-I{PROTO_ROOT}", f"-I{well_known}", "--include_imports"]
    args.append(f"--descriptor_set_out={path}")
    if protoc.main([*args, str(SERVICE_PROTO)]) != 0:
        raise BenchError(f"cannot compile {SERVICE_PROTO} into a descriptor set for ghz")
    return path


def find_ghz() -> str | None:
    local = TOOLS_BIN / "ghz"
    return str(local) if local.exists() else shutil.which("ghz")


async def run_call(
    ghz: str, address: str, kind: str, total: int, concurrency: int, server_pid: int, out: Path
) -> dict[str, Any]:
    """One ghz run of `total` calls; returns calls/s, latency and server CPU per call."""
    method, data = CALLS[kind]
    report = out / f"ghz-{kind}.json"
    if method.startswith("grpc.health"):
        schema = ["--proto", str(HEALTH_PROTO), "--import-paths", str(PROTO_ROOT)]
    else:
        schema = ["--protoset", str(service_protoset(out))]
    argv = [
        ghz,
        "--insecure",
        *schema,
        "--call",
        method,
        "-d",
        json.dumps(data),
        "-c",
        str(concurrency),
        "-n",
        str(total),
        "--timeout",
        "20s",
        "--format",
        "json",
        "-o",
        str(report),
        address,
    ]
    meter = CpuMeter([server_pid])
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), timeout=60 + total / 100)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()
        raise
    server_s = meter.elapsed()
    if proc.returncode != 0 or not report.exists():
        raise BenchError(f"ghz {kind} exited with {proc.returncode}: {err.decode(errors='replace')[-500:]}")
    doc = json.loads(report.read_text())
    ok = int(doc.get("statusCodeDistribution", {}).get("OK", 0))
    if ok != total:
        raise BenchError(f"ghz {kind}: {ok} of {total} calls OK ({doc.get('statusCodeDistribution')})")
    dist = {int(d["percentage"]): d["latency"] / 1e6 for d in doc.get("latencyDistribution") or []}
    return {
        "calls_per_s": doc["rps"],
        "mean_ms": doc["average"] / 1e6,
        "p50_ms": dist.get(50, 0.0),
        "p99_ms": dist.get(99, 0.0),
        "server_cpu_us": server_s / total * 1e6,
    }
