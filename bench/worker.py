"""A benchmark worker process: `python -m bench.worker --queue Q --out-dir D [--mode MODE]`.

Runs an async processor on one queue (or on each of several: --queue a,b,c) through the public client
(`QueueManager.register_processor`) and counts every job by its id with `bench.recorder.Recorder` (files in
--out-dir, tag --tag):

- ``noop``: records the job id.
- ``latency``: records the job id and the nanoseconds from the producer's stamp (``data["t"]``) to the
  processor start; ``data["w"]`` marks warm-up jobs.
- ``features``: a job named ``FAILS_ONCE`` fails its first attempt (the queue retries it); only the
  successful run is recorded. With --side-queue, that queue's jobs are run too and counted apart.
- ``linked``: records the job id, on --queue and on --side-queue alike (where the chains' links, or the
  workflows' second steps, go).

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

from bench import FAILS_ONCE
from bench.recorder import Recorder
from queue_manager import JobContext, QueueManager


class _FirstAttemptFails(Exception):
    """Raised by the features processor on the first attempt of a marked job."""


def _register(qm: QueueManager, args: argparse.Namespace, rec: Recorder) -> None:
    async def record(job: JobContext) -> None:
        started = rec.started()
        data = job.data
        rec.latency(job.id, started, int(data["t"]), bool(data.get("w")))

    async def flaky(job: JobContext) -> None:
        rec.started()
        if job.attempts_made == 0 and job.name == FAILS_ONCE:
            raise _FirstAttemptFails("first attempt fails on purpose")
        rec.done(job.id)

    async def noop(job: JobContext) -> None:
        rec.started()
        rec.done(job.id)

    async def side(job: JobContext) -> None:
        rec.side_done()

    main = {"latency": record, "features": flaky}.get(args.mode, noop)
    for queue in args.queue.split(","):
        qm.register_processor(queue, main)
    # The linked modes' second queue (chain links, workflow steps) is counted as a run; the others' apart.
    for queue in filter(None, args.side_queue.split(",")):
        qm.register_processor(queue, noop if args.mode == "linked" else side)


def _signal_ready(path: str) -> None:
    Path(path).write_text(str(os.getpid()))


async def run(args: argparse.Namespace, rec: Recorder) -> None:
    """Runs the workers until SIGTERM/SIGINT, --max-seconds, or the parent's exit."""
    qm = QueueManager(address=args.server, concurrency=args.concurrency)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    _register(qm, args, rec)
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
    parser.add_argument("--queue", required=True, help="a queue, or several comma-separated")
    parser.add_argument("--side-queue", default="")
    parser.add_argument("--mode", choices=["noop", "latency", "features", "linked"], default="noop")
    parser.add_argument("--concurrency", type=int, default=int(os.environ.get("WORKER_CONCURRENCY", "200")))
    parser.add_argument("--ready-file", required=True)
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--tag", default="w")
    parser.add_argument("--max-seconds", type=float, default=600.0)
    args = parser.parse_args()
    rec = Recorder(args.out_dir, args.tag)
    rec.start_flusher()
    try:
        asyncio.run(run(args, rec))
    finally:
        rec.close()


if __name__ == "__main__":
    main()
