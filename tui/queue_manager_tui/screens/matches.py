"""`MatchesScreen`: what to do to every job a search matches (retry, cancel or remove), asked before the
count and the confirmation."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from queue_manager_tui.search import BulkAction, Search

__all__ = ["MatchesScreen"]

# The key of each action: the same letters as the one-job controls.
KEYS = {BulkAction.RETRY: "r", BulkAction.CANCEL: "c", BulkAction.REMOVE: "d"}


class MatchesScreen(ModalScreen[BulkAction | None]):
    """Picks one of the actions that apply to the search's state; Esc (or n, q) goes back. "Back" has the
    focus first, and the action chosen still asks for confirmation with the count of matches.

    Args:
        search: The matches (a queue, a state and a name).
        actions: The actions offered (those that apply to the state).
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "choose('retry')", "Retry all", show=False),
        Binding("c", "choose('cancel')", "Cancel all", show=False),
        Binding("d", "choose('remove')", "Remove all", show=False),
        Binding("escape,n,q", "choose('')", "Back"),
        Binding("left,h", "app.focus_previous", "Previous", show=False),
        Binding("right,l", "app.focus_next", "Next", show=False),
    ]

    def __init__(self, search: Search, actions: tuple[BulkAction, ...]) -> None:
        super().__init__()
        self.search = search
        self.actions = actions

    def compose(self) -> ComposeResult:
        search = self.search
        with Vertical(id="dialog"):
            yield Static(Text("Act on the matches", style="bold"), id="dialog-title")
            # The name is user text: a Text, never markup.
            yield Static(
                Text(f"Every {search.state.value} job of {search.queue} {search.label}, in the whole state."),
                id="dialog-prompt",
            )
            yield Static(Text("The server counts them before you confirm.", style="dim"), id="dialog-detail")
            with Horizontal(id="dialog-buttons"):
                for action in self.actions:
                    label = f"{action.value.capitalize()} all ({KEYS[action]})"
                    # Retrying loses nothing; cancelling and removing do (red, as their confirmations are).
                    if action is BulkAction.RETRY:
                        yield Button(label, variant="primary", id=f"matches-{action.value}")
                    else:
                        yield Button(label, variant="error", id=f"matches-{action.value}")
                yield Button("Back (Esc)", id="matches-back")

    def on_mount(self) -> None:
        self.query_one("#matches-back", Button).focus()

    def action_choose(self, value: str) -> None:
        chosen = next((a for a in self.actions if a.value == value), None)
        if value and chosen is None:
            return  # the key of an action that does not apply to this state
        self.dismiss(chosen)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.action_choose((event.button.id or "").removeprefix("matches-").replace("back", ""))
