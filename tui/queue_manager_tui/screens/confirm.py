"""`ConfirmScreen`: asks before a control changes anything, saying what will be affected."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from queue_manager_tui.controls import Plan

__all__ = ["ConfirmScreen"]


class ConfirmScreen(ModalScreen[bool]):
    """Yes (y) or no (n, Esc) to a plan; dismissed with True only on yes. "No" has the focus first.

    Args:
        plan: The control and what it affects.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n", "answer(False)", "No"),
        Binding("escape", "answer(False)", "Cancel", show=False),
        Binding("q", "answer(False)", "Cancel", show=False),
        Binding("left,h", "app.focus_previous", "Previous", show=False),
        Binding("right,l", "app.focus_next", "Next", show=False),
    ]

    def __init__(self, plan: Plan) -> None:
        super().__init__()
        self.plan = plan

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="-destructive" if self.plan.destructive else ""):
            yield Static(Text(self.plan.title, style="bold"), id="dialog-title")
            # The prompt holds user-controlled names: a Text, so it is never read as markup.
            yield Static(Text(self.plan.prompt), id="dialog-prompt")
            if self.plan.detail:
                yield Static(Text(self.plan.detail, style="dim"), id="dialog-detail")
            with Horizontal(id="dialog-buttons"):
                yield Button("Yes (y)", variant="error" if self.plan.destructive else "primary", id="yes")
                yield Button("No (n)", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")
