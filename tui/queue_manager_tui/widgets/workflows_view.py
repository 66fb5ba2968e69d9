"""The Workflows view: recent runs, and the selected run as a tree of steps with each step's state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import DataTable, Static, Tree
from textual.widgets.tree import TreeNode

from queue_manager import JobRef, QueueManagerError, WorkflowRun, WorkflowState, WorkflowStepRun
from queue_manager import WorkflowStepState as Step
from queue_manager_tui.data import DataSource
from queue_manager_tui.format import fmt_time, safe
from queue_manager_tui.state import DashboardState
from queue_manager_tui.widgets.cells import literal, number
from queue_manager_tui.widgets.nav_table import NavTable, TableRow

__all__ = ["WorkflowsView", "step_label"]

RUNS_SHOWN = 100
_RUN_STYLES = {
    WorkflowState.RUNNING: "bold cyan",
    WorkflowState.COMPLETED: "green",
    WorkflowState.FAILED: "bold red",
    WorkflowState.CANCELLED: "magenta",
}
_STEP_MARKS = {
    Step.PENDING: ("○", "dim"),
    Step.STARTED: ("▶", "bold cyan"),
    Step.COMPLETED: ("✔", "green"),
    Step.FAILED: ("✘", "bold red"),
    Step.SKIPPED: ("⤼", "dim"),
    Step.CANCELLED: ("■", "magenta"),
}
_BRANCH_LABELS = {"on_success": "on success", "on_failure": "on failure"}


class RunTree(Tree[WorkflowStepRun]):
    """A run's steps; j/k move like everywhere else, Enter opens the step's job."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
    ]


class WorkflowsView(Vertical):
    """Recent workflow runs; the tree follows each step's parent, branch and dependencies.

    Args:
        source: Where runs come from.
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("o", "open_step_job", "Step's job")]

    @dataclass
    class OpenJob(Message):
        """The user asked for a step's job."""

        ref: JobRef

    def __init__(self, source: DataSource, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.source = source
        self._runs: dict[str, WorkflowRun] = {}
        self._wanted: str | None = None
        self._activity: int | None = None

    def compose(self) -> ComposeResult:
        with Horizontal():
            table = NavTable(id="runs-table")
            # Run ids and names can be long: cut here, whole in the pane's title.
            for key, label, width in (
                ("run", "Run", 10),
                ("name", "Workflow", 14),
                ("state", "State", None),
                ("steps", "Steps", None),
            ):
                table.add_column(label, key=key, width=width)
            yield table
            with Vertical(id="run-pane"):
                yield Static(id="run-title")
                tree = RunTree(Text("steps"), id="run-tree")
                tree.show_root = False
                yield tree

    @property
    def table(self) -> NavTable:
        return self.query_one("#runs-table", NavTable)

    def refresh_runs(self) -> None:
        """Loads the newest runs, then the selected run's steps."""
        self._load_runs()

    def on_metrics(self, state: DashboardState, *, live: bool) -> None:
        """Reloads the runs when the stream shows jobs moving (only while the view is on screen)."""
        activity = sum(m.added_total + m.completed_total + m.failed_total for m in state.queues.values())
        if activity == self._activity:
            return
        first = self._activity is None
        self._activity = activity
        if live and not first:
            self._load_runs()

    def open_run(self, run_id: str) -> None:
        """Selects a run (loading the list first if needed)."""
        self._wanted = run_id
        if not self.table.select_key(run_id):
            self._load_runs()
        else:
            self._load_run(run_id)

    def action_open_step_job(self) -> None:
        node = self.query_one(RunTree).cursor_node
        step = node.data if node is not None else None
        if step is None or not step.job_id:
            self.notify("The selected step has no job yet.", severity="warning")
            return
        self.post_message(self.OpenJob(JobRef(step.queue_name, step.job_id)))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        if event.row_key.value is not None:
            self._load_run(str(event.row_key.value))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.query_one(RunTree).focus()

    def on_tree_node_selected(self, event: Tree.NodeSelected[WorkflowStepRun]) -> None:
        event.stop()
        self.action_open_step_job()

    @work(exclusive=True, group="workflow-runs")
    async def _load_runs(self) -> None:
        try:
            runs = await self.source.list_workflows(RUNS_SHOWN)
        except QueueManagerError as exc:
            self.query_one("#run-title", Static).update(Text(f"Could not list workflow runs: {exc}"))
            return
        self._runs = {run.run_id: run for run in runs}
        rows: list[TableRow] = [(run.run_id, _run_row(run)) for run in runs]
        self.table.sync_rows(rows)
        if self._wanted is not None and self.table.select_key(self._wanted):
            self._wanted = None
        key = self.table.selected_key
        if key is not None:
            self._load_run(key)
        else:
            self.query_one("#run-title", Static).update(
                Text("No workflow runs yet (qm workflows run FILE).", style="dim")
            )
            self.query_one(RunTree).clear()

    @work(exclusive=True, group="workflow-run")
    async def _load_run(self, run_id: str) -> None:
        try:
            run = await self.source.get_workflow(run_id)
        except QueueManagerError as exc:
            self.query_one("#run-title", Static).update(Text(f"Could not load run {run_id}: {exc}"))
            return
        if self.table.selected_key != run_id:
            return
        self._show_run(run)

    def _show_run(self, run: WorkflowRun) -> None:
        title = Text()
        title.append(safe(run.name or run.workflow_id or run.run_id), style="bold")
        title.append(f"  {safe(run.run_id)}", style="dim")
        title.append(f"  {run.state.value}", style=_RUN_STYLES[run.state])
        title.append(f"  {run.finished_step_count}/{run.step_count} steps finished", style="dim")
        title.append(f"\nstarted {fmt_time(run.created_at)}", style="dim")
        if run.finished_at is not None:
            title.append(f"  finished {fmt_time(run.finished_at)}", style="dim")
        if run.cancel_reason:
            title.append(f"\ncancelled: {safe(run.cancel_reason)}", style="magenta")
        self.query_one("#run-title", Static).update(title)
        tree = self.query_one(RunTree)
        cursor = tree.cursor_line
        tree.clear()
        _add_steps(tree.root, run.steps, parent_key="")
        tree.root.expand_all()
        tree.move_cursor_to_line(max(0, cursor), animate=False)


def _add_steps(node: TreeNode[WorkflowStepRun], steps: list[WorkflowStepRun], parent_key: str) -> None:
    """Adds the steps under ``parent_key`` (root steps first), grouped by on_success / on_failure."""
    children = [s for s in steps if s.parent_key == parent_key]
    if not parent_key:
        for step in children:
            _add_step(node, step, steps)
        return
    for branch in ("on_success", "on_failure"):
        group = [s for s in children if s.branch == branch]
        if group:
            branch_node = node.add(Text(_BRANCH_LABELS[branch], style="italic dim"), expand=True)
            for step in group:
                _add_step(branch_node, step, steps)


def _add_step(node: TreeNode[WorkflowStepRun], step: WorkflowStepRun, steps: list[WorkflowStepRun]) -> None:
    has_children = any(s.parent_key == step.key for s in steps)
    if has_children:
        child = node.add(step_label(step), data=step, expand=True)
        _add_steps(child, steps, step.key)
    else:
        node.add_leaf(step_label(step), data=step)


def step_label(step: WorkflowStepRun) -> Text:
    """One line for a step: its state mark, key, queue/job name, job id, then why it failed (red) or why it
    was skipped (dim: a run_if condition that did not hold is no failure)."""
    mark, style = _STEP_MARKS[step.state]
    label = Text()
    label.append(f"{mark} ", style=style)
    label.append(safe(step.key), style="bold")
    label.append(f"  {step.queue_name}/{safe(step.job_name)}")
    state = step.state.value
    if step.state is Step.STARTED and step.job_state is not None:
        state = f"{state} ({step.job_state.value})"
    label.append(f"  {state}", style=style)
    if step.job_id:
        label.append(f"  job {safe(step.job_id)}", style="dim")
    if step.depends_on:
        label.append(f"  after {', '.join(safe(k) for k in step.depends_on)}", style="cyan")
    if step.error:
        first = step.error.splitlines()[0] if step.error.strip() else step.error
        label.append(f"  {safe(first)}", style="dim" if step.state is Step.SKIPPED else "red")
    return label


def _run_row(run: WorkflowRun) -> list[Text]:
    return [
        literal(run.run_id),
        literal(run.name or run.workflow_id),
        Text(run.state.value, style=_RUN_STYLES[run.state]),
        number(f"{run.finished_step_count}/{run.step_count}"),
    ]
