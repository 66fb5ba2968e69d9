"""The ``qm`` command: serve, worker, add, jobs, queues and health.

Every option can also come from the environment as ``QM_<OPTION>`` (``--page-size`` → ``QM_PAGE_SIZE``);
``--server`` reads ``QM_SERVER`` and ``-o/--output`` reads ``QM_OUTPUT``. gRPC errors print
``error: <STATUS>: <message>`` on stderr and exit with status 1.

``qm worker IMPORT_PATH`` runs the processors registered on a `QueueManager`: ``package.module:attr`` names
the QueueManager itself; a bare ``package.module`` uses the module's ``qm`` attribute (or its only
QueueManager). The current directory is importable, as with ``python -m``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import enum
import importlib
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import grpc

from queue_manager.channel import resolve_address
from queue_manager.client import QueueManager
from queue_manager.errors import QueueManagerError, error_from_rpc
from queue_manager.sync import SyncQueueManager

__all__ = ["main"]

_HEALTH_CHECK = "/grpc.health.v1.Health/Check"
_HEALTH_STATUS = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}
_JOB_COLUMNS = ("id", "name", "state", "priority", "attempts_made", "created_at", "failed_reason")
_QUEUE_COLUMNS = ("name", "paused", "dead_letter_queue", "rate_limit", "created_at")


class _UsageError(Exception):
    """Bad command-line input found after parsing (exit status 2)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``qm`` with the given arguments (default ``sys.argv[1:]``) and returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["serve"]:
        return _serve(args_list[1:])
    parser = _parser()
    args = parser.parse_args(args_list)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.handler(args))
    except QueueManagerError as exc:
        print(f"error: {exc.code.name}: {exc.message}", file=sys.stderr)
        return 1
    except grpc.RpcError as exc:
        error = error_from_rpc(exc)
        print(f"error: {error.code.name}: {error.message}", file=sys.stderr)
        return 1
    except (ValueError, TypeError) as exc:
        print(f"error: INVALID_ARGUMENT: {exc}", file=sys.stderr)
        return 1
    except _UsageError as exc:
        print(f"qm: error: {exc}", file=sys.stderr)
        return 2


# --------------------------------------------------------------------- parser


def _env_name(flag: str) -> str:
    return "QM_" + flag.lstrip("-").replace("-", "_").upper()


def _option(
    parser: argparse.ArgumentParser, *flags: str, help: str, required: bool = False, **kw: Any
) -> None:
    """Adds an option whose default comes from ``QM_<NAME>`` when that variable is set."""
    env = _env_name(flags[-1])
    if env in os.environ:
        kw["default"] = os.environ[env]  # argparse applies `type` to string defaults
        required = False
    parser.add_argument(*flags, required=required, help=f"{help} [env {env}]", **kw)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qm", description="Queue Manager: a gRPC job-queue service.")
    parser.add_argument(
        "--server",
        default=None,
        help="server address host:port [env QM_SERVER, default localhost:50051]",
    )
    _option(parser, "-o", "--output", choices=("table", "json"), default="table", help="output format")
    parser.set_defaults(command=None)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    commands.add_parser("serve", help="run the server (see `qm serve --help`)", add_help=False)

    worker = commands.add_parser("worker", help="run the processors registered on a QueueManager")
    worker.add_argument("import_path", metavar="IMPORT_PATH", help="module:attr of a QueueManager, or module")
    _option(worker, "--queue", action="append", help="only these queues (repeatable; env: comma-separated)")
    _option(worker, "--concurrency", type=int, help="jobs run at once (default WORKER_CONCURRENCY or 10)")
    _option(
        worker, "--grace", type=float, default=30.0, help="seconds to let running jobs finish on shutdown"
    )
    worker.set_defaults(command="worker", handler=_cmd_worker)

    add = commands.add_parser("add", help="add a job")
    add.add_argument("queue")
    add.add_argument("name")
    _option(add, "--data", default=None, help="job data as JSON (@FILE reads a file, @- stdin)")
    _option(add, "--priority", help="critical, high, normal, low, background or 1-5")
    _option(add, "--delay", type=int, help="milliseconds before the job may start")
    _option(add, "--attempts", type=int, help="maximum runs including the first")
    _option(add, "--job-id", help="idempotency key")
    _option(add, "--timeout", type=int, help="milliseconds a run may take")
    add.set_defaults(command="add", handler=_cmd_add)

    jobs = commands.add_parser("jobs", help="read and remove jobs").add_subparsers(
        metavar="ACTION", required=True
    )
    get = jobs.add_parser("get", help="show one job")
    get.add_argument("queue")
    get.add_argument("job_id", metavar="ID")
    get.set_defaults(command="jobs get", handler=_cmd_jobs_get)
    listing = jobs.add_parser("list", help="list a queue's jobs in one state")
    listing.add_argument("queue")
    _option(listing, "--state", required=True, help="waiting, active, delayed, completed, failed or paused")
    _option(listing, "--page-size", type=int, default=100, help="jobs per page, 1 to 1000")
    _option(listing, "--page-token", default="", help="token of the page to read")
    listing.set_defaults(command="jobs list", handler=_cmd_jobs_list)
    remove = jobs.add_parser("remove", help="remove a job that is not active")
    remove.add_argument("queue")
    remove.add_argument("job_id", metavar="ID")
    remove.set_defaults(command="jobs remove", handler=_cmd_jobs_remove)

    queues = commands.add_parser("queues", help="administer queues").add_subparsers(
        metavar="ACTION", required=True
    )
    queues.add_parser("list", help="list queues").set_defaults(
        command="queues list", handler=_cmd_queues_list
    )
    for action, text in (("pause", "pause a queue"), ("resume", "resume a queue"), ("metrics", "job counts")):
        sub = queues.add_parser(action, help=text)
        sub.add_argument("queue")
        sub.set_defaults(command=f"queues {action}", handler=_cmd_queue_action)
    clean = queues.add_parser("clean", help="remove old jobs of one state")
    clean.add_argument("queue")
    _option(clean, "--grace", type=int, required=True, help="only jobs older than this many milliseconds")
    _option(clean, "--state", required=True, help="completed, failed, waiting, paused or delayed")
    _option(clean, "--limit", type=int, default=0, help="most jobs to remove (0: no limit)")
    clean.set_defaults(command="queues clean", handler=_cmd_queues_clean)
    register = queues.add_parser("register", help="register a queue or update its settings")
    register.add_argument("queue")
    _option(register, "--rate-max", type=int, help="jobs allowed per --rate-duration")
    _option(register, "--rate-duration", type=int, help="rate-limit window in milliseconds")
    _option(register, "--dead-letter-queue", help="queue receiving jobs that fail for good")
    register.set_defaults(command="queues register", handler=_cmd_queues_register)
    drain = queues.add_parser("drain", help="remove all waiting jobs")
    drain.add_argument("queue")
    drain.add_argument("--include-delayed", action="store_true", help="also remove delayed jobs")
    drain.set_defaults(command="queues drain", handler=_cmd_queues_drain)
    obliterate = queues.add_parser("obliterate", help="delete a queue and all its jobs")
    obliterate.add_argument("queue")
    obliterate.add_argument("--force", action="store_true", help="even when jobs are active")
    obliterate.set_defaults(command="queues obliterate", handler=_cmd_queues_obliterate)

    health = commands.add_parser("health", help="check the server's health (grpc.health.v1)")
    _option(health, "--service", default="", help="service name to check ('' for the whole server)")
    health.set_defaults(command="health", handler=_cmd_health)
    return parser


# --------------------------------------------------------------------- commands


def _serve(argv: list[str]) -> int:
    try:
        server_cli = importlib.import_module("queue_manager_server.cli")
    except ImportError:
        print(
            "qm serve: the server is not installed; install the queue-manager-server package "
            "(pip install -e server/ in a checkout)",
            file=sys.stderr,
        )
        return 2
    serve_main: Callable[[Sequence[str]], int] = server_cli.main
    return serve_main(argv)


def _client(args: argparse.Namespace) -> SyncQueueManager:
    return SyncQueueManager(resolve_address(args.server))


def _cmd_add(args: argparse.Namespace) -> int:
    options: dict[str, Any] = {}
    for key in ("priority", "delay", "attempts", "job_id", "timeout"):
        value = getattr(args, key)
        if value is not None:
            options[key] = value
    with _client(args) as qm:
        job = qm.add_job(args.queue, args.name, _read_data(args.data), options)
    _print(args, _plain(job), columns=_JOB_COLUMNS)
    return 0


def _cmd_jobs_get(args: argparse.Namespace) -> int:
    with _client(args) as qm:
        job = qm.get_job(args.queue, args.job_id)
    _print(args, _plain(job))
    return 0


def _cmd_jobs_list(args: argparse.Namespace) -> int:
    with _client(args) as qm:
        jobs, token = qm.list_jobs(args.queue, args.state, args.page_size, args.page_token)
    if args.output == "json":
        _print(args, {"jobs": [_plain(job) for job in jobs], "next_page_token": token})
    else:
        _print(args, [_plain(job) for job in jobs], columns=_JOB_COLUMNS)
        if token:
            print(f"next page: --page-token {token}")
    return 0


def _cmd_jobs_remove(args: argparse.Namespace) -> int:
    with _client(args) as qm:
        previous = qm.remove_job(args.queue, args.job_id)
    _print(args, {"queue": args.queue, "id": args.job_id, "previous_state": _plain(previous)})
    return 0


def _cmd_queues_list(args: argparse.Namespace) -> int:
    with _client(args) as qm:
        queues = qm.list_queues()
    _print(args, [_queue_row(_plain(q)) for q in queues], columns=_QUEUE_COLUMNS)
    return 0


def _cmd_queue_action(args: argparse.Namespace) -> int:
    with _client(args) as qm:
        if args.command == "queues pause":
            result = _plain(qm.pause_queue(args.queue))
        elif args.command == "queues resume":
            result = _plain(qm.resume_queue(args.queue))
        else:
            result = _plain(qm.get_queue_metrics(args.queue))
    _print(args, result)
    return 0


def _cmd_queues_clean(args: argparse.Namespace) -> int:
    with _client(args) as qm:
        removed = qm.clean_queue(args.queue, args.grace, args.state, limit=args.limit)
    _print(args, {"queue": args.queue, "removed": removed})
    return 0


def _cmd_queues_register(args: argparse.Namespace) -> int:
    rate_limit = None
    if args.rate_max is not None or args.rate_duration is not None:
        if args.rate_max is None or args.rate_duration is None:
            raise _UsageError("--rate-max and --rate-duration go together")
        rate_limit = {"max": args.rate_max, "duration": args.rate_duration}
    with _client(args) as qm:
        queue = qm.register_queue(args.queue, rate_limit=rate_limit, dead_letter_queue=args.dead_letter_queue)
    _print(args, _plain(queue))
    return 0


def _cmd_queues_drain(args: argparse.Namespace) -> int:
    with _client(args) as qm:
        removed = qm.drain_queue(args.queue, include_delayed=args.include_delayed)
    _print(args, {"queue": args.queue, "removed": removed})
    return 0


def _cmd_queues_obliterate(args: argparse.Namespace) -> int:
    with _client(args) as qm:
        removed = qm.obliterate_queue(args.queue, force=args.force)
    _print(args, {"queue": args.queue, "removed": removed})
    return 0


def _cmd_health(args: argparse.Namespace) -> int:
    with _client(args) as qm:
        check: grpc.UnaryUnaryMultiCallable[bytes, bytes] = qm.channel.unary_unary(_HEALTH_CHECK)
        try:
            response: bytes = check(_health_request(args.service), timeout=10.0)
            status = _HEALTH_STATUS.get(_health_status(response), "UNKNOWN")
        except grpc.RpcError as exc:
            if error_from_rpc(exc).code != grpc.StatusCode.UNIMPLEMENTED:
                raise
            qm.list_queues()  # no health service: answering an admin call is the best sign of life
            status = "SERVING"
    _print(args, {"status": status})
    return 0 if status == "SERVING" else 1


def _cmd_worker(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    qm = _load_queue_manager(args.import_path)
    if args.server:
        qm.address = args.server
    queues = args.queue
    if isinstance(queues, str):
        queues = [q.strip() for q in queues.split(",") if q.strip()]
    asyncio.run(_run_worker(qm, queues or None, args.concurrency, args.grace))
    return 0


async def _run_worker(
    qm: QueueManager, queues: list[str] | None, concurrency: int | None, grace: float
) -> None:
    qm.shutdown_grace = grace
    worker = await qm.start_workers(queues, concurrency=concurrency, handle_signals=True)
    try:
        await worker.wait_closed()
    finally:
        await qm.shutdown(grace)


# --------------------------------------------------------------------- helpers


def _load_queue_manager(path: str) -> QueueManager:
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise _UsageError(f"cannot import {module_name!r}: {exc}") from None
    obj: Any
    if attr:
        obj = module
        for part in attr.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                raise _UsageError(f"{module_name!r} has no attribute {attr!r}")
    else:
        obj = getattr(module, "qm", None)
        if obj is None:
            found = [v for v in vars(module).values() if isinstance(v, QueueManager)]
            if len(found) != 1:
                raise _UsageError(f"{module_name!r} has no QueueManager named 'qm'; use {module_name}:NAME")
            obj = found[0]
    if not isinstance(obj, QueueManager):
        raise _UsageError(f"{path!r} is a {type(obj).__name__}, not a QueueManager")
    return obj


def _read_data(text: str | None) -> Any:
    if text is None:
        return None
    if text.startswith("@"):
        source = text[1:]
        try:
            if source == "-":
                text = sys.stdin.read()
            else:
                with open(source, encoding="utf-8") as handle:
                    text = handle.read()
        except OSError as exc:
            raise _UsageError(f"--data: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise _UsageError(f"--data is not valid JSON: {exc}") from None


def _health_request(service: str) -> bytes:
    """A serialised grpc.health.v1.HealthCheckRequest (field 1, string)."""
    if not service:
        return b""
    body = service.encode()
    return b"\x0a" + _varint(len(body)) + body


def _health_status(response: bytes) -> int:
    """The status (field 1, enum) of a serialised grpc.health.v1.HealthCheckResponse."""
    if response[:1] != b"\x08":
        return 0
    value, shift = 0, 0
    for byte in response[1:]:
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return value


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _plain(value: Any) -> Any:
    """A JSON-ready copy: dataclasses as dicts, times as ISO 8601, durations as milliseconds."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.IntEnum):
        return value.name.lower()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return round(value / timedelta(milliseconds=1))
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode()}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _queue_row(queue: dict[str, Any]) -> dict[str, Any]:
    config = queue.get("config") or {}
    rate = config.get("rate_limit")
    return {
        **queue,
        "dead_letter_queue": config.get("dead_letter_queue", ""),
        "rate_limit": f"{rate['max']}/{rate['duration']}ms" if rate and rate.get("max") else "",
    }


def _print(args: argparse.Namespace, data: Any, columns: Sequence[str] | None = None) -> None:
    if args.output == "json":
        print(json.dumps(data, indent=2, ensure_ascii=False, default=str))
    elif isinstance(data, list):
        _print_table(data, columns or (sorted(data[0]) if data else ()))
    elif isinstance(data, dict):
        width = max((len(k) for k in data), default=0)
        for key, value in data.items():
            print(f"{key:<{width}}  {_cell(value)}")
    else:
        print(data)


def _print_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c.upper())] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
