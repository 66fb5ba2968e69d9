"""Live updates from the stream: cells change in place and the cursor stays; queues come and go; the
command palette offers the views, the queues and the controls."""

from __future__ import annotations

import dataclasses

from textual.command import CommandPalette
from textual.widgets import Tree

from queue_manager import MetricsSnapshot
from queue_manager_tui import DashboardApp
from queue_manager_tui.screens.confirm import ConfirmScreen
from queue_manager_tui.widgets.nav_table import NavTable
from tests.tui.fakes import FakeSource, at, queue_metrics, snapshots, workers
from tests.tui.helpers import rows, wait_for, wait_live


def _plain(table: NavTable, row: str, column: str) -> str:
    return str(getattr(table.get_cell(row, column), "plain", ""))


async def test_snapshots_update_cells_in_place_and_keep_the_cursor() -> None:
    source = FakeSource()
    app = DashboardApp(source)
    async with app.run_test(size=(120, 34)) as pilot:
        await wait_live(pilot, app, 3)
        table = app.queues_view.table
        await pilot.press("j")
        assert app.queues_view.selected_queue == "reports"
        rebuilt: list[int] = []
        clear = table.clear
        table.clear = lambda columns=False: rebuilt.append(1) or clear(columns)  # type: ignore[method-assign]

        busier = snapshots()[-1]
        reports = dataclasses.replace(busier.metrics[1], failed=10, error_rate=0.5)
        source.push(MetricsSnapshot(at(6), [busier.metrics[0], reports, busier.metrics[2]], workers()))
        await wait_for(pilot, lambda: _plain(table, "reports", "failed") == "10", "the new failed count")
        assert _plain(table, "reports", "errors") == "50.0%"
        assert app.queues_view.selected_queue == "reports" and table.cursor_row == 1
        assert rebuilt == []  # updated in place

        # A queue registered in between: the rows are rebuilt in order, the cursor stays on its queue.
        alerts = dataclasses.replace(queue_metrics("thumbnails", 5), queue_name="alerts")
        source.push(MetricsSnapshot(at(7), [queue_metrics("emails", 5), alerts, reports], []))
        await wait_for(pilot, lambda: rows(app, "queues-table") == ["alerts", "emails", "reports"], "alerts")
        assert app.queues_view.selected_queue == "reports" and table.cursor_row == 2
        assert rows(app, "workers-table") == []


async def test_the_palette_offers_views_queues_and_controls() -> None:
    source = FakeSource()
    app = DashboardApp(source)
    async with app.run_test(size=(120, 34)) as pilot:
        await wait_live(pilot, app, 3)
        titles = [command.title for command in app.palette_commands()]
        assert {
            "Show jobs",
            "Jobs of reports",
            "Pause queue emails",
            "Retry all failed jobs of emails",
        } <= set(titles)
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette), "the palette")
        await pilot.press(*"pause queue emails", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the confirmation")
        screen = app.screen
        assert isinstance(screen, ConfirmScreen) and screen.plan.prompt == "Pause queue emails?"
        await pilot.press("y")
        await wait_for(pilot, lambda: source.calls == [("pause_queue", ("emails",))], "the pause")

        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette), "the palette")
        await pilot.press(*"jobs of reports", "enter")
        await wait_for(pilot, lambda: app.active_tab == "jobs", "the jobs view")
        assert app.jobs_view.queue == "reports"


async def test_a_job_links_to_its_workflow_run_and_a_step_to_its_job() -> None:
    app = DashboardApp(FakeSource())
    async with app.run_test(size=(120, 34)) as pilot:
        await wait_live(pilot, app, 3)
        await pilot.press("enter", "l", "l", "l", "j", "j")
        jobs = app.jobs_view
        await wait_for(pilot, lambda: jobs.loaded_job is not None and jobs.loaded_job.id == "43", "job 43")
        await pilot.press("w")
        tree = app.query_one("#run-tree", Tree)
        await wait_for(pilot, lambda: len(tree.root.children) == 3, "the run's steps")
        assert app.active_tab == "workflows" and app.workflows_view.table.selected_key == "run-7"
        await pilot.press("enter")
        assert app.focused is tree
        for _ in range(10):
            node = tree.cursor_node
            if node is not None and node.data is not None and node.data.key == "notify":
                break
            await pilot.press("j")
        step = tree.cursor_node.data if tree.cursor_node is not None else None
        assert step is not None and (step.key, step.job_id) == ("notify", "43")
        await pilot.press("o")
        await wait_for(
            pilot, lambda: app.active_tab == "jobs" and rows(app, "jobs-table") == ["43"], "job 43"
        )
        await wait_for(
            pilot, lambda: jobs.loaded_job is not None and jobs.loaded_job.id == "43", "its detail"
        )


async def test_the_schedules_view_lists_every_schedule_opens_its_last_job_and_deletes_one() -> None:
    source = FakeSource()
    app = DashboardApp(source)
    async with app.run_test(size=(120, 34)) as pilot:
        await wait_live(pilot, app, 3)
        await pilot.press("5")
        keys = ["emails/heartbeat", "emails/nightly-report", "reports/launch-[b]week[/b]"]
        await wait_for(pilot, lambda: rows(app, "schedules-table") == keys, "the schedules")
        table = app.schedules_view.table
        assert _plain(table, "emails/nightly-report", "when") == "0 2 * * * (Europe/Paris)"
        assert _plain(table, "emails/heartbeat", "when") == "every 5m00s"
        assert _plain(table, "emails/nightly-report", "runs") == "12"
        assert _plain(table, "reports/launch-[b]week[/b]", "next") == "over"
        # A schedule that added no job yet has none to open; the next one's last job opens in Jobs.
        await pilot.press("o")
        assert app.active_tab == "schedules"
        await pilot.press("j", "o")
        jobs = app.jobs_view
        await wait_for(pilot, lambda: app.active_tab == "jobs", "the jobs view")
        await wait_for(pilot, lambda: jobs.loaded_job is not None and jobs.loaded_job.id == "43", "job 43")
        # Delete: asks first, names the schedule literally, then the list no longer has it.
        await pilot.press("5")
        await wait_for(pilot, lambda: app.active_tab == "schedules", "the schedules view")
        await pilot.press("G", "d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the confirmation")
        screen = app.screen
        assert isinstance(screen, ConfirmScreen)
        assert screen.plan.prompt == "Delete schedule launch-[b]week[/b] of reports?"
        await pilot.press("y")
        await wait_for(
            pilot,
            lambda: source.calls == [("delete_schedule", ("reports", "launch-[b]week[/b]"))],
            "the delete",
        )
        await wait_for(pilot, lambda: rows(app, "schedules-table") == keys[:2], "the list without it")
