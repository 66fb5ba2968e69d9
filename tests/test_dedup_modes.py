"""Dedup modes (Dedup.mode KEEP_FIRST, EXTEND, REPLACE) end to end against a real server on a real Valkey:
each mode with its first job waiting, delayed, active or finished, and once its ttl ran out; a debounce
burst; AddJobBatch, AddBulk (direct and staged); what AddJobResponse.disposition says; bad input."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from queue_manager import Dedup, DedupMode, JobContext, JobState, QueueManager
from queue_manager.v1 import jobs_pb2, queue_service_pb2_grpc, types_pb2
from queue_manager_server import convert
from queue_manager_server.engine import Engine
from queue_manager_server.engine.records import AddResult, ClaimRequest, NewJob
from queue_manager_server.services.jobs import ADD_CHUNK
from tests.conftest import RunningServer

WAIT = 20.0
KEEP, EXTEND, REPLACE = (
    types_pb2.DEDUP_MODE_KEEP_FIRST,
    types_pb2.DEDUP_MODE_EXTEND,
    types_pb2.DEDUP_MODE_REPLACE,
)
CREATED, EXISTING = jobs_pb2.ADD_DISPOSITION_CREATED, jobs_pb2.ADD_DISPOSITION_EXISTING
DEDUPLICATED, REPLACED = jobs_pb2.ADD_DISPOSITION_DEDUPLICATED, jobs_pb2.ADD_DISPOSITION_REPLACED


@pytest.fixture
async def qm(server: RunningServer) -> AsyncIterator[QueueManager]:
    client = QueueManager(address=server.address, concurrency=4, shutdown_grace=5.0)
    yield client
    await client.shutdown()


@pytest.fixture
async def stub(server: RunningServer) -> AsyncIterator[queue_service_pb2_grpc.QueueServiceStub]:
    async with grpc.aio.insecure_channel(server.address) as channel:
        yield queue_service_pb2_grpc.QueueServiceStub(channel)


def new_job(
    data: Any,
    key: str = "k",
    mode: int = 0,
    ttl_ms: int | None = None,
    delay_ms: int | None = None,
    name: str = "job",
    **options: Any,
) -> jobs_pb2.NewJob:
    dedup = types_pb2.Dedup(key=key, mode=mode)  # type: ignore[arg-type]
    if ttl_ms is not None:
        dedup.ttl.FromMilliseconds(ttl_ms)
    o = types_pb2.JobOptions(dedup=dedup, **options)
    if delay_ms is not None:
        o.delay.FromMilliseconds(delay_ms)
    job = jobs_pb2.NewJob(name=name, options=o)
    job.data.json.struct_value.update({"v": data})
    return job


class Adder:
    """AddJob calls to one queue through the stub."""

    def __init__(self, stub: queue_service_pb2_grpc.QueueServiceStub, queue: str) -> None:
        self.stub, self.queue = stub, queue

    async def __call__(self, data: Any, **kw: Any) -> jobs_pb2.AddJobResponse:
        answer: jobs_pb2.AddJobResponse = await self.stub.AddJob(
            jobs_pb2.AddJobRequest(queue_name=self.queue, job=new_job(data, **kw))
        )
        return answer


def value(answer: jobs_pb2.AddJobResponse) -> Any:
    """The 'v' of the answered job's JSON data."""
    return json_format.MessageToDict(answer.job.data.json)["v"]


async def ttl_left(engine: Engine, queue: str, key: str) -> int:
    return int(await engine.redis.pttl(engine.keys(queue).dedup(key)))


async def key_runs_out(engine: Engine, queue: str, key: str) -> None:
    """Ends the key's ttl now (as if it had run out) and waits until Valkey has dropped it."""
    dkey = engine.keys(queue).dedup(key)
    await engine.redis.pexpire(dkey, 1)
    async with asyncio.timeout(WAIT):
        while True:
            if not await engine.redis.exists(dkey):
                return
            await asyncio.sleep(0.01)  # an expiry announces nothing: poll the key


class Blocker:
    """A processor that records each run's data and holds runs of data 'hold' until released."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, Any]] = []
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, job: JobContext) -> None:
        self.runs.append((job.id, job.data["v"]))
        if job.data["v"] == "hold":
            self.started.set()
            await self.release.wait()


async def test_keep_first_and_extend_in_every_state_of_the_first_job(
    qm: QueueManager, stub: queue_service_pb2_grpc.QueueServiceStub, engine: Engine
) -> None:
    await qm.register_queue("m")
    add = Adder(stub, "m")
    blocker = Blocker()
    qm.processor("m")(blocker)
    for mode in (KEEP, EXTEND):
        key = f"k{mode}"
        first = await add("hold", key=key, mode=mode, ttl_ms=60_000, delay_ms=60_000)
        assert (first.created, first.disposition) == (True, CREATED)
        stored = await qm.get_job("m", first.job.id)
        want = DedupMode.KEEP_FIRST if mode == KEEP else DedupMode.EXTEND
        assert stored.options.dedup == Dedup(key=key, ttl=timedelta(minutes=1), mode=want)

        async def duplicate(
            state: JobState, key: str = key, mode: int = mode, first_id: str = first.job.id
        ) -> None:
            await engine.redis.pexpire(engine.keys("m").dedup(key), 5_000)
            again = await add("other", key=key, mode=mode, ttl_ms=60_000, name="other")
            assert (again.created, again.disposition, again.job.id) == (False, DEDUPLICATED, first_id), state
            assert (again.job.name, value(again)) == (
                "job",
                "hold",
            )  # ignored: the first as it is
            left = await ttl_left(engine, "m", key)
            if mode == EXTEND:
                assert left > 50_000, f"{state}: an EXTEND duplicate restarts the ttl"
            else:
                assert left <= 5_000, f"{state}: a KEEP_FIRST duplicate leaves the ttl running"

        await duplicate(JobState.DELAYED)
        await qm.promote_job("m", first.job.id)
        if mode == KEEP:
            await duplicate(JobState.WAITING)
            await qm.start_workers()
        async with asyncio.timeout(WAIT):
            await blocker.started.wait()
        await duplicate(JobState.ACTIVE)
        blocker.release.set()
        assert (await qm.wait_for_job("m", first.job.id, timeout=WAIT)).state is JobState.COMPLETED
        await duplicate(JobState.COMPLETED)
        # Once the ttl runs out the key is free: the next add creates a job, which takes the key.
        await key_runs_out(engine, "m", key)
        fresh = await add("next", key=key, mode=mode, ttl_ms=60_000, delay_ms=60_000)
        assert (fresh.created, fresh.disposition) == (True, CREATED) and fresh.job.id != first.job.id
        blocker.started.clear()
        blocker.release.clear()
    # A job_id that exists answers EXISTING (and wins over the key).
    taken = await add("x", key="other-key", job_id=fresh.job.id)
    assert (taken.created, taken.disposition, taken.job.id) == (False, EXISTING, fresh.job.id)


async def test_replace_while_the_first_job_is_delayed_or_waiting(
    qm: QueueManager, stub: queue_service_pb2_grpc.QueueServiceStub, engine: Engine
) -> None:
    await qm.register_queue("r")
    add = Adder(stub, "r")
    first = await add(1, mode=REPLACE, ttl_ms=60_000, delay_ms=60_000)
    assert (first.created, first.disposition) == (True, CREATED)
    run_at = first.job.run_time.ToMilliseconds()
    assert run_at > 0
    # Delayed: name and data replaced, the ttl restarted, the run time moved to the duplicate's own delay.
    await engine.redis.pexpire(engine.keys("r").dedup("k"), 5_000)
    second = await add(2, mode=REPLACE, ttl_ms=60_000, delay_ms=600_000, name="second")
    assert (second.created, second.disposition, second.job.id) == (False, REPLACED, first.job.id)
    assert (second.job.name, value(second), second.job.state) == (
        "second",
        2,
        types_pb2.JOB_STATE_DELAYED,
    )
    assert second.job.run_time.ToMilliseconds() >= run_at + 540_000
    assert await ttl_left(engine, "r", "k") > 50_000
    # A duplicate without a delay re-delays by the first add's delay (a debounce says it once).
    third = await add(3, mode=REPLACE, ttl_ms=60_000)
    assert third.disposition == REPLACED
    third_at = third.job.run_time.ToMilliseconds()
    assert run_at <= third_at < second.job.run_time.ToMilliseconds()
    assert await engine.redis.zscore(engine.keys("r").delayed, first.job.id) == third_at
    # A delay of 0 makes it waiting now, with the duplicate's data.
    now = await add(4, mode=REPLACE, ttl_ms=60_000, delay_ms=0, name="now")
    assert (now.disposition, now.job.state, now.job.id) == (
        REPLACED,
        types_pb2.JOB_STATE_WAITING,
        first.job.id,
    )
    assert await engine.redis.zscore(engine.keys("r").delayed, first.job.id) is None
    # Waiting: replaced in place (it keeps its place in line; a delay does not move it back).
    waiting = await add({"last": True}, mode=REPLACE, ttl_ms=60_000, delay_ms=60_000, name="last")
    assert (waiting.disposition, waiting.job.state) == (REPLACED, types_pb2.JOB_STATE_WAITING)
    metrics = await qm.get_queue_metrics("r")
    assert (metrics.waiting, metrics.delayed) == (1, 0)
    runs: list[tuple[str, str, Any]] = []

    @qm.processor("r")
    async def work(job: JobContext) -> None:
        runs.append((job.id, job.name, job.data["v"]))

    await qm.start_workers()
    assert (await qm.wait_for_job("r", first.job.id, timeout=WAIT)).state is JobState.COMPLETED
    assert runs == [(first.job.id, "last", {"last": True})]
    # Raw bytes replace JSON, and the content type goes with them.
    await qm.pause_queue("r")
    held = await qm.add_job("r", "b", {"a": 1}, {"dedup": {"key": "bytes", "mode": "replace"}})
    raw = await qm.add_job("r", "b", b"\x00raw", {"dedup": Dedup("bytes", mode=DedupMode.REPLACE)})
    assert raw.id == held.id and (await qm.get_job("r", held.id)).data == b"\x00raw"
    # The client says what each add did: created, or found and replaced.
    assert (held.created, held.replaced, raw.created, raw.replaced) == (True, False, False, True)
    kept = await qm.add_job("r", "b", None, {"dedup": {"key": "bytes"}})  # keep_first: found, not replaced
    assert (kept.created, kept.replaced) == (False, False)
    assert (await qm.get_job("r", held.id)).replaced is None
    back = await qm.add_job("r", "b", {"json": 1}, {"dedup": Dedup("bytes", mode="REPLACE")})
    assert back.id == held.id and (await qm.get_job("r", held.id)).data == {"json": 1}


async def test_replace_once_the_first_job_started_or_finished_adds_a_new_job(
    qm: QueueManager, stub: queue_service_pb2_grpc.QueueServiceStub, engine: Engine
) -> None:
    await qm.register_queue("s")
    add = Adder(stub, "s")
    blocker = Blocker()
    qm.processor("s")(blocker)
    await qm.start_workers()
    first = await add("hold", mode=REPLACE)  # no ttl: held until it finishes
    async with asyncio.timeout(WAIT):
        await blocker.started.wait()
    # Active: a new job, which takes the key; the running one keeps its data.
    second = await add("after", mode=REPLACE)
    assert (second.created, second.disposition) == (True, CREATED) and second.job.id != first.job.id
    assert await engine.redis.get(engine.keys("s").dedup("k")) == second.job.id.encode()
    blocker.release.set()
    for job in (first, second):
        assert (await qm.wait_for_job("s", job.job.id, timeout=WAIT)).state is JobState.COMPLETED
    assert sorted(blocker.runs) == sorted([(first.job.id, "hold"), (second.job.id, "after")])
    # Finished, key still held by its ttl: a new job too.
    done = await add("t1", key="t", mode=REPLACE, ttl_ms=60_000)
    assert (await qm.wait_for_job("s", done.job.id, timeout=WAIT)).state is JobState.COMPLETED
    assert await ttl_left(engine, "s", "t") > 0
    kept = await add("t2", key="t", mode=KEEP, ttl_ms=60_000)
    assert (kept.disposition, kept.job.id) == (DEDUPLICATED, done.job.id)  # KEEP_FIRST: still held
    renewed = await add("t3", key="t", mode=REPLACE, ttl_ms=60_000)
    assert (renewed.disposition, renewed.created) == (CREATED, True) and renewed.job.id != done.job.id
    assert (await qm.wait_for_job("s", renewed.job.id, timeout=WAIT)).state is JobState.COMPLETED
    # A job that ran and failed, waiting for its retry (delayed by its backoff), has started: a new job.
    await qm.register_queue("retry")
    add = Adder(stub, "retry")
    failed_once = asyncio.Event()

    @qm.processor("retry")
    async def fail(job: JobContext) -> None:
        failed_once.set()
        raise RuntimeError("once")

    await qm.start_workers()
    backoff = types_pb2.Backoff(type=types_pb2.BACKOFF_TYPE_FIXED)
    backoff.delay.FromSeconds(600)
    tried = await add("x", mode=REPLACE, attempts=3, backoff=backoff)
    async with asyncio.timeout(WAIT):
        await failed_once.wait()
        while True:
            if (await qm.get_job("retry", tried.job.id)).state is JobState.DELAYED:
                break
            await asyncio.sleep(0.02)  # a failure's move to delayed announces nothing to a producer
    await qm.pause_queue("retry")
    again = await add("y", mode=REPLACE)
    assert again.disposition == CREATED and again.job.id != tried.job.id
    # Once a REPLACE key's ttl ran out, even a job that has not started is not replaced: a new one is added.
    await add("w1", key="w", mode=REPLACE, ttl_ms=60_000)
    await key_runs_out(engine, "retry", "w")
    second_w = await add("w2", key="w", mode=REPLACE, ttl_ms=60_000)
    assert second_w.disposition == CREATED
    assert (await qm.get_queue_metrics("retry")).paused == 3  # y, w1, w2 (the queue is paused)


async def test_a_debounce_burst_runs_once_with_the_last_data(
    qm: QueueManager, stub: queue_service_pb2_grpc.QueueServiceStub
) -> None:
    await qm.register_queue("typing")
    runs: list[tuple[str, Any]] = []
    ran = asyncio.Event()

    @qm.processor("typing")
    async def reindex(job: JobContext) -> None:
        runs.append((job.id, job.data))
        ran.set()

    await qm.start_workers()
    # 3 s between adds would let the job start mid-burst: far more than 50 adds take on a loaded machine.
    debounce = {"dedup": {"key": "doc-7", "ttl": 5_000, "mode": "replace"}, "delay": 3_000}
    jobs = [await qm.add_job("typing", "reindex", {"text": "x" * i}, debounce) for i in range(1, 51)]
    assert {job.id for job in jobs} == {jobs[0].id}
    assert all(job.state is JobState.DELAYED for job in jobs)
    assert (await qm.wait_for_job("typing", jobs[0].id, timeout=WAIT)).state is JobState.COMPLETED
    assert runs == [(jobs[0].id, {"text": "x" * 50})]
    metrics = await qm.get_queue_metrics("typing")
    assert (metrics.waiting, metrics.delayed, metrics.active, metrics.completed) == (0, 0, 0, 1)


async def test_batch_and_bulk_adds_replace_in_order(
    qm: QueueManager, stub: queue_service_pb2_grpc.QueueServiceStub
) -> None:
    await qm.register_queue("b")
    runs: list[Any] = []
    ran = asyncio.Event()

    @qm.processor("b")
    async def work(job: JobContext) -> None:
        runs.append(job.data["v"])
        ran.set()

    # AddJobBatch with a worker waiting (its claim may be folded into the add): the run sees the last data.
    await qm.start_workers()
    batch = await stub.AddJobBatch(
        jobs_pb2.AddJobBatchRequest(
            items=[
                jobs_pb2.AddJobRequest(queue_name="b", job=new_job(i, key="batch", mode=REPLACE))
                for i in range(3)
            ]
        )
    )
    dispositions = [o.added.disposition for o in batch.outcomes]
    assert dispositions == [CREATED, REPLACED, REPLACED]
    assert len({o.added.job.id for o in batch.outcomes}) == 1
    async with asyncio.timeout(WAIT):
        await ran.wait()
    assert (
        await qm.wait_for_job("b", batch.outcomes[0].added.job.id, timeout=WAIT)
    ).state is JobState.COMPLETED
    assert runs == [2]
    await qm.pause_queue("b")

    # One script call: later duplicates of a REPLACE key replace earlier ones.
    async def bulk(jobs: list[jobs_pb2.NewJob]) -> jobs_pb2.AddBulkResponse:
        async def requests() -> AsyncIterator[jobs_pb2.AddBulkRequest]:
            yield jobs_pb2.AddBulkRequest(queue_name="b", jobs=jobs)

        answer: jobs_pb2.AddBulkResponse = await stub.AddBulk(requests())
        return answer

    small = await bulk([new_job(i, key=f"s{i % 2}", mode=REPLACE, delay_ms=60_000) for i in range(6)])
    assert (small.created_count, small.replaced_count) == (2, 4)
    assert small.job_ids[0::2] == [small.job_ids[0]] * 3 and small.job_ids[1::2] == [small.job_ids[1]] * 3
    assert [(await qm.get_job("b", i)).data["v"] for i in small.job_ids[:2]] == [4, 5]
    # Staged (more than one script call): the same, in stream order.
    size = ADD_CHUNK + 50
    staged = await bulk(
        [new_job(i, key=f"g{i % 3}", mode=REPLACE) for i in range(size)] + [new_job("k", key="kf")]
    )
    assert (staged.created_count, staged.replaced_count) == (4, size - 3)
    assert len(set(staged.job_ids)) == 4
    last = {i % 3: i for i in range(size)}
    assert [(await qm.get_job("b", staged.job_ids[r])).data["v"] for r in range(3)] == [
        last[r] for r in range(3)
    ]
    # Through the client's own adds (AddJobStream) and add_bulk.
    ids = await qm.add_bulk(
        "b",
        [{"name": "n", "data": i, "options": {"dedup": {"key": "c", "mode": "replace"}}} for i in range(4)],
    )
    assert len(set(ids)) == 1 and (await qm.get_job("b", ids[0])).data == 3
    added = await asyncio.gather(
        *(qm.add_job("b", "n", i, {"dedup": {"key": "c", "mode": "replace"}}) for i in range(4, 8))
    )
    assert {job.id for job in added} == {ids[0]} and (await qm.get_job("b", ids[0])).data == 7


@pytest.mark.parametrize(
    ("dedup", "field", "says"),
    [
        (types_pb2.Dedup(mode=REPLACE), "job.options.dedup.key", "a dedup mode REPLACE needs a key"),
        (types_pb2.Dedup(key="k", mode=9), "job.options.dedup.mode", "KEEP_FIRST"),  # type: ignore[arg-type]
        (types_pb2.Dedup(key="k", mode=EXTEND), "job.options.dedup.ttl", "is required with mode EXTEND"),
    ],
)
async def test_bad_dedup_modes_are_refused_precisely(
    stub: queue_service_pb2_grpc.QueueServiceStub,
    qm: QueueManager,
    dedup: types_pb2.Dedup,
    field: str,
    says: str,
) -> None:
    await qm.register_queue("bad")
    job = jobs_pb2.NewJob(name="x", options=types_pb2.JobOptions(dedup=dedup))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.AddJob(jobs_pb2.AddJobRequest(queue_name="bad", job=job))
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert field in (caught.value.details() or "") and says in (caught.value.details() or "")


async def test_the_client_refuses_bad_modes_before_sending(qm: QueueManager) -> None:
    with pytest.raises(
        ValueError, match="unknown dedup mode 'sideways'; expected keep_first, extend, replace"
    ):
        await qm.add_job("q", "x", options={"dedup": {"key": "k", "mode": "sideways"}})
    with pytest.raises(ValueError, match="dedup mode extend restarts the ttl"):
        await qm.add_job("q", "x", options={"dedup": Dedup("k", mode=DedupMode.EXTEND)})
    with pytest.raises(TypeError, match="dedup mode must be a DedupMode or its name, not int"):
        await qm.add_job("q", "x", options={"dedup": Dedup("k", mode=3)})  # type: ignore[arg-type]


async def test_a_claim_folded_into_the_add_takes_the_replaced_data(engine: Engine) -> None:
    # The add script hands the jobs it inserted to a claim folded into it without reading them back: a job a
    # later add of the same call replaced must be read back, or the worker would get the first data.
    fields, _ = convert.queue_meta(types_pb2.QueueConfig())
    await engine.register_queue("fold", fields)
    jobs = [NewJob(id="", name=f"n{i}", data=b"%d" % i, dedup_key="k", dedup_mode=REPLACE) for i in range(3)]
    claim = ClaimRequest(take=5, token="tok", worker_id="w", lease_ms=30_000)
    (result,) = await engine.add_jobs_many([("fold", jobs)], fetch=True, claims=[claim])
    assert isinstance(result, AddResult) and result.claim is not None
    assert result.dedup == {1: "replaced", 2: "replaced"}
    assert [(j.name, j.data) for j in result.claim.jobs] == [("n2", b"2")]
