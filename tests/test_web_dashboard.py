"""The web dashboard at / in headless Chromium: a real server's HTTP port, live counts on the screen.

Chromium is Debian's (/usr/bin/chromium; .ci/run installs it), driven by Playwright's Python package, never
a downloaded browser. The page's terminal (xterm.js) paints on a canvas, so the test reads what it shows
from the terminal's own screen buffer: an init script keeps a reference to each xterm Terminal as it is
built (the bundle keeps none), and ``buffer.active.getLine(n).translateToString()`` gives each row's text.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import psutil
import pytest
from playwright.async_api import Page, async_playwright
from playwright.async_api import TimeoutError as PlaywrightTimeout

from queue_manager import QueueManager
from queue_manager_server.http import dashboard
from tests.conftest import RunningServer, ServerFactory

CHROMIUM = "/usr/bin/chromium"
# The closed network refuses Chromium's background connections; these keep it from trying.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT = 60.0  # the first session starts a Python process that imports Textual

# Keeps each xterm Terminal (the public object, the only one given an _addonManager) in window.__terminals,
# and defines window.__screenText(): the rows the first terminal shows, as text.
READ_TERMINAL = """
Object.defineProperty(Object.prototype, "_addonManager", {
  configurable: true,
  set(value) {
    Object.defineProperty(this, "_addonManager", {value, writable: true, configurable: true});
    (window.__terminals = window.__terminals || []).push(this);
  },
});
window.__screenText = () => {
  const term = (window.__terminals || [])[0];
  if (!term) return "";
  const buffer = term.buffer.active;
  const rows = [];
  for (let y = 0; y < term.rows; y++) {
    const line = buffer.getLine(buffer.viewportY + y);
    rows.push(line ? line.translateToString(true) : "");
  }
  return rows.join("\\n");
};
"""

if not Path(CHROMIUM).exists():
    message = f"needs Debian's Chromium at {CHROMIUM}: apt-get install -y chromium (.ci/run installs it)"
    if os.environ.get("CI"):
        raise RuntimeError(message)  # in CI a missing browser is a failure, not a skip
    pytest.skip(message, allow_module_level=True)


@pytest.fixture
async def web(server_factory: ServerFactory) -> AsyncIterator[tuple[RunningServer, str]]:
    """A server with its HTTP port on a free loopback port, and that port's base URL."""
    server = await server_factory(http_listen="127.0.0.1:0")
    assert server.app.http is not None
    yield server, f"http://127.0.0.1:{server.app.http.port}"


def dashboard_processes() -> list[psutil.Process]:
    """This test process's children running ``qm dash`` (the web sessions)."""
    children = psutil.Process().children(recursive=True)
    return [p for p in children if "dash" in p.cmdline() and "queue_manager.cli" in p.cmdline()]


async def screen_text(page: Page) -> str:
    text: str = await page.evaluate("window.__screenText()")
    return text


async def wait_for_row(page: Page, pattern: str) -> str:
    """Waits (in the page, at each animation frame) until a row of the terminal's screen matches the
    regular expression; returns that row, or fails showing the screen."""
    try:
        await page.wait_for_function(
            "pattern => new RegExp(pattern).test(window.__screenText())", arg=pattern, timeout=WAIT * 1000
        )
    except PlaywrightTimeout:
        text = await screen_text(page)
        raise AssertionError(f"no row matches {pattern!r}; the screen shows:\n{text}") from None
    found = re.search(pattern, await screen_text(page))
    assert found is not None
    return found.group(0)


async def test_browser_shows_live_counts(web: tuple[RunningServer, str], tmp_path: Path) -> None:
    server, base = web
    qm = QueueManager(address=server.address)
    try:
        await qm.register_queue("web-q")
        for i in range(3):
            await qm.add_job("web-q", "seeded", i)
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1600, "height": 900})
                await page.add_init_script(READ_TERMINAL)
                response = await page.goto(f"{base}/")
                assert response is not None and response.status == 200
                # The queue's row, then the same row once two more jobs are added: Wait column 3, then 5.
                row = await wait_for_row(page, r"web-q\s+\S+\s+3\s.*")
                for i in range(2):
                    await qm.add_job("web-q", "later", i)
                row = await wait_for_row(page, r"web-q\s+\S+\s+5\s.*")
                await page.screenshot(path=str(tmp_path / "web-dashboard.png"))
                assert "web-q" in row
                assert dashboard_processes(), "the session runs a qm dash process of its own"

                # Stopping the server ends the session: its process quits, the page says so.
                started = time.monotonic()
                await server.stop()
                assert time.monotonic() - started < 10
                assert dashboard_processes() == []
                await page.wait_for_selector("body.-closed", timeout=WAIT * 1000)
            finally:
                await browser.close()
    finally:
        await qm.shutdown()


async def test_page_and_session_limit(
    web: tuple[RunningServer, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page points the terminal at this port's websocket; past MAX_SESSIONS, sessions are refused."""
    _, base = web
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/") as response:
            html = await response.text()
        assert response.status == 200
        assert f'data-session-websocket-url="ws://127.0.0.1:{base.rsplit(":", 1)[1]}/dashboard/ws"' in html
        static = re.search(r'src="([^"]+textual\.js)"', html)
        assert static is not None
        async with session.get(static[1]) as response:
            assert response.status == 200 and "xterm" in await response.text()
        monkeypatch.setattr(dashboard, "MAX_SESSIONS", 0)
        for path in ("/", "/dashboard/ws"):
            async with session.get(base + path) as response:
                assert response.status == 503
                assert "sessions open, its limit" in await response.text()


def test_session_command_runs_this_interpreters_qm_dash() -> None:
    command = dashboard.dashboard_command("127.0.0.1:5555")
    assert command.startswith("exec ")
    assert command.endswith(" -m queue_manager.cli dash --server 127.0.0.1:5555")
