"""``qm queues metrics`` and ``qm workers list``: what the queues and the workers are doing (``qm workers
quiet|resume|stop|concurrency``: cli/worker_control.py)."""

from __future__ import annotations

import argparse
from typing import Any

from queue_manager.cli.common import client, plain, print_table, show
from queue_manager.cli.worker_control import add_control_parsers

# The columns of `qm queues metrics` for every queue (one row each); -o json shows every field.
_ALL_COLUMNS = (
    "queue_name",
    "waiting",
    "active",
    "delayed",
    "failed",
    "is_paused",
    "completed_per_second",
    "error_rate",
    "average_processing_time",
    "p95_processing_time",
    "oldest_waiting_age",
    "workers",
    "free_capacity",
    "groups",
    "memory_bytes",
)
_BUCKET_COLUMNS = ("start_time", "added", "completed", "failed", "average_processing_time")
_LEVEL_COLUMNS = ("priority", "waiting", "oldest_waiting_age")
_WORKER_COLUMNS = (
    "worker_id",
    "state",
    "tier",
    "host",
    "language",
    "queues",
    "concurrency",
    "in_flight",
    "cpu_percent",
    "memory_bytes",
    "last_heartbeat_time",
    "server_id",
)


def add_metrics_parser(queues: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``queues metrics [QUEUE] [--history]``."""
    metrics = queues.add_parser(
        "metrics", help="a queue's metrics (counts, throughput, times, workers); every queue without QUEUE"
    )
    metrics.add_argument("queue", nargs="?", help="the queue (default: one row per queue)")
    metrics.add_argument("--history", action="store_true", help="also the last hour, one row a minute")
    metrics.set_defaults(command="queues metrics", handler=_metrics)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``workers list`` (and the control actions) to the ``qm`` parser."""
    workers = commands.add_parser("workers", help="connected workers").add_subparsers(
        metavar="ACTION", required=True
    )
    listing = workers.add_parser(
        "list", help="workers connected to any server, with their load and CPU/memory"
    )
    listing.add_argument("--queue", help="only workers of this queue")
    listing.set_defaults(command="workers list", handler=_workers)
    add_control_parsers(workers)


def _metrics(args: argparse.Namespace) -> int:
    with client(args) as qm:
        if args.queue is None:
            rows = [plain(m) for m in qm.get_all_metrics(include_history=args.history)]
            if args.output != "json":  # one row a queue: the levels are in `qm queues metrics QUEUE`
                rows = [{k: v for k, v in r.items() if k != "levels"} for r in rows]
        else:
            rows = [plain(qm.get_queue_metrics(args.queue, include_history=args.history))]
    if args.output == "json":
        show(args, rows if args.queue is None else rows[0])
    elif args.queue is None:
        print_table([_rounded(r) for r in rows], _ALL_COLUMNS)
    else:
        _show_one(args, rows[0])
    return 0


def _show_one(args: argparse.Namespace, metrics: dict[str, Any]) -> None:
    history = metrics.pop("history")
    levels = metrics.pop("levels")
    show(args, _rounded(metrics))
    print()  # the ready jobs per priority (a queue's priority bounds show here)
    print_table(levels, _LEVEL_COLUMNS)
    if args.history:
        print()
        print_table(history, _BUCKET_COLUMNS)


def _rounded(row: dict[str, Any]) -> dict[str, Any]:
    """Rates and ratios to 3 decimals for reading (durations are already whole milliseconds)."""
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}


def _workers(args: argparse.Namespace) -> int:
    with client(args) as qm:
        workers = [plain(w) for w in qm.list_workers(args.queue)]
    if args.output == "json":
        show(args, workers)
    else:
        rows = [
            {**w, "queues": ",".join(w["queues"]), "cpu_percent": round(w["cpu_percent"], 1)} for w in workers
        ]
        print_table(rows, _WORKER_COLUMNS)
    return 0
