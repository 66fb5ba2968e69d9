"""Reading queue metrics: one metrics.lua call per queue plus one worker-registry read, pipelined into one
round trip however many queues (a memory_estimate.lua call beside each metrics.lua one: it measures the queue
only when its kept estimate has expired, engine/memory.py).

Every figure comes from Redis (never from one server's memory), so each server process answers the same.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from queue_manager_server.engine.keys import QueueKeys, registry
from queue_manager_server.engine.memory import (
    DEFAULT_INTERVAL_MS,
    memory_estimate_args,
    memory_estimate_keys,
    parse_memory_estimate,
)
from queue_manager_server.engine.records import Metrics, MinuteActivity, NodeMemory
from queue_manager_server.engine.stats import BUCKETS, HISTORY_MINUTES, RECENT_MINUTES
from queue_manager_server.engine.workers import WorkerRecord, WorkerStore, parse_workers
from queue_manager_server.errors import QueueNotFound

if TYPE_CHECKING:
    from queue_manager_server.engine.clients import Pipe
    from queue_manager_server.engine.engine import Engine


def _i(v: Any) -> int:
    return int(v) if not isinstance(v, bytes) else int(float(v))


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def metrics_keys(k: QueueKeys) -> list[str]:
    """metrics.lua's KEYS for a queue."""
    return [k.meta, k.waiting, k.delayed, k.active, k.completed, k.failed, k.cancelled, k.limiter]


def metrics_args(history: bool) -> list[int]:
    """metrics.lua's ARGV: minutes of history, minutes of the recent window, duration buckets."""
    return [HISTORY_MINUTES if history else 0, RECENT_MINUTES, BUCKETS]


def parse_metrics(name: str, r: Sequence[Any]) -> Metrics | None:
    """A metrics.lua reply (None when the queue is not registered); workers are filled by the reader."""
    if _i(r[0]) != 1:
        return None
    paused = _i(r[1]) == 1
    waiting = _i(r[2])
    totals, last, recent = [_i(v) for v in r[11]], [_i(v) for v in r[12]], [_i(v) for v in r[13]]
    return Metrics(
        queue=name,
        is_paused=paused,
        waiting=0 if paused else waiting,
        paused=waiting if paused else 0,
        delayed=_i(r[3]),
        active=_i(r[4]),
        completed=_i(r[5]),
        failed=_i(r[6]),
        stalled=_i(r[7]),
        stalled_total=_i(r[8]),
        cancelled=_i(r[9]),
        sample_ms=_i(r[10]),
        added_total=totals[0],
        completed_total=totals[1],
        failed_total=totals[2],
        all_run_us=totals[3],
        all_runs=totals[4:],
        completed_last_minute=last[0],
        failed_last_minute=last[1],
        recent_completed=recent[1],
        recent_failed=recent[2],
        recent_run_us=recent[3],
        recent_runs=recent[4:],
        oldest_ready_ms=_i(r[14]),
        rate_limit_tokens=float(_s(r[15])),
        held_until_ms=_i(r[16]),
        history=[MinuteActivity(*(_i(v) for v in row)) for row in r[17]],
        levels=[(_i(r[18][i]), _i(r[18][i + 1])) for i in range(0, len(r[18]), 2)],
        expired_total=_i(r[19]),
        groups=_i(r[20]),
        groups_paused=_i(r[21]),
        dead_letter_queue=_s(r[22]),
        raised_total=_i(r[23]),
        timed_out_total=_i(r[24]),
        paused_until_ms=_i(r[25]) if paused else 0,
        maintenance_until_ms=_i(r[26]),
    )


def attach_workers(queues: Sequence[Metrics], workers: Sequence[WorkerRecord]) -> None:
    """Fills each queue's connected workers and their free capacity (a worker of several queues counts in
    each: it could take its free slots' worth of any of them)."""
    by_name = {m.queue: m for m in queues}
    for w in workers:
        for q in w.queues:
            m = by_name.get(q)
            if m is not None:
                m.workers += 1
                m.free_capacity += w.free


@dataclass(slots=True)
class Snapshot:
    """Metrics of several queues and the connected workers, read in one round trip."""

    time_ms: int  # Redis time of the read
    queues: list[Metrics]
    workers: list[WorkerRecord]


class MetricsReader:
    """Reads metrics for the services, the metrics stream and the Prometheus endpoint."""

    def __init__(self, engine: Engine, memory_estimate_ms: int = DEFAULT_INTERVAL_MS) -> None:
        self.engine = engine
        self.workers = WorkerStore(engine.scripts, engine.prefix)
        # How long a queue's memory estimate is kept before a read measures it again (engine/memory.py).
        self.memory_estimate_ms = memory_estimate_ms
        # The registered queues seen by the last read of every queue: the next read asks for their metrics
        # in the same round trip as the registry itself (a queue registered since costs one more).
        self._known: list[str] = []
        # Snapshots read so far (each one Redis round trip in the steady state).
        self.reads = 0

    def _queue_metrics(self, pipe: Pipe, names: Sequence[str], history: bool) -> None:
        """Queues each queue's metrics.lua call and its memory estimate (`_parse` reads both replies)."""
        args = metrics_args(history)
        for name in names:
            keys = self.engine.keys(name)
            self.engine.scripts.call_in(pipe, "metrics", metrics_keys(keys), args)
            memory_args = memory_estimate_args(self.memory_estimate_ms, random.getrandbits(31))
            self.engine.scripts.call_in(pipe, "memory_estimate", memory_estimate_keys(keys), memory_args)

    @staticmethod
    def _parse(names: Sequence[str], results: list[Any]) -> dict[str, Metrics]:
        """The metrics of the registered queues among `names`, taken off the front of `results`."""
        found: dict[str, Metrics] = {}
        for name in names:
            m = parse_metrics(name, results.pop(0))
            memory = parse_memory_estimate(results.pop(0))
            if m is not None:
                m.memory_bytes = memory or 0
                found[name] = m
        return found

    async def queue(self, name: str, history: bool = False) -> Metrics:
        """One queue's metrics, with its workers; raises QueueNotFound."""
        pipe = self.engine.store.pipeline()
        self._queue_metrics(pipe, [name], history)
        await self.workers.list_workers_in(pipe)
        results = await self.engine.store.execute(pipe)
        workers = results.pop()
        m = self._parse([name], results).get(name)
        if m is None:
            raise QueueNotFound(name)
        attach_workers([m], parse_workers(workers)[1])
        return m

    async def snapshot(self, names: Sequence[str] | None = None, history: bool = False) -> Snapshot:
        """The metrics of the named queues (those not registered are left out), or of every registered
        queue (None), by name in that order; and the connected workers."""
        self.reads += 1
        every = names is None
        asked = list(self._known) if names is None else list(names)
        pipe = self.engine.store.pipeline()
        if every:
            pipe.smembers(registry(self.engine.prefix))
        self._queue_metrics(pipe, asked, history)
        await self.workers.list_workers_in(pipe)
        results = await self.engine.store.execute(pipe)
        registered = sorted(_s(n) for n in results.pop(0)) if every else asked
        now, workers = parse_workers(results.pop())
        found = self._parse(asked, results)
        if every:
            new = [n for n in registered if n not in self._known]
            if new:
                pipe = self.engine.store.pipeline()
                self._queue_metrics(pipe, new, history)
                found.update(self._parse(new, await self.engine.store.execute(pipe)))
            self._known = registered
        queues = [found[n] for n in registered if n in found]
        attach_workers(queues, workers)
        return Snapshot(now, queues, workers)

    async def memory(self) -> list[NodeMemory]:
        """Every primary's memory use and limit."""
        return await self.engine.store.memory()

    async def list_workers(self, queue: str | None = None) -> list[WorkerRecord]:
        """The connected workers (of one queue, if named), by id."""
        _, workers = await self.workers.list_workers()
        return [w for w in workers if queue is None or queue in w.queues]
