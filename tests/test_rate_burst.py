"""A rate limit's burst (RateLimit.burst: the token bucket's capacity) against a real Valkey and a real
server: the burst starts at once after idling and the next start waits a refill, for a queue and for its
fairness groups; bad values are refused precisely, by the client, the server and the CLI."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from queue_manager import JobContext, JobState, QueueManager
from queue_manager.cli import main
from queue_manager.v1 import queue_service_pb2, queue_service_pb2_grpc, types_pb2
from queue_manager_server.engine import Engine
from queue_manager_server.engine.keys import QueueKeys
from tests.conftest import RunningServer
from tests.test_engine import job, register

WAIT = 30.0


def rate(max_: int, ms: int, burst: int = 0) -> types_pb2.RateLimit:
    duration = Duration()
    duration.FromMilliseconds(ms)
    return types_pb2.RateLimit(max=max_, duration=duration, burst=burst)


async def test_after_idling_the_burst_starts_at_once_and_the_next_waits_a_refill(engine: Engine) -> None:
    await register(engine, rate_limit=rate(10, 1000, 50))
    await engine.add_jobs("q", [job(str(i)) for i in range(100)])
    first = await engine.claim("q", 100, "t", "w", 30_000)
    assert len(first.jobs) == 50 and first.bucket_fill_ms == 5_000
    second = await engine.claim("q", 100, "t2", "w", 30_000)
    # Empty: the next token is one refill away (100 ms at 10 per second).
    assert second.code == 2 and not second.jobs and 0 < second.retry_after_ms <= 100
    # An empty bucket outlives its refill (5 s here): were it dropped sooner it would read full again.
    assert await engine.redis.pttl(QueueKeys(engine.prefix, "q").limiter) > 4_000
    # The default burst is a tenth of max, as before.
    await register(engine, "d", rate_limit=rate(10, 1000))
    await engine.add_jobs("d", [job(str(i)) for i in range(5)])
    assert len((await engine.claim("d", 5, "t", "w", 30_000)).jobs) == 1


async def test_a_short_window_refills_the_burst_at_the_rate(engine: Engine) -> None:
    await register(engine, rate_limit=rate(4, 200, 8))
    await engine.add_jobs("q", [job(str(i)) for i in range(20)])
    assert len((await engine.claim("q", 20, "t", "w", 30_000)).jobs) == 8
    held = await engine.claim("q", 20, "t", "w", 30_000)
    assert held.code == 2 and 0 < held.retry_after_ms <= 50
    await asyncio.sleep(held.retry_after_ms / 1000)  # the bucket's own refill time, as a dispatcher waits
    again = await engine.claim("q", 20, "t", "w", 30_000)
    # One token (more only if this machine stalled): the rate, not the burst.
    assert 1 <= len(again.jobs) <= 3


async def test_a_group_rate_limit_has_its_burst_too(engine: Engine) -> None:
    limits = types_pb2.GroupLimits(rate_limit=rate(10, 1000, 30))
    await register(engine, group_limits=limits)
    await engine.add_jobs("q", [job(str(i), group="a") for i in range(40)] + [job("b0", group="b")])
    taken = (await engine.claim("q", 100, "t", "w", 30_000)).jobs
    assert sorted(j.group for j in taken) == ["a"] * 30 + ["b"]


async def test_a_worker_sees_the_burst_start_at_once_then_the_rate(server: RunningServer) -> None:
    async with QueueManager(address=server.address) as qm:
        await qm.register_queue("q", rate_limit={"max": 10, "duration": 1000, "burst": 20})
        queue = await qm.get_queue("q")
        assert queue.config.rate_limit is not None and queue.config.rate_limit.burst == 20

        @qm.processor("q")
        async def run(job: JobContext) -> None:
            return None

        jobs = [await qm.add_job("q", "x", i) for i in range(22)]
        await qm.start_workers(concurrency=50)
        done = [await qm.wait_for_job("q", j.id, timeout=WAIT) for j in jobs]
    assert all(j.state is JobState.COMPLETED for j in done)
    # Start times as the limiter saw them (the Redis clock).
    starts = sorted(j.processed_at for j in done if j.processed_at)
    assert len(starts) == 22
    assert starts[19] - starts[0] < timedelta(milliseconds=500)  # the burst, at once
    assert starts[20] - starts[0] >= timedelta(milliseconds=90)  # then one token per 100 ms


async def test_bad_bursts_are_refused_precisely(
    server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    async with QueueManager(address=server.address) as qm:
        with pytest.raises(ValueError, match="rate_limit burst must be between 0 and 1000000, got 1000001"):
            await qm.register_queue("q", rate_limit={"max": 10, "duration": 1000, "burst": 1_000_001})
        with pytest.raises(ValueError, match="rate_limit burst needs a max"):
            await qm.register_queue("q", rate_limit={"max": 0, "duration": 0, "burst": 5})
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = queue_service_pb2_grpc.QueueServiceStub(channel)
        for config, expected in (
            (types_pb2.QueueConfig(rate_limit=rate(0, 1000, 5)), "config.rate_limit.burst: needs a max"),
            (
                types_pb2.QueueConfig(rate_limit=rate(10, 1000, 2_000_000)),
                "config.rate_limit.burst: 2000000 is above the maximum of 1000000",
            ),
            (
                types_pb2.QueueConfig(group_limits=types_pb2.GroupLimits(rate_limit=rate(0, 0, 3))),
                "config.group_limits.rate_limit.burst: needs a max",
            ),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.RegisterQueue(queue_service_pb2.RegisterQueueRequest(name="q", config=config))
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert expected in str(info.value.details())

    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        status = main(["--server", server.address, *argv])
        out, err = capsys.readouterr()
        return status, out, err

    status, _, err = await asyncio.to_thread(run, "queues", "register", "q", "--rate-burst", "5")
    assert status == 2 and "--rate-burst needs --rate-max and --rate-duration" in err
    status, out, err = await asyncio.to_thread(
        run, "queues", "register", "q", "--rate-max", "10", "--rate-duration", "1s", "--rate-burst", "50"
    )
    assert status == 0, err
    assert '"rate_limit":{"max":10,"duration":1000,"burst":50}' in out
    status, out, err = await asyncio.to_thread(
        run, "groups", "limit", "q", "tenant", "--rate", "5/1s", "--rate-burst", "7"
    )
    assert status == 0, err
    assert "5/1s burst 7" in out
    status, _, err = await asyncio.to_thread(run, "groups", "limit", "q", "tenant", "--rate-burst", "7")
    assert status == 2 and "--rate-burst needs --rate" in err
