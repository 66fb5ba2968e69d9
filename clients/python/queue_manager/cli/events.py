"""``qm events QUEUE``: a queue's job events, live, one line each (docs/events.md)."""

from __future__ import annotations

import argparse
import json

from queue_manager.cli.common import bounded_int, client, plain
from queue_manager.errors import NotFoundError
from queue_manager.events import JobEvent, JobEventType

# `qm events push` and `qm events triggers` with nothing after them follow a queue of that name
# (cli/external_events.py), so a missing key reads as a missing queue: the refusal names both readings.
_EXTERNAL = {
    "push": "push an external event, give its key: qm events push KEY",
    "triggers": "manage event triggers, give an action: qm events triggers list (or set, delete)",
}


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``events QUEUE [--state S]… [--name N]… [--count N]``."""
    events = commands.add_parser(
        "events",
        help="follow a queue's job events live (added, active, completed, failed…), one line each",
        description="Prints a queue's job events as they happen, one line each (-o json: one JSON object "
        "a line), until interrupted or --count events were printed. A live feed: what happened before, or "
        "while the stream was down, is not replayed (qm jobs get shows a job's state).",
        # `qm --help` lists the two commands under `events`; a reader of `qm events --help` looks here.
        epilog="Also under qm events: 'qm events push KEY' pushes an external event (the jobs waiting for "
        "its key go on), and 'qm events triggers set|list|delete' manages event triggers (a job added for "
        "every pushed event whose key matches); each has its own --help.",
    )
    events.add_argument("queue", help="the queue")
    events.add_argument(
        "--state",
        dest="states",
        action="append",
        choices=[t.value for t in JobEventType],
        metavar="STATE",
        help="only events of this type (repeatable): " + ", ".join(t.value for t in JobEventType),
    )
    events.add_argument("--name", dest="names", action="append", help="only jobs with this name (repeatable)")
    events.add_argument(
        "--count", type=bounded_int(1), default=None, help="exit after printing this many events"
    )
    events.set_defaults(command="events", handler=_events)


def _events(args: argparse.Namespace) -> int:
    printed = 0
    with client(args) as qm:
        stream = qm.watch_job_events(args.queue, types=args.states, job_names=args.names)
        try:
            for ev in stream:
                print(_line(args, ev), flush=True)
                printed += 1
                if args.count is not None and printed >= args.count:
                    break
        except KeyboardInterrupt:
            return 130
        except NotFoundError as exc:
            if args.queue not in _EXTERNAL or printed:
                raise
            raise NotFoundError(f"{exc.message}; or, to {_EXTERNAL[args.queue]}") from None
        finally:
            stream.close()
    return 0


def _line(args: argparse.Namespace, ev: JobEvent) -> str:
    if args.output == "json":
        return json.dumps(plain(ev), ensure_ascii=False, separators=(",", ":"))
    kind = ev.type.value if ev.type is not None else "unknown"
    parts = [ev.time.isoformat(timespec="milliseconds"), f"{kind:<9}", ev.job_id, ev.job_name]
    if ev.attempt:
        parts.append(f"attempt={ev.attempt}")
    if ev.run_at is not None:
        parts.append(f"run_at={ev.run_at.isoformat(timespec='milliseconds')}")
    if ev.progress:
        parts.append(f"progress={ev.progress}")
    if ev.failed_reason:
        parts.append(f"reason={json.dumps(ev.failed_reason, ensure_ascii=False)}")
    return "  ".join(parts)
