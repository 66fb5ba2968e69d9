"""What the dashboard knows between snapshots: queues, throughput series, workers and the connection.

No Textual here: the app feeds each `MetricsSnapshot` to `DashboardState.apply` and redraws from it, so the
bookkeeping (throughput per interval, queues appearing and going, reconnect backoff) is tested alone.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from queue_manager import (
    GroupInfo,
    GroupLimits,
    JobPriority,
    MetricsSnapshot,
    Queue,
    QueueMetrics,
    RateLimit,
    WorkerInfo,
)

__all__ = ["SERIES_LENGTH", "Backoff", "Connection", "DashboardState", "Link", "QueueChanges"]

SERIES_LENGTH = 60
"""Throughput samples kept per queue: a minute at the default 1 s interval."""


class Link(enum.Enum):
    """The state of the metrics stream."""

    CONNECTING = "connecting"
    LIVE = "live"
    DOWN = "down"


@dataclass(slots=True)
class Connection:
    """The metrics stream as the status line shows it.

    Attributes:
        link: Connecting (first attempt), live, or down (waiting to retry).
        error: Why it is down (the client's error message).
        retry_in: Seconds until the next attempt, while down.
        attempts: Failed attempts in a row.
    """

    link: Link = Link.CONNECTING
    error: str = ""
    retry_in: float = 0.0
    attempts: int = 0


@dataclass(slots=True)
class Backoff:
    """Exponential reconnect delays: ``initial``, doubling, at most ``maximum`` seconds.

    Half a second first, so a server restart is noticed quickly; at most ten seconds so an operator who
    fixed the server does not wait long, without hammering a server that is down.
    """

    initial: float = 0.5
    maximum: float = 10.0
    factor: float = 2.0
    _next: float = field(default=0.0, init=False)

    def next(self) -> float:
        """The delay before the next attempt (grows with each call until `reset`)."""
        delay = self._next or self.initial
        self._next = min(self.maximum, delay * self.factor)
        return delay

    def reset(self) -> None:
        """Back to the initial delay (after a success)."""
        self._next = 0.0


@dataclass(frozen=True, slots=True)
class QueueChanges:
    """Queues that appeared or disappeared with a snapshot."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    # Queues whose count of paused groups changed (a group paused or resumed, a group's window started or
    # ended): the app reads their groups again to say which are held and until when.
    groups_held: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed)


class DashboardState:
    """The latest metrics of every queue, their throughput series, the workers and the connection."""

    def __init__(self) -> None:
        self.queues: dict[str, QueueMetrics] = {}
        self.workers: list[WorkerInfo] = []
        self.limits: dict[str, RateLimit | None] = {}
        self.bounds: dict[str, Mapping[JobPriority, timedelta]] = {}
        self.group_limits: dict[str, GroupLimits] = {}
        self.max_sizes: dict[str, int] = {}
        # Each queue's paused fairness groups (read only for queues with some: QueueMetrics.groups_paused).
        self.paused_groups: dict[str, list[GroupInfo]] = {}
        self.time: datetime | None = None
        self.connection = Connection()
        self._completed: dict[str, deque[float]] = {}
        self._last_totals: dict[str, int] = {}

    @property
    def queue_names(self) -> list[str]:
        """Known queues, by name."""
        return sorted(self.queues)

    def apply(self, snapshot: MetricsSnapshot) -> QueueChanges:
        """Takes in one snapshot: new figures, one throughput sample per queue, the workers.

        Args:
            snapshot: The stream's latest snapshot (every queue).

        Returns:
            The queues that appeared or went away.
        """
        fresh = {m.queue_name: m for m in snapshot.metrics}
        added = tuple(sorted(set(fresh) - set(self.queues)))
        removed = tuple(sorted(set(self.queues) - set(fresh)))
        for name in removed:
            self._completed.pop(name, None)
            self._last_totals.pop(name, None)
            self.limits.pop(name, None)
            self.bounds.pop(name, None)
            self.group_limits.pop(name, None)
            self.max_sizes.pop(name, None)
            self.paused_groups.pop(name, None)
        held = tuple(
            name
            for name, m in fresh.items()
            if name in self.queues and m.groups_paused != self.queues[name].groups_paused
        )
        for name, metrics in fresh.items():
            self._sample(name, metrics.completed_total)
        self.queues = dict(sorted(fresh.items()))
        self.workers = sorted(snapshot.workers, key=lambda w: w.worker_id)
        self.time = snapshot.time
        return QueueChanges(added, removed, held)

    def _sample(self, name: str, completed_total: int) -> None:
        series = self._completed.setdefault(name, deque(maxlen=SERIES_LENGTH))
        previous = self._last_totals.get(name)
        self._last_totals[name] = completed_total
        if previous is not None:
            # A queue obliterated and registered again starts its totals afresh: never a negative rate.
            series.append(float(max(0, completed_total - previous)))

    def series(self, name: str) -> list[float]:
        """Jobs completed in each interval, oldest first (empty until two snapshots were seen)."""
        return list(self._completed.get(name, ()))

    def forget_totals(self) -> None:
        """Drops the last totals so the first sample after a reconnect does not span the outage."""
        self._last_totals.clear()

    def set_settings(self, queues: list[Queue]) -> None:
        """Records each queue's rate limit (its bucket size), priority bounds, fairness-group limits and size
        limit (max_size), from its settings."""
        self.limits = {q.name: q.config.rate_limit for q in queues}
        self.bounds = {q.name: q.config.priority_bounds for q in queues if q.config.priority_bounds}
        self.group_limits = {q.name: q.config.group_limits for q in queues if q.config.group_limits}
        self.max_sizes = {q.name: q.config.max_size for q in queues if q.config.max_size}

    def workers_of(self, queue: str) -> list[WorkerInfo]:
        """The connected workers that take jobs of a queue."""
        return [w for w in self.workers if queue in w.queues]
