"""The Workers view: every connected worker with its load, CPU and memory, live from the stream; a quiet or
stopping worker (ControlWorker: p quiets or resumes the selected one, s stops it) says so beside its id."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical

from queue_manager import WorkerInfo, WorkerState
from queue_manager_tui.format import NONE, fmt_bytes, fmt_duration, fmt_time
from queue_manager_tui.widgets.cells import literal, number
from queue_manager_tui.widgets.live_text import LiveText
from queue_manager_tui.widgets.nav_table import NavTable, TableRow

__all__ = ["WorkersView"]

COLUMNS = (
    ("worker", "Worker"),
    ("host", "Host"),
    ("language", "Client"),
    ("queues", "Queues"),
    ("busy", "Busy"),
    ("cpu", "CPU"),
    ("memory", "Memory"),
    ("uptime", "Up"),
    ("heartbeat", "Last report"),
    ("server", "Server"),
)
_STATE_STYLE = {WorkerState.QUIET: "yellow", WorkerState.STOPPING: "red"}
# A worker silent for this long is shown in yellow: heartbeats come every few seconds.
STALE_AFTER_SECONDS = 15.0


class WorkersView(Vertical):
    """A row per connected worker; ages are measured against the snapshot's time, not this machine's."""

    # Here p quiets or resumes the selected worker (the app's action): the footer says so, not "Pause".
    BINDINGS: ClassVar[list[BindingType]] = [Binding("p", "app.pause_resume", "Quiet/resume")]

    _shown: dict[str, WorkerInfo] = {}  # noqa: RUF012 - replaced (never mutated) by each show

    def compose(self) -> ComposeResult:
        yield LiveText(id="workers-summary")
        table = NavTable(id="workers-table")
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        yield table

    @property
    def table(self) -> NavTable:
        return self.query_one("#workers-table", NavTable)

    def selected_worker(self) -> WorkerInfo | None:
        """The worker under the cursor, as last shown."""
        key = self.table.selected_key
        return self._shown.get(key) if key is not None else None

    def show(self, workers: list[WorkerInfo], now: datetime | None) -> None:
        """Redraws from the latest workers (in place, cursor kept)."""
        self._shown = {w.worker_id: w for w in workers}
        rows: list[TableRow] = [(w.worker_id, _row(w, now)) for w in workers]
        self.table.sync_rows(rows)
        slots = sum(w.concurrency for w in workers)
        busy = sum(w.in_flight for w in workers)
        summary = Text(f"{len(workers)} workers connected, {busy} of {slots} slots busy")
        if not workers:
            summary = Text("No workers connected. Start one with `qm worker module:qm`.", style="dim")
        self.query_one("#workers-summary", LiveText).show_text(summary)


def _row(worker: WorkerInfo, now: datetime | None) -> list[Text]:
    silent = (now - worker.last_heartbeat_time) if now and worker.last_heartbeat_time else None
    stale = silent is not None and silent.total_seconds() >= STALE_AFTER_SECONDS
    if silent is None:
        heartbeat = fmt_time(worker.last_heartbeat_time)
    else:
        heartbeat = "just now" if silent.total_seconds() < 1 else f"{fmt_duration(silent)} ago"
    full = worker.in_flight >= worker.concurrency > 0
    version = f"{worker.language} {worker.version}".strip()
    name = literal(worker.worker_id, "bold")
    if worker.state is not WorkerState.ACTIVE:  # quieted or stopped by an operator (or shutting down)
        name.append(f" ({worker.state.value})", style=_STATE_STYLE[worker.state])
    return [
        name,
        literal(worker.host),
        literal(version or NONE),
        literal(", ".join(worker.queues)),
        number(f"{worker.in_flight}/{worker.concurrency}", "yellow" if full else ""),
        number(f"{worker.cpu_percent:.0f}%" if worker.cpu_percent else NONE),
        number(fmt_bytes(worker.memory_bytes)),
        number(fmt_duration(worker.uptime)),
        number(heartbeat, "yellow" if stale else ""),
        literal(worker.server_id, "dim"),
    ]
