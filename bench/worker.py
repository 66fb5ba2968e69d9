"""A benchmark worker process: `python -m bench.worker --queue Q [--latency-file F]`.

Runs a no-op async processor on one queue through the public client (`QueueManager` + `@qm.processor`).
With --latency-file it records, for every job, nanoseconds from the producer's stamp (`data["t"]`) to
the start of the processor, one line per job: `<latency_ns> <warmup 0|1> <stamp_ns>`.

It writes --ready-file once the server has welcomed its stream, stops on SIGTERM/SIGINT, and exits on its
own after --max-seconds or when its parent goes away, so it can never outlive the benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path
from typing import IO

from queue_manager import JobContext, QueueManager


def _signal_ready(path: str) -> None:
    Path(path).write_text(str(os.getpid()))


async def run(args: argparse.Namespace, out: IO[str] | None) -> None:
    """Runs the workers until SIGTERM/SIGINT, --max-seconds, or the parent's exit."""
    qm = QueueManager(address=args.server, concurrency=args.concurrency)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    if out is not None:
        sink = out

        @qm.processor(args.queue)
        async def record(job: JobContext) -> None:
            started = time.time_ns()
            data = job.data
            stamp = int(data["t"])
            sink.write(f"{started - stamp} {1 if data.get('w') else 0} {stamp}\n")

    else:

        @qm.processor(args.queue)
        async def noop(job: JobContext) -> None:
            return None

    try:
        worker = await qm.start_workers()
        await asyncio.wait_for(worker.wait_connected(), timeout=60)
        _signal_ready(args.ready_file)
        parent = os.getppid()
        deadline = time.monotonic() + args.max_seconds
        while not stop.is_set() and time.monotonic() < deadline and os.getppid() == parent:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)
    finally:
        await asyncio.wait_for(qm.shutdown(grace=5.0), timeout=20)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--server", default=os.environ.get("QM_SERVER", "localhost:50051"))
    parser.add_argument("--queue", required=True)
    parser.add_argument("--concurrency", type=int, default=int(os.environ.get("WORKER_CONCURRENCY", "200")))
    parser.add_argument("--ready-file", required=True)
    parser.add_argument("--latency-file", default="")
    parser.add_argument("--max-seconds", type=float, default=600.0)
    args = parser.parse_args()
    if not args.latency_file:
        asyncio.run(run(args, None))
        return
    # Line-buffered: every sample reaches the file even if the process is killed afterwards.
    with open(args.latency_file, "a", buffering=1) as out:
        asyncio.run(run(args, out))


if __name__ == "__main__":
    main()
