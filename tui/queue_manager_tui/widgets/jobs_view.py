"""The Jobs view: one queue's jobs by state, a page at a time, with search and a detail pane.

The search box filters the loaded page as the user types (by id or name, any part of them: instant, no
call). Enter asks the server: the job with that id if there is one (in whatever state), else the jobs of
that name in the whole state (exact, or a prefix when the text ends with "*", as `list_jobs(name=...)`
takes it), shown a page at a time like any page, in each state the user switches to, until the text
changes or the search closes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import DataTable, Input, Static, Tab, Tabs

from queue_manager import (
    InvalidArgumentError,
    Job,
    JobRef,
    JobState,
    NotFoundError,
    QueueManagerError,
    QueueMetrics,
)
from queue_manager_tui.controls import count_in_state
from queue_manager_tui.data import DataSource
from queue_manager_tui.format import fmt_count, safe
from queue_manager_tui.search import Search, find_page, parse_name
from queue_manager_tui.widgets.job_detail import JobDetail
from queue_manager_tui.widgets.job_rows import job_row, set_job_columns
from queue_manager_tui.widgets.nav_table import NavTable, TableRow

__all__ = ["STATES", "JobsView"]

STATES = (
    JobState.WAITING,
    JobState.ACTIVE,
    JobState.DELAYED,
    JobState.FAILED,
    JobState.COMPLETED,
    JobState.PAUSED,
    JobState.CANCELLED,
)
"""The state tabs, in the order h/l cycles them (the lifecycle's order, failures before successes)."""

_STATE = Binding.Group("State", compact=True)
_PAGE = Binding.Group("Page", compact=True)
PAGE_SIZE = 50
LOG_TAIL = 30


class JobsView(Vertical):
    """A queue's jobs in one state; reloads itself when the stream shows that queue changed.

    Args:
        source: Where jobs come from.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("h", "cycle_state(-1)", "Previous state", group=_STATE),
        Binding("l", "cycle_state(1)", "Next state", group=_STATE),
        Binding("left_square_bracket", "page(-1)", "Previous page", key_display="[", group=_PAGE),
        Binding("right_square_bracket", "page(1)", "Next page", key_display="]", group=_PAGE),
        Binding("w", "open_workflow", "Workflow", show=False),
    ]

    @dataclass
    class OpenWorkflow(Message):
        """The user asked for the workflow run of the selected job."""

        run_id: str

    def __init__(self, source: DataSource, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.source = source
        self.queue: str | None = None
        self.state = JobState.WAITING
        self._tokens = [""]
        self._next_token = ""
        self._jobs: list[Job] = []
        self._found: Job | None = None
        self._name: str | None = None  # the name searched on the server (Enter), None while browsing
        self._cut_short = False  # the search page stopped at its bound of calls, not full
        self._detail: Job | None = None
        self._signature: tuple[int, ...] | None = None
        self._gone = False  # the shown queue went away (obliterated) while shown

    def compose(self) -> ComposeResult:
        with Horizontal(id="jobs-bar"):
            yield Static(id="jobs-queue")
            yield Tabs(*(Tab(s.value, id=f"state-{s.value}") for s in STATES), id="job-states")
            yield Static(id="jobs-page")
        search = Input(
            placeholder="filter this page; Enter: a job id, or a name in the whole state (send-* a prefix); "
            "Esc closes",
            id="job-search",
        )
        search.display = False
        yield search
        with Horizontal(id="jobs-body"):
            yield NavTable(id="jobs-table")
            yield JobDetail(id="job-detail")

    def on_mount(self) -> None:
        self._set_columns()
        self._show_header()

    # ----------------------------------------------------------------- what the app asks

    def _widgets_gone(self) -> bool:
        """Whether the app has begun to close and removed this view's widgets: an answer that comes in then
        is moot (showing it raised NoMatches)."""
        return not self.query("#jobs-table")

    @property
    def table(self) -> NavTable:
        return self.query_one("#jobs-table", NavTable)

    @property
    def search_open(self) -> bool:
        return bool(self.query_one("#job-search", Input).display)

    @property
    def search(self) -> Search | None:
        """The server search shown (a name submitted with Enter), None while browsing the state's pages."""
        if self._name is None or self.queue is None or self._gone:
            return None
        return Search(self.queue, self.state, self._name)

    @property
    def loaded_job(self) -> Job | None:
        """The job the detail pane shows (None while loading or when there is none)."""
        return self._detail

    def selected_job(self) -> Job | None:
        """The job under the cursor (as last loaded in full, when the detail pane has it)."""
        key = self.table.selected_key
        if key is None:
            return None
        if self._detail is not None and self._detail.id == key:
            return self._detail
        return next((job for job in self._shown_jobs() if job.id == key), None)

    def open_queue(self, queue: str, state: JobState | None = None) -> None:
        """Shows a queue's jobs (first page), in ``state`` or the state shown before; another queue's
        search closes (its text filtered the other queue's page)."""
        if queue == self.queue and (state is None or state == self.state) and not self._gone:
            return
        if queue != self.queue:
            search = self.query_one("#job-search", Input)
            search.value = ""
            search.display = False
            self._name = None
        self.queue = queue
        self._signature = None
        if state is not None:
            self.state = state
        self.query_one("#job-states", Tabs).active = f"state-{self.state.value}"
        self._restart()

    def open_job(self, ref: JobRef) -> None:
        """Shows one job, looked up by id (a chain link, a workflow step's job)."""
        if ref.queue_name != self.queue or self._gone:
            self.queue = ref.queue_name
            self._signature = None
            self._restart()
        search = self.query_one("#job-search", Input)
        search.display = True
        search.value = ref.job_id
        self._name = None
        self._look_up(ref.queue_name, ref.job_id)

    def open_search(self) -> None:
        """Shows the search box and focuses it."""
        search = self.query_one("#job-search", Input)
        search.display = True
        search.focus()

    def close_search(self) -> None:
        """Hides the search box and shows the whole page again (the first page, after a server search)."""
        search = self.query_one("#job-search", Input)
        search.value = ""
        search.display = False
        self._found = None
        if self._name is not None:
            self._browse()
        else:
            self._show_rows()
        self.focus_table()

    def focus_table(self) -> None:
        self.table.focus()

    def reload(self) -> None:
        """Loads the current page again (after a control changed something)."""
        if self.queue is not None and not self._gone:
            self._load_page()

    def queue_gone(self) -> None:
        """The shown queue went away (obliterated): its jobs are no longer shown, and the page says so
        until the queue is registered again."""
        if self.queue is None or self._gone:
            return
        self._gone = True
        self._tokens, self._next_token, self._jobs, self._found, self._detail = [""], "", [], None, None
        self._signature = None
        self.table.clear()
        self._show_header()
        self.query_one(JobDetail).show_note(self._empty_note())

    def on_metrics(self, metrics: QueueMetrics | None, *, live: bool) -> None:
        """Takes the shown queue's latest metrics: tab counts, and a reload when its jobs changed.

        Args:
            metrics: The queue's figures from the latest snapshot (None if the queue is gone).
            live: The view is on screen (reload only then: no calls for a hidden view).
        """
        tabs = self.query_one("#job-states", Tabs)
        for state in STATES:
            count = count_in_state(metrics, state) if metrics is not None else 0
            tab = tabs.query_one(f"#state-{state.value}", Tab)
            label = f"{state.value} {fmt_count(count)}"
            if tab.label.plain != label:
                tab.label = label
        if metrics is None or self.queue != metrics.queue_name:
            return
        if self._gone:  # registered again: show it afresh
            self._gone = False
            self._signature = None
            self._restart()
            return
        signature = (
            count_in_state(metrics, self.state),
            metrics.added_total,
            metrics.completed_total,
            metrics.failed_total,
            metrics.active,
            metrics.delayed,
        )
        changed = self._signature is not None and signature != self._signature
        self._signature = signature
        if changed and live and not self.search_open:
            self._load_page()

    # ----------------------------------------------------------------- keys

    def action_cycle_state(self, step: int) -> None:
        tabs = self.query_one("#job-states", Tabs)
        if step > 0:
            tabs.action_next_tab()
        else:
            tabs.action_previous_tab()

    def action_page(self, step: int) -> None:
        if self.queue is None or (self.search_open and self._name is None) or self._gone:
            return
        if step > 0 and self._next_token:
            self._tokens.append(self._next_token)
        elif step < 0 and len(self._tokens) > 1:
            self._tokens.pop()
        else:
            return
        self._load_page()

    def action_open_workflow(self) -> None:
        job = self.selected_job()
        if job is None or job.workflow is None:
            self.notify("The selected job is not a workflow step.", severity="warning")
            return
        self.post_message(self.OpenWorkflow(job.workflow.run_id))

    # ----------------------------------------------------------------- events

    def on_tabs_tab_activated(self, event: Tabs.TabActivated) -> None:
        event.stop()
        tab_id = event.tab.id or ""
        state = JobState(tab_id.removeprefix("state-"))
        if state != self.state:
            self.state = state
            self._signature = None
            self._restart()

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        text = event.value.strip()
        if self._found is not None and text != self._found.id:
            self._found = None  # the user typed on: back to filtering the page
        if self._name is not None and text != self._name:
            self._browse()  # the search's text changed: back to the state's pages, filtered as typed
            return
        self._show_rows()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        query = event.value.strip()
        if not query or self.queue is None:
            return
        if self._name is None and any(job.id == query for job in self._jobs):
            self.table.select_key(query)
            self.focus_table()
        else:
            self._submit(self.queue, query)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        if self.queue is not None and event.row_key.value is not None:
            self._load_detail(self.queue, str(event.row_key.value))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.query_one(JobDetail).focus()

    # ----------------------------------------------------------------- loading

    def _browse(self) -> None:
        """Leaves the server search: the state's first page."""
        self._name = None
        self._tokens, self._next_token, self._jobs, self._cut_short = [""], "", [], False
        self._show_header()
        self._show_rows()
        self._load_page()

    def _restart(self) -> None:
        self._gone = False
        self._tokens = [""]
        self._next_token = ""
        self._jobs = []
        self._cut_short = False
        self._found = None
        self._detail = None
        self._set_columns()
        self._show_header()
        self.table.clear()
        self.query_one(JobDetail).show_note("Loading…")
        self._load_page()

    @work(exclusive=True, group="jobs-page")
    async def _load_page(self) -> None:
        queue, state, token, name = self.queue, self.state, self._tokens[-1], self._name
        if queue is None:
            return
        cut_short = False
        try:
            if name is None:
                jobs, next_token = await self.source.list_jobs(queue, state, PAGE_SIZE, token)
            else:
                page = await find_page(self.source, Search(queue, state, name), PAGE_SIZE, token)
                jobs, next_token, cut_short = page.jobs, page.next_token, page.cut_short
        except QueueManagerError as exc:
            doing = "list" if name is None else "search"
            self.query_one(JobDetail).show_note(f"Could not {doing} the {state.value} jobs of {queue}: {exc}")
            return
        now = (self.queue, self.state, self._tokens[-1], self._name)
        if self._widgets_gone() or (queue, state, token, name) != now:
            return
        self._jobs, self._next_token, self._cut_short = jobs, next_token, cut_short
        self._show_header()
        self._show_rows()
        key = self.table.selected_key
        if key is not None:
            self._load_detail(queue, key)  # again if _show_rows did: the job may have changed too

    @work(exclusive=True, group="job-detail")
    async def _load_detail(self, queue: str, job_id: str) -> None:
        detail = self.query_one(JobDetail)
        try:
            job, logs = await asyncio.gather(
                self.source.get_job(queue, job_id), self.source.get_log_tail(queue, job_id, LOG_TAIL)
            )
        except NotFoundError:
            self._detail = None
            detail.show_note(f"Job {job_id} of {queue} no longer exists.")
            return
        except QueueManagerError as exc:
            detail.show_note(f"Could not load job {job_id}: {exc}")
            return
        if self._widgets_gone() or self.table.selected_key != job_id:
            return
        self._detail = job
        detail.show_job(job, logs)

    @work(exclusive=True, group="job-lookup")
    async def _submit(self, queue: str, text: str) -> None:
        """Enter in the search box: the job with that id if there is one, else the jobs of that name (a
        text ending with "*" is a prefix, never an id)."""
        if not text.endswith("*"):
            try:
                job = await self.source.get_job(queue, text)
            except (NotFoundError, InvalidArgumentError):
                job = None  # no such id (or none the server could hold): a name, then
            except QueueManagerError as exc:
                self.notify(f"Could not look up job {safe(text)}: {exc}", severity="error", markup=False)
                return
            if job is not None:
                if not self._widgets_gone() and queue == self.queue:
                    self._show_found(queue, job)
                return
        try:
            name = parse_name(text)
        except ValueError as exc:
            lead = "" if text.endswith("*") else f"No job {safe(text)} in {queue}; as a name, "
            self.notify(f"{lead}{exc}", severity="warning", markup=False)
            return
        if self._widgets_gone() or queue != self.queue:
            return
        self._found = None
        self._name = name
        self._tokens, self._next_token, self._jobs, self._cut_short = [""], "", [], False
        self._show_header()
        self.table.clear()
        self.query_one(JobDetail).show_note("Searching…")
        self._load_page()
        self.focus_table()

    @work(exclusive=True, group="job-lookup")
    async def _look_up(self, queue: str, job_id: str) -> None:
        try:
            job = await self.source.get_job(queue, job_id)
        except NotFoundError:
            self.notify(f"No job {safe(job_id)} in {queue}.", severity="warning", markup=False)
            return
        except QueueManagerError as exc:
            self.notify(f"Could not look up job {safe(job_id)}: {exc}", severity="error", markup=False)
            return
        self._show_found(queue, job)

    def _show_found(self, queue: str, job: Job) -> None:
        """Shows the one job an id lookup found (in place of a search's matches)."""
        self._found, self._name = job, None
        self._show_rows()
        self.table.select_key(job.id)
        self._load_detail(queue, job.id)
        self.focus_table()

    # ----------------------------------------------------------------- drawing

    def _set_columns(self) -> None:
        set_job_columns(self.table, self.state)

    def _shown_jobs(self) -> list[Job]:
        if self._found is not None:
            return [self._found]
        if self._name is not None:
            return self._jobs  # the server matched them
        query = self.query_one("#job-search", Input).value.strip().lower()
        if not query:
            return self._jobs
        return [job for job in self._jobs if query in job.id.lower() or query in job.name.lower()]

    def _show_rows(self) -> None:
        """Shows the page's jobs (those the search matches), and in the detail pane the job under the
        cursor: a note when there is none (the pane kept showing a job the filter had hidden)."""
        rows: list[TableRow] = [(job.id, job_row(job)) for job in self._shown_jobs()]
        self.table.sync_rows(rows)
        key = self.table.selected_key
        if key is None:
            self._detail = None
            self.query_one(JobDetail).show_note(self._empty_note())
        elif self.queue is not None and (self._detail is None or self._detail.id != key):
            self._load_detail(self.queue, key)

    def _empty_note(self) -> str:
        if self._gone:
            return f"Queue {self.queue} no longer exists: it was obliterated. Press q for the queues."
        search = self.search
        if search is not None:
            none = f"No {self.state.value} job of {self.queue} {search.label}"
            if self._next_token:
                return f"{none} in the part of the state read so far: ] reads on."
            return f"{none}."
        query = self.query_one("#job-search", Input).value.strip()
        if query and self._jobs:
            return (
                f"No job on this page matches {query!r}. Enter searches the whole state (an id, or a name)."
            )
        return f"No {self.state.value} jobs in {self.queue}."

    def _show_header(self) -> None:
        queue = self.query_one("#jobs-queue", Static)
        page = self.query_one("#jobs-page", Static)
        if self.queue is None:
            queue.update(Text("No queue: press Enter on one in Queues (1)", style="dim"))
            page.update("")
            return
        if self._gone:
            queue.update(Text(f"{self.queue} (gone)", style="bold red"))
            page.update("")
            return
        queue.update(Text(self.queue, style="bold"))
        more = ("  ] read on" if self._cut_short else "  ] next") if self._next_token else ""
        back = "[ prev  " if len(self._tokens) > 1 else ""
        what = "matches, page" if self._name is not None else "page"
        page.update(Text(f"{back}{what} {len(self._tokens)}{more}", style="dim"))
