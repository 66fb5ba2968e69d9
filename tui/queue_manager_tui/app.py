"""`DashboardApp`: the tabs, the keys, the metrics stream consumer and the controls.

The app follows the server's metrics stream in one worker (`_follow_metrics`): each snapshot goes into the
`DashboardState` and every view redraws from it in place; there is no polling loop. When the stream
breaks the status line turns red with the reason and the worker retries with a growing delay (see
`state.Backoff`) until the server answers again; nothing else stops. Controls go through `controls` plans
and a `ConfirmScreen`; with ``read_only`` they are neither bound, shown nor offered in the palette.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Footer, Header, TabbedContent, TabPane

from queue_manager import Job, JobRef, MetricsSnapshot, QueueManagerError, QueueMetrics, Schedule, WorkerInfo
from queue_manager_tui.commands import DashboardCommands, PaletteCommand, palette_commands
from queue_manager_tui.controls import (
    NotApplicable,
    Plan,
    cancel_plan,
    clean_plan,
    delete_schedule_plan,
    matches_plan,
    pause_plan,
    promote_plan,
    quiet_worker_plan,
    remove_plan,
    retry_all_plan,
    retry_plan,
    stop_worker_plan,
)
from queue_manager_tui.data import DataSource, EditNotSent
from queue_manager_tui.dead_letters import (
    DeadCopy,
    delete_copy_plan,
    edit_plan,
    editable_text,
    redrive_all_plan,
    redrive_plan,
)
from queue_manager_tui.screens.clean import CleanChoice, CleanScreen
from queue_manager_tui.screens.confirm import ConfirmScreen
from queue_manager_tui.screens.edit_data import EditDataScreen, Edited
from queue_manager_tui.screens.help import HelpScreen
from queue_manager_tui.screens.matches import MatchesScreen
from queue_manager_tui.search import BulkAction, Search, count_matches
from queue_manager_tui.state import Backoff, Connection, DashboardState, Link
from queue_manager_tui.widgets.dead_letters_view import DeadLettersView
from queue_manager_tui.widgets.job_detail import JobDetail
from queue_manager_tui.widgets.jobs_view import JobsView
from queue_manager_tui.widgets.nav_table import NavTable
from queue_manager_tui.widgets.queues_view import QueuesView
from queue_manager_tui.widgets.schedules_view import SchedulesView
from queue_manager_tui.widgets.status_line import StatusLine
from queue_manager_tui.widgets.workers_view import WorkersView
from queue_manager_tui.widgets.workflows_view import RunTree, WorkflowsView

__all__ = ["CONTROL_ACTIONS", "DashboardApp"]

TABS = ("queues", "jobs", "workers", "workflows", "schedules", "deadletters")
QUEUE_ACTIONS = frozenset({"pause_resume", "clean", "retry_all"})
JOB_ACTIONS = frozenset({"retry", "promote", "cancel_job", "remove", "act_on_matches"})
# In Dead letters: r requeues the copy, R every copy shown, d deletes the copy, e edits and requeues.
DEAD_LETTER_ACTIONS = frozenset({"retry", "retry_all", "remove", "edit_requeue"})
# In the Workers view, p quiets or resumes the selected worker (at once) and s stops it (asks first).
WORKER_ACTIONS = frozenset({"stop_worker"})
CONTROL_ACTIONS = QUEUE_ACTIONS | JOB_ACTIONS | DEAD_LETTER_ACTIONS | WORKER_ACTIONS
"""Actions that change something on the server: absent in read-only mode."""
# Seconds between reads of the queues' settings: a rate limit or priority bound changed elsewhere shows within
# this, for one ListQueues call per refresh.
SETTINGS_REFRESH = 10.0


class DashboardApp(App[None]):
    """The Queue Manager dashboard.

    Args:
        source: Where data comes from (`data.connect(address)` for a server; a fake in tests).
        read_only: Hide and disable every control.
        interval: Seconds between metrics snapshots (the server accepts 0.1 to 60).
        backoff: Delays between reconnect attempts; default half a second doubling up to ten.
    """

    # Absolute, so that subclasses defined elsewhere (tests, embedding apps) find it too.
    CSS_PATH = Path(__file__).with_name("dashboard.tcss")
    TITLE = "Queue Manager"
    COMMANDS = App.COMMANDS | {DashboardCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("slash", "search", "Search", key_display="/"),
        Binding("q", "go_back", "Back"),
        Binding("escape", "go_back", "Back", show=False),
        Binding("1", "show_tab('queues')", "Queues", show=False),
        Binding("2", "show_tab('jobs')", "Jobs", show=False),
        Binding("3", "show_tab('workers')", "Workers", show=False),
        Binding("4", "show_tab('workflows')", "Workflows", show=False),
        Binding("5", "show_tab('schedules')", "Schedules", show=False),
        Binding("6", "show_tab('deadletters')", "Dead letters", show=False),
        Binding("p", "pause_resume", "Pause"),
        Binding("C", "clean", "Clean"),
        Binding("R", "retry_all", "Retry all"),
        Binding("r", "retry", "Retry"),
        Binding("P", "promote", "Promote"),
        Binding("c", "cancel_job", "Cancel"),
        Binding("d", "remove", "Remove"),
        Binding("e", "edit_requeue", "Edit and requeue"),
        Binding("s", "stop_worker", "Stop worker"),
        # Not in the footer (it is full in Jobs): the help, the palette and the docs name it.
        Binding("A", "act_on_matches", "Act on the matches", show=False),
    ]

    def __init__(
        self,
        source: DataSource,
        *,
        read_only: bool = False,
        interval: float = 1.0,
        backoff: Backoff | None = None,
    ) -> None:
        super().__init__()
        self.source = source
        self.read_only = read_only
        self.interval = interval
        self.backoff = backoff or Backoff()
        self.state = DashboardState()
        # The metrics stream does not carry the queues' settings: they are read again this often.
        self.settings_refresh = SETTINGS_REFRESH
        self._settings_read = -math.inf
        self.sub_title = source.address + ("  (read-only)" if read_only else "")
        # The views are held here, not queried: while a dialog is open the app's queries search the
        # dialog, and snapshots keep arriving.
        self.status_line = StatusLine(id="status")
        self.tabs = TabbedContent(initial="queues", id="tabs")
        self.queues_view = QueuesView(id="queues-view")
        self.jobs_view = JobsView(source, id="jobs-view")
        self.workers_view = WorkersView(id="workers-view")
        self.workflows_view = WorkflowsView(source, id="workflows-view")
        self.schedules_view = SchedulesView(source, id="schedules-view")
        self.dead_letters_view = DeadLettersView(source, id="dead-letters-view")

    # ----------------------------------------------------------------- layout

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="≡")
        yield self.status_line
        with self.tabs:
            with TabPane("1 Queues", id="queues"):
                yield self.queues_view
            with TabPane("2 Jobs", id="jobs"):
                yield self.jobs_view
            with TabPane("3 Workers", id="workers"):
                yield self.workers_view
            with TabPane("4 Workflows", id="workflows"):
                yield self.workflows_view
            with TabPane("5 Schedules", id="schedules"):
                yield self.schedules_view
            with TabPane("6 Dead letters", id="deadletters"):
                yield self.dead_letters_view
        yield Footer(compact=True)

    def _tables(self) -> dict[str, NavTable]:
        """The table that gets the focus when a tab is shown."""
        return {
            "queues": self.queues_view.table,
            "jobs": self.jobs_view.table,
            "workers": self.workers_view.table,
            "workflows": self.workflows_view.table,
            "schedules": self.schedules_view.table,
            "deadletters": self.dead_letters_view.table,
        }

    def on_mount(self) -> None:
        self._show_status()
        self.queues_view.show(self.state)
        self.queues_view.table.focus()
        self._follow_metrics()

    async def on_unmount(self) -> None:
        await self.source.close()

    @property
    def active_tab(self) -> str:
        return self.tabs.active

    # ----------------------------------------------------------------- the metrics stream

    @work(exclusive=True, group="metrics")
    async def _follow_metrics(self) -> None:
        backoff = self.backoff
        while True:
            try:
                async for snapshot in self.source.watch_metrics(self.interval):
                    if not self.is_running:
                        return  # shutting down: the views are being taken apart
                    if self.state.connection.link is not Link.LIVE:
                        backoff.reset()
                        self._connected()
                    self._apply(snapshot)
                error = "the server ended the metrics stream"
            except QueueManagerError as exc:
                error = str(exc)
            delay = backoff.next()
            self.state.forget_totals()
            self.state.connection = Connection(Link.DOWN, error, delay, self.state.connection.attempts + 1)
            self._show_status()
            await asyncio.sleep(delay)
            if not self.is_running:
                return
            self.state.connection.retry_in = 0.0
            self._show_status()

    def _connected(self) -> None:
        was_down = self.state.connection.link is Link.DOWN
        self.state.connection = Connection(Link.LIVE)
        self._load_limits()
        if was_down:
            self.notify("Connected to the server again.", markup=False)
            self._refresh_tab(self.active_tab)

    def _apply(self, snapshot: MetricsSnapshot) -> None:
        changes = self.state.apply(snapshot)
        if (
            changes.added
            or changes.groups_held
            or time.monotonic() - self._settings_read >= self.settings_refresh
        ):
            self._load_limits()
        self.queues_view.show(self.state)
        self.workers_view.show(self.state.workers, self.state.time)
        jobs = self.jobs_view
        if jobs.queue is not None and jobs.queue in changes.removed:
            jobs.queue_gone()
            self.notify(f"Queue {jobs.queue} no longer exists.", severity="warning", markup=False)
        if jobs.queue is not None:
            jobs.on_metrics(self.state.queues.get(jobs.queue), live=self.active_tab == "jobs")
        self.workflows_view.on_metrics(self.state, live=self.active_tab == "workflows")
        self.schedules_view.on_metrics(self.state, live=self.active_tab == "schedules")
        self.dead_letters_view.on_metrics(self.state.queues, live=self.active_tab == "deadletters")
        self._show_status()

    @work(exclusive=True, group="limits")
    async def _load_limits(self) -> None:
        """Reads the queues' settings the stream does not carry: rate limits, priority bounds, group limits,
        max sizes, and which groups are paused and until when (of queues with paused groups only)."""
        self._settings_read = time.monotonic()
        try:
            queues = await self.source.list_queues()
            held = [name for name, m in self.state.queues.items() if m.groups_paused]
            groups = {name: await self.source.list_groups(name) for name in held}
        except QueueManagerError:
            return  # the stream reports the outage; limits load again on the next connect
        if not self.is_running:
            return
        self.state.set_settings(queues)
        self.state.paused_groups = {name: [g for g in found if g.paused] for name, found in groups.items()}
        self.queues_view.show(self.state)

    def _show_status(self) -> None:
        self.status_line.show(self.state, self.source.address, read_only=self.read_only)

    # ----------------------------------------------------------------- navigation

    def action_show_tab(self, tab: str) -> None:
        tabs = self.tabs
        if tabs.active == tab:
            return
        # Drop the focus first: a focused widget in the pane being hidden would hand the focus to its
        # neighbour in that pane, and a pane whose widget gets the focus becomes the active one again.
        self.screen.set_focus(None)
        tabs.active = tab

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        tab = event.pane.id or ""
        self._refresh_tab(tab)
        self.call_after_refresh(self._focus_tab, tab)
        self.refresh_bindings()

    def _refresh_tab(self, tab: str) -> None:
        if tab == "jobs":
            self.jobs_view.reload()
        elif tab == "workers":
            self._load_workers()
        elif tab == "workflows":
            self.workflows_view.refresh_runs()
        elif tab == "schedules":
            self.schedules_view.refresh_schedules()
        elif tab == "deadletters":
            self.dead_letters_view.refresh_copies()

    def _focus_tab(self, tab: str) -> None:
        """Focuses the main table of a tab, unless something in that tab has the focus already."""
        if tab not in TABS or self.active_tab != tab:
            return
        pane = self.tabs.get_pane(tab)
        if self.focused is not None and pane in self.focused.ancestors:
            return
        self._tables()[tab].focus()

    @work(exclusive=True, group="workers")
    async def _load_workers(self) -> None:
        try:
            workers = await self.source.list_workers()
        except QueueManagerError as exc:
            self.notify(f"Could not list workers: {exc}", severity="error", markup=False)
            return
        if not self.is_running:
            return
        self.workers_view.show(sorted(workers, key=lambda w: w.worker_id), self.state.time)

    def on_queues_view_open_jobs(self, message: QueuesView.OpenJobs) -> None:
        self.show_jobs_of(message.queue)

    def show_jobs_of(self, queue: str) -> None:
        """Shows the Jobs view of a queue."""
        jobs = self.jobs_view
        jobs.open_queue(queue)
        jobs.on_metrics(self.state.queues.get(queue), live=False)
        self.action_show_tab("jobs")

    def on_jobs_view_open_workflow(self, message: JobsView.OpenWorkflow) -> None:
        self.open_workflow(message.run_id)

    def open_workflow(self, run_id: str) -> None:
        """Shows a workflow run in the Workflows view."""
        self.action_show_tab("workflows")
        self.workflows_view.open_run(run_id)

    def on_workflows_view_open_job(self, message: WorkflowsView.OpenJob) -> None:
        self.open_job(message.ref)

    def on_schedules_view_open_job(self, message: SchedulesView.OpenJob) -> None:
        self.open_job(message.ref)

    def open_job(self, ref: JobRef) -> None:
        """Shows one job (looked up by id) in the Jobs view."""
        jobs = self.jobs_view
        jobs.open_job(ref)
        jobs.on_metrics(self.state.queues.get(ref.queue_name), live=False)
        self.action_show_tab("jobs")

    def action_go_back(self) -> None:
        tab = self.active_tab
        jobs = self.jobs_view
        if tab == "jobs" and jobs.search_open:
            jobs.close_search()
        elif tab == "deadletters" and self.dead_letters_view.filter_open:
            self.dead_letters_view.close_filter()
        elif isinstance(self.focused, JobDetail):
            jobs.focus_table()
        elif isinstance(self.focused, RunTree):
            self.workflows_view.table.focus()
        elif tab != "queues":
            self.action_show_tab("queues")
        else:
            self.exit()

    def action_search(self) -> None:
        """Searches the jobs of the queue selected in Queues (from there, or before any queue was opened),
        else of the queue the Jobs view shows."""
        jobs = self.jobs_view
        if self.active_tab == "deadletters":
            self.dead_letters_view.open_filter()  # by original queue
            return
        if self.active_tab == "queues" or jobs.queue is None:
            queue = self.queues_view.selected_queue
            if queue is None:
                self.notify("No queue to search yet.", severity="warning")
                return
            self.show_jobs_of(queue)
        else:
            self.action_show_tab("jobs")
        jobs.open_search()

    def action_help(self) -> None:
        self.push_screen(HelpScreen(read_only=self.read_only))

    # ----------------------------------------------------------------- controls

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action not in CONTROL_ACTIONS:
            return True
        if self.read_only or len(self.screen_stack) > 1:
            return False
        tab = self.active_tab
        if tab == "deadletters":
            return action in DEAD_LETTER_ACTIONS
        if action == "edit_requeue":
            return False
        if action == "remove" and tab == "schedules":
            return True
        if tab == "workers":
            return action in ("pause_resume", "stop_worker")
        if action in WORKER_ACTIONS:
            return False
        if action in JOB_ACTIONS:
            return tab == "jobs"
        return tab in ("queues", "jobs")

    @property
    def current_queue(self) -> str | None:
        """The queue the queue controls act on: the shown one in Jobs, the selected one in Queues."""
        tab = self.active_tab
        if tab == "jobs":
            return self.jobs_view.queue
        return self.queues_view.selected_queue if tab == "queues" else None

    def _queue_metrics(self) -> QueueMetrics:
        name = self.current_queue
        if name is None:
            raise NotApplicable("Select a queue first.")
        metrics = self.state.queues.get(name)
        if metrics is None:
            raise NotApplicable(f"No figures for {name} yet: wait for the server.")
        return metrics

    def _job(self) -> Job:
        job = self.jobs_view.selected_job()
        if job is None:
            raise NotApplicable("Select a job first.")
        return job

    def _worker(self) -> WorkerInfo:
        worker = self.workers_view.selected_worker()
        if worker is None:
            raise NotApplicable("Select a worker first.")
        return worker

    def action_pause_resume(self) -> None:
        if self.active_tab == "workers":  # quiet or resume the worker: at once, either undoes the other
            if self.read_only:
                return
            try:
                plan = quiet_worker_plan(self._worker())
            except NotApplicable as exc:
                self.notify(str(exc), severity="warning", markup=False)
                return
            self._run_plan(plan)
            return
        self._propose(lambda: pause_plan(self._queue_metrics()))

    def action_stop_worker(self) -> None:
        self._propose(lambda: stop_worker_plan(self._worker()))

    def action_retry_all(self) -> None:
        if self.active_tab == "deadletters":
            view = self.dead_letters_view
            self._propose(lambda: redrive_all_plan(view.shown_queues(), view.original, len(view.shown())))
            return
        self._propose(lambda: retry_all_plan(self._queue_metrics()))

    def action_retry(self) -> None:
        if self.active_tab == "deadletters":
            self._propose(lambda: redrive_plan(self._copy()))
            return
        self._propose(lambda: retry_plan(self._job()))

    def _copy(self) -> DeadCopy:
        copy = self.dead_letters_view.selected()
        if copy is None:
            raise NotApplicable("Select a dead-letter copy first.")
        return copy

    def action_edit_requeue(self) -> None:
        """Opens the selected copy's original data in an editor; saved (valid JSON), it asks to requeue."""
        if self.read_only:
            return
        try:
            copy = self._copy()
            text = editable_text(copy)
        except NotApplicable as exc:
            self.notify(str(exc), severity="warning", markup=False)
            return

        def saved(edited: Edited | None) -> None:
            if edited is not None:
                self._propose(lambda: edit_plan(copy, edited.data))

        self.push_screen(EditDataScreen(copy, text), saved)

    def action_promote(self) -> None:
        self._propose(lambda: promote_plan(self._job()))

    def action_cancel_job(self) -> None:
        self._propose(lambda: cancel_plan(self._job()))

    def action_remove(self) -> None:
        if self.active_tab == "deadletters":
            self._propose(lambda: delete_copy_plan(self._copy()))
        elif self.active_tab == "schedules":
            self._propose(lambda: delete_schedule_plan(self._schedule()))
        else:
            self._propose(lambda: remove_plan(self._job()))

    def action_act_on_matches(self) -> None:
        """Retries, cancels or removes every job the Jobs view's server search matches: picks the action
        (when more than one applies to the state), counts the matches on the server, then asks."""
        if self.read_only:
            return
        search = self.jobs_view.search
        if search is None:
            self.notify(
                "Search by name first: / then a name (send-* for a prefix) and Enter; "
                "A then acts on every job it matches.",
                severity="warning",
                markup=False,
            )
            return
        actions = BulkAction.for_state(search.state)
        if len(actions) == 1:
            self._propose_matches(actions[0], search)
            return

        def chosen(action: BulkAction | None) -> None:
            if action is not None:
                self._propose_matches(action, search)

        self.push_screen(MatchesScreen(search, actions), chosen)

    @work(exclusive=True, group="count-matches")
    async def _propose_matches(self, action: BulkAction, search: Search) -> None:
        try:
            count = await count_matches(self.source, search)
        except QueueManagerError as exc:
            self.notify(f"Could not count the matches: {exc}", severity="error", markup=False)
            return
        if self.is_running:
            self._propose(lambda: matches_plan(action, search, count))

    def _schedule(self) -> Schedule:
        schedule = self.schedules_view.selected()
        if schedule is None:
            raise NotApplicable("Select a schedule first.")
        return schedule

    def action_clean(self) -> None:
        if self.read_only:
            return
        try:
            metrics = self._queue_metrics()
        except NotApplicable as exc:
            self.notify(str(exc), severity="warning", markup=False)
            return

        def chosen(choice: CleanChoice | None) -> None:
            if choice is not None:
                self._propose(lambda: clean_plan(metrics, choice.state, choice.grace))

        self.push_screen(CleanScreen(metrics), chosen)

    def _propose(self, build: Callable[[], Plan]) -> None:
        """Builds a plan, asks for confirmation, and runs it on yes."""
        if self.read_only:
            return
        try:
            plan = build()
        except NotApplicable as exc:
            self.notify(str(exc), severity="warning", markup=False)
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._run_plan(plan)

        self.push_screen(ConfirmScreen(plan), answered)

    @work(group="controls")
    async def _run_plan(self, plan: Plan) -> None:
        try:
            outcome = await plan.run(self.source)
        except (QueueManagerError, EditNotSent) as exc:
            self.notify(f"{plan.title} failed: {exc}", severity="error", markup=False)
            if self.active_tab == "deadletters":
                self.dead_letters_view.refresh_copies()
            return
        if not self.is_running:
            return
        self.notify(outcome, markup=False)
        if self.active_tab == "jobs":
            self.jobs_view.reload()
        elif self.active_tab == "schedules":
            self.schedules_view.refresh_schedules()
        elif self.active_tab == "deadletters":
            self.dead_letters_view.refresh_copies()
        elif self.active_tab == "workers":
            self._load_workers()

    # ----------------------------------------------------------------- command palette

    def palette_commands(self) -> list[PaletteCommand]:
        """What the palette offers now (see `commands.palette_commands`)."""
        return palette_commands(self)
