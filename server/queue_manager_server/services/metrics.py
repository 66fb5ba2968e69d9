"""QueueService handlers for metrics: one queue's, every queue's, the metrics stream, and the workers.

Every figure is read from Redis at the time of the call (engine/metrics.py), so any server answers the same.
``WatchMetrics`` streams a snapshot every interval; the watchers of one server that ask for the same
queues, interval and contents share one read per interval (components/metrics_sampler.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

import grpc

from queue_manager.v1 import metrics_pb2
from queue_manager.v1 import queue_service_pb2 as pb
from queue_manager_server import validate
from queue_manager_server.engine import Engine
from queue_manager_server.engine.metrics import MetricsReader, Snapshot
from queue_manager_server.errors import InvalidArgument, Unavailable
from queue_manager_server.metrics_convert import metrics_out, watch_response, workers_out
from queue_manager_server.services.errors import streaming, unary

DEFAULT_INTERVAL_MS = 1000
MIN_INTERVAL_MS = 100
MAX_INTERVAL_MS = 60_000


@dataclass(frozen=True, slots=True)
class WatchKey:
    """What a watcher asked for; watchers with equal keys share each snapshot."""

    queues: tuple[str, ...] | None  # None: every queue, those registered later included
    interval_ms: int
    history: bool
    workers: bool


class Feed(Protocol):
    async def next(self) -> metrics_pb2.WatchMetricsResponse:
        """The next snapshot (the latest, if the watcher fell behind); raises what the read raised."""
        ...


class WatchSource(Protocol):
    def watch(
        self, key: WatchKey, render: Callable[[Snapshot], metrics_pb2.WatchMetricsResponse]
    ) -> AbstractAsyncContextManager[Feed]:
        """Subscribes to the snapshots of `key`, each rendered once for every watcher of the key."""
        ...


def interval_ms(request: metrics_pb2.WatchMetricsRequest) -> int:
    if not request.HasField("interval"):
        return DEFAULT_INTERVAL_MS
    d = request.interval
    ms = d.seconds * 1000 + d.nanos / 1_000_000
    if not MIN_INTERVAL_MS <= ms <= MAX_INTERVAL_MS:
        raise InvalidArgument("interval", f"{ms:g} ms is outside 100 ms to 60 s")
    return round(ms)


class MetricsHandlers:
    """Metrics and workers (part of `QueueService`)."""

    engine: Engine
    metrics_reader: MetricsReader
    # Set by the app (components/metrics_sampler.py) before the server starts.
    watch_source: WatchSource | None

    @unary
    async def GetQueueMetrics(
        self, request: pb.GetQueueMetricsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetQueueMetricsResponse:
        name = validate.queue_name(request.name, "name")
        m = await self.metrics_reader.queue(name, request.include_history)
        return pb.GetQueueMetricsResponse(metrics=metrics_out(m))

    @unary
    async def GetAllMetrics(
        self, request: metrics_pb2.GetAllMetricsRequest, context: grpc.aio.ServicerContext
    ) -> metrics_pb2.GetAllMetricsResponse:
        snap = await self.metrics_reader.snapshot(None, request.include_history)
        return metrics_pb2.GetAllMetricsResponse(metrics=[metrics_out(m) for m in snap.queues])

    @unary
    async def ListWorkers(
        self, request: metrics_pb2.ListWorkersRequest, context: grpc.aio.ServicerContext
    ) -> metrics_pb2.ListWorkersResponse:
        queue = None
        if request.queue_name:
            queue = validate.queue_name(request.queue_name, "queue_name")
            await self.engine.get_queue(queue)
        now, workers = await self.metrics_reader.workers.list_workers()
        chosen = [w for w in workers if queue is None or queue in w.queues]
        return metrics_pb2.ListWorkersResponse(workers=workers_out(chosen, now))

    @streaming
    async def WatchMetrics(
        self, request: metrics_pb2.WatchMetricsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[metrics_pb2.WatchMetricsResponse]:
        every = interval_ms(request)
        # Sorted (the snapshot lists queues by name), so watchers of the same queues share a sampler.
        names = tuple(
            sorted({validate.queue_name(q, f"queue_names[{i}]") for i, q in enumerate(request.queue_names)})
        )
        for name in names:
            await self.engine.get_queue(name)
        if self.watch_source is None:
            raise Unavailable("the metrics stream is not running on this server; retry shortly")
        key = WatchKey(names or None, every, request.include_history, request.include_workers)
        async with self.watch_source.watch(key, lambda snap: watch_response(snap, key.workers)) as feed:
            while True:
                yield await feed.next()
