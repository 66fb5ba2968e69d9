"""`HelpScreen`: every key of the dashboard, by view; the controls only when they are allowed."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

__all__ = ["CONTROL_KEYS", "KEYS", "HelpScreen", "Section"]

Section = tuple[str, tuple[tuple[str, str], ...]]
"""A titled group of (key, what it does)."""

KEYS: tuple[Section, ...] = (
    (
        "Everywhere",
        (
            ("?", "this help"),
            ("1 … 6", "the views, in the tabs' order"),
            ("/", "search: filters the page as typed;"),
            ("", "Enter: that job id, or that name in"),
            ("", "the whole state (send-* a prefix)"),
            ("q, Esc", "back; quit from Queues"),
            ("j k, ↓ ↑", "move; g G top and bottom"),
            ("Tab", "next pane"),
            ("ctrl+p", "command palette: every action"),
            ("ctrl+q", "quit"),
        ),
    ),
    ("Queues", (("Enter", "the queue's jobs"),)),
    (
        "Jobs",
        (
            ("h l", "previous / next state"),
            ("[ ]", "previous / next page"),
            ("Enter", "into the detail pane (↓ ↑ scroll)"),
            ("w", "the job's workflow run"),
        ),
    ),
    ("Workflows", (("Enter", "the run's steps"), ("o", "the selected step's job"))),
    ("Schedules", (("Enter, o", "the job its last run added"),)),
    ("Dead letters", (("f, /", "filter by original queue"),)),
)
CONTROL_KEYS: tuple[tuple[str, str], ...] = (
    ("p", "pause or resume the queue; in Workers, quiet or resume the worker"),
    ("C", "clean the queue (state and age)"),
    ("R", "retry all failed jobs of the queue"),
    ("r", "retry the job (failed or cancelled)"),
    ("P", "promote the job (delayed → waiting)"),
    ("c", "cancel the job"),
    ("d", "remove the job; in Schedules, delete the schedule"),
    ("A", "retry, cancel or remove all matches"),
    ("r R d", "DLQ: requeue one, all shown; delete"),
    ("e", "DLQ: edit the data, then requeue"),
    ("s", "in Workers, stop the worker (it finishes its jobs and exits)"),
)


class HelpScreen(ModalScreen[None]):
    """The keys; any of ?, q or Esc closes it.

    Args:
        read_only: Leave the controls out (they are disabled).
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark", "close", "Close")]

    def __init__(self, *, read_only: bool) -> None:
        super().__init__()
        self.read_only = read_only

    def compose(self) -> ComposeResult:
        controls: Section = (
            ("Controls", (("", "read-only: controls are off"),))
            if self.read_only
            else ("Controls (each asks first)", CONTROL_KEYS)
        )
        with VerticalScroll(id="help"):
            yield Static(Text("Keys", style="bold"), id="dialog-title")
            with Horizontal(id="help-columns"):
                yield Static(_sections((KEYS[0], KEYS[1], KEYS[3], KEYS[4])))
                yield Static(_sections((KEYS[2], KEYS[5], controls)))

    def action_close(self) -> None:
        self.dismiss(None)


def _sections(sections: tuple[Section, ...]) -> Text:
    text = Text()
    for title, keys in sections:
        text.append(f"{title}\n", style="bold underline")
        for key, what in keys:
            text.append(f"{key:<10}", style="bold cyan")
            text.append(f"{what}\n")
        text.append("\n")
    text.rstrip()
    return text
