"""Rate limits against a real Valkey and real servers: the token bucket's accuracy with workers on two
server processes, the global concurrency cap across two servers, and retry-after (no attempt used, every
worker held off)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any

import pytest

from queue_manager import JobContext, JobState, QueueManager, RateLimitedError
from queue_manager_server.engine import Engine
from queue_manager_server.engine.control import Control
from tests.conftest import ServerFactory
from tests.procs import Procs
from tests.test_engine import job, register

WAIT = 20.0

Processor = Callable[[JobContext], Coroutine[Any, Any, Any]]


async def workers(
    clients: list[QueueManager], queue: str, make: Callable[[str], Processor], **kw: Any
) -> None:
    """Starts a worker on each client (tagged w0, w1, …), with its own processor; waits until connected."""
    for i, qm in enumerate(clients):
        qm.register_processor(queue, make(f"w{i}"))
        worker = await qm.start_workers(**kw)
        async with asyncio.timeout(WAIT):
            await worker.wait_connected()


# ---- engine ----------------------------------------------------------------------------------------


async def test_claim_honours_the_concurrency_cap_and_a_retry_after_hold(engine: Engine) -> None:
    await register(engine, concurrency=2)
    await engine.add_jobs("q", [job(str(i)) for i in range(5)])
    first = await engine.claim("q", 5, "t", "w", 30_000)
    assert first.code == 0 and len(first.jobs) == 2
    capped = await engine.claim("q", 5, "t", "w", 30_000)
    assert capped.code == 3 and not capped.jobs
    assert (await engine.complete("q", [(first.jobs[0].id, "t", b"1", "application/json")]))[0] == [0]
    assert len((await engine.claim("q", 5, "t2", "w", 30_000)).jobs) == 1  # the freed slot, no more

    # Retry-after: the job goes back delayed without using an attempt, and the queue holds off.
    slow = first.jobs[1]
    [(code, run_at)] = await Control(engine).retry_later("q", [(slow.id, "t", 500)])
    held = await engine.claim("q", 5, "t3", "w", 30_000)
    assert code == 1 and held.code == 2 and 0 < held.retry_after_ms <= 500
    assert run_at - held.now_ms <= 500
    record = await engine.get_job("q", slow.id)
    # Neither a finished run nor a stall: its next start counts as its first (claim.lua; no 'ats' is stored).
    assert (record.text("st"), record.int("atm"), record.int("stc")) == ("delayed", 0, 0)
    assert "ats" not in record.fields


def test_rate_limited_error_takes_seconds_or_a_timedelta() -> None:
    assert RateLimitedError(1.5).retry_after == timedelta(seconds=1.5)
    assert RateLimitedError(timedelta(milliseconds=250)).retry_after == timedelta(milliseconds=250)
    assert str(RateLimitedError(2)) == "rate limited: retry after 2s"
    assert RateLimitedError(timedelta(days=3650)).retry_after == timedelta(days=3650)
    # Infinity was refused as "must be at least 0 seconds"; a wait past what a Duration carries was taken.
    for bad in (-1, float("inf"), float("nan"), timedelta(days=3651), 1e12):
        with pytest.raises(
            ValueError, match=r"retry_after must be from 0 to 10 years in seconds, or a timedelta"
        ):
            RateLimitedError(bad)
    with pytest.raises(TypeError):
        RateLimitedError("soon")  # type: ignore[arg-type]


# ---- token bucket accuracy -----------------------------------------------------------------------


@pytest.mark.parametrize(("limit", "window_ms", "jobs"), [(20, 1000, 110), (100, 500, 600)])
async def test_rate_limit_accuracy_with_workers_on_two_server_processes(
    procs: Procs, redis_url: str, prefix: str, limit: int, window_ms: int, jobs: int
) -> None:
    burst = max(1, -(-limit // 10))  # claim.lua: the bucket holds a tenth of max, at least 1 token
    servers = await asyncio.gather(procs.server(redis_url, prefix), procs.server(redis_url, prefix))
    clients = [QueueManager(address=s.address, shutdown_grace=5.0) for s in servers for _ in range(2)]
    try:
        admin = clients[0]
        await admin.register_queue("limited", rate_limit={"max": limit, "duration": window_ms})
        await admin.pause_queue("limited")
        ids = await admin.add_bulk("limited", [{"name": "call"}] * jobs)
        ran: dict[str, int] = {}

        def make(tag: str) -> Processor:
            async def call(job: JobContext) -> str:
                ran[tag] = ran.get(tag, 0) + 1
                return "ok"

            return call

        await workers(clients, "limited", make, concurrency=3)
        await admin.resume_queue("limited")  # work is available from the first start to the last
        async with asyncio.timeout(WAIT):
            finished = [await admin.wait_for_job("limited", i) for i in ids]
        assert all(j.state is JobState.COMPLETED for j in finished)
        # Start times as the limiter saw them: Redis time of each claim (ms).
        starts = sorted(round(j.processed_at.timestamp() * 1000) for j in finished if j.processed_at)
        assert len(starts) == jobs and len(ran) >= 2
        busiest = max(sum(1 for t in starts[i:] if t < s + window_ms) for i, s in enumerate(starts))
        span_s = (starts[-1] - starts[0]) / 1000
        rate = (jobs - burst) / span_s  # the burst starts at once; the rest come at the refill rate
        allowed = limit * 1000 / window_ms
        print(
            f"rate limit {limit}/{window_ms}ms, burst {burst}: busiest window {busiest} starts, sustained "
            f"{rate:.2f}/s ({rate / allowed:.1%} of the limit) over {span_s:.2f}s; starts per worker {ran}"
        )
        assert busiest <= limit + burst
        # The lower bound is loose on purpose: alone this runs at 99% of the limit, but beside the suite's
        # other process on two cores the claims that follow each refill come late (92% in one CI run). A
        # limiter that lost a share of its tokens (half, or a window's worth per claim) still fails it.
        assert rate >= 0.85 * allowed
    finally:
        for qm in clients:
            await qm.shutdown()


# ---- concurrency cap -----------------------------------------------------------------------------


async def test_concurrency_cap_holds_across_two_servers(server_factory: ServerFactory) -> None:
    cap = 3
    servers = [await server_factory(), await server_factory()]
    clients = [QueueManager(address=s.address, shutdown_grace=5.0) for s in servers for _ in range(2)]
    active, peak, ran = 0, 0, set()
    try:
        admin = clients[0]
        await admin.register_queue("capped", concurrency=cap)
        assert (await admin.get_queue("capped")).config.concurrency == cap

        def make(tag: str) -> Processor:
            async def run(job: JobContext) -> None:
                nonlocal active, peak
                active += 1
                peak = max(peak, active)
                ran.add(tag)
                try:
                    await asyncio.sleep(0.05)
                finally:
                    active -= 1

            return run

        await workers(clients, "capped", make, concurrency=4)  # 16 slots between them
        started = time.monotonic()
        ids = await admin.add_bulk("capped", [{"name": "x"}] * 30)
        async with asyncio.timeout(WAIT):
            for i in ids:
                assert (await admin.wait_for_job("capped", i)).state is JobState.COMPLETED
        elapsed = time.monotonic() - started
        print(f"concurrency cap {cap}: peak {peak} active, 30 jobs of 50 ms in {elapsed:.2f}s")
        assert peak == cap
        # Freed slots are filled at once (a wake-up per finished run), never by the 5 s idle recheck.
        assert elapsed < 4.0
        assert len(ran) >= 2  # the freed slots went round the workers
    finally:
        for qm in clients:
            await qm.shutdown()


# ---- retry-after ---------------------------------------------------------------------------------


async def test_retry_after_uses_no_attempt_and_holds_every_worker(server_factory: ServerFactory) -> None:
    wait_s = 1.0
    servers = [await server_factory(), await server_factory()]
    clients = [QueueManager(address=s.address, shutdown_grace=5.0) for s in servers]
    runs: list[tuple[str, str, int, bool, float]] = []  # worker, job name, attempts made, redelivery, time
    limited_started, go = asyncio.Event(), asyncio.Event()
    raised_at: list[float] = []
    try:
        admin = clients[0]
        await admin.register_queue("api")
        await admin.pause_queue("api")
        limited = await admin.add_job("api", "limited", None, {"attempts": 1})

        def make(tag: str) -> Processor:
            async def call(job: JobContext) -> str:
                runs.append((tag, job.name, job.attempts_made, job.redelivery, time.monotonic()))
                if job.name == "limited" and not raised_at:
                    limited_started.set()
                    await go.wait()
                    raised_at.append(time.monotonic())
                    raise RateLimitedError(wait_s)  # "429: retry after 1 s"
                await asyncio.sleep(0.02)
                return "ok"

            return call

        await workers(clients, "api", make, concurrency=1)
        await admin.resume_queue("api")
        async with asyncio.timeout(WAIT):
            await limited_started.wait()
        # More work arrives while the limited call runs (held back until its outcome is recorded).
        await admin.pause_queue("api")
        others = await admin.add_bulk("api", [{"name": "other"}] * 6)
        go.set()
        async with asyncio.timeout(WAIT):
            while True:  # no event says "delayed": read the job until its failure is recorded
                if (await admin.get_job("api", limited.id)).state is JobState.DELAYED:
                    break
                await asyncio.sleep(0.01)
        await admin.resume_queue("api")  # both workers are idle, with credit, on two servers
        async with asyncio.timeout(WAIT):
            done = [await admin.wait_for_job("api", i) for i in [*others, limited.id]]
        assert all(j.state is JobState.COMPLETED for j in done)

        after = [r for r in runs if r[4] > raised_at[0]]
        first_after = min(r[4] for r in after) - raised_at[0]
        print(f"retry-after {wait_s}s: next start {first_after:.3f}s after the 429, by {len(after)} runs")
        assert first_after >= wait_s - 0.02  # nobody started a job during the hold
        assert first_after < wait_s + 2.0  # and the dispatchers came back when it ended, without polling
        assert {r[0] for r in after if r[1] == "other"} == {"w0", "w1"}  # every worker was held, then ran
        limited_runs = [r for r in runs if r[1] == "limited"]
        assert len(limited_runs) == 2
        assert [(r[2], r[3]) for r in limited_runs] == [(0, False), (0, False)]  # no attempt, no redelivery
    finally:
        for qm in clients:
            await qm.shutdown()


async def test_a_rate_limited_queue_is_not_claimed_on_every_credit(server_factory: ServerFactory) -> None:
    """Beside a busy queue, a worker returns credits many times a second. A rate-limited queue whose bucket
    is empty must not be claimed at each of them (each such claim is refused): it is claimed when its
    tokens are due, at most every 25 ms, and asks for about what the bucket gave."""
    server = await server_factory()
    dispatcher = server.app.dispatcher
    assert dispatcher is not None
    engine = dispatcher.engine
    claims: Counter[str] = Counter()
    asked: list[int] = []
    claim = engine.claim

    async def counted(queue: str, take: int, *args: Any, **kwargs: Any) -> Any:
        claims[queue] += 1
        if queue == "limited":
            asked.append(take)
        return await claim(queue, take, *args, **kwargs)

    engine.claim = counted  # type: ignore[method-assign]
    jobs = 4_000
    async with QueueManager(server.address, timeout=30, concurrency=200) as qm:
        await qm.register_queue("busy")
        await qm.register_queue("limited", rate_limit={"max": 10, "duration": 1000})
        await qm.add_bulk("busy", [{"name": "b"} for _ in range(jobs)])
        await qm.add_bulk("limited", [{"name": "l"} for _ in range(200)])
        done = asyncio.Event()
        count = 0

        @qm.processor("busy")
        async def busy(job: JobContext) -> None:
            nonlocal count
            count += 1
            if count == jobs:
                done.set()

        @qm.processor("limited")
        async def limited(job: JobContext) -> None:
            return None

        started = time.monotonic()
        worker = await qm.start_workers(handle_signals=False)
        await asyncio.wait_for(done.wait(), 60)
        elapsed = time.monotonic() - started
        await worker.shutdown()
    # Refused claims come at most every 25 ms (plus the bucket's own refills, 10/s); credit returns number
    # in the hundreds here and used to cost one claim each.
    assert claims["limited"] <= 50 * elapsed + 20, (claims, elapsed)
    assert claims["busy"] > 0
    assert max(asked[3:], default=0) <= 32  # after the first refusals it asks for about what it got


async def test_a_fast_limit_with_a_small_burst_keeps_its_rate(server_factory: ServerFactory) -> None:
    """40 per 100 ms: the bucket holds 4 tokens and fills in 10 ms. A dispatcher that came back only every
    25 ms (its pace for slower limits) would find 4 tokens each time: 40% of the rate. It comes back twice
    per fill instead."""
    limit, window_ms, jobs, burst = 40, 100, 400, 4
    server = await server_factory()
    async with QueueManager(server.address, timeout=30, concurrency=50) as qm:
        await qm.register_queue("fast", rate_limit={"max": limit, "duration": window_ms})
        await qm.pause_queue("fast")
        ids = await qm.add_bulk("fast", [{"name": "f"}] * jobs)

        @qm.processor("fast")
        async def run(job: JobContext) -> None:
            return None

        worker = await qm.start_workers(handle_signals=False)
        await asyncio.wait_for(worker.wait_connected(), WAIT)
        await qm.resume_queue("fast")
        async with asyncio.timeout(WAIT):
            finished = [await qm.wait_for_job("fast", i) for i in ids]
        await worker.shutdown()
    starts = sorted(round(j.processed_at.timestamp() * 1000) for j in finished if j.processed_at)
    assert len(starts) == jobs
    rate = (jobs - burst) / ((starts[-1] - starts[0]) / 1000)
    allowed = limit * 1000 / window_ms
    print(f"rate limit {limit}/{window_ms}ms: sustained {rate:.1f}/s ({rate / allowed:.1%} of the limit)")
    assert rate >= 0.8 * allowed
