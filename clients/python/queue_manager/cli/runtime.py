"""``qm serve``, ``qm worker`` and ``qm health``: running the server and workers, checking health.

``qm worker IMPORT_PATH`` runs the processors registered on a `QueueManager`: ``package.module:attr`` names
the QueueManager itself; a bare ``package.module`` uses the module's ``qm`` attribute (or its only
QueueManager). The current directory is importable, as with ``python -m``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from queue_manager.cli.common import UsageError, client, option, show
from queue_manager.client import QueueManager
from queue_manager.errors import error_from_rpc

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
    option(worker, "--concurrency", type=int, help="jobs run at once (default WORKER_CONCURRENCY or 10)")
    option(
        worker,
        "--grace",
        type=float,
        default=30.0,
        help="seconds to let running jobs finish on shutdown",
        env="QM_WORKER_GRACE",
    )
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
            if error_from_rpc(exc).code != grpc.StatusCode.UNIMPLEMENTED:
                raise
            qm.list_queues()  # no health service: answering an admin call is the best sign of life
            status = "SERVING"
    show(args, {"status": status})
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


def _load_queue_manager(path: str) -> QueueManager:
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"cannot import {module_name!r}: {exc}") from None
    obj: Any
    if attr:
        obj = module
        for part in attr.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                raise UsageError(f"{module_name!r} has no attribute {attr!r}")
    else:
        obj = getattr(module, "qm", None)
        if obj is None:
            found = [v for v in vars(module).values() if isinstance(v, QueueManager)]
            if len(found) != 1:
                raise UsageError(f"{module_name!r} has no QueueManager named 'qm'; use {module_name}:NAME")
            obj = found[0]
    if not isinstance(obj, QueueManager):
        raise UsageError(f"{path!r} is a {type(obj).__name__}, not a QueueManager")
    return obj


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
