"""Waiting on the dashboard in Pilot tests: conditions with a bound, never a bare sleep."""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import Callable

from textual.pilot import Pilot

from queue_manager_tui import DashboardApp
from queue_manager_tui.state import Link
from queue_manager_tui.widgets.nav_table import NavTable


async def wait_for(
    pilot: Pilot[None], condition: Callable[[], object], what: str, timeout: float = 10.0
) -> None:
    """Lets the app run until ``condition()`` is true; fails naming ``what`` after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await pilot.pause(0.02)


def rows(app: DashboardApp, table_id: str) -> list[str]:
    """The row keys of one of the app's tables, top to bottom."""
    return app.query_one(f"#{table_id}", NavTable).row_keys


async def wait_live(pilot: Pilot[None], app: DashboardApp, queues: int) -> None:
    """Until the stream is live and the Queues view shows ``queues`` rows."""
    try:
        await wait_for(
            pilot,
            lambda: app.state.connection.link is Link.LIVE and len(rows(app, "queues-table")) == queues,
            f"a live stream showing {queues} queues",
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {app.state.connection}, queues {app.state.queue_names}") from None


_SVG_TEXT = re.compile(
    r'<text [^>]*x="([0-9.]+)"[^>]*clip-path="url\(#[^)]*-line-(\d+)\)"[^>]*>([^<]*)</text>'
)
# Rich's SVG export: characters 20 px high and 0.61 of that wide; blank runs are not written as text.
_CHAR_WIDTH = 20 * 0.61


def screen_lines(app: DashboardApp) -> list[str]:
    """The screen as the user sees it, one string per terminal line (read from an SVG screenshot)."""
    lines: dict[int, dict[int, str]] = {}
    for x, number, text in _SVG_TEXT.findall(app.export_screenshot()):
        column = round(float(x) / _CHAR_WIDTH)
        for offset, char in enumerate(html.unescape(text).replace("\xa0", " ")):
            lines.setdefault(int(number), {})[column + offset] = char
    return [
        "".join(cells.get(c, " ") for c in range(max(cells, default=-1) + 1)).rstrip()
        for _, cells in sorted(lines.items())
    ]
