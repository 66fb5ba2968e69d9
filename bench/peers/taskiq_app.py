"""taskiq peer (benchmark only, bench/.venv-peers): taskiq-redis's RedisStreamBroker (acknowledged
delivery, like ours), no result backend.

Workers: ``taskiq worker bench.peers.taskiq_app:broker --workers 2 --max-async-tasks 200 --no-parse``
(``--no-parse`` skips pydantic argument parsing, as taskiq documents for speed). The consumer group reads
from the stream's start (``consumer_id="0"``) so jobs added before the workers start are seen. Producer:
``python -m bench.peers.taskiq_app MODE ...``: taskiq has no bulk API, so ``bulk`` kicks 1,000 tasks at a
time concurrently; ``single`` runs --inflight concurrent callers; ``latency`` kicks at a steady rate.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from taskiq import Context, TaskiqDepends, TaskiqEvents, TaskiqState
from taskiq_redis import RedisStreamBroker

from bench.peers import common
from bench.recorder import Recorder

broker = RedisStreamBroker(url=common.REDIS_URL, queue_name=common.QUEUE, consumer_id="0")
_rec: Recorder | None = None
# taskiq's documented way to reach the message (and its task id) from a task: a Context dependency.
_CONTEXT = TaskiqDepends()


@broker.on_event(TaskiqEvents.WORKER_STARTUP)
async def _startup(state: TaskiqState) -> None:
    global _rec
    _rec = common.worker_boot()


@broker.on_event(TaskiqEvents.WORKER_SHUTDOWN)
async def _shutdown(state: TaskiqState) -> None:
    if _rec is not None:
        _rec.close()


@broker.task(task_name="noop")
async def noop(i: int, context: Context = _CONTEXT) -> None:
    rec = common.recorder()
    rec.started()
    rec.done(context.message.task_id)


@broker.task(task_name="latency")
async def latency(t: str, w: int, context: Context = _CONTEXT) -> None:
    rec = common.recorder()
    started = rec.started()
    rec.latency(context.message.task_id, started, int(t), bool(w))


async def _bulk(jobs: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    for start in range(0, jobs, 1000):
        await asyncio.gather(*(noop.kiq(i) for i in range(start, min(jobs, start + 1000))))
    return {"jobs": jobs, "seconds": time.perf_counter() - t0}


async def _single(jobs: int, inflight: int) -> dict[str, Any]:
    counter = iter(range(jobs))
    ms: list[float] = []

    async def caller() -> None:
        for i in counter:
            t = time.perf_counter()
            await noop.kiq(i)
            ms.append((time.perf_counter() - t) * 1000)

    t0 = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(inflight)))
    return {"jobs": len(ms), "seconds": time.perf_counter() - t0, **common.call_stats(ms, "call")}


async def _steady(rate: int, count: int, warm: bool, ms: list[float]) -> float:
    interval = 1.0 / rate
    tasks: set[asyncio.Task[None]] = set()

    async def one(stamp: str) -> None:
        t = time.perf_counter()
        await latency.kiq(stamp, 1 if warm else 0)
        ms.append((time.perf_counter() - t) * 1000)

    t0 = time.perf_counter()
    for i in range(count):
        delay = t0 + i * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(str(time.time_ns())))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)
    return count / (time.perf_counter() - t0)


async def _latency(rate: int, warmup: float, seconds: float) -> dict[str, Any]:
    warm, measured = int(rate * warmup), int(rate * seconds)
    if warm:
        await _steady(rate, warm, True, [])
    ms: list[float] = []
    achieved = await _steady(rate, measured, False, ms)
    return {"jobs": warm + measured, "achieved_rate": achieved, **common.call_stats(ms, "add")}


async def _run(a: Any) -> dict[str, Any]:
    await broker.startup()
    try:
        if a.mode == "bulk":
            return await _bulk(a.jobs)
        if a.mode == "single":
            return await _single(a.jobs, a.inflight)
        return await _latency(a.rate, a.warmup, a.seconds)
    finally:
        await broker.shutdown()


def main() -> None:
    a = common.producer_args()
    common.emit(lambda: asyncio.run(_run(a)))


if __name__ == "__main__":
    main()
