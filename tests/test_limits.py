"""Resource limits: each violation is INVALID_ARGUMENT or RESOURCE_EXHAUSTED naming the limit, writes
nothing, and a worker stream that stops reading is cut with its jobs recovered."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from redis.asyncio import Redis

from queue_manager.v1 import jobs_pb2 as jpb
from queue_manager.v1 import metrics_pb2
from queue_manager.v1 import queue_service_pb2 as qpb
from queue_manager.v1 import queue_service_pb2_grpc as qrpc
from queue_manager.v1 import types_pb2 as t
from queue_manager.v1 import worker_service_pb2 as wpb
from queue_manager.v1 import worker_service_pb2_grpc as wrpc
from queue_manager.v1 import workflows_pb2 as wfpb
from tests.conftest import RunningServer, ServerFactory
from tests.rawworker import RawWorker, eventually
from tests.security_kit import state


async def _register(server: RunningServer, *names: str) -> None:
    async with grpc.aio.insecure_channel(server.address) as ch:
        for name in names:
            await qrpc.QueueServiceStub(ch).RegisterQueue(qpb.RegisterQueueRequest(name=name))


async def _refusal(call: object) -> tuple[grpc.StatusCode, str]:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    raise AssertionError("the call was accepted")


async def test_request_limits_name_the_limit_and_write_nothing(
    server_factory: ServerFactory, redis: Redis
) -> None:
    server = await server_factory(max_bulk_bytes=20_000, max_payload_bytes=10_000)
    await _register(server, "lim")
    before = await state(redis, server.prefix)
    big = jpb.NewJob(name="n", data=t.Payload(raw=b"x" * 8_000))
    meta = t.JobMetadata
    cases = {
        "QM_MAX_PAYLOAD_BYTES": lambda q: q.AddJob(
            jpb.AddJobRequest(queue_name="lim", job=jpb.NewJob(name="n", data=t.Payload(raw=b"x" * 10_001)))
        ),
        "is not a valid queue name": lambda q: q.AddJob(
            jpb.AddJobRequest(queue_name="lim{x}", job=jpb.NewJob(name="n"))
        ),
        "job.options.delay": lambda q: q.AddJob(
            jpb.AddJobRequest(
                queue_name="lim",
                job=jpb.NewJob(
                    name="n", options=t.JobOptions(delay=duration_pb2.Duration(seconds=11 * 365 * 86400))
                ),
            )
        ),
        "QM_MAX_BULK_BYTES": lambda q: q.AddBulk(
            iter([jpb.AddBulkRequest(queue_name="lim", jobs=[big])] * 3)
        ),
        "job.options.metadata.tags[1]": lambda q: q.AddJob(
            jpb.AddJobRequest(
                queue_name="lim",
                job=jpb.NewJob(name="n", options=t.JobOptions(metadata=meta(tags=["ok", "t" * 201]))),
            )
        ),
        "job.options.metadata.attributes['k']": lambda q: q.AddJob(
            jpb.AddJobRequest(
                queue_name="lim",
                job=jpb.NewJob(name="n", options=t.JobOptions(metadata=meta(attributes={"k": "v" * 2001}))),
            )
        ),
        "the limit is 16384 bytes": lambda q: q.AddJob(
            jpb.AddJobRequest(
                queue_name="lim",
                job=jpb.NewJob(
                    name="n",
                    options=t.JobOptions(metadata=meta(attributes={f"k{i}": "v" * 1000 for i in range(20)})),
                ),
            )
        ),
        "job.options.schedule_time": lambda q: q.AddJob(
            jpb.AddJobRequest(
                queue_name="lim",
                job=jpb.NewJob(
                    name="n", options=t.JobOptions(schedule_time=timestamp_pb2.Timestamp(seconds=2**40))
                ),
            )
        ),
        "job.options.attempts": lambda q: q.AddJob(
            jpb.AddJobRequest(
                queue_name="lim", job=jpb.NewJob(name="n", options=t.JobOptions(attempts=10_001))
            )
        ),
        "workflow.metadata.tags": lambda q: q.ExecuteWorkflow(
            wfpb.ExecuteWorkflowRequest(
                workflow=wfpb.Workflow(
                    steps=[wfpb.WorkflowStep(queue_name="lim", job_name="a")],
                    metadata=wfpb.WorkflowMetadata(tags=["t"] * 101),
                )
            )
        ),
    }
    async with grpc.aio.insecure_channel(
        server.address, options=[("grpc.max_send_message_length", 1 << 26)]
    ) as ch:
        q = qrpc.QueueServiceStub(ch)
        for named, call in cases.items():
            code, details = await _refusal(call(q))
            assert code == grpc.StatusCode.INVALID_ARGUMENT and named in details, (named, details)
        assert await state(redis, server.prefix) == before
        added = await q.AddBulk(
            iter([jpb.AddBulkRequest(queue_name="lim", jobs=[big])] * 2)
        )  # under the bound
        assert len(added.job_ids) == 2


async def test_worker_hello_limits(server_factory: ServerFactory) -> None:
    server = await server_factory()
    await _register(server, "lim")
    hellos = {
        "hello.labels": wpb.WorkerHello(
            worker_id="w", queues=["lim"], labels={f"k{i}": "v" for i in range(51)}
        ),
        "hello.labels['k']": wpb.WorkerHello(worker_id="w", queues=["lim"], labels={"k": "v" * 501}),
        "hello.version": wpb.WorkerHello(worker_id="w", queues=["lim"], version="v" * 101),
    }
    for named, hello in hellos.items():
        async with grpc.aio.insecure_channel(server.address) as ch:
            stream = wrpc.WorkerServiceStub(ch).Connect(iter([wpb.ConnectRequest(hello=hello)]))
            code, details = await _refusal(stream.read())
        assert code == grpc.StatusCode.INVALID_ARGUMENT and named in details, (named, details)


async def test_calls_at_once_are_bounded_per_pool(server_factory: ServerFactory) -> None:
    server = await server_factory(max_concurrent_rpcs=2, max_worker_streams=1)
    await _register(server, "lim")
    async with grpc.aio.insecure_channel(server.address) as ch:
        q = qrpc.QueueServiceStub(ch)
        watches = [q.WatchMetrics(_watch()) for _ in range(2)]  # each holds a call slot while open
        for w in watches:
            await w.read()
        code, details = await _refusal(q.GetQueue(qpb.GetQueueRequest(name="lim")))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max-concurrent-rpcs" in details
        # Worker streams have their own pool: the first is welcome, the second refused.
        first, second = RawWorker(server.address, ["lim"], "w1"), RawWorker(server.address, ["lim"], "w2")
        await first.connect()
        second.open()  # refused at its start, before any message
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await second.recv()
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--max-worker-streams" in (refused.value.details() or "")
        health = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING  # never counted
        for w in watches:
            w.cancel()
        await first.close()
        await second.close()

        async def freed() -> bool:
            try:
                await q.GetQueue(qpb.GetQueueRequest(name="lim"))
            except grpc.aio.AioRpcError:
                return False
            return True

        await eventually(freed)


def _watch() -> metrics_pb2.WatchMetricsRequest:
    return metrics_pb2.WatchMetricsRequest(queue_names=["lim"])


async def test_streams_per_connection(server_factory: ServerFactory) -> None:
    server = await server_factory(max_streams_per_connection=2)
    await _register(server, "lim")
    async with (
        grpc.aio.insecure_channel(server.address) as ch,
        grpc.aio.insecure_channel(server.address, options=[("grpc.use_local_subchannel_pool", 1)]) as other,
    ):
        q = qrpc.QueueServiceStub(ch)
        held = [q.WatchMetrics(_watch()) for _ in range(2)]
        for w in held:
            await w.read()
        # A third stream on the same connection waits for a slot (HTTP/2 MAX_CONCURRENT_STREAMS)…
        with pytest.raises(grpc.aio.AioRpcError) as waited:
            await q.GetQueue(qpb.GetQueueRequest(name="lim"), timeout=0.5)
        assert waited.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # …while another connection is served.
        await qrpc.QueueServiceStub(other).GetQueue(qpb.GetQueueRequest(name="lim"), timeout=5)
        held[0].cancel()
        await q.GetQueue(qpb.GetQueueRequest(name="lim"), timeout=5)
        held[1].cancel()


async def test_a_burst_beyond_the_streams_per_connection_waits_and_succeeds(
    server_factory: ServerFactory,
) -> None:
    """Calls started at once beyond the per-connection limit wait for a slot, as HTTP/2 says, instead of being
    refused: grpc-core's default counted a stream until the server had freed it, later than the client
    learned it had ended, and refused the next ones (UNAVAILABLE, RST_STREAM REFUSED_STREAM)."""
    server = await server_factory(max_streams_per_connection=10)
    await _register(server, "lim")
    async with grpc.aio.insecure_channel(server.address) as ch:
        q = qrpc.QueueServiceStub(ch)
        await q.GetQueue(qpb.GetQueueRequest(name="lim"), timeout=5)
        for _ in range(3):
            calls = [q.GetQueue(qpb.GetQueueRequest(name="lim"), timeout=30) for _ in range(400)]
            answers = await asyncio.gather(*calls, return_exceptions=True)
            refused = [a for a in answers if isinstance(a, Exception)]
            assert not refused, f"{len(refused)} of 400 refused: {refused[0]}"


async def test_worker_credits_are_bounded(server_factory: ServerFactory) -> None:
    server = await server_factory(max_worker_credits=3)
    await _register(server, "lim")
    async with grpc.aio.insecure_channel(server.address) as ch:
        await qrpc.QueueServiceStub(ch).AddBulk(
            iter([jpb.AddBulkRequest(queue_name="lim", jobs=[jpb.NewJob(name="n")] * 10)])
        )
    w = RawWorker(server.address, ["lim"])
    try:
        await w.connect(credits=1_000_000)
        got = await w.jobs(3)
        with pytest.raises(TimeoutError):
            await w.jobs(1, timeout=0.5)  # no more than the bound, whatever was granted
        assert len(got) == 3
    finally:
        await w.close()


async def _job_states(server: RunningServer, queue: str) -> dict[str, tuple[int, int]]:
    async with grpc.aio.insecure_channel(server.address) as ch:
        m = (await qrpc.QueueServiceStub(ch).GetQueueMetrics(qpb.GetQueueMetricsRequest(name=queue))).metrics
    return {"waiting": (m.waiting, m.stalled_total), "active": (m.active, 0)}


@pytest.mark.faults
@pytest.mark.parametrize("bound", ["stall", "buffer"])
async def test_a_worker_that_stops_reading_is_cut_and_its_jobs_recovered(
    server_factory: ServerFactory, bound: str
) -> None:
    # stall: the first message nobody takes waits 1 s, then the stream is cut. buffer: more than 5 messages
    # wait (deliveries, then the acks of the reports the worker keeps sending), and it is cut at once.
    settings = (
        {"worker_stall_ms": 1_000}
        if bound == "stall"
        else {"worker_stall_ms": 600_000, "max_worker_buffer": 5}
    )
    server = await server_factory(**settings)
    await _register(server, "slow")
    jobs = 40
    async with grpc.aio.insecure_channel(
        server.address, options=[("grpc.max_send_message_length", 1 << 26)]
    ) as ch:
        payload = t.Payload(raw=b"x" * 900_000)
        batch = [jpb.AddBulkRequest(queue_name="slow", jobs=[jpb.NewJob(name="n", data=payload)] * 10)] * (
            jobs // 10
        )
        await qrpc.QueueServiceStub(ch).AddBulk(iter(batch))
    w = RawWorker(server.address, ["slow"])
    dispatcher = server.app.dispatcher
    assert dispatcher is not None
    try:
        started = time.monotonic()
        await w.connect(credits=jobs)  # then never reads again: ~36 MB is more than the connection takes
        if bound == "buffer":
            for _ in range(10):
                w.report(
                    wpb.WorkerReport(
                        extensions=[wpb.LeaseRef(queue_name="slow", job_id="x", lease_token="t")]
                    )
                )

        async def recovered() -> bool:
            states = await _job_states(server, "slow")
            return not dispatcher.all_sessions() and states["waiting"][0] == jobs and states["active"][0] == 0

        await eventually(recovered, timeout=20)
        assert time.monotonic() - started < 10
        stalled = (await _job_states(server, "slow"))["waiting"][1]
        assert stalled >= 5  # the jobs it held went back as stalls; the others were never leased
    finally:
        await w.close()


async def test_request_metadata_is_bounded(server: RunningServer, redis: Redis) -> None:
    """gRPC request metadata (headers) is bounded by the transport (``grpc.max_metadata_size``, 16 KiB; past
    the hard bound of 20 KiB every call is refused) before any interceptor or handler runs."""
    await _register(server, "lim")
    before = await state(redis, server.prefix)
    async with grpc.aio.insecure_channel(server.address) as ch:
        q = qrpc.QueueServiceStub(ch)
        add = jpb.AddJobRequest(queue_name="lim", job=jpb.NewJob(name="n"))
        code, details = await _refusal(q.AddJob(add, metadata=(("x-big", "v" * 40_000),), timeout=5))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "metadata size" in details, details
        assert await state(redis, server.prefix) == before
        await q.AddJob(add, metadata=(("x-small", "v" * 1_000),), timeout=5)
