"""The Jobs view's table: its columns (the "When" column named for the state shown) and one row per job.

No widget here: `JobsView` sets the columns and syncs the rows it is given; user text (ids, names, errors,
data) goes through `cells.literal`, never markup.
"""

from __future__ import annotations

from datetime import datetime

from rich.text import Text

from queue_manager import Job, JobState
from queue_manager_tui.format import fmt_inline, fmt_time
from queue_manager_tui.widgets.cells import children_wait, event_wait, literal, number, state_text
from queue_manager_tui.widgets.nav_table import NavTable

__all__ = ["job_row", "set_job_columns"]

# What the "When" column means in each state.
_WHEN = {
    JobState.WAITING: "Added",
    JobState.PAUSED: "Added",
    JobState.ACTIVE: "Started",
    JobState.DELAYED: "Due",
    JobState.COMPLETED: "Finished",
    JobState.FAILED: "Finished",
    JobState.CANCELLED: "Finished",
}


def set_job_columns(table: NavTable, state: JobState) -> None:
    """Clears ``table`` and gives it the columns of the jobs of ``state``."""
    table.clear(columns=True)
    # Fixed widths for the user's text (ids, names, errors can be long): the detail pane has it all.
    for key, label, width in (
        ("id", "ID", 12),
        ("name", "Name", 18),
        ("state", "State", None),
        ("tries", "Tries", None),
        ("when", _WHEN[state], None),
        ("info", "Info", 40),
    ):
        table.add_column(label, key=key, width=width)


def job_row(job: Job) -> list[Text]:
    """One job's cells, in the order of `set_job_columns`."""
    return [
        literal(job.id),
        literal(job.name),
        state_text(job.state),
        number(f"{job.attempts_made}/{job.max_attempts}"),
        _when_cell(job),
        literal(_info(job)),
    ]


def _when_cell(job: Job) -> Text:
    # A job parked on its children (or for an event, with no timeout) has no due time: "children" ("event")
    # says what it waits for, where a "-" would read as a delayed job whose time is unknown.
    if children_wait(job):
        return Text("children", style="blue")
    if event_wait(job) and job.run_at is None:
        return Text("event", style="blue")
    return Text(fmt_time(_when(job), short=True))


def _when(job: Job) -> datetime | None:
    if job.state is JobState.DELAYED:
        return job.run_at
    if job.state is JobState.ACTIVE:
        return job.processed_at
    if job.state in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED):
        return job.finished_at
    return job.created_at


def _info(job: Job) -> str:
    if job.state is JobState.FAILED:
        return job.failed_reason.splitlines()[0] if job.failed_reason else ""
    if job.state is JobState.CANCELLED:
        return job.cancel_reason
    if job.state is JobState.COMPLETED:
        return fmt_inline(job.result, 60)
    if job.state is JobState.ACTIVE:
        progress = f"progress {fmt_inline(job.progress, 30)}  " if job.progress is not None else ""
        return f"{progress}{job.worker_id}"
    if wait := children_wait(job) or event_wait(job):
        return wait
    if job.state is JobState.DELAYED and job.failed_reason:
        return f"retry after: {job.failed_reason.splitlines()[0]}"
    return fmt_inline(job.data, 60)
