"""``qm serve``, ``qm worker`` and ``qm health``: running the server and workers, checking health.

``qm worker IMPORT_PATH`` runs the processors registered on a `QueueManager`: ``package.module:attr`` names
the QueueManager itself; a bare ``package.module`` uses the module's ``qm`` attribute (or its only
QueueManager). The current directory is importable, as with ``python -m``. With ``--autoscale MIN:MAX`` it
runs a `WorkerManager` instead: between MIN and MAX worker processes, sized by the queues' depth.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence

import grpc

from queue_manager.checks import MAX_CONCURRENCY, MAX_QUEUE_WEIGHT, MAX_TIER
from queue_manager.cli.common import UsageError, bounded_int, client, option, show
from queue_manager.client import QueueManager
from queue_manager.errors import QueueManagerError, error_from_rpc
from queue_manager.loader import ImportPathError, load_queue_manager
from queue_manager.pool import WorkerManager
from queue_manager.worker import Worker

logger = logging.getLogger("queue_manager.cli")

_HEALTH_CHECK = "/grpc.health.v1.Health/Check"
_HEALTH_STATUS = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``serve`` (handled before parsing), ``worker`` and ``health`` to the ``qm`` parser."""
    commands.add_parser("serve", help="run the server (see `qm serve --help`)", add_help=False)

    worker = commands.add_parser("worker", help="run the processors registered on a QueueManager")
    worker.add_argument("import_path", metavar="IMPORT_PATH", help="module:attr of a QueueManager, or module")
    option(
        worker,
        "--queue",
        action="append",
        help="only these queues (repeatable; env: comma-separated)",
        env="QM_WORKER_QUEUES",
    )
    option(
        worker,
        "--concurrency",
        type=bounded_int(1, MAX_CONCURRENCY),
        help="jobs run at once (default WORKER_CONCURRENCY or 10)",
    )
    worker.add_argument(
        "--weight",
        action="append",
        type=_weight,
        metavar="QUEUE=N",
        help="a queue's share of the slots when several have jobs ready (1-1000; others weigh 1; repeatable)",
    )
    worker.add_argument(
        "--strict",
        action="store_true",
        help="strict priority: the --queue options in order, highest first (a queue runs only while none "
        "before it has a job ready)",
    )
    worker.add_argument(
        "--tier",
        type=_tier,
        default=0,
        help="preference among the queues' workers (0-100, default 0): jobs go to a higher tier only while "
        "the workers of lower tiers on the same server are full",
    )
    option(
        worker,
        "--grace",
        type=float,
        default=30.0,
        help="seconds to let running jobs finish on shutdown",
        env="QM_WORKER_GRACE",
    )
    _add_autoscale_options(worker)
    worker.add_argument("--stop-on-stdin-eof", action="store_true", help=argparse.SUPPRESS)
    worker.set_defaults(command="worker", handler=_cmd_worker)

    health = commands.add_parser("health", help="check the server's health (grpc.health.v1)")
    option(health, "--service", default="", help="service name to check ('' for the whole server)")
    health.set_defaults(command="health", handler=_cmd_health)


def serve(argv: list[str]) -> int:
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


def _cmd_health(args: argparse.Namespace) -> int:
    with client(args) as qm:
        check: grpc.UnaryUnaryMultiCallable[bytes, bytes] = qm.channel.unary_unary(_HEALTH_CHECK)
        try:
            response: bytes = check(_health_request(args.service), timeout=10.0)
            status = _HEALTH_STATUS.get(_health_status(response), "UNKNOWN")
        except grpc.RpcError as exc:
            code = error_from_rpc(exc).code
            if code == grpc.StatusCode.NOT_FOUND:
                # The health service's own answer has no message: say which services it does know.
                raise QueueManagerError(
                    f"the server reports no health for service {args.service!r}; ask for '' (the whole "
                    f"server) or one of {', '.join(_HEALTH_SERVICES)}",
                    code,
                ) from None
            if code != grpc.StatusCode.UNIMPLEMENTED:
                raise
            qm.list_queues()  # no health service: answering an admin call is the best sign of life
            status = "SERVING"
    show(args, {"status": status})
    return 0 if status == "SERVING" else 1


def _add_autoscale_options(worker: argparse.ArgumentParser) -> None:
    option(
        worker,
        "--autoscale",
        type=_autoscale_range,
        metavar="MIN:MAX",
        help="run MIN to MAX worker processes, sized by the queues' depth (e.g. 1:8)",
        env="QM_WORKER_AUTOSCALE",
    )
    worker.add_argument(
        "--target-wait",
        type=_positive_seconds,
        metavar="SECONDS",
        help="with --autoscale: add a process when a job has waited longer than this",
    )
    for flag, what in (("--max-cpu", "CPU"), ("--max-memory", "memory")):
        worker.add_argument(
            flag,
            type=_percent,
            default=90.0,
            metavar="PERCENT",
            help=f"with --autoscale: do not grow while the machine's {what} use is at or above this "
            "(default 90; 'off' for no limit)",
        )
    worker.add_argument(
        "--scale-down-delay",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="with --autoscale: how long the queues must need fewer processes before some stop (default 30)",
    )


def _autoscale_range(text: str) -> tuple[int, int]:
    low, sep, high = text.partition(":")
    if not sep:
        hint = " (Celery's MAX,MIN order is not used)" if "," in text else ""
        raise argparse.ArgumentTypeError(f"expected MIN:MAX, e.g. 1:8, got {text!r}{hint}")
    try:
        lo, hi = int(low), int(high)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"MIN and MAX must be whole numbers, e.g. 1:8, got {text!r}"
        ) from None
    if lo < 0:
        raise argparse.ArgumentTypeError(f"MIN must be 0 or more, got {lo}")
    if hi < 1:
        raise argparse.ArgumentTypeError(f"MAX must be at least 1, got {hi}")
    if lo > hi:
        raise argparse.ArgumentTypeError(f"MIN ({lo}) must not be more than MAX ({hi})")
    return lo, hi


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds, 0 or more, got {text!r}")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError("expected more than 0 seconds, got '0'")
    return value


def _percent(text: str) -> float | None:
    if text.strip().lower() == "off":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a percentage or 'off', got {text!r}") from None
    if not 0 < value <= 100:
        raise argparse.ArgumentTypeError(f"expected a percentage above 0 and at most 100, got {text!r}")
    return value


def _cmd_worker(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    queues = args.queue
    if isinstance(queues, str):
        queues = [q.strip() for q in queues.split(",") if q.strip()]
    if args.autoscale is None and args.target_wait is not None:
        raise UsageError("--target-wait needs --autoscale MIN:MAX")
    try:
        qm = load_queue_manager(args.import_path)
        weights, order = _shares(args, queues, qm.processors)
        if args.autoscale is not None:
            pool = _pool(args, queues or None, weights or None, order)
    except ImportPathError as exc:
        raise UsageError(str(exc)) from None
    if args.autoscale is not None:
        asyncio.run(_run_pool(pool))
        return 0
    if args.server:
        qm.address = args.server
    try:
        asyncio.run(
            _run_worker(
                qm,
                queues or None,
                args.concurrency,
                args.grace,
                args.stop_on_stdin_eof,
                weights or None,
                order,
                args.tier,
            )
        )
    except ValueError as exc:  # the shares do not fit the processors (Worker's checks)
        raise UsageError(str(exc)) from None
    return 0


def _tier(text: str) -> int:
    """An argparse ``type``: a whole number from 0 to MAX_TIER."""
    if not text.strip().isdigit() or int(text) > MAX_TIER:
        raise argparse.ArgumentTypeError(f"expected a whole number from 0 to {MAX_TIER}, got {text!r}")
    return int(text)


def _weight(text: str) -> tuple[str, int]:
    """An argparse ``type``: QUEUE=N, N from 1 to MAX_QUEUE_WEIGHT."""
    queue, sep, n = text.rpartition("=")
    if not sep or not queue or not n.isdigit() or not 1 <= int(n) <= MAX_QUEUE_WEIGHT:
        raise argparse.ArgumentTypeError(
            f"expected QUEUE=N with N a whole number from 1 to {MAX_QUEUE_WEIGHT:,}, got {text!r}"
        )
    return queue, int(n)


def _shares(
    args: argparse.Namespace, queues: list[str] | None, processors: Mapping[str, object]
) -> tuple[dict[str, int], list[str] | None]:
    """The --weight and --strict flags checked against the queues the worker runs, each refusal naming its
    flag (Worker and WorkerManager would name their queue_weights / queue_order arguments instead).

    Returns:
        The weights by queue (empty: none) and, with --strict, the --queue options in order.
    """
    served = queues or sorted(processors)
    weights: dict[str, int] = {}
    for queue, weight in args.weight or []:
        if queue in weights:
            raise UsageError(f"--weight gives {queue!r} twice; give each queue one weight")
        if queue not in served:
            raise UsageError(
                f"--weight {queue}={weight}: this worker does not run {queue!r}; it runs {', '.join(served)}"
            )
        weights[queue] = weight
    if not args.strict:
        return weights, None
    if weights:
        raise UsageError("give --weight or --strict, not both")
    if not queues:
        raise UsageError("--strict takes the --queue options in order: name every queue, highest first")
    twice = [q for i, q in enumerate(queues) if q in queues[:i]]
    if twice:
        raise UsageError(
            f"--strict: --queue {twice[0]!r} is given twice; name each queue once, highest first"
        )
    return weights, queues


def _pool(
    args: argparse.Namespace,
    queues: list[str] | None,
    weights: dict[str, int] | None,
    order: list[str] | None,
) -> WorkerManager:
    low, high = args.autoscale
    return WorkerManager(
        args.import_path,
        queues=queues,
        queue_weights=weights,
        queue_order=order,
        tier=args.tier,
        min_workers=low,
        max_workers=high,
        concurrency=args.concurrency,
        target_wait=args.target_wait,
        max_cpu=args.max_cpu,
        max_memory=args.max_memory,
        scale_down_delay=args.scale_down_delay,
        grace=args.grace,
        server=args.server,
    )


async def _run_pool(pool: WorkerManager) -> None:
    await pool.start()
    pool.install_signal_handlers()
    await pool.wait_closed()


async def _run_worker(
    qm: QueueManager,
    queues: list[str] | None,
    concurrency: int | None,
    grace: float,
    stop_on_eof: bool,
    weights: dict[str, int] | None = None,
    order: list[str] | None = None,
    tier: int = 0,
) -> None:
    qm.shutdown_grace = grace
    worker = await qm.start_workers(
        queues,
        concurrency=concurrency,
        handle_signals=True,
        queue_weights=weights,
        queue_order=order,
        tier=tier,
    )
    if stop_on_eof:
        _stop_when_stdin_closes(worker)
    try:
        await worker.wait_closed()
    finally:
        await qm.shutdown(grace)


def _stop_when_stdin_closes(worker: Worker) -> None:
    """Shuts the worker down gracefully when its stdin reaches end of file: a `WorkerManager` started it
    with a pipe there, which closes when the pool dies without stopping it."""
    loop = asyncio.get_running_loop()
    fd = sys.stdin.fileno()
    stopping: list[asyncio.Task[None]] = []  # a reference keeps the task alive

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)
            logger.warning("the pool that started worker %s is gone; shutting down", worker.worker_id)
            stopping.append(loop.create_task(worker.shutdown()))

    loop.add_reader(fd, readable)


# The services the server reports health for besides the whole server (server app.py SERVICE_NAMES).
_HEALTH_SERVICES = ("queue_manager.v1.QueueService", "queue_manager.v1.WorkerService")


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
