"""Queue Manager dashboard: a Textual app (`qm dash`) fed by the server's metrics stream.

Layout: `data` talks to the server (the only module that uses the client), `state` keeps what the
snapshots say, `controls` builds the confirmations, `format` formats text; none of them imports Textual.
`app` holds the tabs and keys, `widgets/` the views (one per module), `screens/` the dialogs, and
`dashboard.tcss` the layout.
"""

from __future__ import annotations

from queue_manager_tui.app import DashboardApp
from queue_manager_tui.data import ClientSource, DataSource, connect

__all__ = ["ClientSource", "DashboardApp", "DataSource", "connect", "run"]


def run(address: str | None = None, *, read_only: bool = False, interval: float = 1.0) -> int:
    """Runs the dashboard in this terminal until the user quits.

    Args:
        address: Server ``host:port``; default ``QM_SERVER`` or ``localhost:50051``.
        read_only: Hide and disable the controls.
        interval: Seconds between metrics snapshots.

    Returns:
        The exit status (0).
    """
    DashboardApp(connect(address), read_only=read_only, interval=interval).run()
    return 0
