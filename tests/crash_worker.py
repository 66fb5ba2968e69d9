"""A worker process for crash tests: ``python -m tests.crash_worker ADDRESS QUEUE MODE CONCURRENCY``.

MODE ``hold`` takes jobs and never finishes them (so a SIGKILL catches them in flight);
MODE ``work`` completes each job after a short pause, recording its result.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from queue_manager import JobContext, QueueManager


async def main(address: str, queue: str, mode: str, concurrency: int) -> None:
    qm = QueueManager(address=address, concurrency=concurrency)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

    @qm.processor(queue)
    async def run(job: JobContext) -> dict[str, object]:
        if mode == "hold":
            await asyncio.Event().wait()
        await asyncio.sleep(0.005)
        return {"redelivery": job.redelivery, "stalled": job.stalled_count}

    await qm.start_workers()
    await stop.wait()
    await qm.shutdown()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
