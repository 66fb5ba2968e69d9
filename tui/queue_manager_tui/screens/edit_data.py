"""`EditDataScreen`: a dead-letter copy's original data in an editor, checked as JSON before it is sent."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static, TextArea

from queue_manager_tui.dead_letters import DeadCopy, parse_edited

__all__ = ["EditDataScreen", "Edited"]


class Edited:
    """The data the user saved (any JSON value, None included)."""

    __slots__ = ("data",)

    def __init__(self, data: Any) -> None:
        self.data = data


class EditDataScreen(ModalScreen[Edited | None]):
    """Edits JSON; ctrl+s checks it and goes on to the confirmation (bad JSON says where, and stays), Esc
    cancels. Dismissed with the parsed data, or None.

    Args:
        copy: The copy whose original data is edited.
        text: The data as JSON, to start from.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "save", "Requeue with this data", priority=True),
        Binding("escape", "cancel", "Cancel"),
    ]

    def __init__(self, copy: DeadCopy, text: str) -> None:
        super().__init__()
        self.copy = copy
        self.text = text

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="-editor"):
            yield Static(Text("Edit and requeue", style="bold"), id="dialog-title")
            # The label holds user-controlled names: a Text, never markup.
            yield Static(Text(f"The original data of {self.copy.label}:"), id="dialog-prompt")
            yield TextArea(self.text, language=None, id="edit-data", soft_wrap=True, show_line_numbers=True)
            yield Static(id="edit-error")
            with Horizontal(id="dialog-buttons"):
                yield Button("Requeue… (ctrl+s)", variant="primary", id="save")
                yield Button("Cancel (Esc)", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#edit-data", TextArea).focus()

    @property
    def error(self) -> str:
        """The message shown under the editor ("" while none)."""
        return str(self.query_one("#edit-error", Static).content)

    def action_save(self) -> None:
        try:
            data = parse_edited(self.query_one("#edit-data", TextArea).text)
        except ValueError as exc:
            self.query_one("#edit-error", Static).update(Text(str(exc), style="red"))
            return
        self.dismiss(Edited(data))

    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#save")
    def _save(self) -> None:
        self.action_save()

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)
