"""``qm exec``: a worker that runs a command line once per job of its queues (`ExecProcessor`).

``qm exec --queue NAME [--queue NAME2 …] [options] -- COMMAND ARG…`` runs COMMAND with its arguments, no
shell between. The first SIGTERM or SIGINT shuts down gracefully, as ``qm worker`` does: no more jobs, and
the running commands may finish within ``--grace``. A second one stops them (SIGTERM to each command's
process group, SIGKILL after ``--kill-grace``) and their jobs go back to waiting. Either way ``qm exec``
exits 0 once shut down, with no command left running.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal

from queue_manager.channel import resolve_address
from queue_manager.checks import MAX_CONCURRENCY
from queue_manager.cli.common import UsageError, bounded_int, key_value, option
from queue_manager.cli.runtime import _seconds, _tier
from queue_manager.exec_worker import ExecProcessor
from queue_manager.worker import Worker

logger = logging.getLogger("queue_manager.cli")

_EXAMPLE = "qm exec --queue images -- ./resize.sh --width 800"


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``exec`` to the ``qm`` parser."""
    parser = commands.add_parser(
        "exec",
        help="run a command once per job (a worker in any language)",
        description="Runs COMMAND once per job of the queues: the job's data on its stdin, QM_JOB_ID and "
        "friends in its environment, its stdout the result when it exits 0, its stderr the job's log "
        f"(docs/jobs.md). Example: {_EXAMPLE}",
    )
    parser.add_argument(
        "--queue", action="append", required=True, help="a queue whose jobs run the command (repeatable)"
    )
    option(
        parser,
        "--concurrency",
        type=bounded_int(1, MAX_CONCURRENCY),
        help="commands run at once (default WORKER_CONCURRENCY or 10)",
    )
    parser.add_argument(
        "--tier",
        type=_tier,
        default=0,
        help="preference among the queues' workers (0-100, default 0): jobs go to a higher tier only while "
        "the workers of lower tiers on the same server are full",
    )
    parser.add_argument(
        "--label",
        action="append",
        type=key_value,
        metavar="KEY=VALUE",
        help="a label of this worker, shown by qm workers list and the dashboard (repeatable)",
    )
    parser.add_argument(
        "--grace",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="on shutdown, how long running commands may take to finish before they are stopped (default 30)",
    )
    parser.add_argument(
        "--kill-grace",
        type=_seconds,
        default=5.0,
        metavar="SECONDS",
        help="how long a command may take to exit after SIGTERM (timeout, cancel, forced shutdown) before "
        "SIGKILL (default 5)",
    )
    parser.add_argument(
        "--no-retry-exit-code",
        action="append",
        type=bounded_int(1, 255),
        metavar="N",
        help="an exit status that fails the job for good, without the attempts left (repeatable)",
    )
    parser.add_argument(
        "--max-output-bytes",
        type=bounded_int(1),
        metavar="BYTES",
        help="most stdout a command may write, the job's result; more fails the attempt (default "
        "QM_MAX_PAYLOAD_BYTES or 1048576, the server's payload limit)",
    )
    parser.add_argument(
        "argv",
        nargs=argparse.REMAINDER,
        metavar="-- COMMAND [ARG ...]",
        help="the program to run and its arguments, after --",
    )
    parser.set_defaults(command="exec", handler=_cmd_exec)


def _cmd_exec(args: argparse.Namespace) -> int:
    command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not command:
        raise UsageError(f"qm exec needs the command to run after --, e.g. {_EXAMPLE}")
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    try:
        processor = ExecProcessor(
            command,
            kill_grace=args.kill_grace,
            no_retry_exit_codes=args.no_retry_exit_code or (),
            max_output_bytes=args.max_output_bytes,
        )
    except ValueError as exc:  # QM_MAX_PAYLOAD_BYTES is not a number
        raise UsageError(str(exc)) from None
    if shutil.which(command[0]) is None:
        # Not refused: the program may appear later (a mount, a deploy); until then each job fails for good.
        logger.warning("%r is not an executable file here or on PATH: its jobs will fail", command[0])
    worker = Worker(
        resolve_address(args.server),
        dict.fromkeys(args.queue, processor),
        concurrency=args.concurrency,
        labels={"exec": os.path.basename(command[0]), **dict(args.label or [])},
        shutdown_grace=args.grace,
        tier=args.tier,
    )
    asyncio.run(_run(worker, processor))
    return 0


async def _run(worker: Worker, processor: ExecProcessor) -> None:
    await worker.start()
    _install_signal_handlers(worker, processor)
    try:
        await worker.wait_closed()
    finally:
        await processor.close()


def _install_signal_handlers(worker: Worker, processor: ExecProcessor) -> None:
    """The first SIGTERM or SIGINT shuts the worker down gracefully; a later one stops the commands still
    running (``qm worker`` leaves a second signal its default action, which here would leave them
    running, each in a session of its own)."""
    loop = asyncio.get_running_loop()
    shutting_down: list[asyncio.Task[None]] = []  # a reference keeps the task alive

    def on_signal(signum: int) -> None:
        name = signal.Signals(signum).name
        if shutting_down:
            logger.warning("signal %s: stopping the running commands", name)
            processor.cancel_all()
            return
        logger.info(
            "signal %s: shutting down worker %s; running commands may finish within %gs (signal again "
            "to stop them)",
            name,
            worker.worker_id,
            worker.shutdown_grace,
        )
        shutting_down.append(loop.create_task(worker.shutdown()))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
