"""``qm schedules …``: repeatable schedules that add a job to a queue on a cron expression or an interval."""

from __future__ import annotations

import argparse
from datetime import datetime

from queue_manager.cli.common import (
    UINT32_MAX,
    UsageError,
    add_attempts_and_timeout,
    bounded_int,
    client,
    job_options,
    milliseconds,
    option,
    plain,
    priority_level,
    read_data,
    show,
)
from queue_manager.schedules import CATCH_UP_POLICIES

_COLUMNS = ("queue_name", "id", "cron", "every", "timezone", "job_name", "next_run_at", "run_count")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``schedules`` to the ``qm`` parser."""
    schedules = commands.add_parser(
        "schedules", help="repeatable schedules (cron or interval)"
    ).add_subparsers(metavar="ACTION", required=True)
    add = schedules.add_parser("add", help="create a schedule, or replace the queue's schedule of this id")
    add.add_argument("queue")
    add.add_argument("schedule_id", metavar="ID")
    add.add_argument("job_name", metavar="JOB_NAME", help="name of each run's job")
    # Both flags at once are refused by argparse, neither by _add: each is a usage error (exit status 2)
    # naming the flags, where the Python API's ValueError came back as a failed call (exit status 1).
    when = add.add_mutually_exclusive_group()
    when.add_argument(
        "--cron", help="cron expression: 5 fields, or 6 with seconds first (exclusive with --every)"
    )
    when.add_argument(
        "--every",
        type=milliseconds(1000),
        help="interval, at least 1s (30s, 5m, 1h; bare number: ms; exclusive with --cron)",
    )
    option(add, "--timezone", help="IANA time zone of --cron, such as Europe/Paris (default UTC)")
    option(add, "--data", default=None, help="job data as JSON (@FILE reads a file, @- stdin)")
    option(add, "--start", help="no run before this ISO 8601 time (no offset: local time)")
    option(add, "--end", help="no run after this ISO 8601 time")
    option(
        add,
        "--limit",
        type=bounded_int(0, UINT32_MAX, notes={0: "no limit"}),
        help=f"most runs in all, 1 to {UINT32_MAX} (default and 0: no limit)",
    )
    option(
        add,
        "--catch-up",
        choices=CATCH_UP_POLICIES,
        default="skip",
        help="runs missed while no server ran: skip them, run one for all, or run all (at most 1000)",
    )
    option(
        add,
        "--priority",
        type=priority_level,
        help="job priority: critical, high, normal, low, background or 1-5",
    )
    add_attempts_and_timeout(add, of=" of each job")
    add.set_defaults(command="schedules add", handler=_add)
    get = schedules.add_parser("get", help="show one schedule")
    get.add_argument("queue")
    get.add_argument("schedule_id", metavar="ID")
    get.set_defaults(command="schedules get", handler=_get)
    listing = schedules.add_parser("list", help="list the schedules of a queue, or of every queue")
    listing.add_argument("queue", nargs="?", default=None)
    listing.set_defaults(command="schedules list", handler=_list)
    delete = schedules.add_parser("delete", help="delete a schedule (the jobs it added stay)")
    delete.add_argument("queue")
    delete.add_argument("schedule_id", metavar="ID")
    delete.set_defaults(command="schedules delete", handler=_delete)


def _add(args: argparse.Namespace) -> int:
    if args.cron is None and args.every is None:
        raise UsageError(
            "schedules add needs --cron EXPR (such as '0 3 * * *') or --every DURATION (such as 5m): "
            "give one of the two"
        )
    options = job_options(args, ("priority", "attempts", "timeout"))
    with client(args) as qm:
        schedule = qm.add_schedule(
            args.queue,
            args.schedule_id,
            cron=args.cron,
            every=args.every,
            timezone=args.timezone,
            job_name=args.job_name,
            data=read_data(args.data),
            options=options or None,
            start=_time(args.start, "--start"),
            end=_time(args.end, "--end"),
            limit=args.limit or None,
            catch_up=args.catch_up,
        )
    show(args, plain(schedule))
    return 0


def _get(args: argparse.Namespace) -> int:
    with client(args) as qm:
        schedule = qm.get_schedule(args.queue, args.schedule_id)
    show(args, plain(schedule))
    return 0


def _list(args: argparse.Namespace) -> int:
    with client(args) as qm:
        schedules = qm.list_schedules(args.queue)
    show(args, [plain(s) for s in schedules], columns=_COLUMNS)
    return 0


def _delete(args: argparse.Namespace) -> int:
    with client(args) as qm:
        schedule = qm.delete_schedule(args.queue, args.schedule_id)
    show(args, plain(schedule))
    return 0


def _time(text: str | None, flag: str) -> datetime | None:
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"{flag}: {text!r} is not an ISO 8601 time such as 2030-01-31T08:00:00+01:00"
        ) from None
