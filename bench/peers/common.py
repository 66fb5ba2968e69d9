"""Shared by the Python peers' apps (they run in bench/.venv-peers): settings, readiness, watchdog, producers.

Standard library and bench.recorder only. Settings come from the environment the harness sets:
BENCH_REDIS_URL, BENCH_QUEUE, BENCH_MODE (noop|latency), BENCH_OUT_DIR, BENCH_READY_DIR, BENCH_HARNESS_PID,
BENCH_MAX_SECONDS.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.recorder import Recorder

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
QUEUE = os.environ.get("BENCH_QUEUE", "bench")


_lock = threading.Lock()
_recorder: Recorder | None = None


def recorder() -> Recorder:
    """This worker process's recorder, started (with the watchdog) on first use: a peer's worker threads
    may take a job before its boot hook has run."""
    global _recorder
    rec = _recorder
    if rec is not None:
        return rec
    with _lock:
        if _recorder is None:
            rec = Recorder(os.environ["BENCH_OUT_DIR"], "w")
            rec.start_flusher()
            harness = int(os.environ["BENCH_HARNESS_PID"])
            _watchdog(harness, float(os.environ.get("BENCH_MAX_SECONDS", "600")))
            _recorder = rec
        return _recorder


def worker_boot() -> Recorder:
    """In a worker process's boot hook: the recorder, then the ready file."""
    rec = recorder()
    ready = Path(os.environ["BENCH_READY_DIR"]) / f"ready-{os.getpid()}"
    ready.write_text(str(os.getpid()))
    return rec


def _watchdog(harness: int, max_seconds: float) -> None:
    """Ends this worker when the harness is gone or time is up: SIGTERM to its supervisor (which the
    harness started) while that is still its parent; a worker whose supervisor is gone exits by itself."""
    deadline = time.monotonic() + max_seconds
    supervisor = os.getppid()

    def loop() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != supervisor:
                os._exit(0)  # orphaned: never signal whatever adopted us
            try:
                os.kill(harness, 0)
                gone = False
            except ProcessLookupError:
                gone = True
            if gone or time.monotonic() > deadline:
                os.kill(supervisor, signal.SIGTERM)
                return

    threading.Thread(target=loop, name="bench-watchdog", daemon=True).start()


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    rank = max(1, -(-q * len(values) // 100))
    return values[int(min(rank, len(values))) - 1]


def call_stats(ms: list[float], prefix: str) -> dict[str, float]:
    if not ms:
        return {}
    return {
        f"{prefix}_mean_ms": statistics.fmean(ms),
        f"{prefix}_p50_ms": percentile(ms, 50),
        f"{prefix}_p99_ms": percentile(ms, 99),
    }


def producer_args() -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["bulk", "single", "latency"])
    p.add_argument("--queue", default=QUEUE)
    p.add_argument("--jobs", type=int, default=1000)
    p.add_argument("--inflight", type=int, default=50)
    p.add_argument("--rate", type=int, default=500)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--seconds", type=float, default=10.0)
    return p.parse_args()


def emit(run: Callable[[], dict[str, Any]]) -> None:
    """Runs a producer mode and prints its JSON line, with this process's CPU time for the work."""
    cpu0 = time.process_time()
    result = run()
    result["cpu_s"] = time.process_time() - cpu0
    print(json.dumps(result), flush=True)
