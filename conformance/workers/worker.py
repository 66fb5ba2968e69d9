"""The Python conformance worker: the kit's processor contract (conformance/README.md) on the Python SDK.

Run by the harness as ``python conformance/workers/worker.py`` with QM_CONFORMANCE_ADDRESS,
QM_CONFORMANCE_QUEUE and QM_CONFORMANCE_CONCURRENCY set; stops gracefully on SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

from queue_manager import JobContext, QueueManager


async def process(job: JobContext) -> Any:
    """Does what the job's name says, with its data (a JSON object)."""
    data: dict[str, Any] = job.data or {}
    if job.name == "echo":
        return data
    if job.name == "fail":
        # Fails the first `times` attempts (every attempt without it), then succeeds.
        if "times" not in data or job.attempts_made < data["times"]:
            raise RuntimeError(data.get("message", "failed"))
        return {"attempts": job.attempts_made + 1}
    if job.name == "sleep":
        await asyncio.sleep(data.get("ms", 0) / 1000)  # a cancel cancels this task
        return {"slept": data.get("ms", 0)}
    if job.name == "progress":
        for step in data.get("steps", []):
            await job.update_progress(step)
        return {"steps": len(data.get("steps", []))}
    if job.name == "checkpoint":
        step = data.get("step", 0)
        if step == 0:
            await job.update_data({"step": 1})
            raise RuntimeError("checkpointed at step 1")
        return {"resumed_at": step}
    raise ValueError(f"unknown job name {job.name!r}")


async def main() -> None:
    queue = os.environ["QM_CONFORMANCE_QUEUE"]
    qm = QueueManager(
        os.environ["QM_CONFORMANCE_ADDRESS"],
        concurrency=int(os.environ.get("QM_CONFORMANCE_CONCURRENCY", "2")),
        shutdown_grace=10.0,
    )
    qm.processor(queue)(process)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await qm.start_workers()
    await stop.wait()
    await qm.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
