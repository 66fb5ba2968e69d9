"""`python -m bench.events_push`: one PushEvent to a key with many jobs waiting for it, and how long it holds
Valkey.

On a fresh Valkey (the bench's binary and settings, persistence off) and one server (`python -m
queue_manager_server`), ``--waiters`` jobs (each count in turn; default 10,000 and 50,000) are parked
waiting for one event key, through the engine as WaitForEvent parks them, in queues of ``--per-queue``
jobs. Then one client pushes the key once and the harness reports:

- *push_ms*: the PushEvent call's wall time, as its caller sees it;
- *longest_us*: the longest single command Valkey ran meanwhile (its SLOWLOG, every command logged), which is
  how long every other client of Valkey waited at worst: the figure a push of a big key must keep small;
- *scripts* and *script_us*: the script calls (EVALSHA) during the push and Valkey's µs in them, from
  ``INFO commandstats``;
- *woken*: how many jobs the push woke (all must be).

The server's own background loops run meanwhile, so their few commands are in the log too. ``--rounds``
rounds, each on a fresh Valkey and server; medians with min–max.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bench.stack import Stack
from queue_manager import QueueManager
from queue_manager.v1 import types_pb2
from queue_manager_server.engine import Engine
from queue_manager_server.engine.external_events import ExternalEvents
from queue_manager_server.engine.records import NewJob

KEY = "bench:go"


async def _park(engine: Engine, waiters: int, per_queue: int) -> None:
    """Parks `waiters` jobs waiting for KEY, `per_queue` to a queue (event_wait.lua, as WaitForEvent)."""
    events = ExternalEvents(engine)
    wait = types_pb2.EventWait(keys=[KEY]).SerializeToString()
    for q, start in enumerate(range(0, waiters, per_queue)):
        queue, n = f"ev-{q}", min(per_queue, waiters - start)
        await engine.register_queue(queue, {})
        await engine.add_jobs(queue, [NewJob(id="", name="w", data=b"null") for _ in range(n)])
        ids: list[str] = []
        while len(ids) < n:
            ids += [j.id for j in (await engine.claim(queue, n - len(ids), "tok", "bench", 3_600_000)).jobs]
        for job_id in ids:
            await events.event_wait(queue, job_id, "tok", "", b"", -1, wait, [KEY])


async def _round(workdir: Path, waiters: int, per_queue: int) -> dict[str, Any]:
    stack = Stack(workdir, "bench", "WARNING")
    stack.start_valkey()
    try:
        stack.start_server()
        redis = Redis.from_url(stack.redis_url)
        engine = Engine(redis, "bench")
        await engine.scripts.load_all()
        await _park(engine, waiters, per_queue)
        qm = QueueManager(address=stack.address)
        await qm.push_event("bench:warm-up")  # connected, the triggers read once
        await redis.config_set("slowlog-log-slower-than", 0)
        await redis.config_set("slowlog-max-len", 100_000)
        await redis.slowlog_reset()
        await redis.config_resetstat()
        start = time.perf_counter()
        pushed = await qm.push_event(KEY, {"at": "bench"})
        push_ms = (time.perf_counter() - start) * 1000
        stats = (await redis.info("commandstats")).get("cmdstat_evalsha", {})
        longest = max(int(e["duration"]) for e in await redis.slowlog_get(100_000))
        woken = getattr(pushed, "woken_count", 0) or len(pushed.woken)
        await qm.shutdown()
        await redis.aclose()
        return {
            "push_ms": push_ms,
            "longest_us": longest,
            "scripts": int(stats.get("calls", 0)),
            "script_us": int(stats.get("usec", 0)),
            "woken": woken,
        }
    finally:
        stack.stop()


def _summary(runs: list[dict[str, Any]], field: str) -> str:
    values = [r[field] for r in runs]
    med = statistics.median(values)
    return f"{med:,.0f} ({min(values):,.0f}–{max(values):,.0f})"


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.events_push", description=__doc__.split("\n")[0])
    parser.add_argument("--waiters", default="10000,50000", help="waiter counts, comma-separated")
    parser.add_argument("--per-queue", type=int, default=5000, help="waiters per queue")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    print("| waiters | push ms | longest command µs | script calls | scripts' µs | woken |")
    print("|---|---|---|---|---|---|")
    failed = 0
    for waiters in (int(w) for w in args.waiters.split(",")):
        runs = []
        for _ in range(args.rounds):
            with tempfile.TemporaryDirectory(prefix="qm-events-push-") as workdir:
                runs.append(await _round(Path(workdir), waiters, args.per_queue))
        failed += sum(r["woken"] != waiters for r in runs)
        cells = [_summary(runs, f) for f in ("push_ms", "longest_us", "scripts", "script_us", "woken")]
        print(f"| {waiters:,} | " + " | ".join(cells) + " |", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
