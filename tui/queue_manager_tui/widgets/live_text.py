"""`LiveText`: a `Static` fed every snapshot that redraws only when its text changed."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

__all__ = ["LiveText"]


class LiveText(Static):
    """Static text updated from the metrics stream; an unchanged text costs no layout or repaint."""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._shown: Text | None = None

    def show_text(self, text: Text) -> None:
        """Shows ``text`` unless it is what is shown already (same characters and styles)."""
        if text != self._shown:
            self._shown = text
            self.update(text)
