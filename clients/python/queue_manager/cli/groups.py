"""``qm groups …``: a queue's fairness groups (``qm add --group``), the limits of one group, pausing one."""

from __future__ import annotations

import argparse
from typing import Any

from queue_manager.cli.common import (
    UINT32_MAX,
    UsageError,
    add_pause_time,
    bounded_int,
    client,
    option,
    plain,
    print_table,
    rate,
    rate_burst,
    rate_text,
    show,
    size_limit,
)
from queue_manager.cli.queues import maintenance_window
from queue_manager.groups import GroupInfo
from queue_manager.maintenance import windows_from_proto
from queue_manager.options import RateLimit, validate_group

_GROUP_COLUMNS = ("group", "waiting", "active", "paused", "concurrency", "rate", "max_size", "own_limits")


def group_name(text: str) -> str:
    """An argparse ``type``: a fairness group name, 1 to 128 characters without control characters."""
    try:
        return validate_group(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``groups`` to the ``qm`` parser."""
    groups = commands.add_parser(
        "groups", help="a queue's fairness groups (qm add --group): their limits, pausing one"
    ).add_subparsers(metavar="ACTION", required=True)
    listing = groups.add_parser(
        "list", help="list a queue's groups by name: their waiting and active jobs, whether paused, limits"
    )
    listing.add_argument("queue")
    option(
        listing,
        "--page-size",
        type=bounded_int(1, 1000),
        default=100,
        help="groups per page, 1 to 1000 (default 100)",
    )
    option(listing, "--page-token", default="", help="token of the page to read")
    listing.add_argument("--all", action="store_true", help="read every page")
    listing.set_defaults(command="groups list", handler=_list)
    limit = groups.add_parser(
        "limit",
        help="give one group limits of its own (they replace the queue's group limits for it), or --clear",
        description="Sets GROUP's own limits and maintenance windows to exactly the ones given: a limit or "
        "window left out is none for this group (the queue's --group-concurrency, --group-rate and "
        "--group-max-size no longer apply to it). --clear removes the group's own limits and windows, so the "
        "queue's apply again. The group need not have jobs yet.",
    )
    limit.add_argument("queue")
    limit.add_argument("group", type=group_name)
    option(
        limit,
        "--concurrency",
        type=bounded_int(0, UINT32_MAX, notes={0: "no limit"}, off=True),
        help="most jobs of the group active at once, all workers (0 or off: no limit)",
    )
    option(
        limit,
        "--rate",
        type=rate,
        metavar="MAX/DURATION",
        help="rate limit of the group's job starts: 10/1s, 100/1m, 5/250ms (off: none)",
    )
    option(
        limit,
        "--rate-burst",
        type=rate_burst("--rate"),
        metavar="N",
        help="how many of the group's jobs may start at once after it was idle (0: the default, a tenth of "
        "--rate's max)",
    )
    option(
        limit,
        "--max-size",
        type=size_limit,
        metavar="N",
        help="most jobs of the group waiting; an add beyond it is refused (0 or off: no limit)",
    )
    option(
        limit,
        "--maintenance-window",
        action="append",
        type=maintenance_window,
        metavar="'CRON|DURATION[|ZONE]'",
        help="a recurring window in which none of the group's jobs starts, such as "
        "'0 2 * * SUN|2h|Europe/Paris' (as qm queues register takes the queue's); repeat for several",
    )
    limit.add_argument(
        "--clear",
        action="store_true",
        help="remove the group's own limits and windows: the queue's apply again",
    )
    limit.set_defaults(command="groups limit", handler=_limit)
    pause = groups.add_parser(
        "pause",
        help="pause one group: its jobs are still added, but none starts until it is resumed",
        description="Pauses GROUP of QUEUE: its jobs are still added, but none starts until "
        "'qm groups resume'; its active jobs run on and the queue's other groups keep taking their turns. "
        "The group need not have jobs yet.",
    )
    resume = groups.add_parser(
        "resume", help="resume a paused group: its waiting jobs take their turns again at once"
    )
    add_pause_time(pause, "group")
    for action, sub in (("pause", pause), ("resume", resume)):
        sub.add_argument("queue")
        sub.add_argument("group", type=group_name)
        sub.set_defaults(command=f"groups {action}", handler=_pause_or_resume)


def _list(args: argparse.Namespace) -> int:
    if args.all and args.page_token:
        raise UsageError("--all reads every page from the first: leave out --page-token")
    found: list[GroupInfo] = []
    with client(args) as qm:
        page, token = qm.list_groups(args.queue, args.page_size, args.page_token)
        found += page
        while args.all and token:
            page, token = qm.list_groups(args.queue, args.page_size, token)
            found += page
    if args.output == "json":
        show(args, {"groups": [plain(g) for g in found], "next_page_token": token})
        return 0
    print_table([_row(g) for g in found], _GROUP_COLUMNS)
    if token:
        print(f"next page: --page-token {token}")
    return 0


def _limit(args: argparse.Namespace) -> int:
    if args.rate_burst is not None and not (args.rate and args.rate[0]):
        raise UsageError("--rate-burst needs --rate: the burst is the capacity of a rate limit")
    flags = (args.concurrency, args.rate, args.max_size, args.maintenance_window)
    given = any(v is not None for v in flags)
    if args.clear and given:
        raise UsageError(
            "--clear removes the group's own limits: give it without --concurrency, --rate, --max-size and "
            "--maintenance-window"
        )
    if not args.clear and not given:
        raise UsageError(
            "give --concurrency, --rate, --max-size and/or --maintenance-window (the group's own limits), "
            "or --clear"
        )
    with client(args) as qm:
        if args.clear:
            info = qm.clear_group_limits(args.queue, args.group)
        else:
            most, window = args.rate or (0, 0)
            limit = RateLimit(most, window, args.rate_burst or 0) if most else None
            conc, size = args.concurrency or 0, args.max_size or 0
            windows = windows_from_proto(args.maintenance_window or [])
            info = qm.set_group_limits(args.queue, args.group, conc, limit, size, windows)
    if args.output == "json":
        show(args, plain(info))
    else:
        print_table([_row(info)], _GROUP_COLUMNS)
    return 0


def _pause_or_resume(args: argparse.Namespace) -> int:
    with client(args) as qm:
        if args.command == "groups pause":
            info = qm.pause_group(args.queue, args.group, args.resume_after, args.resume_at)
        else:
            info = qm.resume_group(args.queue, args.group)
    if args.output == "json":
        show(args, plain(info))
    else:
        print_table([_row(info)], _GROUP_COLUMNS)
    return 0


def _row(info: GroupInfo) -> dict[str, Any]:
    """A group as a table row: its limits as the flags take them (0 and "" mean none)."""
    limits = plain(info.limits)
    paused = "yes" if info.paused else ""
    held = []
    if info.paused_until is not None:
        held.append(f"until {info.paused_until.isoformat()}")
    if info.maintenance_until is not None:
        held.append(f"in maintenance until {info.maintenance_until.isoformat()}")
    if held:
        paused = "; ".join(held)
    return {
        "group": info.name,
        "waiting": info.waiting,
        "active": info.active,
        "paused": paused,
        "concurrency": limits["concurrency"] or "",
        "rate": rate_text(limits["rate_limit"]),
        "max_size": limits["max_size"] or "",
        "own_limits": "yes" if info.custom_limits else "",
    }
