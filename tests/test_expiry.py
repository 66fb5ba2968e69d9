"""Job expiry (JobOptions.expire_after) end to end: a job not started within its expiry of being ready is not
run but ends cancelled as expired, through AddJob, AddBulk (direct and staged), a queue's default, delays,
retries and chains, against a real server on a real Valkey."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta

import grpc
import pytest

from queue_manager import JobContext, JobState, QueueManager
from queue_manager.v1 import jobs_pb2, queue_service_pb2, queue_service_pb2_grpc, types_pb2
from queue_manager_server import convert
from queue_manager_server.engine import Engine
from queue_manager_server.engine.job_control import JobControl
from queue_manager_server.engine.records import NewJob
from queue_manager_server.services.jobs import ADD_CHUNK
from tests.conftest import RunningServer, ServerFactory
from tests.test_cli import qm_cli, qm_json

WAIT = 30.0
EXPIRED = "expired: not started within "


@pytest.fixture
async def qm(server: RunningServer) -> AsyncIterator[QueueManager]:
    client = QueueManager(address=server.address, concurrency=4, shutdown_grace=5.0)
    yield client
    await client.shutdown()


@pytest.fixture
async def stub(server: RunningServer) -> AsyncIterator[queue_service_pb2_grpc.QueueServiceStub]:
    async with grpc.aio.insecure_channel(server.address) as channel:
        yield queue_service_pb2_grpc.QueueServiceStub(channel)


async def until_past(qm: QueueManager, queue: str, job_id: str) -> None:
    """Waits out the job's short expiry (its expires_at, on Valkey's clock: this machine's), a little more."""
    job = await qm.get_job(queue, job_id)
    assert job.expires_at is not None
    await asyncio.sleep(max(job.expires_at.timestamp() - time.time(), 0) + 0.05)


async def test_a_job_not_started_in_time_is_cancelled_as_expired_and_the_claim_takes_the_next(
    qm: QueueManager, engine: Engine
) -> None:
    await qm.register_queue("e")
    late = await qm.add_job("e", "late", {"n": 1}, {"expire_after": 200, "dedup": "once", "attempts": 3})
    assert late.options.expire_after == timedelta(milliseconds=200)
    assert late.expires_at is not None and late.created_at is not None
    assert late.expires_at - late.created_at == timedelta(milliseconds=200)
    await until_past(qm, "e", late.id)
    fresh = await qm.add_job("e", "fresh", {"n": 2}, {"expire_after": timedelta(minutes=5)})
    ran: list[str] = []

    @qm.processor("e")
    async def work(job: JobContext) -> str:
        ran.append(job.name)
        return "done"

    await qm.start_workers("e")
    done = await qm.wait_for_job("e", fresh.id, WAIT)
    assert done.state is JobState.COMPLETED
    gone = await qm.wait_for_job("e", late.id, WAIT)
    assert gone.state is JobState.CANCELLED
    assert gone.cancel_reason.startswith(EXPIRED + "200ms of being ready (at ")
    assert gone.attempts_made == 0 and gone.processed_at is None and gone.finished_at is not None
    assert ran == ["fresh"]
    # No retry and no dead-letter copy; the dedup key is free again; counted as cancelled and as expired.
    metrics = await qm.get_queue_metrics("e")
    assert (metrics.cancelled, metrics.failed, metrics.waiting, metrics.delayed) == (1, 0, 0, 0)
    assert metrics.expired_total == 1
    assert (await qm.get_queue_metrics("dead-letter-queue")).waiting == 0
    again = await qm.add_job("e", "late", {"n": 3}, {"dedup": "once"})
    assert again.id != late.id
    # Retried by hand, an expired job gets a new expiry counted from the retry, and runs.
    await qm.retry_job("e", late.id)
    assert (await qm.wait_for_job("e", late.id, WAIT)).state is JobState.COMPLETED
    assert (await qm.wait_for_job("e", again.id, WAIT)).state is JobState.COMPLETED
    assert sorted(ran) == ["fresh", "late", "late"]


async def test_a_delayed_jobs_expiry_counts_from_its_run_time(qm: QueueManager) -> None:
    await qm.register_queue("d")

    @qm.processor("d")
    async def work(job: JobContext) -> str:
        return job.name

    await qm.start_workers("d")
    # Counted from the add it would expire (1 s) before it is due (1.5 s); from its run time it has 1 s.
    job = await qm.add_job("d", "later", None, {"delay": 1500, "expire_after": 1000})
    assert job.state is JobState.DELAYED and job.run_at is not None and job.expires_at is not None
    assert job.expires_at - job.run_at == timedelta(seconds=1)
    done = await qm.wait_for_job("d", job.id, WAIT)
    assert done.state is JobState.COMPLETED and done.result == "later"


async def test_a_promoted_jobs_expiry_counts_from_its_promotion(qm: QueueManager) -> None:
    """Promoted, a delayed job is ready now: its window starts now, not at the run time it no longer has."""
    await qm.register_queue("p")
    job = await qm.add_job("p", "later", None, {"delay": 3_600_000, "expire_after": 200})
    assert job.expires_at is not None and job.run_at is not None
    promoted = await qm.promote_job("p", job.id)
    assert promoted.expires_at is not None and promoted.expires_at < job.run_at
    await until_past(qm, "p", job.id)
    ran: list[str] = []

    @qm.processor("p")
    async def work(ctx: JobContext) -> None:
        ran.append(ctx.id)

    await qm.start_workers("p")
    gone = await qm.wait_for_job("p", job.id, WAIT)
    assert gone.state is JobState.CANCELLED
    assert gone.cancel_reason.startswith(EXPIRED + "200ms of being ready")
    assert ran == []


async def test_retrying_every_cancelled_job_counts_their_expiry_from_the_retry(qm: QueueManager) -> None:
    """retry_failed(state="cancelled") (retry_jobs.lua) starts a job's expiry window again at the retry, as
    retry_job does: a job retried by hand should run."""
    await qm.register_queue("rc")
    jobs = [await qm.add_job("rc", "late", {"n": n}, {"expire_after": 200}) for n in range(3)]
    for job in jobs:
        await qm.cancel_job("rc", job.id)
    await until_past(qm, "rc", jobs[-1].id)
    assert await qm.retry_failed("rc", "cancelled") == 3
    for job in jobs:
        retried = await qm.get_job("rc", job.id)
        assert retried.state is JobState.WAITING and job.expires_at is not None
        assert retried.expires_at is not None
        assert retried.expires_at > job.expires_at + timedelta(milliseconds=50)


async def test_a_retry_ready_again_after_its_expiry_is_expired_at_its_next_claim(qm: QueueManager) -> None:
    await qm.register_queue("r")
    runs: list[int] = []

    @qm.processor("r")
    async def work(job: JobContext) -> None:
        runs.append(job.attempts_made + 1)
        raise RuntimeError("try again later")

    await qm.start_workers("r")
    job = await qm.add_job("r", "flaky", None, {"expire_after": 1000, "attempts": 3, "backoff": 2000})
    gone = await qm.wait_for_job("r", job.id, WAIT)
    assert gone.state is JobState.CANCELLED and gone.cancel_reason.startswith(EXPIRED + "1s of being ready")
    # One run (its failure kept), then the retry found expired: no second run, no failure for good.
    assert runs == [1] and gone.attempts_made == 1 and gone.failed_reason == "try again later"


async def test_expiry_through_add_bulk_direct_and_staged(qm: QueueManager) -> None:
    await qm.register_queue("b")
    small = await qm.add_bulk("b", [{"name": f"s{i}", "options": {"expire_after": 100}} for i in range(3)])
    # Larger than one script call: staged, then published through the same insert.
    big = await qm.add_bulk(
        "b", [{"name": f"n{i}", "options": {"expire_after": 100}} for i in range(ADD_CHUNK + 10)]
    )
    kept = await qm.add_job("b", "kept", None, {"expire_after": 60_000})
    for job_id in (small[0], big[-1]):
        stored = await qm.get_job("b", job_id)
        assert stored.options.expire_after == timedelta(milliseconds=100) and stored.expires_at is not None
    await until_past(qm, "b", big[-1])

    @qm.processor("b")
    async def work(job: JobContext) -> str:
        return job.name

    await qm.start_workers("b")
    assert (await qm.wait_for_job("b", kept.id, WAIT)).state is JobState.COMPLETED
    metrics = await qm.get_queue_metrics("b")
    assert (metrics.cancelled, metrics.completed, metrics.waiting) == (3 + ADD_CHUNK + 10, 1, 0)


async def test_a_queue_default_expiry(qm: QueueManager) -> None:
    await qm.register_queue("q", default_job_options={"expire_after": 200})
    queue = await qm.get_queue("q")
    assert queue.config.default_job_options.expire_after == timedelta(milliseconds=200)
    job = await qm.add_job("q", "plain")
    own = await qm.add_job("q", "own", None, {"expire_after": 60_000})
    assert job.options.expire_after == timedelta(milliseconds=200)
    assert own.options.expire_after == timedelta(minutes=1)
    await until_past(qm, "q", job.id)

    @qm.processor("q")
    async def work(job: JobContext) -> str:
        return job.name

    await qm.start_workers("q")
    assert (await qm.wait_for_job("q", own.id, WAIT)).state is JobState.COMPLETED
    gone = await qm.wait_for_job("q", job.id, WAIT)
    assert gone.state is JobState.CANCELLED and gone.cancel_reason.startswith(EXPIRED + "200ms")


async def test_a_chain_link_that_expires_stops_the_chain_as_a_cancelled_link_does(qm: QueueManager) -> None:
    await qm.register_queue("first")
    await qm.register_queue("link")

    @qm.processor("first")
    async def first(job: JobContext) -> str:
        return "one"

    @qm.processor("link")
    async def link(job: JobContext) -> str:
        return "two"

    link_opts = {"expire_after": 200}
    chain = [{"queue_name": "link", "job_name": "next", "options": link_opts}, {"queue_name": "link"}]
    chain[1]["job_name"] = "never"
    root = await qm.add_job("first", "start", None, {"chain_to": chain})
    worker = await qm.start_workers("first")
    done = await qm.wait_for_job("first", root.id, WAIT)
    assert done.state is JobState.COMPLETED
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not (await qm.get_job("first", root.id)).children:  # the hand-off adds the link after the reply
        assert loop.time() < deadline, "the chain's link was never added"
        await asyncio.sleep(0.02)
    child = (await qm.get_job("first", root.id)).children[0]
    await worker.shutdown()
    await until_past(qm, "link", child.job_id)
    await qm.start_workers("link")
    gone = await qm.wait_for_job("link", child.job_id, WAIT)
    assert gone.state is JobState.CANCELLED and gone.cancel_reason.startswith(EXPIRED)
    # Carried out at once by the server whose claim expired the link, not by the janitor's later sweep.
    deadline = loop.time() + 10.0
    while not (stopped := await qm.get_job("first", root.id)).chain_failure:
        assert loop.time() < deadline, "the chain's failure was never recorded"
        await asyncio.sleep(0.02)
    assert stopped.chain_failure.startswith(f"link link/{child.job_id} (next) cancelled: {EXPIRED}200ms")
    assert (await qm.get_queue_metrics("link")).completed == 0


async def test_bad_expiry_is_invalid_argument_naming_the_field(
    qm: QueueManager, stub: queue_service_pb2_grpc.QueueServiceStub
) -> None:
    await qm.register_queue("v")
    field = "job.options.expire_after"
    bad = [
        ((0, 0), f"{field}: must be positive"),
        ((-1, 0), f"{field}: must be positive"),
        ((0, 500_000), f"{field}: must be a whole number of milliseconds"),
        ((1, 1_500_000), f"{field}: must be a whole number of milliseconds"),
        ((366 * 86_400, 0), f"{field}: 31622400000 ms is longer than the 365-day maximum"),
    ]
    for (seconds, nanos), message in bad:
        options = types_pb2.JobOptions()
        options.expire_after.seconds, options.expire_after.nanos = seconds, nanos
        request = jobs_pb2.AddJobRequest(queue_name="v", job=jobs_pb2.NewJob(name="x", options=options))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.AddJob(request)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in (err.value.details() or ""), err.value.details()
    config = types_pb2.QueueConfig()
    config.default_job_options.expire_after.FromMilliseconds(0)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.RegisterQueue(queue_service_pb2.RegisterQueueRequest(name="v2", config=config))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "config.default_job_options.expire_after: must be positive" in (err.value.details() or "")
    with pytest.raises(ValueError, match="expire_after"):
        await qm.add_job("v", "x", None, {"expire_after": 0})
    assert (await qm.get_queue_metrics("v")).waiting == 0


async def test_a_job_with_expiry_is_never_marked_plain_and_one_without_is_stored_as_before(
    qm: QueueManager, engine: Engine
) -> None:
    await qm.register_queue("p")
    plain = await qm.add_job("p", "plain")
    timed = await qm.add_job("p", "timed", None, {"expire_after": 60_000})
    delayed = await qm.add_job("p", "timed", None, {"expire_after": 60_000, "delay": 60_000})
    keys = engine.keys("p")
    stored = await engine.redis.hgetall(keys.job(plain.id))
    assert set(stored) == {b"name", b"ts", b"data", b"p"} and stored[b"p"] == b"1"
    with_expiry = await engine.redis.hgetall(keys.job(timed.id))
    assert with_expiry[b"p"] == b"c" and with_expiry[b"exa"] == b"60000"
    assert int(with_expiry[b"exp"]) == int(with_expiry[b"ts"]) + 60_000
    later = await engine.redis.hgetall(keys.job(delayed.id))
    assert int(later[b"exp"]) == int(later[b"run"]) + 60_000


async def test_qm_add_expire_after(server: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert (await qm_json(capsys, server, "queues", "register", "cli-e"))["name"] == "cli-e"
    job = await qm_json(capsys, server, "add", "cli-e", "mail", "--expire-after", "5m")
    assert job["options"]["expire_after"] == 300_000
    assert job["expires_at"] is not None
    with pytest.raises(SystemExit) as refused:
        await qm_cli(capsys, "--server", server.address, "add", "cli-e", "mail", "--expire-after", "0")
    err = capsys.readouterr().err
    assert refused.value.code == 2 and "--expire-after: must be a duration from 1 ms to 365d" in err


async def test_jobs_nobody_claims_expire_by_the_sweep(server_factory: ServerFactory, engine: Engine) -> None:
    server = await server_factory(expiry_sweep_ms=50)
    qm = QueueManager(address=server.address)
    try:
        await qm.register_queue("unclaimed")
        plain = await qm.add_job("unclaimed", "a", None, {"expire_after": 200})
        grouped = await qm.add_job("unclaimed", "b", None, {"expire_after": 200, "group": "t"})
        delayed = await qm.add_job("unclaimed", "c", None, {"expire_after": 200, "delay": 100})
        later = await qm.add_job("unclaimed", "d", None, {"expire_after": timedelta(minutes=5)})
        for job_id in (plain.id, grouped.id, delayed.id):
            gone = await qm.wait_for_job("unclaimed", job_id, WAIT)
            assert gone.state is JobState.CANCELLED and gone.cancel_reason.startswith(EXPIRED)
        metrics = await qm.get_queue_metrics("unclaimed")
        assert (metrics.waiting, metrics.delayed, metrics.cancelled, metrics.expired_total) == (1, 0, 3, 3)
        assert metrics.groups == 0
        assert (await qm.get_job("unclaimed", later.id)).state is JobState.WAITING
    finally:
        await qm.shutdown()


async def test_the_sweep_follows_a_renewed_expiry(engine: Engine) -> None:
    fields, _ = convert.queue_meta(types_pb2.QueueConfig(disable_dead_letter=True))
    await engine.register_queue("r", fields)
    added = await engine.add_jobs(
        "r", [NewJob(id="x", name="n", data=b"1", delay_ms=60_000, expire_after_ms=100)]
    )
    assert added.ids == ["x"]
    k = engine.keys("r")
    due = await engine.redis.zscore(k.expiring, "x")
    assert due is not None
    # Promoted early: its window starts again; the sweep finds the entry due before the new expiry and
    # puts it back at the new time instead of ending the job.
    await JobControl(engine).promote_job("r", "x")
    await engine.redis.zadd(k.expiring, {"x": 0})
    assert await engine.expire_waiting_all(["r"]) == [0]
    assert (await engine.get_job("r", "x")).text("st") in ("", "waiting")
    renewed = await engine.redis.zscore(k.expiring, "x")
    assert renewed is not None and renewed > 0
    # A job claimed before its expiry leaves the index when its entry comes due.
    await engine.claim("r", 1, "t", "w", 30_000)
    await engine.redis.zadd(k.expiring, {"x": 0})
    assert await engine.expire_waiting_all(["r"]) == [0]
    assert await engine.redis.zcard(k.expiring) == 0
