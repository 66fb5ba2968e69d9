"""Dramatiq peer (benchmark only, bench/.venv-peers): its Redis broker, default middleware plus
CurrentMessage (to count each job by its own message id).

Workers: ``dramatiq bench.peers.dramatiq_app --processes 2 --threads 8`` (Dramatiq's defaults: one
process per core, 8 threads each). Producer: ``python -m bench.peers.dramatiq_app MODE ...``: Dramatiq has
no bulk API, so ``bulk`` sends one message after another as its docs show; ``single`` sends from
--inflight threads; ``latency`` sends at a steady rate.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage, Middleware

from bench.peers import common
from bench.recorder import Recorder

broker = RedisBroker(url=common.REDIS_URL)
broker.add_middleware(CurrentMessage())
_rec: Recorder | None = None


class _Bench(Middleware):
    """Starts the recorder in each worker process and writes everything left on shutdown."""

    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        global _rec
        _rec = common.worker_boot()

    def before_worker_shutdown(self, broker: Any, worker: Any) -> None:
        if _rec is not None:
            _rec.close()


broker.add_middleware(_Bench())
dramatiq.set_broker(broker)


def _message_id() -> str:
    message = CurrentMessage.get_current_message()
    return message.message_id if message is not None else "?"


@dramatiq.actor(queue_name=common.QUEUE, max_retries=0)
def noop(i: int) -> None:
    rec = common.recorder()
    rec.started()
    rec.done(_message_id())


@dramatiq.actor(queue_name=common.QUEUE, max_retries=0)
def latency(t: str, w: int) -> None:
    rec = common.recorder()
    started = rec.started()
    rec.latency(_message_id(), started, int(t), bool(w))


def _bulk(jobs: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    for i in range(jobs):
        noop.send(i)
    return {"jobs": jobs, "seconds": time.perf_counter() - t0}


def _single(jobs: int, inflight: int) -> dict[str, Any]:
    counter = iter(range(jobs))
    lock = threading.Lock()
    ms: list[float] = []

    def caller() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            t = time.perf_counter()
            noop.send(i)
            ms.append((time.perf_counter() - t) * 1000)

    with ThreadPoolExecutor(max_workers=inflight) as pool:
        t0 = time.perf_counter()
        for future in [pool.submit(caller) for _ in range(inflight)]:
            future.result()
        elapsed = time.perf_counter() - t0
    return {"jobs": len(ms), "seconds": elapsed, **common.call_stats(ms, "call")}


def _steady(rate: int, count: int, warm: bool, ms: list[float]) -> float:
    interval = 1.0 / rate
    t0 = time.perf_counter()
    for i in range(count):
        delay = t0 + i * interval - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        t = time.perf_counter()
        latency.send(str(time.time_ns()), 1 if warm else 0)
        ms.append((time.perf_counter() - t) * 1000)
    return count / (time.perf_counter() - t0)


def _latency(rate: int, warmup: float, seconds: float) -> dict[str, Any]:
    warm, measured = int(rate * warmup), int(rate * seconds)
    if warm:
        _steady(rate, warm, True, [])
    ms: list[float] = []
    achieved = _steady(rate, measured, False, ms)
    return {"jobs": warm + measured, "achieved_rate": achieved, **common.call_stats(ms, "add")}


def main() -> None:
    a = common.producer_args()
    if a.mode == "bulk":
        common.emit(lambda: _bulk(a.jobs))
    elif a.mode == "single":
        common.emit(lambda: _single(a.jobs, a.inflight))
    else:
        common.emit(lambda: _latency(a.rate, a.warmup, a.seconds))


if __name__ == "__main__":
    main()
