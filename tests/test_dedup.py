"""Deduplication with a window (JobOptions.dedup) end to end, through AddJob, AddBulk (direct and staged)
and chains, against a real server on a real Valkey."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import grpc
import pytest

from queue_manager import Dedup, JobContext, JobState, QueueManager, SyncQueueManager
from queue_manager.v1 import jobs_pb2, queue_service_pb2, queue_service_pb2_grpc, types_pb2
from queue_manager_server.engine import Engine
from queue_manager_server.services.jobs import ADD_CHUNK
from tests.conftest import RunningServer

WAIT = 20.0


@pytest.fixture
async def qm(server: RunningServer) -> AsyncIterator[QueueManager]:
    client = QueueManager(address=server.address, concurrency=4, shutdown_grace=5.0)
    yield client
    await client.shutdown()


@pytest.fixture
async def stub(server: RunningServer) -> AsyncIterator[queue_service_pb2_grpc.QueueServiceStub]:
    async with grpc.aio.insecure_channel(server.address) as channel:
        yield queue_service_pb2_grpc.QueueServiceStub(channel)


def new_job(name: str, key: str, ttl_ms: int | None = None) -> jobs_pb2.NewJob:
    dedup = types_pb2.Dedup(key=key)
    if ttl_ms is not None:
        dedup.ttl.FromMilliseconds(ttl_ms)
    return jobs_pb2.NewJob(name=name, options=types_pb2.JobOptions(dedup=dedup))


async def test_dedup_with_ttl_holds_for_the_window_whatever_becomes_of_the_job(
    qm: QueueManager, stub: queue_service_pb2_grpc.QueueServiceStub
) -> None:
    await qm.register_queue("d")
    first = await stub.AddJob(jobs_pb2.AddJobRequest(queue_name="d", job=new_job("a", "k", 60_000)))
    again = await stub.AddJob(jobs_pb2.AddJobRequest(queue_name="d", job=new_job("b", "k", 60_000)))
    assert first.created and not again.created
    assert (again.job.id, again.job.name) == (first.job.id, "a")  # the response's job is the holder
    stored = await qm.get_job("d", first.job.id)
    assert stored.options.dedup == Dedup(key="k", ttl=timedelta(seconds=60))
    # Held for the ttl whatever becomes of the job, even once it is removed (the answer is its id only).
    await qm.remove_job("d", first.job.id)
    gone = await stub.AddJob(jobs_pb2.AddJobRequest(queue_name="d", job=new_job("c", "k", 60_000)))
    assert (gone.created, gone.job.id, gone.job.state) == (
        False,
        first.job.id,
        types_pb2.JOB_STATE_UNSPECIFIED,
    )
    # Another key, another job; and once a short window passes, the key makes a new job.
    short = await qm.add_job("d", "s1", options={"dedup": {"key": "short", "ttl": 300}})
    assert short.id != first.job.id
    assert (await qm.add_job("d", "s2", options={"dedup": {"key": "short", "ttl": 300}})).id == short.id
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while (
        late := await qm.add_job("d", "s3", options={"dedup": {"key": "short", "ttl": 300}})
    ).id == short.id:
        assert loop.time() < deadline, "the dedup window never ended"
        await asyncio.sleep(0.05)  # nothing announces a key's expiry: poll it
    assert late.name == "s3" and late.state is JobState.WAITING


async def test_dedup_without_ttl_is_held_until_the_job_finishes(qm: QueueManager, engine: Engine) -> None:
    await qm.register_queue("u")

    @qm.processor("u")
    async def work(job: JobContext) -> str:
        if job.name == "fails":
            raise RuntimeError("no")
        return job.name

    a = await qm.add_job("u", "a", options={"dedup": "k"})
    assert (await qm.add_job("u", "a2", options={"dedup": Dedup("k")})).id == a.id
    await qm.start_workers()
    assert (await qm.wait_for_job("u", a.id, timeout=WAIT)).state is JobState.COMPLETED
    assert await engine.redis.exists(engine.keys("u").dedup("k")) == 0  # released as it completed
    b = await qm.add_job("u", "b", options={"dedup": "k"})
    assert b.id != a.id
    f = await qm.add_job("u", "fails", options={"dedup": "kf"})
    assert (await qm.wait_for_job("u", f.id, timeout=WAIT)).state is JobState.FAILED
    assert (await qm.add_job("u", "fails", options={"dedup": "kf"})).id != f.id  # failing for good frees it
    await qm.wait_for_job("u", b.id, timeout=WAIT)

    # Removal, drain and clean release the key of a job that never ran.
    await qm.register_queue("idle")
    held = await qm.add_job("idle", "x", options={"dedup": "k"})  # dedup keys are per queue
    assert held.id not in (a.id, b.id)
    key = engine.keys("idle").dedup("k")
    await qm.remove_job("idle", held.id)
    assert await engine.redis.exists(key) == 0
    drained = await qm.add_job("idle", "x", options={"dedup": "k", "delay": 60_000})
    assert drained.id != held.id
    assert await qm.drain_queue("idle", include_delayed=True) == 1
    assert await engine.redis.exists(key) == 0
    cleaned = await qm.add_job("idle", "x", options={"dedup": "k"})
    assert cleaned.id != drained.id
    assert await qm.clean_queue("idle", 0, "waiting") == 1
    assert await engine.redis.exists(key) == 0
    assert (await qm.add_job("idle", "x", options={"dedup": "k"})).id != cleaned.id


async def test_dedup_through_add_bulk_direct_and_staged(
    qm: QueueManager, stub: queue_service_pb2_grpc.QueueServiceStub
) -> None:
    await qm.register_queue("b")
    small = await qm.add_bulk("b", [{"name": f"n{i}", "options": {"dedup": "same"}} for i in range(3)])
    assert len(set(small)) == 1
    # Larger than one script call: staged, then published through the same insert.
    size = ADD_CHUNK + 100
    jobs = [{"name": f"n{i}", "options": {"dedup": f"k{i % (size - 1)}"}} for i in range(size)]
    ids = await qm.add_bulk("b", jobs)
    assert ids[size - 1] == ids[0] and len(set(ids)) == size - 1
    assert (await qm.get_queue_metrics("b")).waiting == 1 + size - 1

    async def requests() -> AsyncIterator[jobs_pb2.AddBulkRequest]:
        yield jobs_pb2.AddBulkRequest(
            queue_name="b", jobs=[*(new_job("x", f"k{i}") for i in range(ADD_CHUNK)), new_job("x", "fresh")]
        )

    again = await stub.AddBulk(requests())
    assert again.created_count == 1 and again.job_ids[:ADD_CHUNK] == ids[:ADD_CHUNK]


async def test_dedup_on_a_chain_and_bad_dedup_input(
    qm: QueueManager, stub: queue_service_pb2_grpc.QueueServiceStub
) -> None:
    await qm.register_queue("c")
    link = {"queue_name": "c", "job_name": "next"}
    first = await qm.add_job("c", "first", options={"dedup": "chain", "chain_to": [link]})
    assert (await qm.add_job("c", "first", options={"dedup": "chain", "chain_to": [link]})).id == first.id
    bad: list[tuple[jobs_pb2.NewJob, str]] = [
        (new_job("x", ""), "job.options.dedup.key: is required"),
        (new_job("x", "k" * 201), "job.options.dedup.key"),
        (new_job("x", "k", 0), "job.options.dedup.ttl"),
        (
            jobs_pb2.NewJob(
                name="x",
                options=types_pb2.JobOptions(
                    chain_to=[
                        types_pb2.ChainLink(
                            queue_name="c",
                            job_name="y",
                            options=types_pb2.JobOptions(dedup=types_pb2.Dedup(key="k")),
                        )
                    ]
                ),
            ),
            "chain_to[0].options.dedup",
        ),
    ]
    for job, message in bad:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.AddJob(jobs_pb2.AddJobRequest(queue_name="c", job=job))
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert message in (err.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        config = types_pb2.QueueConfig(
            default_job_options=types_pb2.JobOptions(dedup=types_pb2.Dedup(key="k"))
        )
        await stub.RegisterQueue(queue_service_pb2.RegisterQueueRequest(name="c2", config=config))
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(ValueError, match="dedup key"):
        await qm.add_job("c", "x", options={"dedup": ""})
    with pytest.raises(ValueError, match="unknown dedup option"):
        await qm.add_job("c", "x", options={"dedup": {"key": "k", "window": 5}})


async def test_add_job_says_whether_it_created_the_job(qm: QueueManager, server: RunningServer) -> None:
    """`Job.created` on add_job's answer: True for a job the call created (the brief answer of a plain add
    and the whole one of an add with options alike), False for the job that held the job_id or dedup key;
    None on a job read otherwise, and never part of a job's equality. The sync client says the same."""
    await qm.register_queue("said")
    plain = await qm.add_job("said", "plain", {"n": 1})  # answered briefly (convert.created_job)
    fixed = await qm.add_job("said", "fixed", None, {"job_id": "f-1", "priority": "high"})
    again = await qm.add_job("said", "other", None, {"job_id": "f-1"})
    keyed = await qm.add_job("said", "keyed", None, {"dedup": {"key": "k"}})
    held = await qm.add_job("said", "keyed-again", None, {"dedup": {"key": "k"}})
    assert (plain.created, fixed.created, again.created, keyed.created, held.created) == (
        True,
        True,
        False,
        True,
        False,
    )
    assert (again.id, again.name, held.id, held.name) == ("f-1", "fixed", keyed.id, "keyed")
    read = await qm.get_job("said", "f-1")
    assert read.created is None and read == fixed

    def sync_adds() -> tuple[bool | None, bool | None]:
        with SyncQueueManager(server.address) as client:
            return (
                client.add_job("said", "sync", None, {"job_id": "s-1"}).created,
                client.add_job("said", "sync", None, {"job_id": "s-1"}).created,
            )

    assert await asyncio.to_thread(sync_adds) == (True, False)
