"""The ``qm`` command: serve, worker, add, jobs, queues, workflows, schedules and health.

Every option can also come from the environment as ``QM_<OPTION>`` (``--page-size`` → ``QM_PAGE_SIZE``);
``--server`` reads ``QM_SERVER`` and ``-o/--output`` reads ``QM_OUTPUT``. gRPC errors print
``error: <STATUS>: <message>`` on stderr and exit with status 1. Each command group lives in its own
module and adds itself to the parser with ``register``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import grpc

from queue_manager.cli import jobs, queues, runtime, schedules, workflows
from queue_manager.cli.common import UsageError, option, plain
from queue_manager.cli.runtime import _health_request, _health_status
from queue_manager.errors import QueueManagerError, error_from_rpc

__all__ = ["_health_request", "_health_status", "main", "plain"]


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``qm`` with the given arguments (default ``sys.argv[1:]``) and returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["serve"]:
        return runtime.serve(args_list[1:])
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
    except UsageError as exc:
        print(f"qm: error: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qm", description="Queue Manager: a gRPC job-queue service.")
    parser.add_argument(
        "--server",
        default=None,
        help="server address host:port [env QM_SERVER, default localhost:50051]",
    )
    option(parser, "-o", "--output", choices=("table", "json"), default="table", help="output format")
    parser.set_defaults(command=None)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    for group in (runtime, jobs, queues, workflows, schedules):
        group.register(commands)
    return parser
