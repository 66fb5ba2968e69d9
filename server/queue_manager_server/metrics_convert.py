"""Metrics records (engine/metrics.py, engine/workers.py) as protobuf messages: QueueMetrics, WorkerInfo
and the metrics stream's snapshots. The derived figures (rates, mean, p95, error rate, ages) are computed
here from the counts Redis holds."""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from queue_manager.v1 import metrics_pb2, types_pb2
from queue_manager_server.engine.metrics import Snapshot
from queue_manager_server.engine.records import Metrics, MinuteActivity
from queue_manager_server.engine.stats import error_rate, mean_ms, quantile_ms
from queue_manager_server.engine.workers import WorkerRecord


def _timestamp(ms: int) -> Timestamp:
    t = Timestamp()
    t.FromMilliseconds(ms)
    return t


def _duration(ms: float) -> Duration:
    d = Duration()
    d.FromNanoseconds(round(ms * 1_000_000))
    return d


def _bucket(b: MinuteActivity) -> types_pb2.MetricsBucket:
    out = types_pb2.MetricsBucket(
        start_time=_timestamp(b.start_ms), added=b.added, completed=b.completed, failed=b.failed
    )
    if b.runs:
        out.average_processing_time.CopyFrom(_duration(b.run_us / b.runs / 1000))
    return out


def _level(m: Metrics, priority: int, count: int, since_ms: int) -> types_pb2.PriorityLevelMetrics:
    out = types_pb2.PriorityLevelMetrics(priority=priority, waiting=count)  # type: ignore[arg-type]
    if since_ms >= 0:
        out.oldest_waiting_age.CopyFrom(_duration(max(m.sample_ms - since_ms, 0)))
    return out


def metrics_out(m: Metrics) -> types_pb2.QueueMetrics:
    out = types_pb2.QueueMetrics(
        queue_name=m.queue,
        waiting=m.waiting,
        active=m.active,
        delayed=m.delayed,
        completed=m.completed,
        failed=m.failed,
        paused=m.paused,
        stalled=m.stalled,
        stalled_total=m.stalled_total,
        timed_out_total=m.timed_out_total,
        raised_total=m.raised_total,
        memory_bytes=m.memory_bytes,
        cancelled=m.cancelled,
        expired_total=m.expired_total,
        groups=m.groups,
        groups_paused=m.groups_paused,
        added_total=m.added_total,
        completed_total=m.completed_total,
        failed_total=m.failed_total,
        completed_per_second=m.completed_last_minute / 60,
        failed_per_second=m.failed_last_minute / 60,
        completed_last_minute=m.completed_last_minute,
        failed_last_minute=m.failed_last_minute,
        error_rate=error_rate(m.recent_completed, m.recent_failed),
        workers=m.workers,
        free_capacity=m.free_capacity,
        rate_limit_tokens=m.rate_limit_tokens,
        is_paused=m.is_paused,
        history=[_bucket(b) for b in m.history],
        levels=[_level(m, priority, count, since) for priority, (count, since) in enumerate(m.levels, 1)],
    )
    if (mean := mean_ms(m.recent_runs, m.recent_run_us)) is not None:
        out.average_processing_time.CopyFrom(_duration(mean))
    if (p95 := quantile_ms(m.recent_runs, 0.95)) is not None:
        out.p95_processing_time.CopyFrom(_duration(p95))
    if m.oldest_ready_ms >= 0:
        out.oldest_waiting_age.CopyFrom(_duration(max(m.sample_ms - m.oldest_ready_ms, 0)))
    if m.held_until_ms:
        out.held_until.CopyFrom(_timestamp(m.held_until_ms))
    if m.paused_until_ms:
        out.paused_until.CopyFrom(_timestamp(m.paused_until_ms))
    if m.maintenance_until_ms:
        out.maintenance_until.CopyFrom(_timestamp(m.maintenance_until_ms))
    if m.sample_ms:
        out.sample_time.CopyFrom(_timestamp(m.sample_ms))
    return out


# The registry's ``st`` field (engine/workers.py) as the contract's WorkerState.
WORKER_STATES = {
    "active": metrics_pb2.WORKER_STATE_ACTIVE,
    "quiet": metrics_pb2.WORKER_STATE_QUIET,
    "stopping": metrics_pb2.WORKER_STATE_STOPPING,
}


def worker_out(w: WorkerRecord, now_ms: int) -> metrics_pb2.WorkerInfo:
    return metrics_pb2.WorkerInfo(
        worker_id=w.worker_id,
        server_id=w.server_id,
        host=w.host,
        language=w.language,
        version=w.version,
        queues=w.queues,
        concurrency=w.concurrency,
        in_flight=w.in_flight,
        connect_time=_timestamp(w.connect_ms),
        last_heartbeat_time=_timestamp(w.last_report_ms),
        cpu_percent=w.cpu_percent,
        memory_bytes=w.memory_bytes,
        labels=w.labels,
        uptime=_duration(max(now_ms - w.connect_ms, 0)),
        state=WORKER_STATES.get(w.state, metrics_pb2.WORKER_STATE_ACTIVE),
        tier=w.tier,
    )


def workers_out(workers: Sequence[WorkerRecord], now_ms: int) -> list[metrics_pb2.WorkerInfo]:
    return [worker_out(w, now_ms) for w in workers]


def watch_response(snap: Snapshot, include_workers: bool) -> metrics_pb2.WatchMetricsResponse:
    return metrics_pb2.WatchMetricsResponse(
        time=_timestamp(snap.time_ms),
        metrics=[metrics_out(m) for m in snap.queues],
        workers=workers_out(snap.workers, snap.time_ms) if include_workers else [],
    )
