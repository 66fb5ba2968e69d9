"""``qm queues …``: registering and administering queues."""

from __future__ import annotations

import argparse
import re
from typing import Any

import grpc

from queue_manager.bounds import priority_bounds_to_proto
from queue_manager.cli.common import (
    UINT32_MAX,
    UsageError,
    add_pause_time,
    bounded_int,
    client,
    duration_text,
    job_state,
    milliseconds,
    option,
    plain,
    rate,
    rate_burst,
    rate_text,
    show,
    size_limit,
    span_ms,
)
from queue_manager.cli.metrics import add_metrics_parser
from queue_manager.convert import queue_from_proto
from queue_manager.enums import JobPriority
from queue_manager.options import parse_priority, validate_queue_name
from queue_manager.requests import CLEANABLE_STATES
from queue_manager.v1 import queue_service_pb2, queue_service_pb2_grpc, types_pb2

_QUEUE_COLUMNS = (
    "name",
    "paused",
    "dead_letter_queue",
    "rate_limit",
    "max_wait",
    "max_size",
    "group_limits",
    "created_at",
)
# Units of a --max-wait duration, in milliseconds.
_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def max_wait(text: str) -> tuple[JobPriority, int | None]:
    """``LEVEL=DURATION`` of ``--max-wait``: the level and the bound in ms (None: ``off``, no bound)."""
    level_text, sep, wait = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r} is not LEVEL=DURATION, such as background=60s")
    try:
        level = parse_priority(level_text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if level is JobPriority.CRITICAL:
        raise argparse.ArgumentTypeError(
            "critical jobs run first already: bound high, normal, low or background"
        )
    wait = wait.strip().lower()
    if wait in ("off", "none"):
        return level, None
    found = _DURATION.fullmatch(wait)
    if not found:
        raise argparse.ArgumentTypeError(
            f"{wait!r} is not a duration: a number and a unit, such as 1500ms, 60s, 5m, 2h or 1d (or off)"
        )
    ms = round(float(found.group(1)) * _UNITS_MS[found.group(2)])
    if not 1000 <= ms <= 30 * _UNITS_MS["d"]:
        raise argparse.ArgumentTypeError(f"{wait} is out of range: a bound is from 1s to 30d")
    return level, ms


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``queues`` to the ``qm`` parser."""
    queues = commands.add_parser("queues", help="administer queues").add_subparsers(
        metavar="ACTION", required=True
    )
    queues.add_parser("list", help="list queues").set_defaults(command="queues list", handler=_list)
    show_one = queues.add_parser("show", help="show one queue and its settings")
    show_one.add_argument("queue")
    show_one.set_defaults(command="queues show", handler=_show)
    for action, text in (("pause", "pause a queue"), ("resume", "resume a queue")):
        sub = queues.add_parser(action, help=text)
        sub.add_argument("queue")
        if action == "pause":
            add_pause_time(sub, "queue")
        sub.set_defaults(command=f"queues {action}", handler=_action)
    add_metrics_parser(queues)
    clean = queues.add_parser("clean", help="remove old jobs of one state")
    clean.add_argument("queue")
    option(
        clean,
        "--grace",
        type=milliseconds(0, None),
        required=True,
        help="only jobs older than this (1h, 30m, 90s; bare number: ms)",
    )
    cleanable = job_state(
        *CLEANABLE_STATES,
        note="active jobs cannot be cleaned: cancel them first (qm jobs cancel-all QUEUE --state active)",
    )
    option(
        clean,
        "--state",
        required=True,
        type=cleanable,
        help="completed, failed, cancelled, waiting, paused or delayed",
    )
    option(
        clean,
        "--limit",
        type=bounded_int(0, UINT32_MAX, notes={0: "no limit"}),
        default=0,
        help="most jobs to remove (0: no limit)",
    )
    clean.set_defaults(command="queues clean", handler=_clean)
    _add_register(queues)
    drain = queues.add_parser("drain", help="remove all waiting jobs")
    drain.add_argument("queue")
    drain.add_argument("--include-delayed", action="store_true", help="also remove delayed jobs")
    drain.set_defaults(command="queues drain", handler=_drain)
    obliterate = queues.add_parser("obliterate", help="delete a queue and all its jobs")
    obliterate.add_argument("queue")
    obliterate.add_argument("--force", action="store_true", help="even when jobs are active")
    obliterate.set_defaults(command="queues obliterate", handler=_obliterate)


def _list(args: argparse.Namespace) -> int:
    with client(args) as qm:
        queues = qm.list_queues()
    show(args, [_queue_row(plain(q)) for q in queues], columns=_QUEUE_COLUMNS)
    return 0


def _show(args: argparse.Namespace) -> int:
    with client(args) as qm:
        queue = plain(qm.get_queue(validate_queue_name(args.queue)))
    if args.output == "json":
        show(args, queue)
        return 0
    # The pause's and the windows' times only when there are some: the table keeps its width without.
    times = ("paused_until", "maintenance_until", "next_maintenance_time")
    show(args, {k: v for k, v in _queue_row(queue).items() if k not in times or v is not None})
    return 0


def _action(args: argparse.Namespace) -> int:
    with client(args) as qm:
        if args.command == "queues pause":
            result = plain(qm.pause_queue(args.queue, args.resume_after, args.resume_at))
        else:
            result = plain(qm.resume_queue(args.queue))
    show(args, result)
    return 0


def _clean(args: argparse.Namespace) -> int:
    with client(args) as qm:
        removed = qm.clean_queue(args.queue, args.grace, args.state, limit=args.limit)
    show(args, {"queue": args.queue, "removed": removed})
    return 0


def _add_register(queues: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    register = queues.add_parser(
        "register",
        help="register a queue, or change the settings given of an existing one",
        description="Registers QUEUE with the settings given, or changes only the settings given of an "
        "existing queue (the others keep their values).",
    )
    register.add_argument("queue")
    option(
        register,
        "--rate-max",
        type=bounded_int(0, UINT32_MAX, notes={0: "no rate limit"}),
        help="jobs allowed to start per --rate-duration (0: remove the rate limit)",
    )
    option(
        register,
        "--rate-duration",
        type=milliseconds(1),
        help="rate-limit window (1s, 1m, 250ms; bare number: ms)",
    )
    option(
        register,
        "--rate-burst",
        type=rate_burst("--rate-max"),
        metavar="N",
        help="how many jobs may start at once after the queue was idle, before the rate applies (the token "
        "bucket's capacity; 0: the default, a tenth of --rate-max)",
    )
    dead_letter = register.add_mutually_exclusive_group()
    dead_letter.add_argument(
        "--dead-letter-queue", help="queue receiving jobs that fail for good (default dead-letter-queue)"
    )
    dead_letter.add_argument(
        "--no-dead-letter",
        action="store_true",
        help="failed jobs stay only in the queue's failed jobs (--dead-letter-queue turns it back on)",
    )
    option(
        register,
        "--concurrency",
        type=bounded_int(0, UINT32_MAX, notes={0: "no cap"}, off=True),
        help="most jobs active at once, all workers (0 or off: no cap)",
    )
    option(
        register,
        "--max-size",
        type=size_limit,
        metavar="N",
        help="producer backpressure: most jobs the queue holds waiting (or paused) and delayed; an add "
        "beyond it is refused (RESOURCE_EXHAUSTED); jobs the server adds (chain links, workflow steps, "
        "schedules, retries) never are (0 or off: no limit)",
    )
    register.add_argument(
        "--max-wait",
        action="append",
        type=max_wait,
        metavar="LEVEL=DURATION",
        help="priority bound: a job of LEVEL (high, normal, low or background) that has waited DURATION "
        "(1500ms, 60s, 5m, 2h, 1d; 1 s to 30 days) runs next, ahead of every level; LEVEL=off removes "
        "the bound (repeat for several levels)",
    )
    option(
        register,
        "--group-concurrency",
        type=bounded_int(0, UINT32_MAX, notes={0: "no limit"}, off=True),
        help="most jobs of each fairness group active at once, all workers (0 or off: no limit); a group's "
        "own limits (qm groups limit) replace it for that group",
    )
    option(
        register,
        "--group-rate",
        type=rate,
        metavar="MAX/DURATION",
        help="rate limit of each fairness group's job starts: 10/1s, 100/1m, 5/250ms (off: none)",
    )
    option(
        register,
        "--group-rate-burst",
        type=rate_burst("--group-rate"),
        metavar="N",
        help="how many jobs of a fairness group may start at once after it was idle (0: the default, a "
        "tenth of --group-rate's max)",
    )
    option(
        register,
        "--group-max-size",
        type=size_limit,
        metavar="N",
        help="most jobs of each fairness group waiting; an add beyond it is refused (0 or off: no limit); "
        "a group's own limits (qm groups limit) replace it for that group",
    )
    windows = register.add_mutually_exclusive_group()
    windows.add_argument(
        "--maintenance-window",
        action="append",
        type=maintenance_window,
        metavar="'CRON|DURATION[|ZONE]'",
        help="a recurring window in which the queue starts no job, such as '0 2 * * SUN|2h|Europe/Paris' "
        "(cron as schedules take it; DURATION 1s to 31d; ZONE an IANA time zone, default UTC); repeat for "
        "several: the ones given replace the queue's windows",
    )
    windows.add_argument(
        "--no-maintenance-windows", action="store_true", help="remove the queue's maintenance windows"
    )
    register.set_defaults(command="queues register", handler=_register)


def maintenance_window(text: str) -> types_pb2.MaintenanceWindow:
    """``--maintenance-window CRON|DURATION[|ZONE]`` as the window it gives (the server checks the cron and
    the zone)."""
    parts = text.split("|")
    if len(parts) not in (2, 3) or not parts[0].strip():
        raise argparse.ArgumentTypeError(
            f"{text!r} is not CRON|DURATION[|ZONE], such as '0 2 * * SUN|2h|Europe/Paris'"
        )
    ms = span_ms(1000, 31 * 86_400_000)(parts[1].strip())
    zone = parts[2].strip() if len(parts) == 3 else ""
    window = types_pb2.MaintenanceWindow(cron=parts[0].strip(), timezone=zone)
    window.duration.FromMilliseconds(ms)
    return window


def _register(args: argparse.Namespace) -> int:
    """Reads the queue's settings (when it exists), changes those given, and registers the result.

    RegisterQueue replaces a queue's whole config, so a flag left out would reset its setting: the current
    config is the starting point instead. Two concurrent registers of one queue: the last one wins whole.
    """
    name = validate_queue_name(args.queue)
    with client(args) as qm:  # the stub, not qm.register_queue: that returns the queue without `created`
        stub = queue_service_pb2_grpc.QueueServiceStub(qm.channel)
        config = _current_config(stub, name, qm.timeout)
        _apply_flags(args, config)
        request = queue_service_pb2.RegisterQueueRequest(name=name, config=config)
        response: queue_service_pb2.RegisterQueueResponse = stub.RegisterQueue(request, timeout=qm.timeout)
    queue = plain(queue_from_proto(response.queue))
    if args.output == "json":
        show(args, {**queue, "created": response.created})
        return 0
    if response.created:
        print(f"queue {args.queue!r} created")
    else:
        print(f"queue {args.queue!r} already existed; its settings are now as below")
    show(args, queue)
    return 0


def _current_config(
    stub: queue_service_pb2_grpc.QueueServiceStub, name: str, timeout: float | None
) -> types_pb2.QueueConfig:
    """The queue's config as stored (defaults filled in), or an empty one for a new queue."""
    try:
        response: queue_service_pb2.GetQueueResponse = stub.GetQueue(
            queue_service_pb2.GetQueueRequest(name=name), timeout=timeout
        )
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return types_pb2.QueueConfig()
        raise
    return response.queue.config


def _apply_flags(args: argparse.Namespace, config: types_pb2.QueueConfig) -> None:
    """Changes the settings of `config` that flags were given for."""
    if args.rate_max is not None or args.rate_duration is not None:
        rate = config.rate_limit
        if args.rate_max is not None:
            rate.max = args.rate_max
        if args.rate_duration is not None:
            rate.duration.FromMilliseconds(args.rate_duration)
        if args.rate_max is None and rate.max == 0:
            raise UsageError("--rate-duration needs --rate-max: the queue has no rate limit yet")
        if rate.max == 0:
            config.ClearField("rate_limit")
        elif rate.duration.ToMilliseconds() <= 0:
            raise UsageError("--rate-max needs --rate-duration: the queue has no rate limit yet")
    if args.rate_burst is not None:
        if not config.rate_limit.max:
            raise UsageError("--rate-burst needs --rate-max and --rate-duration: the queue has no rate limit")
        config.rate_limit.burst = args.rate_burst
    if args.no_dead_letter:
        config.disable_dead_letter = True
        config.dead_letter_queue = ""
    elif args.dead_letter_queue is not None:
        config.disable_dead_letter = False
        config.dead_letter_queue = validate_queue_name(args.dead_letter_queue, "--dead-letter-queue")
    if args.concurrency is not None:
        config.concurrency = args.concurrency
    if args.max_size is not None:
        config.max_size = args.max_size
    if args.max_wait:
        bounds: dict[JobPriority | int | str, int] = {
            JobPriority(b.priority): b.max_wait.ToMilliseconds() for b in config.priority_bounds
        }
        for level, ms in args.max_wait:
            if ms is None:
                bounds.pop(level, None)
            else:
                bounds[level] = ms
        del config.priority_bounds[:]
        priority_bounds_to_proto(bounds, config)
    _apply_group_flags(args, config)
    if args.no_maintenance_windows or args.maintenance_window:
        del config.maintenance_windows[:]
        config.maintenance_windows.extend(args.maintenance_window or [])


def _apply_group_flags(args: argparse.Namespace, config: types_pb2.QueueConfig) -> None:
    """``--group-concurrency``, ``--group-rate`` and ``--group-max-size``: each changes its own part of the
    group limits."""
    limits = config.group_limits
    if args.group_concurrency is not None:
        limits.concurrency = args.group_concurrency
    if args.group_max_size is not None:
        limits.max_size = args.group_max_size
    if args.group_rate is not None:
        most, window = args.group_rate
        if most:
            limits.rate_limit.max = most
            limits.rate_limit.duration.FromMilliseconds(window)
        else:
            limits.ClearField("rate_limit")
    if args.group_rate_burst is not None:
        if not limits.rate_limit.max:
            raise UsageError("--group-rate-burst needs --group-rate: the queue's groups have no rate limit")
        limits.rate_limit.burst = args.group_rate_burst
    if not limits.concurrency and not limits.rate_limit.max and not limits.max_size:
        config.ClearField("group_limits")


def _drain(args: argparse.Namespace) -> int:
    with client(args) as qm:
        removed = qm.drain_queue(args.queue, include_delayed=args.include_delayed)
    show(args, {"queue": args.queue, "removed": removed})
    return 0


def _obliterate(args: argparse.Namespace) -> int:
    with client(args) as qm:
        removed = qm.obliterate_queue(args.queue, force=args.force)
    show(args, {"queue": args.queue, "removed": removed})
    return 0


def _queue_row(queue: dict[str, Any]) -> dict[str, Any]:
    config = queue.get("config") or {}
    rate = config.get("rate_limit")
    bounds = config.get("priority_bounds") or {}
    return {
        **queue,
        "paused": _paused_cell(queue),
        "dead_letter_queue": config.get("dead_letter_queue", ""),
        "rate_limit": rate_text(rate),
        "max_wait": ",".join(f"{level}={duration_text(ms)}" for level, ms in bounds.items()),
        "max_size": config.get("max_size") or "",
        "group_limits": group_limits_text(config.get("group_limits")),
    }


def _paused_cell(queue: dict[str, Any]) -> Any:
    """Whether the queue is paused, and until when: ``until T`` (a timed pause), ``in maintenance until T``
    (a maintenance window), both, or the flag alone."""
    parts = []
    if queue.get("paused_until"):
        parts.append(f"until {queue['paused_until']}")
    if queue.get("maintenance_until"):
        parts.append(f"in maintenance until {queue['maintenance_until']}")
    return "; ".join(parts) if parts else queue.get("paused")


def group_limits_text(limits: dict[str, Any] | None) -> str:
    """Group limits as the flags take them: ``concurrency=2,rate=10/1s,max_size=100`` (the parts set), ""
    for none."""
    if not limits:
        return ""
    parts = [f"concurrency={limits['concurrency']}"] if limits.get("concurrency") else []
    if limits.get("rate_limit"):
        parts.append(f"rate={rate_text(limits['rate_limit'])}")
    if limits.get("max_size"):
        parts.append(f"max_size={limits['max_size']}")
    return ",".join(parts)
