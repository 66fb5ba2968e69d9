"""A soak worker process: ``python -m bench.soak_worker --server ADDR --queue Q --ledger FILE``.

Each run sleeps 0-4 ms and fails with probability --fail-rate (the job is retried). Every successful
run appends ``<job id> <redelivery 0|1>`` to the ledger before returning, so the soak can count runs
whose result the server may or may not have recorded (a SIGKILL can land in between).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
from typing import IO

from queue_manager import JobContext, QueueManager


async def run(args: argparse.Namespace, ledger: IO[str]) -> None:
    qm = QueueManager(address=args.server, concurrency=args.concurrency)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)

    @qm.processor(args.queue)
    async def work(job: JobContext) -> int:
        await asyncio.sleep(random.random() * 0.004)
        if random.random() < args.fail_rate:
            raise RuntimeError("injected failure")
        ledger.write(f"{job.id} {int(job.redelivery)}\n")
        ledger.flush()
        return 1

    await qm.start_workers()
    parent = os.getppid()
    while not stop.is_set() and os.getppid() == parent:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    await qm.shutdown()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--server", required=True)
    p.add_argument("--queue", required=True)
    p.add_argument("--ledger", required=True)
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--fail-rate", type=float, default=0.05)
    args = p.parse_args()
    with open(args.ledger, "a") as ledger:
        asyncio.run(run(args, ledger))


if __name__ == "__main__":
    main()
