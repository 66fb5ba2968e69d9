"""Bench-side admin calls through the generated stubs: readiness, queue setup, metrics.

These calls are not what the benchmark measures. They use the contract directly so the set-up (for
example a completed-jobs retention large enough to count every job) does not depend on client helpers.
"""

from __future__ import annotations

import asyncio
import time

import grpc
from google.protobuf.duration_pb2 import Duration

from bench.stack import Child
from queue_manager.v1 import queue_service_pb2 as qs
from queue_manager.v1 import queue_service_pb2_grpc as qs_grpc
from queue_manager.v1 import types_pb2 as types


class BenchError(RuntimeError):
    """A benchmark could not run (server missing, timeout, lost jobs)."""


class Admin:
    """A small admin client on its own channel."""

    def __init__(self, address: str) -> None:
        self._channel = grpc.aio.insecure_channel(address)
        self._queues = qs_grpc.QueueServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def wait_ready(self, server: Child, limit_s: float) -> float:
        """Waits until the server answers health SERVING (or ListQueues); returns the seconds it took."""
        t0 = time.monotonic()
        deadline = t0 + limit_s
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if not server.alive():
                raise BenchError("server did not start: " + server.describe_exit())
            try:
                if await self._ready_once():
                    return time.monotonic() - t0
                last_error = "health is not SERVING"
            except grpc.aio.AioRpcError as exc:
                last_error = f"{exc.code().name}: {exc.details()}"
            await asyncio.sleep(0.2)
        raise BenchError(f"server not ready after {limit_s:.0f}s ({last_error}); log {server.log_path}")

    async def _ready_once(self) -> bool:
        try:
            from grpc_health.v1 import health_pb2, health_pb2_grpc
        except ImportError:
            health_pb2 = None
        if health_pb2 is not None:
            stub = health_pb2_grpc.HealthStub(self._channel)
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2.0)
                return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                    raise
        await self._queues.ListQueues(qs.ListQueuesRequest(), timeout=2.0)
        return True

    async def register(self, name: str, keep_completed: int, rate_limit: int = 0) -> None:
        """Registers a queue keeping up to keep_completed completed jobs for a day, so all can be counted.

        rate_limit > 0: at most that many job starts per second.
        """
        keep = types.KeepJobs(age=Duration(seconds=86_400), count=keep_completed)
        config = types.QueueConfig(completed_retention=keep)
        if rate_limit > 0:
            config.rate_limit.CopyFrom(types.RateLimit(max=rate_limit, duration=Duration(seconds=1)))
        await self._queues.RegisterQueue(qs.RegisterQueueRequest(name=name, config=config), timeout=10.0)

    async def obliterate(self, name: str) -> None:
        """Deletes a measured queue and its jobs, so the next benchmark starts from an empty store."""
        await self._queues.ObliterateQueue(qs.ObliterateQueueRequest(name=name, force=True), timeout=120.0)

    async def pause(self, name: str) -> None:
        await self._queues.PauseQueue(qs.PauseQueueRequest(name=name), timeout=10.0)

    async def resume(self, name: str) -> None:
        await self._queues.ResumeQueue(qs.ResumeQueueRequest(name=name), timeout=10.0)

    async def metrics(self, name: str) -> types.QueueMetrics:
        reply = await self._queues.GetQueueMetrics(qs.GetQueueMetricsRequest(name=name), timeout=10.0)
        return reply.metrics

    async def wait_completed(
        self, name: str, target: int, limit_s: float, watch: list[Child], poll: float = 0.05
    ) -> tuple[float, float | None, types.QueueMetrics]:
        """Polls metrics until completed >= target.

        Returns:
            (seconds until done, seconds until the first completion was seen, last metrics).
        """
        t0 = time.perf_counter()
        deadline = t0 + limit_s
        first: float | None = None
        while True:
            m = await self.metrics(name)
            now = time.perf_counter()
            if first is None and m.completed > 0:
                first = now - t0
            if m.completed >= target:
                return now - t0, first, m
            if m.failed > 0:
                raise BenchError(f"{m.failed} jobs failed in {name}; see worker logs")
            for child in watch:
                if not child.alive():
                    raise BenchError(f"{child.describe_exit()}\n(completed {m.completed}/{target})")
            if now > deadline:
                raise BenchError(
                    f"timed out after {limit_s:.0f}s: completed {m.completed}/{target} "
                    f"(waiting {m.waiting}, active {m.active}, paused {m.paused}, delayed {m.delayed})"
                )
            await asyncio.sleep(poll)
