"""`CleanScreen`: which jobs a clean removes (a state and a grace period), asked before the confirmation."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static

from queue_manager import JobState, QueueMetrics
from queue_manager_tui.controls import CLEANABLE_STATES, count_in_state, parse_grace
from queue_manager_tui.format import fmt_count

__all__ = ["CleanChoice", "CleanScreen"]


@dataclass(frozen=True, slots=True)
class CleanChoice:
    """What to clean: jobs in ``state`` older than ``grace``."""

    state: JobState
    grace: timedelta


class CleanScreen(ModalScreen[CleanChoice | None]):
    """Picks a state (with its current count) and a grace period; Enter goes on, Esc cancels.

    Args:
        metrics: The queue's latest figures (for the counts shown next to each state).
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, metrics: QueueMetrics) -> None:
        super().__init__()
        self.metrics = metrics

    def compose(self) -> ComposeResult:
        options = [
            (f"{state.value} ({fmt_count(count_in_state(self.metrics, state))})", state)
            for state in CLEANABLE_STATES
        ]
        first = JobState.FAILED if self.metrics.failed else JobState.COMPLETED
        with Vertical(id="dialog"):
            yield Static(Text(f"Clean queue {self.metrics.queue_name}", style="bold"), id="dialog-title")
            yield Label("Jobs in state")
            yield Select(options, value=first, allow_blank=False, id="clean-state")
            yield Label("Older than (0 = all; 30s, 15m, 1h, 7d)")
            yield Input(value="0", id="clean-grace")
            yield Static(id="clean-error")
            with Horizontal(id="dialog-buttons"):
                yield Button("Next (Enter)", variant="primary", id="next")
                yield Button("Cancel (Esc)", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#clean-grace", Input).focus()

    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Input.Submitted)
    @on(Button.Pressed, "#next")
    def _next(self) -> None:
        state = self.query_one("#clean-state", Select).value
        try:
            grace = parse_grace(self.query_one("#clean-grace", Input).value)
        except ValueError as exc:
            self.query_one("#clean-error", Static).update(Text(str(exc), style="red"))
            return
        if not isinstance(state, JobState):
            self.query_one("#clean-error", Static).update(Text("choose a state", style="red"))
            return
        self.dismiss(CleanChoice(state, grace))

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)
