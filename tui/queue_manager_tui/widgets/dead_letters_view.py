"""The Dead letters view: every dead-letter queue's waiting copies, a filter by original queue, and a detail
pane with the original data, the error and (while the original job exists) its stack trace.

The copies load when the view is shown, after a control, and when the stream shows a dead-letter queue's
waiting count changed while the view is on screen. Each dead-letter queue is read up to `MAX_COPIES` copies;
the header says when there are more (requeue all still takes every one).
"""

from __future__ import annotations

import json
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, Input, Static

from queue_manager import EncodedPayload, Job, NotFoundError, QueueManagerError, QueueMetrics
from queue_manager_tui.data import DataSource
from queue_manager_tui.dead_letters import DeadCopy, dead_letter_queues
from queue_manager_tui.format import fmt_time, safe
from queue_manager_tui.widgets.cells import literal, number
from queue_manager_tui.widgets.nav_table import NavTable

__all__ = ["MAX_COPIES", "DeadLettersView"]

# Copies read per dead-letter queue (in pages of PAGE): enough to browse; requeue all goes through them all.
MAX_COPIES = 500
PAGE = 250


class DeadLettersView(Vertical):
    """The copies of every dead-letter queue, filtered by original queue.

    Args:
        source: Where copies come from.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f", "filter", "Filter by queue"),
    ]

    def __init__(self, source: DataSource, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.source = source
        self.queues: list[str] = []  # the dead-letter queues
        self.copies: list[DeadCopy] = []
        self.more: list[str] = []  # dead-letter queues with more copies than read
        self.original: str | None = None  # the filter: only copies of this queue's jobs
        self._signature: tuple[int, ...] | None = None
        self._detail_key: str | None = None

    def compose(self) -> ComposeResult:
        with Horizontal(id="dlq-bar"):
            yield Static(id="dlq-title")
        hint = "original queue (Enter applies; empty: every queue; Esc closes)"
        box = Input(placeholder=hint, id="dlq-filter")
        box.display = False
        yield box
        with Horizontal(id="dlq-body"):
            yield NavTable(id="dlq-table")
            with VerticalScroll(id="dlq-detail", can_focus=True):
                yield Static(Text("Loading…", style="dim"), id="dlq-detail-body")

    def on_mount(self) -> None:
        table = self.table
        for key, label, width in (
            ("dlq", "Dead-letter queue", 18),
            ("queue", "Queue", 14),
            ("name", "Name", 16),
            ("tries", "Tries", None),
            ("dead", "Dead at", None),
            ("reason", "Failed reason", 40),
        ):
            table.add_column(label, key=key, width=width)
        self._show_title()

    # ----------------------------------------------------------------- what the app asks

    @property
    def table(self) -> NavTable:
        return self.query_one("#dlq-table", NavTable)

    @property
    def filter_open(self) -> bool:
        return bool(self.query_one("#dlq-filter", Input).display)

    def shown(self) -> list[DeadCopy]:
        """The copies on screen (those of the filter's queue)."""
        if self.original is None:
            return self.copies
        return [c for c in self.copies if c.letter.original_queue == self.original]

    def selected(self) -> DeadCopy | None:
        """The copy under the cursor."""
        key = self.table.selected_key
        return next((c for c in self.shown() if c.key == key), None)

    def shown_queues(self) -> list[str]:
        """The dead-letter queues whose copies are shown (with the filter: those holding a shown copy)."""
        if self.original is None:
            return list(self.queues)
        return sorted({c.dead_letter_queue for c in self.shown()})

    def open_filter(self) -> None:
        box = self.query_one("#dlq-filter", Input)
        box.value = self.original or ""
        box.display = True
        box.focus()

    def close_filter(self) -> None:
        self.query_one("#dlq-filter", Input).display = False
        self.table.focus()

    def set_filter(self, original: str | None) -> None:
        """Shows only the copies of jobs of ``original`` (None: of every queue)."""
        self.original = original or None
        self._show_rows()

    def on_metrics(self, metrics: dict[str, QueueMetrics], *, live: bool) -> None:
        """Reloads when a dead-letter queue's waiting count changed, while on screen."""
        signature = tuple(m.waiting + m.active for name, m in sorted(metrics.items()) if name in self.queues)
        changed = self._signature is not None and signature != self._signature
        self._signature = signature
        if changed and live:
            self.refresh_copies()

    # ----------------------------------------------------------------- keys and events

    def action_filter(self) -> None:
        self.open_filter()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.set_filter(event.value.strip() or None)
        self.close_filter()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self._show_detail()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.query_one("#dlq-detail").focus()

    # ----------------------------------------------------------------- loading

    @work(exclusive=True, group="dead-letters")
    async def refresh_copies(self) -> None:
        """Reads the dead-letter queues and their waiting copies again."""
        try:
            self.queues = dead_letter_queues(await self.source.list_queues())
            copies: list[DeadCopy] = []
            more: list[str] = []
            for dlq in self.queues:
                token, read = "", 0
                while read < MAX_COPIES:
                    page, token = await self.source.list_dead_letters(dlq, PAGE, token)
                    copies += [DeadCopy(dlq, letter) for letter in page]
                    read += PAGE
                    if not token:
                        break
                if token:
                    more.append(dlq)
        except QueueManagerError as exc:
            self._note(f"Could not read the dead-letter queues: {exc}")
            return
        if not self.query("#dlq-table"):
            return  # the app is closing
        self.copies, self.more = copies, more
        self._show_rows()

    @work(exclusive=True, group="dead-letter-original")
    async def _load_original(self, copy: DeadCopy) -> None:
        """The original job, for its stack trace (None when it is gone)."""
        letter = copy.letter
        try:
            original: Job | None = await self.source.get_job(letter.original_queue, letter.original_job_id)
        except NotFoundError:
            original = None
        except QueueManagerError as exc:
            self._note(f"Could not read job {safe(letter.original_job_id)}: {exc}")
            return
        if self.query("#dlq-table") and self.table.selected_key == copy.key:
            self._body().update(copy_text(copy, original, looked_up=True))

    # ----------------------------------------------------------------- drawing

    def _show_rows(self) -> None:
        rows = [(c.key, _row(c)) for c in self.shown()]
        self.table.sync_rows(rows)
        self._show_title()
        self._show_detail()

    def _show_title(self) -> None:
        shown = self.shown()
        where = ", ".join(self.queues) if self.queues else "no dead-letter queue"
        text = Text(f"{len(shown)} {'copy' if len(shown) == 1 else 'copies'} in {where}", style="bold")
        if self.original:
            text.append(f"  of jobs of {self.original}", style="bold cyan")
        if self.more:
            text.append(f"  (first {MAX_COPIES} of {', '.join(self.more)})", style="yellow")
        keys = "  f filter  r requeue  R requeue all  e edit and requeue  d delete"
        text.append(keys, style="dim")
        self.query_one("#dlq-title", Static).update(text)

    def _show_detail(self) -> None:
        copy = self.selected()
        if copy is None:
            self._detail_key = None
            of = f" of jobs of {self.original}" if self.original else ""
            self._note(f"No dead-letter copy{of}.")
            return
        if copy.key == self._detail_key:
            return
        self._detail_key = copy.key
        self._body().update(copy_text(copy, None, looked_up=False))
        self._load_original(copy)

    def _note(self, note: str) -> None:
        self._detail_key = None
        self._body().update(Text(safe(note), style="dim"))

    def _body(self) -> Static:
        return self.query_one("#dlq-detail-body", Static)


def _row(copy: DeadCopy) -> list[Text]:
    letter = copy.letter
    reason = letter.failure_reason.splitlines()[0] if letter.failure_reason else ""
    return [
        literal(copy.dead_letter_queue),
        literal(letter.original_queue),
        literal(letter.original_name),
        number(str(letter.attempts_made)),
        Text(fmt_time(letter.dead_at, short=True)),
        literal(reason, "red"),
    ]


def copy_text(copy: DeadCopy, original: Job | None, *, looked_up: bool) -> Text:
    """The detail pane's text: the copy, its original data, the error, and the original's stack trace."""
    letter = copy.letter
    out = Text()
    out.append(safe(letter.original_name), style="bold")
    out.append(f"  {safe(letter.original_queue)}/{safe(letter.original_job_id)}\n", style="dim")
    out.append(f"copy {safe(letter.id)} in {copy.dead_letter_queue}  attempts {letter.attempts_made}\n")
    out.append(f"dead at   {fmt_time(letter.dead_at)} UTC\n", style="dim")
    if isinstance(letter.original_data, bytes):
        data = f"{len(letter.original_data):,} bytes of {letter.original_content_type}"
    elif isinstance(letter.original_data, EncodedPayload):
        # Encoded by a client's codecs and no keys here: what it is (size, codecs, key id), not JSON of it.
        data = str(letter.original_data)
    else:
        data = json.dumps(letter.original_data, indent=2, ensure_ascii=False)
    _section(out, "original data", data)
    _section(out, "error", letter.failure_reason or "(none recorded)", "red")
    if not looked_up:
        _section(out, "stack", "reading the original job…", "dim")
    elif original is None:
        gone = "the original job is gone (retention or a removal): requeue adds it anew"
        _section(out, "stack", gone, "dim")
    else:
        state = original.state.value if original.state is not None else "unknown"
        _section(out, f"original job ({state})", original.stacktrace or "no stack trace recorded", "red")
    out.rstrip()
    return out


def _section(out: Text, label: str, body: str, style: str = "") -> None:
    out.append(f"\n{label}\n", style="bold underline")
    out.append(safe(body, multiline=True), style=style)
    out.append("\n")
