"""``qm test-server``: a real server on a test clock, for test suites in any language (docs/testing.md).

It is `queue_manager_server.testing.TestServer` as a process: its own embedded Valkey in a new temporary
directory (removed at exit), the test clock on, served on a loopback port. It never reads QM_* or REDIS_*
settings from the environment and takes no Redis address: a server whose clock a test moves must not be
able to reach a production Redis by mistake. Tests move the clock through TestClockService (the clients'
`advance_test_clock`, `qm clock advance`).

The first line on stdout is the server's address (``127.0.0.1:PORT``), flushed at once, for the harness
that started it; the rest goes to stderr. SIGTERM or SIGINT stops it (the temporary directory goes too).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

from queue_manager_server import logs
from queue_manager_server.app import StartupError
from queue_manager_server.config import listen
from queue_manager_server.testing import TestServer


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qm test-server",
        description=(
            "A private Queue Manager on a test clock, for test suites (docs/testing.md): its own embedded "
            "Valkey in a temporary directory; prints its address on the first line of stdout."
        ),
    )
    parser.add_argument(
        "--listen",
        type=listen,
        default="127.0.0.1:0",
        help="HOST:PORT to serve gRPC on (default: a free port)",
    )
    parser.add_argument(
        "--lease-ms", type=_positive, default=None, help="job lease (ms); the server's default"
    )
    parser.add_argument(
        "--heartbeat-ms",
        type=_positive,
        default=None,
        help="worker heartbeat interval (ms); the server's default",
    )
    parser.add_argument(
        "--log-level",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        default="WARNING",
        help="server log level, to stderr (default WARNING)",
    )
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of ms, not {text}")
    return value


async def _run(args: argparse.Namespace) -> None:
    settings: dict[str, object] = {"listen": args.listen}
    if args.lease_ms is not None:
        settings["lease_ms"] = args.lease_ms
    if args.heartbeat_ms is not None:
        settings["heartbeat_ms"] = args.heartbeat_ms
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with TestServer(**settings) as server:
        print(server.address, flush=True)
        print(
            f"qm test-server: listening on {server.address} on a test clock (docs/testing.md); "
            "SIGTERM or Ctrl-C stops it",
            file=sys.stderr,
            flush=True,
        )
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.setup(args.log_level)
    try:
        asyncio.run(_run(args))
    except StartupError as exc:
        # The server's advice names QM_LISTEN, which qm test-server does not read (it reads no settings
        # from the environment, so a suite's run never picks up a production server's).
        print(f"qm test-server: {str(exc).replace('--listen or QM_LISTEN', '--listen')}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
