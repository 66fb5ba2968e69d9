"""The status line: whether the metrics stream is live, and why not when it is down."""

from __future__ import annotations

from rich.text import Text

from queue_manager_tui.format import fmt_time, safe
from queue_manager_tui.state import DashboardState, Link
from queue_manager_tui.widgets.live_text import LiveText

__all__ = ["StatusLine", "status_text"]


class StatusLine(LiveText):
    """One line under the header; red while the server is unreachable."""

    def show(self, state: DashboardState, address: str, *, read_only: bool) -> None:
        """Redraws from the connection state."""
        self.set_class(state.connection.link is Link.DOWN, "-down")
        self.set_class(state.connection.link is Link.LIVE, "-live")
        self.show_text(status_text(state, address, read_only=read_only))


def status_text(state: DashboardState, address: str, *, read_only: bool) -> Text:
    """The status line's text for a connection state."""
    connection = state.connection
    text = Text()
    if read_only:
        text.append("read-only  ·  ", style="bold")
    if connection.link is Link.LIVE:
        text.append("● live ", style="bold")
        text.append(f"{address}  ·  {len(state.queues)} queues  ·  {len(state.workers)} workers")
        text.append(f"  ·  snapshot {fmt_time(state.time)} UTC")
    elif connection.link is Link.CONNECTING:
        text.append(f"○ connecting to {address}…", style="bold")
    else:
        text.append("✘ disconnected ", style="bold")
        text.append(f"from {address}")
        if connection.retry_in > 0:
            text.append(f"  ·  retry in {connection.retry_in:.1f}s (attempt {connection.attempts})")
        else:
            text.append(f"  ·  reconnecting (attempt {connection.attempts + 1})…")
        if state.time is not None:
            text.append(f"  ·  figures of {fmt_time(state.time)} UTC")
        text.append(f"  ·  {safe(connection.error)}")
    return text
