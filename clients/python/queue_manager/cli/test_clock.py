"""``qm test-server`` (a server on a test clock, from the server package; handled before parsing) and
``qm clock advance DURATION`` / ``qm clock now``: moving and reading that server's clock
(TestClockService; docs/testing.md)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from queue_manager.cli.common import client, show, span_ms
from queue_manager.test_clock import MAX_ADVANCE_S


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``test-server`` (handled before parsing) and ``clock`` to the ``qm`` parser."""
    commands.add_parser(
        "test-server",
        help="run a private server on a test clock for a test suite (see `qm test-server --help`)",
        add_help=False,
    )
    clock = commands.add_parser("clock", help="move or read the clock of a `qm test-server`")
    actions = clock.add_subparsers(title="actions", metavar="ACTION", required=True)
    advance = actions.add_parser(
        "advance", help="move the clock forward; returns once what fell due (delays, schedules…) is done"
    )
    advance.add_argument(
        "amount",
        metavar="DURATION",
        type=span_ms(0, MAX_ADVANCE_S * 1000),
        help="how far: 90s, 5m, 1h30m, 2d (a bare number is ms)",
    )
    advance.set_defaults(command="clock advance", handler=_advance)
    now = actions.add_parser("now", help="the clock's time: real time plus every advance so far")
    now.set_defaults(command="clock now", handler=_now)


def test_server(argv: list[str]) -> int:
    """Runs ``qm test-server`` (queue_manager_server.test_server), which the server package provides."""
    try:
        module = importlib.import_module("queue_manager_server.test_server")
    except ImportError:
        print(
            "qm test-server: the server is not installed; install the queue-manager-server package "
            "(pip install -e server/ in a checkout)",
            file=sys.stderr,
        )
        return 2
    run: Callable[[Sequence[str]], int] = module.main
    return run(argv)


def _advance(args: argparse.Namespace) -> int:
    with client(args) as qm:
        now = qm.advance_test_clock(args.amount / 1000)
    show(args, {"now": now.isoformat()})
    return 0


def _now(args: argparse.Namespace) -> int:
    with client(args) as qm:
        now = qm.test_clock_now()
    show(args, {"now": now.isoformat()})
    return 0
