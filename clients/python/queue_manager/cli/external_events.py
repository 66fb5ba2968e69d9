"""``qm events push KEY`` (push an external event) and ``qm events triggers set|list|delete`` (the event
triggers): docs/jobs.md "Waiting for an external event".

``qm events QUEUE`` follows a queue's job events (cli/events.py), another thing sharing the word: `route`
rewrites ``events push X`` and ``events triggers X`` into these commands before parsing, so a queue named
``push`` or ``triggers`` is still followed with ``qm events push`` alone.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from queue_manager.cli.common import (
    add_attempts_and_timeout,
    client,
    job_options,
    option,
    plain,
    priority_level,
    read_data,
    show,
)

# What `route` turns ``events <word> ...`` into: the commands' own names, as the usage lines show them.
_WORDS = {"push": "events push", "triggers": "events triggers"}


def route(argv: Sequence[str]) -> list[str]:
    """``qm`` arguments with ``events push ARG…`` / ``events triggers ARG…`` made one command word."""
    out = list(argv)
    for i, word in enumerate(out[:-2]):
        if word == "events" and out[i + 1] in _WORDS:
            return [*out[:i], _WORDS[out[i + 1]], *out[i + 2 :]]
    return out


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``events push`` and ``events triggers`` to the ``qm`` parser."""
    push = commands.add_parser(
        "events push",
        help="push an external event: the jobs waiting for its key wake, its triggers add their jobs",
    )
    push.add_argument("key", metavar="KEY", help="the event's key")
    option(push, "--data", default=None, help="the event's data as JSON (@FILE reads a file, @- stdin)")
    option(
        push,
        "--event-id",
        default="",
        help="the event's id: a push repeating one pushed in the last 24 hours changes nothing",
    )
    push.set_defaults(command="events push", handler=_push)

    triggers = commands.add_parser(
        "events triggers", help="event triggers: a job added for every pushed event whose key matches"
    ).add_subparsers(metavar="ACTION", required=True)
    put = triggers.add_parser("set", help="create an event trigger, or replace the trigger of this id")
    put.add_argument("trigger_id", metavar="ID")
    put.add_argument("key_pattern", metavar="PATTERN", help="an event key, or a prefix ending in * (order:*)")
    put.add_argument("queue")
    put.add_argument("job_name", metavar="JOB_NAME", help="name of each event's job (its data: the event's)")
    option(
        put,
        "--priority",
        type=priority_level,
        help="job priority: critical, high, normal, low, background or 1-5",
    )
    add_attempts_and_timeout(put, of=" of each job")
    put.set_defaults(command="events triggers set", handler=_set)
    listing = triggers.add_parser("list", help="list the event triggers (of one queue, or all)")
    listing.add_argument("queue", nargs="?", default=None)
    listing.set_defaults(command="events triggers list", handler=_list)
    delete = triggers.add_parser("delete", help="delete an event trigger (the jobs it added stay)")
    delete.add_argument("trigger_id", metavar="ID")
    delete.set_defaults(command="events triggers delete", handler=_delete)


def _push(args: argparse.Namespace) -> int:
    with client(args) as qm:
        pushed = qm.push_event(args.key, read_data(args.data), event_id=args.event_id)
    if args.output == "json":
        show(args, plain(pushed))
        return 0
    note = " (a repeat of its event id: nothing changed)" if pushed.duplicate else ""
    print(f"pushed {args.key}: woke {len(pushed.woken)} job(s), added {len(pushed.added)}{note}")
    for what, refs in (("woke", pushed.woken), ("added", pushed.added)):
        for ref in refs:
            print(f"  {what} {ref.queue_name}/{ref.job_id}")
    return 0


def _set(args: argparse.Namespace) -> int:
    options = job_options(args, ("priority", "attempts", "timeout"))
    with client(args) as qm:
        trigger = qm.upsert_event_trigger(
            args.trigger_id, args.key_pattern, args.queue, args.job_name, options or None
        )
    show(args, plain(trigger))
    return 0


def _list(args: argparse.Namespace) -> int:
    with client(args) as qm:
        triggers = qm.list_event_triggers(args.queue)
    show(args, [plain(t) for t in triggers], ["id", "key_pattern", "queue_name", "job_name", "updated_at"])
    return 0


def _delete(args: argparse.Namespace) -> int:
    with client(args) as qm:
        trigger = qm.delete_event_trigger(args.trigger_id)
    show(args, plain(trigger))
    return 0
