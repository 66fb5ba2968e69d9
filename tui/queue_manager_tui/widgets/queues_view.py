"""The Queues view: a live row per queue, and the selected queue's throughput and figures below."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, timedelta

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Sparkline

from queue_manager import GroupInfo, GroupLimits, JobPriority, QueueMetrics, RateLimit
from queue_manager_tui.format import (
    NONE,
    fmt_bytes,
    fmt_count,
    fmt_duration,
    fmt_percent,
    fmt_rate,
    fmt_time,
    sparkline,
)
from queue_manager_tui.state import DashboardState
from queue_manager_tui.widgets.cells import literal, number
from queue_manager_tui.widgets.live_text import LiveText
from queue_manager_tui.widgets.nav_table import NavTable, TableRow

__all__ = ["QueuesView"]

COLUMNS = (
    ("queue", "Queue"),
    ("state", "State"),
    ("waiting", "Wait"),
    ("active", "Active"),
    ("delayed", "Delay"),
    ("failed", "Failed"),
    ("completed", "Done"),
    ("throughput", "Throughput"),
    ("rate", "Done/s"),
    ("errors", "Err%"),
    ("avg", "Avg"),
    ("oldest", "Oldest"),
    ("workers", "Wkrs"),
    ("limit", "Tokens left"),
)
SPARK_WIDTH = 10
# Paused groups named in the queue's facts, with until when; the rest are counted (qm groups list).
PAUSED_GROUPS_NAMED = 5
# An error rate from this fraction up is shown in red: one job in twenty failing is worth a look.
ERROR_RATE_ALERT = 0.05


class QueuesView(Vertical):
    """Every queue, updated in place from each metrics snapshot; Enter opens a queue's jobs."""

    @dataclass
    class OpenJobs(Message):
        """The user chose a queue (Enter): show its jobs."""

        queue: str

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._state: DashboardState | None = None

    def compose(self) -> ComposeResult:
        table = NavTable(id="queues-table")
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        yield table
        with Vertical(id="queue-panel"):
            yield LiveText(id="queue-title")
            yield Sparkline([], id="queue-spark")
            yield LiveText(id="queue-facts")

    @property
    def table(self) -> NavTable:
        return self.query_one("#queues-table", NavTable)

    @property
    def selected_queue(self) -> str | None:
        """The queue under the cursor."""
        return self.table.selected_key

    def select_queue(self, name: str) -> None:
        """Moves the cursor to a queue."""
        self.table.select_key(name)

    def show(self, state: DashboardState) -> None:
        """Redraws from the state: changed cells in place, the cursor kept."""
        self._state = state
        rows: list[TableRow] = [
            (name, _row(metrics, state.series(name), state.limits.get(name)))
            for name, metrics in state.queues.items()
        ]
        self.table.sync_rows(rows)
        self._show_panel()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_panel()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.post_message(self.OpenJobs(str(event.row_key.value)))

    def _show_panel(self) -> None:
        title = self.query_one("#queue-title", LiveText)
        facts = self.query_one("#queue-facts", LiveText)
        spark = self.query_one("#queue-spark", Sparkline)
        name = self.selected_queue
        state = self._state
        if state is None or name is None or name not in state.queues:
            title.show_text(Text("No queues yet. Register one with `qm queues register NAME`.", style="dim"))
            facts.show_text(Text())
            spark.data = []
            return
        metrics = state.queues[name]
        series = state.series(name)
        title.show_text(_title(metrics, series))
        spark.data = series or [0.0]
        facts.show_text(
            _facts(
                metrics,
                state.limits.get(name),
                state.bounds.get(name, {}),
                state.group_limits.get(name),
                state.max_sizes.get(name, 0),
                state.paused_groups.get(name, []),
            )
        )


def _row(metrics: QueueMetrics, series: list[float], limit: RateLimit | None) -> list[Text]:
    paused = metrics.is_paused
    error_style = "bold red" if metrics.error_rate >= ERROR_RATE_ALERT else ""
    return [
        literal(metrics.queue_name, "bold"),
        Text(_paused_text(metrics), style="bold yellow") if paused else Text("run", style="green"),
        number(fmt_count(metrics.paused if paused else metrics.waiting)),
        number(fmt_count(metrics.active), "green" if metrics.active else ""),
        number(fmt_count(metrics.delayed)),
        number(fmt_count(metrics.failed), "red" if metrics.failed else ""),
        number(fmt_count(metrics.completed)),
        Text(sparkline(series, SPARK_WIDTH), style="green"),
        number(fmt_rate(metrics.completed_per_second)),
        number(fmt_percent(metrics.error_rate), error_style),
        number(fmt_duration(metrics.average_processing_time)),
        number(fmt_duration(metrics.oldest_waiting_age)),
        number(f"{metrics.workers}" if metrics.workers else NONE, "" if metrics.workers else "dim"),
        number(_limit(metrics, limit)),
    ]


def _paused_text(metrics: QueueMetrics) -> str:
    """A paused queue's state: ``PAUSED``, ``paused until 02:00:00`` for a timed pause (UTC, as every time
    here), ``in maintenance until 04:00:00`` inside a maintenance window, or both (each lifts by itself)."""
    parts = []
    if metrics.paused_until is not None:
        parts.append(f"paused until {metrics.paused_until.astimezone(UTC):%H:%M:%S}")
    if metrics.maintenance_until is not None:
        parts.append(f"in maintenance until {metrics.maintenance_until.astimezone(UTC):%H:%M:%S}")
    return ", ".join(parts) or "PAUSED"


def _limit(metrics: QueueMetrics, limit: RateLimit | None) -> str:
    """The rate-limit bucket: whole tokens left (job starts allowed now) of its size, ``12 of 50``. It read
    ``12/50`` under "Limit", which looked like a rate (12 per 50); and a part token was rounded up to a
    start the bucket does not allow yet."""
    if metrics.held_until is not None:
        return "held"
    if limit is None or limit.max <= 0:
        return NONE
    return f"{fmt_count(max(0, math.floor(metrics.rate_limit_tokens)))} of {fmt_count(limit.max)}"


def _title(metrics: QueueMetrics, series: list[float]) -> Text:
    title = Text()
    title.append(metrics.queue_name, style="bold")
    if metrics.is_paused:
        title.append(f"  {_paused_text(metrics)}", style="bold yellow")
    title.append(f"  completed per interval, last {len(series)}: ", style="dim")
    title.append(f"max {max(series, default=0):.0f}", style="dim")
    return title


def _facts(
    metrics: QueueMetrics,
    limit: RateLimit | None,
    bounds: Mapping[JobPriority, timedelta],
    group_limits: GroupLimits | None = None,
    max_size: int = 0,
    paused_groups: Sequence[GroupInfo] = (),
) -> Text:
    lines = [
        # Failed runs, retried or not, by how they ended (a stalled run is a worker lost with the job).
        f"totals: added {fmt_count(metrics.added_total)}, completed {fmt_count(metrics.completed_total)}, "
        f"failed {fmt_count(metrics.failed_total)}, expired {fmt_count(metrics.expired_total)}; "
        f"runs ended by {fmt_count(metrics.raised_total)} errors, "
        f"{fmt_count(metrics.timed_out_total)} timeouts, {fmt_count(metrics.stalled_total)} stalls",
        f"last minute: {fmt_count(metrics.completed_last_minute)} completed, "
        f"{fmt_count(metrics.failed_last_minute)} failed ({fmt_rate(metrics.failed_per_second)} failing)",
        f"processing: avg {fmt_duration(metrics.average_processing_time)}, "
        f"p95 {fmt_duration(metrics.p95_processing_time)}; error rate {fmt_percent(metrics.error_rate)}",
        # The memory: an estimate from a sample of its jobs (QueueMetrics.memory_bytes).
        f"now: {fmt_count(metrics.stalled)} stalled, {fmt_count(metrics.paused)} held by pause, "
        f"{fmt_count(metrics.cancelled)} cancelled; "
        f"oldest waiting {fmt_duration(metrics.oldest_waiting_age)}; "
        f"memory about {fmt_bytes(metrics.memory_bytes)}",
        f"workers: {metrics.workers} connected, {metrics.free_capacity} free slots; "
        + _limit_sentence(metrics, limit),
    ]
    if max_size:
        lines.append(_size_sentence(metrics, max_size))
    if metrics.levels:  # a server older than the per-level figures sends none
        lines.append(_levels_sentence(metrics, bounds))
    if metrics.groups or group_limits is not None:  # a queue that uses fairness groups
        lines.append(_groups_sentence(metrics, group_limits))
    if paused_groups:
        lines.append(_paused_groups_sentence(paused_groups))
    return Text("\n".join(lines))


def _paused_groups_sentence(groups: Sequence[GroupInfo]) -> str:
    """The paused groups by name, each with why when it lifts by itself: ``paused groups: acme in
    maintenance until 04:00:00 (one of its own windows), globex until 03:00:00 (a timed pause), initech``
    (until resumed); UTC, as every time here. The first few: ``qm groups list`` has them all."""
    named = []
    for group in groups[:PAUSED_GROUPS_NAMED]:
        parts = [group.name]
        if group.paused_until is not None:
            parts.append(f"until {group.paused_until.astimezone(UTC):%H:%M:%S}")
        if group.maintenance_until is not None:
            parts.append(f"in maintenance until {group.maintenance_until.astimezone(UTC):%H:%M:%S}")
        named.append(" ".join(parts))
    more = len(groups) - PAUSED_GROUPS_NAMED
    return "paused groups: " + ", ".join(named) + (f" and {fmt_count(more)} more" if more > 0 else "")


def _size_sentence(metrics: QueueMetrics, max_size: int) -> str:
    """The jobs the queue's max_size counts (waiting or paused, and delayed) of it: ``size 812 / 1,000``; at
    or past it (jobs the server adds itself may take it past), that adds are refused."""
    size = metrics.waiting + metrics.paused + metrics.delayed
    sentence = f"size {fmt_count(size)} / {fmt_count(max_size)} (jobs waiting and delayed / max_size)"
    if size >= max_size:
        sentence += "; full: adds are refused until workers take some"
    return sentence


def _groups_sentence(metrics: QueueMetrics, limits: GroupLimits | None) -> str:
    """The fairness groups: how many the queue knows, how many of them are paused when any (``qm groups
    pause``; the stream's ``groups_paused``) and the limits of each (a group's own limits, set with ``qm
    groups limit``, are in ``qm groups list``): ``groups: 12, 3 paused; each at most 2 active, 10 per 1.0s,
    at most 500 waiting``."""
    parts = []
    if limits is not None and limits.concurrency:
        parts.append(f"at most {fmt_count(limits.concurrency)} active")
    if limits is not None and limits.rate_limit is not None and limits.rate_limit.max > 0:
        parts.append(f"{fmt_count(limits.rate_limit.max)} per {fmt_duration(_window(limits.rate_limit))}")
    if limits is not None and limits.max_size:
        parts.append(f"at most {fmt_count(limits.max_size)} waiting")
    each = f"each {', '.join(parts)}" if parts else "no per-group limit"
    held = f", {fmt_count(metrics.groups_paused)} paused" if metrics.groups_paused else ""
    return f"groups: {fmt_count(metrics.groups)}{held}; {each}"


def _window(limit: RateLimit) -> timedelta:
    window = limit.duration
    return window if isinstance(window, timedelta) else timedelta(milliseconds=float(window))


def _levels_sentence(metrics: QueueMetrics, bounds: Mapping[JobPriority, timedelta]) -> str:
    """The ready jobs by priority, the levels with jobs or a bound only: ``by priority: high 5 (oldest 3.0s),
    background 12 (oldest 6m10s, bound 5m00s)``."""
    parts = []
    for level in metrics.levels:
        bound = bounds.get(level.priority)
        if not level.waiting and bound is None:
            continue
        detail = [f"oldest {fmt_duration(level.oldest_waiting_age)}"] if level.waiting else []
        if bound is not None:
            detail.append(f"bound {fmt_duration(bound)}")
        parts.append(f"{level.priority.name.lower()} {fmt_count(level.waiting)} ({', '.join(detail)})")
    return "by priority: " + (", ".join(parts) if parts else "none ready")


def _limit_sentence(metrics: QueueMetrics, limit: RateLimit | None) -> str:
    if limit is None or limit.max <= 0:
        sentence = "no rate limit"
    else:
        sentence = (
            f"rate limit {limit.max} per {fmt_duration(_window(limit))}, "
            f"{metrics.rate_limit_tokens:.1f} tokens left"
        )
    if metrics.held_until is not None:
        sentence += f"; held by a retry-after until {fmt_time(metrics.held_until)}"
    return sentence
