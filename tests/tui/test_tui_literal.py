"""User text is shown as it is: a job named ``[red]x[/red]`` or an error holding ANSI escapes appears
literally in the table, the detail pane, the confirmation and the command palette, never as styling."""

from __future__ import annotations

from textual.command import CommandPalette

from queue_manager_tui import DashboardApp
from queue_manager_tui.screens.confirm import ConfirmScreen
from queue_manager_tui.state import Backoff
from queue_manager_tui.widgets.jobs_view import JobsView
from tests.tui.fakes import FakeSource
from tests.tui.helpers import rows, screen_lines, wait_for, wait_live


async def test_markup_and_ansi_in_job_names_and_errors_are_shown_literally() -> None:
    app = DashboardApp(FakeSource(), backoff=Backoff(initial=3600))
    async with app.run_test(size=(160, 40)) as pilot:
        await wait_live(pilot, app, 3)
        await pilot.press("enter", "l", "l", "l", "j")
        jobs = app.query_one(JobsView)
        await wait_for(pilot, lambda: jobs.loaded_job is not None and jobs.loaded_job.id == "42", "job 42")
        lines = screen_lines(app)
        screen = "\n".join(lines)
        # The table row (cut to the column's width) and the detail pane: the brackets are there, so
        # nothing was read as markup.
        row = next(line for line in lines if line.lstrip().startswith("42 "))
        assert "[red]x[/red] [bol…" in row
        assert "[red]x[/red] [bold]boom  42" in screen
        # The ANSI escape is spelled out (and no raw ESC reaches the terminal).
        assert "\\x1b[31mred alert\\x1b[0m and [link=http://evil]click[/link]" in screen
        assert "\x1b" not in screen
        assert '"note": "[blink]not markup[/blink]"' in screen
        assert "\\x1b[2Jcleared? no: [red]literal[/red]" in screen  # a log line

        await pilot.press("r")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the confirmation")
        assert "Retry job 42 ([red]x[/red] [bold]boom) of emails?" in "\n".join(screen_lines(app))
        await pilot.press("n")
        await wait_for(pilot, lambda: not isinstance(app.screen, ConfirmScreen), "the confirmation to close")

        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette), "the command palette")
        await pilot.press(*"remove job")
        await wait_for(pilot, lambda: "Remove job 42" in "\n".join(screen_lines(app)), "the palette's hit")
        assert rows(app, "jobs-table") == ["41", "42", "43"]
