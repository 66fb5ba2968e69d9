"""``qm workers quiet|resume|stop ID`` and ``qm workers concurrency ID N``: controlling one connected worker
(``ControlWorker``), on whichever server holds its stream."""

from __future__ import annotations

import argparse

from queue_manager.checks import MAX_CONCURRENCY
from queue_manager.cli.common import bounded_int, client, plain, show

# Action -> its help.
_ACTIONS = {
    "quiet": "deliver nothing more to the worker until resumed; it runs what it holds and stays connected",
    "resume": "deliver to a quiet worker again",
    "stop": "the worker finishes or releases what it holds, then exits its run (it does not reconnect)",
}


def add_control_parsers(workers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``quiet``, ``resume``, ``stop`` and ``concurrency`` to ``qm workers``."""
    for action, help_text in _ACTIONS.items():
        parser = workers.add_parser(action, help=help_text)
        parser.add_argument("worker_id", metavar="ID", help="the worker's id (`qm workers list`)")
        parser.set_defaults(command=f"workers {action}", handler=_control, action=action)
    resize = workers.add_parser("concurrency", help="change how many jobs the worker runs at once, live")
    resize.add_argument("worker_id", metavar="ID", help="the worker's id (`qm workers list`)")
    resize.add_argument(
        "concurrency", metavar="N", type=bounded_int(1, MAX_CONCURRENCY, unit="jobs"), help="jobs at once"
    )
    resize.set_defaults(command="workers concurrency", handler=_control, action="concurrency")


def _control(args: argparse.Namespace) -> int:
    with client(args) as qm:
        done = qm.control_worker(args.worker_id, args.action, getattr(args, "concurrency", 0))
    show(args, {"worker_id": args.worker_id, **plain(done)})
    return 0
