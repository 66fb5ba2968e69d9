"""The Schedules view: every queue's repeatable schedules (cron or interval), when each runs next and last,
and the selected one in full; `o` opens the job its last run added."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Static

from queue_manager import JobRef, QueueManagerError, Schedule
from queue_manager_tui.data import DataSource
from queue_manager_tui.format import fmt_count, fmt_duration, fmt_inline, fmt_time, safe
from queue_manager_tui.state import DashboardState
from queue_manager_tui.widgets.cells import literal, number
from queue_manager_tui.widgets.nav_table import NavTable, TableRow

__all__ = ["SchedulesView", "schedule_key", "when_text"]


def schedule_key(schedule: Schedule) -> str:
    """The table's row key of a schedule (ids are unique within their queue only)."""
    return f"{schedule.queue_name}/{schedule.id}"


def when_text(schedule: Schedule) -> str:
    """How often it runs: the cron expression and its time zone, or the interval."""
    if schedule.cron is not None:
        return f"{schedule.cron} ({schedule.timezone or 'UTC'})"
    return f"every {fmt_duration(schedule.every)}"


class SchedulesView(Vertical):
    """The schedules of every queue, by queue then id.

    Args:
        source: Where schedules come from.
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("o", "open_last_job", "Last job")]

    @dataclass
    class OpenJob(Message):
        """The user asked for the job a schedule's last run added."""

        ref: JobRef

    def __init__(self, source: DataSource, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.source = source
        self._schedules: dict[str, Schedule] = {}
        self._activity: int | None = None

    def compose(self) -> ComposeResult:
        table = NavTable(id="schedules-table")
        for key, label, width in (
            ("queue", "Queue", 14),
            ("id", "Schedule", 16),
            ("when", "When", 24),
            ("next", "Next run", None),
            ("last", "Last run", None),
            ("runs", "Runs", None),
        ):
            table.add_column(label, key=key, width=width)
        yield table
        yield Static(id="schedule-detail")

    @property
    def table(self) -> NavTable:
        return self.query_one("#schedules-table", NavTable)

    def selected(self) -> Schedule | None:
        """The highlighted schedule, if any."""
        key = self.table.selected_key
        return self._schedules.get(key) if key is not None else None

    def refresh_schedules(self) -> None:
        """Loads every schedule again."""
        self._load()

    def on_metrics(self, state: DashboardState, *, live: bool) -> None:
        """Reloads when the stream shows jobs added (a schedule's run adds one), while the view is shown."""
        activity = sum(m.added_total for m in state.queues.values())
        if activity == self._activity:
            return
        first = self._activity is None
        self._activity = activity
        if live and not first:
            self._load()

    def action_open_last_job(self) -> None:
        schedule = self.selected()
        if schedule is None or not schedule.last_job_id:
            self.notify("The selected schedule has not added a job yet.", severity="warning")
            return
        self.post_message(self.OpenJob(JobRef(schedule.queue_name, schedule.last_job_id)))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self._show_detail()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open_last_job()

    @work(exclusive=True, group="schedules")
    async def _load(self) -> None:
        try:
            schedules = await self.source.list_schedules()
        except QueueManagerError as exc:
            self.query_one("#schedule-detail", Static).update(Text(f"Could not list schedules: {exc}"))
            return
        self._schedules = {schedule_key(s): s for s in schedules}
        rows: list[TableRow] = [(schedule_key(s), _row(s)) for s in schedules]
        self.table.sync_rows(rows)
        self._show_detail()

    def _show_detail(self) -> None:
        detail = self.query_one("#schedule-detail", Static)
        schedule = self.selected()
        if schedule is None:
            detail.update(Text("No schedules yet (qm schedules add …).", style="dim"))
            return
        text = Text()
        text.append(f"{safe(schedule.queue_name)}/{safe(schedule.id)}", style="bold")
        text.append(f"  {when_text(schedule)}")
        text.append(f"\nadds {safe(schedule.job_name)}", style="cyan")
        if schedule.data is not None:
            text.append(f" {safe(fmt_inline(schedule.data))}", style="dim")
        bounds = []
        if schedule.start is not None:
            bounds.append(f"from {fmt_time(schedule.start)}")
        if schedule.end is not None:
            bounds.append(f"until {fmt_time(schedule.end)}")
        if schedule.limit is not None:
            bounds.append(f"at most {fmt_count(schedule.limit)} runs")
        bounds.append(f"missed runs: {schedule.catch_up}")
        text.append("\n" + ", ".join(bounds), style="dim")
        if schedule.next_run_at is None:
            text.append("\nover: no run is due any more", style="magenta")
        if schedule.last_job_id:
            text.append(f"\nlast job {safe(schedule.last_job_id)}  (o: open it)", style="dim")
        if schedule.created_at is not None:
            text.append(f"\ncreated {fmt_time(schedule.created_at)}", style="dim")
        if schedule.updated_at is not None and schedule.updated_at != schedule.created_at:
            text.append(f"  changed {fmt_time(schedule.updated_at)}", style="dim")
        detail.update(text)


def _row(schedule: Schedule) -> list[Text]:
    over = schedule.next_run_at is None
    return [
        literal(schedule.queue_name),
        literal(schedule.id),
        literal(when_text(schedule)),
        Text("over", style="magenta") if over else Text(fmt_time(schedule.next_run_at)),
        Text(fmt_time(schedule.last_run_at), style="dim"),
        number(fmt_count(schedule.run_count)),
    ]
