"""Producer backpressure (QueueConfig.max_size, GroupLimits.max_size): an add that finds no room is refused
with RESOURCE_EXHAUSTED and writes nothing; a bulk add is checked whole; jobs the server adds itself (chain
links) are never refused. Against a real server on a real Valkey."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from queue_manager import JobContext, JobState, QueueManager
from queue_manager.v1 import jobs_pb2, queue_service_pb2, queue_service_pb2_grpc, types_pb2
from queue_manager_server.engine import Engine
from tests.conftest import RunningServer
from tests.rawworker import eventually

RE = grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.fixture
async def stub(server: RunningServer) -> AsyncIterator[queue_service_pb2_grpc.QueueServiceStub]:
    async with grpc.aio.insecure_channel(server.address) as channel:
        yield queue_service_pb2_grpc.QueueServiceStub(channel)


def new(name: str = "j", **options: object) -> jobs_pb2.NewJob:
    return jobs_pb2.NewJob(name=name, options=types_pb2.JobOptions(**options))  # type: ignore[arg-type]


async def register(stub: queue_service_pb2_grpc.QueueServiceStub, name: str, **cfg: object) -> None:
    config = types_pb2.QueueConfig(disable_dead_letter=True, **cfg)  # type: ignore[arg-type]
    await stub.RegisterQueue(queue_service_pb2.RegisterQueueRequest(name=name, config=config))


async def add(stub: queue_service_pb2_grpc.QueueServiceStub, queue: str, job: jobs_pb2.NewJob) -> str:
    return (await stub.AddJob(jobs_pb2.AddJobRequest(queue_name=queue, job=job))).job.id


async def refused(stub: queue_service_pb2_grpc.QueueServiceStub, queue: str, job: jobs_pb2.NewJob) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await add(stub, queue, job)
    assert err.value.code() is RE
    return err.value.details() or ""


async def counts(stub: queue_service_pb2_grpc.QueueServiceStub, queue: str) -> tuple[int, int]:
    m = (await stub.GetQueueMetrics(queue_service_pb2.GetQueueMetricsRequest(name=queue))).metrics
    return m.waiting, m.delayed


async def test_a_full_queue_refuses_adds_until_workers_take_some(
    stub: queue_service_pb2_grpc.QueueServiceStub, engine: Engine
) -> None:
    await register(stub, "m", max_size=3)
    await add(stub, "m", new(job_id="one", dedup=types_pb2.Dedup(key="k")))
    await add(stub, "m", new())
    await add(stub, "m", new(delay=types_pb2.google_dot_protobuf_dot_duration__pb2.Duration(seconds=60)))
    assert await counts(stub, "m") == (2, 1)  # the delayed job counts too
    assert "queue 'm' is full" in await refused(stub, "m", new())
    # An add that finds its job there is answered so, full or not: its id, its dedup key.
    assert await add(stub, "m", new(job_id="one")) == "one"
    assert await add(stub, "m", new(dedup=types_pb2.Dedup(key="k"))) == "one"
    assert await counts(stub, "m") == (2, 1)
    # A worker takes one: room for one more.
    assert len((await engine.claim("m", 1, "t", "w", 30_000)).jobs) == 1
    await add(stub, "m", new())
    await refused(stub, "m", new())


async def test_a_batch_refuses_only_what_does_not_fit(stub: queue_service_pb2_grpc.QueueServiceStub) -> None:
    await register(stub, "b", max_size=2)
    reply = await stub.AddJobBatch(
        jobs_pb2.AddJobBatchRequest(
            items=[jobs_pb2.AddJobRequest(queue_name="b", job=new(f"n{i}")) for i in range(4)]
        )
    )
    kinds = [o.WhichOneof("outcome") for o in reply.outcomes]
    assert kinds == ["added", "added", "error", "error"]
    assert reply.outcomes[2].error.code == RE.value[0]
    assert "queue 'b' is full" in reply.outcomes[2].error.message
    assert await counts(stub, "b") == (2, 0)


async def test_a_bulk_add_is_refused_whole(stub: queue_service_pb2_grpc.QueueServiceStub) -> None:
    await register(stub, "k", max_size=600)
    await add(stub, "k", new())

    async def stream(n: int) -> AsyncIterator[jobs_pb2.AddBulkRequest]:
        yield jobs_pb2.AddBulkRequest(queue_name="k", jobs=[new(f"n{i}") for i in range(n)])

    for n in (700, 600):  # staged (over one chunk) and direct: nothing written either way
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.AddBulk(stream(n))
        assert err.value.code() is RE and "queue 'k' is full" in (err.value.details() or "")
    assert await counts(stub, "k") == (1, 0)
    assert (await stub.AddBulk(stream(599))).created_count == 599
    # One script call's worth (direct, not staged): checked whole in the add's own script.
    await register(stub, "k2", max_size=4, group_limits=types_pb2.GroupLimits(max_size=2))
    await add(stub, "k2", new())

    async def small(jobs: list[jobs_pb2.NewJob]) -> AsyncIterator[jobs_pb2.AddBulkRequest]:
        yield jobs_pb2.AddBulkRequest(queue_name="k2", jobs=jobs)

    for jobs, what in (([new()] * 4, "queue 'k2' is full"), ([new(group="a")] * 3, "group 'a'")):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.AddBulk(small(jobs))
        assert err.value.code() is RE and what in (err.value.details() or "")
    assert await counts(stub, "k2") == (1, 0)
    assert (await stub.AddBulk(small([new(group="a"), new(group="a")]))).created_count == 2


async def test_a_bulk_refusal_gives_the_figures(stub: queue_service_pb2_grpc.QueueServiceStub) -> None:
    """An empty queue refusing a bulk add larger than its max_size says so: what it holds, its max_size, the
    add's jobs and the room left, not only "is full" (which reads as wrong for an empty queue)."""
    await register(stub, "fig", max_size=550, group_limits=types_pb2.GroupLimits(max_size=3))
    await add(stub, "fig", new(group="a"))

    async def stream(jobs: list[jobs_pb2.NewJob]) -> AsyncIterator[jobs_pb2.AddBulkRequest]:
        yield jobs_pb2.AddBulkRequest(queue_name="fig", jobs=jobs)

    staged = [new(f"n{i}") for i in range(600)]  # over one script call: size_room.lua checks it
    direct = [new(f"n{i}") for i in range(20)] + [new(group="a")] * 3  # add_jobs.lua's whole check
    cases = (
        (
            staged,
            "queue 'fig' is full: it holds 1 job waiting and delayed and its max_size (QueueConfig.max_size)"
            " is 550, so this bulk add, with 600 jobs, does not fit (room for 549); none was added; add them"
            " in parts of at most 550",
        ),
        (
            direct,
            "group 'a' of queue 'fig' is full: it holds 1 job waiting and its max_size (GroupLimits.max_size)"
            " is 3, so this bulk add, with 3 jobs for it, does not fit (room for 2); none was added; add them"
            " again once workers have taken some",
        ),
    )
    for jobs, message in cases:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.AddBulk(stream(jobs))
        assert err.value.code() is RE and err.value.details() == message
    assert await counts(stub, "fig") == (1, 0)


async def test_a_full_group_refuses_its_adds_and_not_the_others(
    stub: queue_service_pb2_grpc.QueueServiceStub,
) -> None:
    await register(stub, "g", group_limits=types_pb2.GroupLimits(max_size=2))
    for _ in range(2):
        await add(stub, "g", new(group="a"))
    assert "group 'a' of queue 'g' is full" in await refused(stub, "g", new(group="a"))
    # A delayed job does not count until due, but it would join the full group: refused too (docs/jobs.md).
    later = types_pb2.google_dot_protobuf_dot_duration__pb2.Duration(seconds=60)
    assert "group 'a' of queue 'g' is full" in await refused(stub, "g", new(group="a", delay=later))
    await add(stub, "g", new(group="b"))
    await add(stub, "g", new())  # no group: no group limit

    async def stream() -> AsyncIterator[jobs_pb2.AddBulkRequest]:
        yield jobs_pb2.AddBulkRequest(queue_name="g", jobs=[new(group="b"), new(group="b")])

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.AddBulk(stream())
    assert err.value.code() is RE and "group 'b'" in (err.value.details() or "")
    # A group's own limits replace the queue's: a larger max, or none.
    await stub.SetGroupLimits(
        queue_service_pb2.SetGroupLimitsRequest(
            queue_name="g", group="a", limits=types_pb2.GroupLimits(max_size=3)
        )
    )
    await add(stub, "g", new(group="a"))
    await refused(stub, "g", new(group="a"))
    await stub.SetGroupLimits(
        queue_service_pb2.SetGroupLimitsRequest(queue_name="g", group="a", limits=types_pb2.GroupLimits())
    )
    await add(stub, "g", new(group="a"))
    listed = await stub.ListGroups(queue_service_pb2.ListGroupsRequest(queue_name="g"))
    assert [(x.group, x.waiting, x.limits.max_size) for x in listed.groups] == [("a", 4, 0), ("b", 1, 2)]


async def test_jobs_the_server_adds_are_never_refused(
    stub: queue_service_pb2_grpc.QueueServiceStub, server: RunningServer
) -> None:
    await register(stub, "src")
    await register(stub, "dst", max_size=1)
    await add(stub, "dst", new())
    link = types_pb2.ChainLink(queue_name="dst", job_name="next")
    first = await add(stub, "src", new(chain_to=[link]))
    qm = QueueManager(address=server.address, concurrency=1, shutdown_grace=5.0)
    try:

        @qm.processor("src")
        async def work(job: JobContext) -> None:
            return None

        await qm.start_workers("src")
        assert (await qm.wait_for_job("src", first, 30.0)).state is JobState.COMPLETED

        async def linked() -> bool:
            return await counts(stub, "dst") == (2, 0)

        await eventually(linked, 30.0)
    finally:
        await qm.shutdown()


async def test_bad_sizes(stub: queue_service_pb2_grpc.QueueServiceStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await register(stub, "x", max_size=1 << 60)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "config.max_size" in (
        err.value.details() or ""
    )
