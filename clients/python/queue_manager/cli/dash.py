"""``qm dash``: the live dashboard (Textual), from the queue-manager-tui package, imported only when run.

The client package does not depend on Textual: remote workers install only grpcio and protobuf. When the
dashboard package is missing, ``qm dash`` says how to install it instead of failing with a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable

from queue_manager.cli.common import option

_TRUE = frozenset({"1", "true", "yes", "on"})
# The server accepts snapshot intervals from 100 ms to 60 s (WatchMetricsRequest.interval).
_MIN_INTERVAL, _MAX_INTERVAL = 0.1, 60.0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``dash`` to the ``qm`` parser."""
    dash = commands.add_parser(
        "dash",
        help="live dashboard: queues, jobs, workers, workflows and controls (Textual)",
        description="A terminal dashboard fed by the server's metrics stream. Keys: ? help, / search, "
        "q back, 1-4 views, ctrl+p command palette.",
    )
    # SUPPRESS keeps `qm --server X dash` working: the value given before the command stands.
    dash.add_argument(
        "--server",
        default=argparse.SUPPRESS,
        help="server address host:port [env QM_SERVER, default localhost:50051]",
    )
    dash.add_argument(
        "--read-only",
        action="store_true",
        default=os.environ.get("QM_READ_ONLY", "").strip().lower() in _TRUE,
        help="hide the controls (pause, clean, retry, remove, promote, cancel) [env QM_READ_ONLY]",
    )
    option(
        dash,
        "--interval",
        type=_interval,
        default=1.0,
        help="seconds between metrics snapshots (0.1 to 60)",
        env="QM_DASH_INTERVAL",
    )
    dash.set_defaults(command="dash", handler=_cmd_dash)


def _interval(text: str) -> float:
    """An argparse ``type``: seconds between snapshots, in the server's range. Checked while parsing, so that
    a bad QM_DASH_INTERVAL is refused naming the variable (common.option), not the flag nobody gave."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not _MIN_INTERVAL <= seconds <= _MAX_INTERVAL:  # NaN too
        raise argparse.ArgumentTypeError(
            f"must be from {_MIN_INTERVAL:g} to {_MAX_INTERVAL:g} seconds, got {str(text)!r}"
        )
    return seconds


def _cmd_dash(args: argparse.Namespace) -> int:
    try:
        tui = importlib.import_module("queue_manager_tui")
    except ImportError as exc:
        print(
            f"qm dash: the dashboard is not installed ({exc}); install the queue-manager-tui package "
            "(pip install -e tui/ in a checkout)",
            file=sys.stderr,
        )
        return 2
    run: Callable[..., int] = tui.run
    return run(args.server, read_only=args.read_only, interval=args.interval)
