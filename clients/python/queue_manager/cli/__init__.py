"""The ``qm`` command: serve, worker, exec, add, jobs, pull, queues, groups, dlq, workflows, schedules,
workers, health, dash, test-server and clock.

``--server`` reads ``QM_SERVER``, ``-o/--output`` ``QM_OUTPUT`` and the TLS and token options their
``QM_`` variables; ``qm worker`` and ``qm dash`` read their settings from ``QM_WORKER_*`` and
``QM_DASH_INTERVAL``. Other commands' options come from the command line only. gRPC errors print
``error: <STATUS>: <message>`` on stderr and exit with status 1. Each command group lives in its own
module and adds itself to the parser with ``register``.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import shlex
import signal
import sys
from collections.abc import Sequence
from typing import Any

import grpc

from queue_manager.channel import check_address
from queue_manager.cli import (
    auth,
    dash,
    dlq,
    events,
    exec_worker,
    external_events,
    groups,
    jobs,
    metrics,
    pull,
    queues,
    runtime,
    schedules,
    test_clock,
    workflows,
)
from queue_manager.cli.common import UsageError, option, plain
from queue_manager.cli.runtime import _health_request, _health_status
from queue_manager.errors import QueueManagerError, error_from_rpc

__all__ = ["_health_request", "_health_status", "main", "plain"]


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``qm`` with the given arguments (default ``sys.argv[1:]``) and returns the exit status."""
    args_list = external_events.route(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["serve"]:
        return runtime.serve(args_list[1:])
    if args_list[:1] == ["test-server"]:
        return test_clock.test_server(args_list[1:])
    parser = _parser()
    try:
        args = parser.parse_args(args_list)
    except BrokenPipeError:  # `qm --help | head`: the help is printed while the arguments are parsed
        return _stdout_closed()
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    auth.apply_connection_flags(args)
    try:
        status = int(args.handler(args))
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below, not at exit
        return status
    except BrokenPipeError:
        return _stdout_closed()
    except QueueManagerError as exc:
        print(f"error: {exc.code.name}: {cli_message(exc.message)}", file=sys.stderr)
        return 1
    except grpc.RpcError as exc:
        error = error_from_rpc(exc)
        print(f"error: {error.code.name}: {cli_message(error.message)}", file=sys.stderr)
        return 1
    except (ValueError, TypeError) as exc:
        print(f"error: INVALID_ARGUMENT: {exc}", file=sys.stderr)
        return 1
    except UsageError as exc:
        print(f"qm: error: {exc}", file=sys.stderr)
        return 2


def _server_address(text: str) -> str:
    """An argparse ``type``: a gRPC target with its port, if any, from 1 to 65535 (channel.check_address)."""
    try:
        return check_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _Parser(argparse.ArgumentParser):
    """argparse's parser, reading any word that starts with ``-`` and a digit as a value, not an option.

    argparse takes only plain negative numbers (``-5``) as values: ``--delay -5s`` was refused as
    ``argument --delay: expected one argument``, as if no value had been given. As a value, the flag's own
    type refuses it with its range (``must be a duration from 0 ms to 3650d, …, got '-5s'``). No ``qm``
    option is named like a negative number, so nothing else can be meant. Subcommands' parsers are of this
    class too (argparse makes them of their parent's).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-\d")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="qm", description="Queue Manager: a gRPC job-queue service.")
    parser.add_argument(
        "--server",
        default=None,
        type=_server_address,
        help="server address host:port [env QM_SERVER, default localhost:50051]",
    )
    option(
        parser,
        "-o",
        "--output",
        choices=("table", "json"),
        default="table",
        help="output format",
        env="QM_OUTPUT",
    )
    auth.add_connection_flags(parser)
    parser.set_defaults(command=None)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    for module in (
        runtime,
        exec_worker,
        jobs,
        pull,
        queues,
        groups,
        dlq,
        workflows,
        schedules,
        dash,
        metrics,
        events,
        test_clock,
        external_events,
        auth,
    ):
        module.register(commands)
    _output_after_subcommands(parser)
    _negative_values(parser)
    return parser


def _output_after_subcommands(parser: argparse.ArgumentParser) -> None:
    """Accepts ``-o/--output`` after any subcommand too (``qm jobs list q -o json``).

    The copies default to SUPPRESS, so the value given before the subcommand (or from QM_OUTPUT) stands
    unless the option is repeated after it.
    """
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                if not any("--output" in a.option_strings for a in sub._actions):
                    sub.add_argument(
                        "-o",
                        "--output",
                        choices=("table", "json"),
                        default=argparse.SUPPRESS,
                        help="output format (also accepted before the command)",
                    )
                _output_after_subcommands(sub)


# argparse reads a value starting with "-" as an option unless it looks like a negative number, so a
# negative duration (`--delay -5s`, `clock advance -1h`) was refused as a missing argument; no qm option
# starts with "-" and a digit, so such a value reaches its own check, whose message names the range.
_NEGATIVE_VALUE = re.compile(r"^-\d")


def _negative_values(parser: argparse.ArgumentParser) -> None:
    """Lets values such as ``-5s`` through as values, in this parser and every subcommand's."""
    parser._negative_number_matcher = _NEGATIVE_VALUE
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _negative_values(sub)


# The server's hints name the RPC to call (they are read by every client); here, the qm command instead.
_NOT_REGISTERED = re.compile(
    r"queue '([^']*)' is not registered; register it first \(QueueService/RegisterQueue\)"
)


# A full queue's or group's message names the setting (server errors.py QueueFull): here, its flag.
_QUEUE_FULL = re.compile(r"^(queue '([^']*)' is full: .*?)\(QueueConfig\.max_size\)")
_GROUP_FULL = re.compile(r"^(group (.*) of queue '([^']*)' is full: .*?)\(GroupLimits\.max_size\)")


def _group_full_hint(m: re.Match[str]) -> str:
    """The commands that change a full group's max_size, with the group's name (Python's repr of it in the
    message) quoted for a shell, so that the command can be run as shown."""
    try:
        group = ast.literal_eval(m[2])  # a str literal: the server wrote it with !r
    except (ValueError, SyntaxError):
        group = None
    named = shlex.quote(group) if isinstance(group, str) else "GROUP"
    return f"{m[1]}(qm groups limit {m[3]} {named} --max-size, or qm queues register {m[3]} --group-max-size)"


def cli_message(message: str) -> str:
    """A server message with its RPC hints turned into ``qm`` commands."""
    message = _QUEUE_FULL.sub(lambda m: f"{m[1]}(qm queues register {m[2]} --max-size)", message)
    message = _GROUP_FULL.sub(_group_full_hint, message)
    return _NOT_REGISTERED.sub(
        lambda m: f"queue '{m[1]}' is not registered; register it first (qm queues register {m[1]})",
        message,
    )


def _stdout_closed() -> int:
    """The reader of our output went away (``qm … | head``): exit quietly, as a killed-by-SIGPIPE tool.

    Python would report the failed flush of stdout again at exit, so stdout is pointed at /dev/null.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + signal.SIGPIPE
