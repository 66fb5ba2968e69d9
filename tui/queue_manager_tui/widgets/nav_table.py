"""`NavTable`: a row-cursor `DataTable` with vi keys that updates in place, keeping the cursor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.console import RenderableType
from textual.binding import Binding, BindingType
from textual.widgets import DataTable

__all__ = ["NavTable", "TableRow"]

TableRow = tuple[str, Sequence[RenderableType]]
"""A row: its key (a queue name, job id…) and its cells in column order."""


class NavTable(DataTable[RenderableType]):
    """A table of keyed rows: j/k and arrows move, g/G jump, `sync_rows` updates without flicker."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        Binding("g", "scroll_top", "Top", show=False),
        Binding("G", "scroll_bottom", "Bottom", show=False),
    ]

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, id=id, classes=classes)

    @property
    def row_keys(self) -> list[str]:
        """The rows' keys, top to bottom."""
        return [str(row.key.value) for row in self.ordered_rows]

    @property
    def selected_key(self) -> str | None:
        """The key of the row under the cursor, or None when the table is empty."""
        keys = self.row_keys
        if not keys or not 0 <= self.cursor_row < len(keys):
            return None
        return keys[self.cursor_row]

    def sync_rows(self, rows: Sequence[TableRow]) -> None:
        """Shows these rows: changed cells are updated in place when the rows are the same ones in the
        same order; otherwise the table is rebuilt with the cursor kept on the same key (or position).

        Args:
            rows: Every row to show, in order.
        """
        keys = [key for key, _ in rows]
        if keys == self.row_keys:
            columns = [column.key for column in self.ordered_columns]
            for key, cells in rows:
                for column, cell in zip(columns, cells, strict=True):
                    if self.get_cell(key, column) != cell:
                        self.update_cell(key, column, cell, update_width=True)
            return
        selected, position = self.selected_key, self.cursor_row
        self.clear()
        for key, cells in rows:
            self.add_row(*cells, key=key)
        if selected in keys:
            self.move_cursor(row=keys.index(selected), animate=False)
        elif keys:
            self.move_cursor(row=min(max(position, 0), len(keys) - 1), animate=False)

    def select_key(self, key: str) -> bool:
        """Moves the cursor to the row with this key; False if there is none."""
        keys = self.row_keys
        if key not in keys:
            return False
        self.move_cursor(row=keys.index(key), animate=False)
        return True
