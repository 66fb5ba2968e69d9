"""Queue metrics, connected workers and metrics-stream snapshots as plain dataclasses.

Every figure is read from the server's Redis when asked (or, in a stream, every interval), so any server
answers the same. Durations are `timedelta` and times aware UTC `datetime`; a figure that does not exist
(no run finished recently, no job waiting, no hold) is None.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from google.protobuf import duration_pb2, timestamp_pb2

from queue_manager.enums import WORKER_STATE_BY_NUMBER, JobPriority, WorkerState
from queue_manager.v1 import metrics_pb2, types_pb2

__all__ = [
    "LevelMetrics",
    "MetricsBucket",
    "MetricsSnapshot",
    "QueueMetrics",
    "WorkerInfo",
    "metrics_from_proto",
    "snapshot_from_proto",
    "watch_metrics_request",
    "worker_from_proto",
]


@dataclass(slots=True)
class MetricsBucket:
    """One minute of a queue's activity.

    Attributes:
        start_time: Start of the minute.
        added: Jobs added.
        completed: Jobs completed.
        failed: Jobs failed for good.
        average_processing_time: Mean duration of the runs that finished in the minute; None if none did.
    """

    start_time: datetime | None
    added: int = 0
    completed: int = 0
    failed: int = 0
    average_processing_time: timedelta | None = None


# The levels this client knows (a newer server's unknown one is left out).
_PRIORITIES = frozenset(int(p) for p in JobPriority)


@dataclass(slots=True)
class LevelMetrics:
    """The ready jobs of one priority level of a queue.

    Attributes:
        priority: The level.
        waiting: Jobs of this priority ready to run (waiting or paused), those a priority bound moved ahead
            among them.
        oldest_waiting_age: How long the oldest of them has waited; None when there is none.
    """

    priority: JobPriority
    waiting: int = 0
    oldest_waiting_age: timedelta | None = None


@dataclass(slots=True)
class QueueMetrics:
    """A queue's metrics: counts by state, throughput, processing times, error rate, workers, rate limit.

    Attributes:
        queue_name: Queue name.
        waiting: Jobs ready to run.
        active: Jobs leased to workers.
        delayed: Jobs waiting for their run-at time.
        completed: Completed jobs still retained.
        failed: Failed jobs still retained.
        paused: Jobs waiting in a paused queue.
        stalled: Active jobs whose lease expired and that wait for recovery.
        stalled_total: Total recoveries since the queue was registered.
        timed_out_total: Failed runs (attempts, retried or not) ended by a timeout since the queue was
            registered: the server's, or the worker's own (a processor past the job's ``timeout``).
        raised_total: Failed runs (attempts, retried or not) that raised an error since the queue was
            registered. With ``stalled_total``: every failed run by how it failed.
        memory_bytes: Estimated bytes of the store the queue's keys hold (its jobs sampled per state, its
            own lists, sets and hashes), refreshed at most every 30 s by default; 0 before the first
            estimate. An estimate: docs/observability.md says how it is made and how far off it may be.
        cancelled: Cancelled jobs still retained.
        expired_total: Jobs expired unstarted since the queue was registered (each ended cancelled).
        added_total: Jobs added since the queue was registered.
        completed_total: Jobs completed since the queue was registered.
        failed_total: Jobs failed for good since the queue was registered.
        completed_per_second: Completions per second over the last minute.
        failed_per_second: Failures for good per second over the last minute.
        completed_last_minute: Completions in the last 60 seconds.
        failed_last_minute: Failures for good in the last 60 seconds.
        average_processing_time: Mean duration of the runs that finished in the last five minutes.
        p95_processing_time: Their 95th percentile (exact to the width of its histogram bucket).
        error_rate: Failed / (completed + failed) over the last five minutes; 0 when nothing finished.
        oldest_waiting_age: How long the longest-waiting ready job has waited; None when none waits.
        workers: Workers connected for this queue, on any server.
        free_capacity: Jobs those workers could take now (their concurrency minus the jobs they run).
        rate_limit_tokens: Job starts available in the rate-limit bucket now; 0 without a rate limit.
        is_paused: Whether the queue is paused.
        paused_until: When its timed pause lifts by itself (`QueueManager.pause_queue` with a time); None
            for a pause until it is resumed, and when not paused.
        maintenance_until: While a maintenance window holds the queue (``is_paused`` is then True): when it
            ends; None outside the windows.
        held_until: Until when a processor's retry-after holds every start of the queue; None if no hold.
        history: The last hour, one bucket a minute, oldest first (only when asked for).
        sample_time: When the figures were read (the server's Redis clock).
        levels: The ready jobs of each priority level, CRITICAL first (all five).
        groups: Fairness groups known to the queue: with jobs waiting or active, with limits of their
            own, or paused (`QueueManager.list_groups` lists them).
        groups_paused: Fairness groups paused (`QueueManager.pause_group`).
    """

    queue_name: str
    waiting: int = 0
    active: int = 0
    delayed: int = 0
    completed: int = 0
    failed: int = 0
    paused: int = 0
    stalled: int = 0
    stalled_total: int = 0
    timed_out_total: int = 0
    raised_total: int = 0
    memory_bytes: int = 0
    cancelled: int = 0
    expired_total: int = 0
    added_total: int = 0
    completed_total: int = 0
    failed_total: int = 0
    completed_per_second: float = 0.0
    failed_per_second: float = 0.0
    completed_last_minute: int = 0
    failed_last_minute: int = 0
    average_processing_time: timedelta | None = None
    p95_processing_time: timedelta | None = None
    error_rate: float = 0.0
    oldest_waiting_age: timedelta | None = None
    workers: int = 0
    free_capacity: int = 0
    rate_limit_tokens: float = 0.0
    is_paused: bool = False
    paused_until: datetime | None = None
    maintenance_until: datetime | None = None
    held_until: datetime | None = None
    history: list[MetricsBucket] = field(default_factory=list)
    sample_time: datetime | None = None
    levels: list[LevelMetrics] = field(default_factory=list)
    groups: int = 0
    groups_paused: int = 0


@dataclass(slots=True)
class WorkerInfo:
    """A worker connected to any server.

    Attributes:
        worker_id: The worker's id (from its hello).
        server_id: The server whose stream it holds.
        host: Its host name (its "host" label).
        language: Client language, e.g. "python".
        version: Client library version.
        queues: Queues it takes jobs from.
        concurrency: Most jobs it runs at once.
        in_flight: Jobs it holds now.
        connect_time: When its stream opened.
        last_heartbeat_time: When it last reported.
        cpu_percent: Process CPU use it last reported, in percent of one core (0: it reports none).
        memory_bytes: Resident memory it last reported (0: it reports none).
        labels: Free labels from its hello.
        uptime: How long it has been connected.
        state: Whether it takes jobs: active, quiet or stopping (`QueueManager.quiet_worker` and its kin).
        tier: Its preference among the workers of its queues (`Worker`'s ``tier``; 0: the first).
    """

    worker_id: str
    server_id: str = ""
    host: str = ""
    language: str = ""
    version: str = ""
    queues: list[str] = field(default_factory=list)
    concurrency: int = 0
    in_flight: int = 0
    connect_time: datetime | None = None
    last_heartbeat_time: datetime | None = None
    cpu_percent: float = 0.0
    memory_bytes: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    uptime: timedelta | None = None
    state: WorkerState = WorkerState.ACTIVE
    tier: int = 0


@dataclass(slots=True)
class MetricsSnapshot:
    """One snapshot of the metrics stream (`QueueManager.watch_metrics`).

    Attributes:
        time: When it was read (the server's Redis clock).
        metrics: The watched queues' metrics, by queue name.
        workers: The connected workers, by id, when asked for (``include_workers``).
    """

    time: datetime | None
    metrics: list[QueueMetrics] = field(default_factory=list)
    workers: list[WorkerInfo] = field(default_factory=list)


def _time(msg: timestamp_pb2.Timestamp) -> datetime:
    return datetime.fromtimestamp(msg.seconds + msg.nanos / 1e9, tz=UTC)


def _duration(msg: duration_pb2.Duration) -> timedelta:
    return timedelta(seconds=msg.seconds, microseconds=msg.nanos // 1000)


def _bucket_from_proto(msg: types_pb2.MetricsBucket) -> MetricsBucket:
    return MetricsBucket(
        start_time=_time(msg.start_time) if msg.HasField("start_time") else None,
        added=msg.added,
        completed=msg.completed,
        failed=msg.failed,
        average_processing_time=_duration(msg.average_processing_time)
        if msg.HasField("average_processing_time")
        else None,
    )


def metrics_from_proto(msg: types_pb2.QueueMetrics) -> QueueMetrics:
    """Public `QueueMetrics` from a `queue_manager.v1.QueueMetrics`."""
    has = msg.HasField
    return QueueMetrics(
        queue_name=msg.queue_name,
        waiting=msg.waiting,
        active=msg.active,
        delayed=msg.delayed,
        completed=msg.completed,
        failed=msg.failed,
        paused=msg.paused,
        stalled=msg.stalled,
        stalled_total=msg.stalled_total,
        timed_out_total=msg.timed_out_total,
        raised_total=msg.raised_total,
        memory_bytes=msg.memory_bytes,
        cancelled=msg.cancelled,
        expired_total=msg.expired_total,
        added_total=msg.added_total,
        completed_total=msg.completed_total,
        failed_total=msg.failed_total,
        completed_per_second=msg.completed_per_second,
        failed_per_second=msg.failed_per_second,
        completed_last_minute=msg.completed_last_minute,
        failed_last_minute=msg.failed_last_minute,
        average_processing_time=_duration(msg.average_processing_time)
        if has("average_processing_time")
        else None,
        p95_processing_time=_duration(msg.p95_processing_time) if has("p95_processing_time") else None,
        error_rate=msg.error_rate,
        oldest_waiting_age=_duration(msg.oldest_waiting_age) if has("oldest_waiting_age") else None,
        workers=msg.workers,
        free_capacity=msg.free_capacity,
        rate_limit_tokens=msg.rate_limit_tokens,
        is_paused=msg.is_paused,
        paused_until=_time(msg.paused_until) if has("paused_until") else None,
        maintenance_until=_time(msg.maintenance_until) if has("maintenance_until") else None,
        held_until=_time(msg.held_until) if has("held_until") else None,
        history=[_bucket_from_proto(b) for b in msg.history],
        sample_time=_time(msg.sample_time) if has("sample_time") else None,
        levels=[
            LevelMetrics(
                priority=JobPriority(level.priority),
                waiting=level.waiting,
                oldest_waiting_age=_duration(level.oldest_waiting_age)
                if level.HasField("oldest_waiting_age")
                else None,
            )
            for level in msg.levels
            if level.priority in _PRIORITIES
        ],
        groups=msg.groups,
        groups_paused=msg.groups_paused,
    )


def worker_from_proto(msg: metrics_pb2.WorkerInfo) -> WorkerInfo:
    """Public `WorkerInfo` from a `queue_manager.v1.WorkerInfo`."""
    return WorkerInfo(
        worker_id=msg.worker_id,
        server_id=msg.server_id,
        host=msg.host,
        language=msg.language,
        version=msg.version,
        queues=list(msg.queues),
        concurrency=msg.concurrency,
        in_flight=msg.in_flight,
        connect_time=_time(msg.connect_time) if msg.HasField("connect_time") else None,
        last_heartbeat_time=_time(msg.last_heartbeat_time) if msg.HasField("last_heartbeat_time") else None,
        cpu_percent=msg.cpu_percent,
        memory_bytes=msg.memory_bytes,
        labels=dict(msg.labels),
        uptime=_duration(msg.uptime) if msg.HasField("uptime") else None,
        state=WORKER_STATE_BY_NUMBER.get(msg.state, WorkerState.ACTIVE),
        tier=msg.tier,
    )


def snapshot_from_proto(msg: metrics_pb2.WatchMetricsResponse) -> MetricsSnapshot:
    """Public `MetricsSnapshot` from a `queue_manager.v1.WatchMetricsResponse`."""
    return MetricsSnapshot(
        time=_time(msg.time) if msg.HasField("time") else None,
        metrics=[metrics_from_proto(m) for m in msg.metrics],
        workers=[worker_from_proto(w) for w in msg.workers],
    )


def watch_metrics_request(
    queues: Iterable[str] | str | None,
    interval: float | timedelta,
    include_history: bool,
    include_workers: bool,
) -> metrics_pb2.WatchMetricsRequest:
    """The `WatchMetrics` request of `QueueManager.watch_metrics` (the server checks the interval's range and
    the names). Only the kinds are checked here: a string interval was read as a number ("1"), NaN failed
    in ``round`` and a queue count in ``list`` ("'int' object is not iterable"), naming nothing."""
    if queues is None:
        names = []
    elif isinstance(queues, str):
        names = [queues]
    elif isinstance(queues, Iterable):
        names = list(queues)
    else:
        raise TypeError(f"queues must be a queue name, a list of names or None, not {type(queues).__name__}")
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"queues must hold queue names (str), not {type(name).__name__}")
    if isinstance(interval, timedelta):
        seconds = interval.total_seconds()
    elif isinstance(interval, int | float) and not isinstance(interval, bool):
        seconds = float(interval)
    else:
        raise TypeError(
            f"interval must be seconds (int or float) or a timedelta, not {type(interval).__name__}"
        )
    if not math.isfinite(seconds) or abs(seconds) > 1e9:  # beyond that, not even a Duration holds it
        raise ValueError(f"interval must be 0.1 to 60 seconds or a timedelta, got {interval!r}")
    request = metrics_pb2.WatchMetricsRequest(
        queue_names=names, include_history=include_history, include_workers=include_workers
    )
    request.interval.FromNanoseconds(round(seconds * 1e9))
    return request
