"""A worker process that journals every run: ``python -m tests.ledger.worker --server TARGET --queues a,b
--journal FILE [--id ID] [--concurrency N] [--run-ms MS] [--grace S] [--keepalive-ms MS]``.

It runs the stock Python worker (`queue_manager.worker.Worker`). Each run appends ``start`` before the
processor works and ``done`` (or ``fail``) before it returns, with the job's queue, id, attempts made,
stalled count, redelivery flag, lease token and this worker's id; so a run whose outcome the server may
have recorded is always in the journal first. The result is ``{"w": worker id, "tok": lease token,
"atm": attempts made, "stc": stalled count}``, which lets the checker tell which run's completion the
server kept.

Job data steers a run: ``run_ms`` (how long it takes; default ``--run-ms``), ``fail_until`` (raise while
``attempts_made`` is below it), ``doom`` (raise `UnrecoverableError`: fail for good, dead-lettered).
SIGTERM shuts the worker down gracefully (running jobs finish within ``--grace``); the process also stops
when its parent is gone. ``--server`` is any gRPC target, e.g. ``ipv4:127.0.0.1:5001,127.0.0.1:5002`` to
fail over between servers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path
from typing import Any

from queue_manager import JobContext
from queue_manager.errors import UnrecoverableError
from queue_manager.worker import Worker
from tests.ledger.journal import Journal


def run_fields(job: JobContext, worker_id: str) -> dict[str, Any]:
    """What identifies one run of a job in the journal."""
    return {
        "q": job.queue_name,
        "id": job.id,
        "atm": job.attempts_made,
        "stc": job.stalled_count,
        "re": job.redelivery,
        "tok": job.lease_token,
        "w": worker_id,
    }


def make_processor(journal: Journal, worker_id: str, run_ms: int) -> Any:
    async def process(job: JobContext) -> dict[str, Any]:
        run = run_fields(job, worker_id)
        journal.record("start", **run)
        data = job.data if isinstance(job.data, dict) else {}
        try:
            await asyncio.sleep(float(data.get("run_ms", run_ms)) / 1000)
        except asyncio.CancelledError:
            journal.record("abandon", **run)
            raise
        if data.get("doom"):
            journal.record("fail", **run)
            raise UnrecoverableError("doomed by its data")
        if job.attempts_made < int(data.get("fail_until", 0)):
            journal.record("fail", **run)
            raise RuntimeError(f"failing attempt {job.attempts_made + 1} on purpose")
        journal.record("done", **run)
        return {"w": worker_id, "tok": job.lease_token, "atm": job.attempts_made, "stc": job.stalled_count}

    return process


async def main(args: argparse.Namespace) -> None:
    journal = Journal(Path(args.journal))
    worker_id = args.id or f"w{os.getpid()}"
    process = make_processor(journal, worker_id, args.run_ms)
    options: list[tuple[str, Any]] = []
    if args.keepalive_ms:
        options = [(f"grpc.keepalive_{x}_ms", args.keepalive_ms) for x in ("time", "timeout")]
    worker = Worker(
        args.server,
        {q: process for q in args.queues.split(",")},
        concurrency=args.concurrency,
        worker_id=worker_id,
        channel_options=options,
        shutdown_grace=args.grace,
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await worker.start()
    journal.record("ready", w=worker_id, pid=os.getpid())
    parent = os.getppid()
    while not stop.is_set() and os.getppid() == parent:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    journal.record("stopping", w=worker_id)
    await worker.shutdown()
    journal.record("stopped", w=worker_id)
    journal.close()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", required=True)
    p.add_argument("--queues", required=True, help="comma-separated queue names")
    p.add_argument("--journal", required=True)
    p.add_argument("--id", default="")
    p.add_argument("--concurrency", type=int, default=10)
    p.add_argument("--run-ms", type=int, default=20)
    p.add_argument("--grace", type=float, default=30.0)
    p.add_argument("--keepalive-ms", type=int, default=0, help="client keepalive ping interval and timeout")
    return p.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "WARNING"), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    asyncio.run(main(parse()))
