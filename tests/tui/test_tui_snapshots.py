"""SVG snapshots of each view with fixed data at a fixed size (`pytest --snapshot-update` to accept
changes after looking at them). The data comes from `FakeSource`: no clock, no random ids."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from textual.pilot import Pilot
from textual.widgets import Tree

from queue_manager_tui import DashboardApp
from queue_manager_tui.screens.confirm import ConfirmScreen
from queue_manager_tui.state import Backoff, Link
from queue_manager_tui.widgets.jobs_view import JobsView
from tests.tui.fakes import T0, FakeSource, at
from tests.tui.helpers import rows, wait_for, wait_live

SIZE = (120, 34)
Settle = Callable[[Pilot[None]], Awaitable[None]]
SnapCompare = Callable[..., bool]


def dashboard(**source: object) -> DashboardApp:
    # A backoff of an hour: a disconnected app keeps showing its first failure, whatever the machine's speed.
    return DashboardApp(FakeSource(**source), backoff=Backoff(initial=3600, maximum=3600))  # type: ignore[arg-type]


async def live(pilot: Pilot[None]) -> None:
    app = pilot.app
    assert isinstance(app, DashboardApp)
    await wait_live(pilot, app, 3)
    await wait_for(pilot, lambda: app.state.time == at(5) and len(app.state.limits) == 3, "the last snapshot")


async def on_failed_jobs(pilot: Pilot[None]) -> None:
    await live(pilot)
    await pilot.press("enter", "l", "l", "l")
    jobs = pilot.app.query_one(JobsView)
    await wait_for(
        pilot,
        lambda: (
            jobs.loaded_job is not None
            and jobs.loaded_job.id == "41"
            and len(rows(pilot.app, "jobs-table")) == 3
        ),
        "the failed jobs of emails with the first one's detail",
    )


def test_queues_view(snap_compare: SnapCompare) -> None:
    assert snap_compare(dashboard(), terminal_size=SIZE, run_before=live)


def test_jobs_view(snap_compare: SnapCompare) -> None:
    assert snap_compare(dashboard(), terminal_size=SIZE, run_before=on_failed_jobs)


def test_job_with_markup_and_ansi_in_its_name_and_error(snap_compare: SnapCompare) -> None:
    async def second_job(pilot: Pilot[None]) -> None:
        await on_failed_jobs(pilot)
        await pilot.press("j")
        jobs = pilot.app.query_one(JobsView)
        await wait_for(pilot, lambda: jobs.loaded_job is not None and jobs.loaded_job.id == "42", "job 42")

    assert snap_compare(dashboard(), terminal_size=SIZE, run_before=second_job)


def test_workers_view(snap_compare: SnapCompare) -> None:
    async def workers(pilot: Pilot[None]) -> None:
        await live(pilot)
        await pilot.press("3")
        await wait_for(pilot, lambda: len(rows(pilot.app, "workers-table")) == 3, "three workers")

    assert snap_compare(dashboard(), terminal_size=SIZE, run_before=workers)


def test_workflows_view(snap_compare: SnapCompare) -> None:
    async def workflows(pilot: Pilot[None]) -> None:
        await live(pilot)
        await pilot.press("4")
        tree = pilot.app.query_one("#run-tree", Tree)
        await wait_for(
            pilot,
            lambda: len(rows(pilot.app, "runs-table")) == 2 and len(tree.root.children) == 3,
            "two runs and the first run's tree",
        )

    assert snap_compare(dashboard(), terminal_size=SIZE, run_before=workflows)


def test_schedules_view(snap_compare: SnapCompare) -> None:
    async def schedules(pilot: Pilot[None]) -> None:
        await live(pilot)
        await pilot.press("5")
        await wait_for(pilot, lambda: len(rows(pilot.app, "schedules-table")) == 3, "three schedules")
        await pilot.press("j")
        await pilot.pause()

    assert snap_compare(dashboard(), terminal_size=SIZE, run_before=schedules)


def test_confirmation_names_what_is_affected(snap_compare: SnapCompare) -> None:
    async def confirm(pilot: Pilot[None]) -> None:
        await on_failed_jobs(pilot)
        await pilot.press("R")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, ConfirmScreen), "the confirmation")

    assert snap_compare(dashboard(), terminal_size=SIZE, run_before=confirm)


def test_help(snap_compare: SnapCompare) -> None:
    async def help_screen(pilot: Pilot[None]) -> None:
        await live(pilot)
        await pilot.press("question_mark")
        await pilot.pause()

    assert snap_compare(dashboard(), terminal_size=SIZE, run_before=help_screen)


def test_disconnected_keeps_the_last_figures(snap_compare: SnapCompare) -> None:
    async def down(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, DashboardApp)
        await wait_for(pilot, lambda: app.state.connection.link is Link.DOWN, "the stream to fail")
        await wait_for(pilot, lambda: len(app.state.limits) == 3, "the rate limits")

    app = dashboard(fail_after="failed to connect to all addresses")
    assert snap_compare(app, terminal_size=SIZE, run_before=down)
    assert app.state.time == T0.replace(second=5)


DOC_SCREENSHOTS = {
    "queues": "test_queues_view",
    "jobs": "test_jobs_view",
    "workers": "test_workers_view",
    "workflows": "test_workflows_view",
    "schedules": "test_schedules_view",
    "confirm": "test_confirmation_names_what_is_affected",
    "disconnected": "test_disconnected_keeps_the_last_figures",
    "help": "test_help",
}


def test_docs_screenshots_are_the_current_snapshots() -> None:
    snapshots = Path(__file__).parent / "__snapshots__" / "test_tui_snapshots"
    docs = Path(__file__).parents[2] / "docs" / "dashboard"
    for doc, snapshot in DOC_SCREENSHOTS.items():
        source = snapshots / f"{snapshot}.svg"
        target = docs / f"{doc}.svg"
        assert target.read_bytes() == source.read_bytes(), f"docs are stale: cp {source} {target}"
