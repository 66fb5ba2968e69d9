"""``qm dlq …``: dead-letter queues: listing the copies with why each job died, and redriving them to their
original queues (docs/durability.md "Retries and the dead-letter queue")."""

from __future__ import annotations

import argparse
from typing import Any

from queue_manager.cli.common import (
    UsageError,
    bounded_int,
    client,
    job_state,
    option,
    plain,
    print_table,
    read_data,
    show,
)
from queue_manager.dead_letters import DEAD_LETTER_QUEUE, KEEP_DATA, DeadLetter

_COLUMNS = ("id", "original_queue", "original_name", "attempts_made", "failure_reason", "dead_at")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``dlq`` to the ``qm`` parser."""
    dlq = commands.add_parser("dlq", help="list and redrive dead-letter copies").add_subparsers(
        metavar="ACTION", required=True
    )
    listing = dlq.add_parser("list", help="list dead-letter copies: each job's queue, name and why it died")
    _dead_letter_queue(listing)
    option(listing, "--queue", dest="original", metavar="QUEUE", help="only copies of jobs of this queue")
    option(
        listing,
        "--state",
        default="waiting",
        type=job_state(),
        help="the copies' state in the dead-letter queue",
    )
    option(listing, "--page-size", type=bounded_int(1, 1000), default=100, help="copies per page, 1 to 1000")
    option(listing, "--page-token", default="", help="token of the page to read")
    listing.add_argument("--all", action="store_true", help="read every page")
    listing.set_defaults(command="dlq list", handler=_list)

    redrive = dlq.add_parser(
        "redrive",
        help="send dead-letter copies back to their original queues: a failed job runs again, one retention "
        "removed is added anew; each copy leaves the dead-letter queue",
    )
    _dead_letter_queue(redrive)
    option(
        redrive,
        "--queue",
        dest="original",
        metavar="QUEUE",
        help="only copies of jobs of this queue (default: every queue's)",
    )
    option(
        redrive,
        "--limit",
        type=bounded_int(1, 2**32 - 1),
        default=None,
        help="at most this many copies (default: every one)",
    )
    option(
        redrive,
        "--id",
        dest="ids",
        metavar="ID",
        action="append",
        default=None,
        help="only this copy (its id in the dead-letter queue, QUEUE:JOB_ID); repeat for more",
    )
    option(
        redrive,
        "--replace-data",
        action="store_true",
        help="a failed job runs with the copy's original_data (as edited with qm jobs update-data) rather "
        "than the data it failed with",
    )
    option(
        redrive,
        "--data",
        default=None,
        help="with one --id: the job runs with this data (JSON; @FILE reads a file, @- stdin) instead, set "
        "in the same step as the redrive: edit and requeue (a copy that stays keeps its data)",
    )
    redrive.set_defaults(command="dlq redrive", handler=_redrive)


def _dead_letter_queue(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "dead_letter_queue",
        nargs="?",
        default=DEAD_LETTER_QUEUE,
        metavar="DLQ",
        help=f"the dead-letter queue (default {DEAD_LETTER_QUEUE})",
    )


def _list(args: argparse.Namespace) -> int:
    copies: list[DeadLetter] = []
    token = args.page_token
    with client(args) as qm:
        while True:
            page, token = qm.list_dead_letters(args.dead_letter_queue, args.state, args.page_size, token)
            copies += [c for c in page if args.original is None or c.original_queue == args.original]
            if not (args.all and token):
                break
    rows: list[dict[str, Any]] = [plain(c) for c in copies]
    if args.output == "json":
        show(args, {"dead_letters": rows, "next_page_token": token})
        return 0
    print_table(rows, _COLUMNS)
    if token:
        print(f"next page: --page-token {token}")
    return 0


def _redrive(args: argparse.Namespace) -> int:
    data = KEEP_DATA
    if args.data is not None:
        if len(args.ids or ()) != 1:
            raise UsageError(
                f"--data replaces one copy's data: give exactly one --id ({len(args.ids or ())} given)"
            )
        data = read_data(args.data)
    with client(args) as qm:
        result = qm.redrive_dead_letters(
            args.dead_letter_queue,
            original_queue=args.original,
            limit=args.limit,
            job_ids=args.ids,
            replace_data=args.replace_data,
            data=data,
        )
    if args.output == "json":
        show(args, plain(result))
        return 0
    rows = [plain(q) for q in result.queues.values()]
    print_table(rows, ("queue_name", "count", "retried", "added", "unchanged"))
    print(f"redriven: {result.count}")
    for copy_id, reason in result.skipped.items():
        print(f"skipped {copy_id}: {reason}")
    for queue in result.missing_queues:
        print(f"queue {queue!r} is not registered: its copies stay in {args.dead_letter_queue}")
    return 0
