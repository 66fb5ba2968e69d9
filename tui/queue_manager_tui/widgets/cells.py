"""Rich cells and lines for the dashboard's tables and panes; user text is always literal (never markup)."""

from __future__ import annotations

from rich.text import Text

from queue_manager import JobState
from queue_manager_tui.format import safe

__all__ = ["STATE_STYLES", "literal", "number", "state_text"]

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
