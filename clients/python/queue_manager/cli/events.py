"""``qm events QUEUE``: a queue's job events, live, one line each (docs/events.md); and
``qm events push KEY``, which pushes an external event (docs/jobs.md "Waiting for an external event"), a
different thing that shares the command's name."""

from __future__ import annotations

import argparse
import json

from queue_manager.cli.common import UsageError, bounded_int, client, plain, read_data, show
from queue_manager.events import JobEvent, JobEventType


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``events QUEUE [--state S]… [--name N]… [--count N]``."""
    events = commands.add_parser(
        "events",
        help="follow a queue's job events live (added, active, completed, failed…), one line each",
        description="Prints a queue's job events as they happen, one line each (-o json: one JSON object "
        "a line), until interrupted or --count events were printed. A live feed: what happened before, or "
        "while the stream was down, is not replayed (qm jobs get shows a job's state).",
    )
    events.add_argument("queue", help="the queue; or the word push, then KEY: push an external event")
    events.add_argument(
        "key",
        nargs="?",
        metavar="KEY",
        help="with push: the external event's key; the jobs waiting for it (JobContext.wait_for_event) wake",
    )
    events.add_argument("--data", default=None, help="with push: the event's data as JSON (@FILE, @- stdin)")
    events.add_argument(
        "--event-id",
        default="",
        help="with push: the event's id; a push repeating one pushed in the last 24 hours changes nothing",
    )
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
    if args.key is not None:
        return _push(args)
    if args.data is not None or args.event_id:
        raise UsageError("--data and --event-id go with `qm events push KEY`")
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


def _push(args: argparse.Namespace) -> int:
    """``qm events push KEY [--data JSON] [--event-id ID]``: prints the jobs the event woke."""
    if args.queue != "push":
        raise UsageError(
            f"unexpected {args.key!r}: follow a queue with `qm events QUEUE`, push with `qm events push KEY`"
        )
    with client(args) as qm:
        pushed = qm.push_event(args.key, read_data(args.data), event_id=args.event_id)
    if args.output == "json":
        show(args, plain(pushed))
        return 0
    note = " (a repeat of its event id: nothing changed)" if pushed.duplicate else ""
    print(f"pushed {args.key}: woke {len(pushed.woken)} job(s){note}")
    for ref in pushed.woken:
        print(f"  {ref.queue_name}/{ref.job_id}")
    return 0
