"""Rich cells and lines for the dashboard's tables and panes; user text is always literal (never markup)."""

from __future__ import annotations

from rich.text import Text

from queue_manager import Job, JobState
from queue_manager_tui.format import fmt_time, safe

__all__ = ["STATE_STYLES", "children_wait", "event_wait", "literal", "number", "state_text"]

STATE_STYLES: dict[JobState, str] = {
    JobState.WAITING: "cyan",
    JobState.ACTIVE: "bold green",
    JobState.DELAYED: "blue",
    JobState.COMPLETED: "green",
    JobState.FAILED: "bold red",
    JobState.PAUSED: "yellow",
    JobState.CANCELLED: "magenta",
}


def literal(text: str, style: str = "", *, multiline: bool = False) -> Text:
    """User-controlled text shown as it is: control characters escaped, brackets not read as markup."""
    return Text(safe(text, multiline=multiline), style=style, no_wrap=not multiline, overflow="ellipsis")


def number(text: str, style: str = "") -> Text:
    """A right-aligned figure."""
    return Text(text, style=style, justify="right")


def state_text(state: JobState | None) -> Text:
    """A job state in its colour."""
    if state is None:
        return Text("unknown", style="dim")
    return Text(state.value, style=STATE_STYLES[state])


def children_wait(job: Job) -> str:
    """What a job parked on the children it added at run time waits for ("waiting for 2 of 5 children"),
    else "".

    Such a job is delayed with no due time (`JobContext.wait_for_children`): without this it would look
    like a delayed job whose time is unknown.
    """
    if job.state is not JobState.DELAYED or job.children_pending <= 0 or job.run_at is not None:
        return ""
    return f"waiting for {job.children_pending} of {len(job.child_jobs)} children"


def event_wait(job: Job) -> str:
    """What a job parked for an external event waits for ("waiting for event order:7:paid (until
    2025-03-01 12:00:05 UTC)"), else "".

    Such a job is delayed until its wait's timeout, or with no due time (`JobContext.wait_for_event`). A job
    that keeps the record of an earlier wait but is delayed for another reason (a durable sleep) has another
    due time, and shows as delayed only.
    """
    w = job.event_wait
    if job.state is not JobState.DELAYED or w is None or job.event is not None or job.run_at != w.until:
        return ""
    until = f" (until {fmt_time(w.until)} UTC)" if w.until is not None else ""
    return safe(f"waiting for event {', '.join(w.keys)}{until}")
