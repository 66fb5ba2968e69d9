"""The gRPC API on a real server: statuses and messages for bad input, nothing written on rejection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from queue_manager.v1 import jobs_pb2 as jpb
from queue_manager.v1 import queue_service_pb2 as qpb
from queue_manager.v1 import queue_service_pb2_grpc as jrpc
from queue_manager.v1 import queue_service_pb2_grpc as qrpc
from queue_manager.v1 import schedules_pb2 as spb
from queue_manager.v1 import types_pb2 as t
from queue_manager.v1 import workflows_pb2 as wpb
from queue_manager_server.app import StartupError
from queue_manager_server.engine import Engine
from tests.conftest import RunningServer, ServerFactory
from tests.faults import Proxy

Code = grpc.StatusCode


@pytest.fixture
async def channel(server: RunningServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(server.address) as ch:
        yield ch


@pytest.fixture
async def queues(channel: grpc.aio.Channel) -> qrpc.QueueServiceStub:
    stub = qrpc.QueueServiceStub(channel)
    await stub.RegisterQueue(qpb.RegisterQueueRequest(name="emails"))
    return stub


@pytest.fixture
def jobs(channel: grpc.aio.Channel) -> jrpc.QueueServiceStub:
    return jrpc.QueueServiceStub(channel)


def json_payload(**kw: object) -> t.Payload:
    v = struct_pb2.Value()
    v.struct_value.update(kw)
    return t.Payload(json=v)


async def expect(code: Code, call: object, *words: str) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    assert info.value.code() == code, info.value.details()
    details = info.value.details() or ""
    for w in words:
        assert w in details, details
    assert "Traceback" not in details
    return details


async def test_add_and_get_json_job(queues: qrpc.QueueServiceStub, jobs: jrpc.QueueServiceStub) -> None:
    added = await jobs.AddJob(
        jpb.AddJobRequest(queue_name="emails", job=jpb.NewJob(name="send", data=json_payload(to="a@b.c")))
    )
    assert added.created and added.job.state == t.JOB_STATE_WAITING
    got = await jobs.GetJob(jpb.GetJobRequest(queue_name="emails", job_id=added.job.id))
    assert got.job.data.json.struct_value["to"] == "a@b.c"
    assert got.job.priority == t.JOB_PRIORITY_NORMAL


async def test_raw_bytes_payload_round_trip(
    queues: qrpc.QueueServiceStub, jobs: jrpc.QueueServiceStub
) -> None:
    blob = bytes(range(256))
    added = await jobs.AddJob(
        jpb.AddJobRequest(
            queue_name="emails", job=jpb.NewJob(name="b", data=t.Payload(raw=blob, content_type="image/png"))
        )
    )
    got = await jobs.GetJob(jpb.GetJobRequest(queue_name="emails", job_id=added.job.id))
    assert got.job.data.raw == blob and got.job.data.content_type == "image/png"


@pytest.mark.parametrize(
    ("job", "field"),
    [
        (jpb.NewJob(name=""), "job.name"),
        (jpb.NewJob(name="x" * 201), "job.name"),
        (jpb.NewJob(name="a", options=t.JobOptions(priority=9)), "job.options.priority"),  # type: ignore[arg-type]
        (jpb.NewJob(name="a", options=t.JobOptions(job_id="has space")), "job.options.job_id"),
        (jpb.NewJob(name="a", options=t.JobOptions(job_id="x" * 201)), "job.options.job_id"),
        (
            jpb.NewJob(name="a", options=t.JobOptions(delay=duration_pb2.Duration(seconds=-1))),
            "job.options.delay",
        ),
        (
            jpb.NewJob(
                name="a",
                options=t.JobOptions(
                    delay=duration_pb2.Duration(seconds=1), schedule_time=timestamp_pb2.Timestamp(seconds=1)
                ),
            ),
            "job.options.delay",
        ),
        (jpb.NewJob(name="a", options=t.JobOptions(attempts=1_000_000)), "job.options.attempts"),
        (jpb.NewJob(name="a", options=t.JobOptions(backoff=t.Backoff(type=7))), "job.options.backoff.type"),  # type: ignore[arg-type]
        (
            jpb.NewJob(
                name="a", options=t.JobOptions(backoff=t.Backoff(delay=duration_pb2.Duration(seconds=1)))
            ),
            "job.options.backoff.type",
        ),
        (
            jpb.NewJob(name="a", options=t.JobOptions(backoff=t.Backoff(type=1, jitter=2.0))),
            "job.options.backoff.jitter",
        ),
        (
            jpb.NewJob(name="a", options=t.JobOptions(timeout=duration_pb2.Duration(seconds=-5))),
            "job.options.timeout",
        ),
        (
            jpb.NewJob(name="a", options=t.JobOptions(metadata=t.JobMetadata(tags=["t"] * 101))),
            "job.options.metadata.tags",
        ),
        (
            jpb.NewJob(
                name="a",
                options=t.JobOptions(remove_on_complete=t.KeepJobs(age=duration_pb2.Duration(seconds=-1))),
            ),
            "job.options.remove_on_complete.age",
        ),
        (jpb.NewJob(name="a", data=t.Payload(raw=b"{not json", content_type="application/json")), "job.data"),
    ],
)
async def test_bad_job_fields_are_invalid_argument_and_write_nothing(
    queues: qrpc.QueueServiceStub, jobs: jrpc.QueueServiceStub, job: jpb.NewJob, field: str
) -> None:
    await expect(Code.INVALID_ARGUMENT, jobs.AddJob(jpb.AddJobRequest(queue_name="emails", job=job)), field)
    m = await queues.GetQueueMetrics(qpb.GetQueueMetricsRequest(name="emails"))
    assert (m.metrics.waiting, m.metrics.delayed) == (0, 0)


async def test_payload_limit(server_factory: ServerFactory) -> None:
    srv = await server_factory(max_payload_bytes=1000)
    async with grpc.aio.insecure_channel(srv.address) as ch:
        await qrpc.QueueServiceStub(ch).RegisterQueue(qpb.RegisterQueueRequest(name="q"))
        big = jpb.NewJob(name="a", data=t.Payload(raw=b"x" * 1001))
        await expect(
            Code.INVALID_ARGUMENT,
            jrpc.QueueServiceStub(ch).AddJob(jpb.AddJobRequest(queue_name="q", job=big)),
            "job.data",
            "1001 bytes",
            "QM_MAX_PAYLOAD_BYTES",
        )


async def test_missing_things_are_not_found(
    queues: qrpc.QueueServiceStub, jobs: jrpc.QueueServiceStub
) -> None:
    await expect(
        Code.NOT_FOUND,
        jobs.AddJob(jpb.AddJobRequest(queue_name="nope", job=jpb.NewJob(name="a"))),
        "'nope'",
        "register",
    )
    await expect(
        Code.NOT_FOUND, jobs.GetJob(jpb.GetJobRequest(queue_name="emails", job_id="missing")), "'missing'"
    )
    await expect(Code.NOT_FOUND, jobs.GetJob(jpb.GetJobRequest(queue_name="nope", job_id="x")), "'nope'")
    await expect(Code.NOT_FOUND, queues.GetQueueMetrics(qpb.GetQueueMetricsRequest(name="nope")))
    await expect(Code.NOT_FOUND, queues.PauseQueue(qpb.PauseQueueRequest(name="nope")))
    await expect(Code.NOT_FOUND, jobs.RemoveJob(jpb.RemoveJobRequest(queue_name="emails", job_id="missing")))


@pytest.mark.parametrize("name", ["", "has space", "a{b}", "a:b", "x" * 101])
async def test_bad_queue_names(queues: qrpc.QueueServiceStub, name: str) -> None:
    await expect(Code.INVALID_ARGUMENT, queues.RegisterQueue(qpb.RegisterQueueRequest(name=name)), "name")


async def test_bad_queue_config(queues: qrpc.QueueServiceStub) -> None:
    cfg = t.QueueConfig(rate_limit=t.RateLimit(max=10))
    await expect(
        Code.INVALID_ARGUMENT,
        queues.RegisterQueue(qpb.RegisterQueueRequest(name="q", config=cfg)),
        "config.rate_limit.duration",
    )
    cfg = t.QueueConfig(dead_letter_queue="q")
    await expect(
        Code.INVALID_ARGUMENT,
        queues.RegisterQueue(qpb.RegisterQueueRequest(name="q", config=cfg)),
        "own dead-letter",
    )
    # The default dead-letter queue registered by its name keeps its failed jobs (no dead-letter queue of
    # its own): the default would have been itself.
    dlq = await queues.RegisterQueue(qpb.RegisterQueueRequest(name="dead-letter-queue"))
    assert dlq.queue.config.disable_dead_letter and not dlq.queue.config.dead_letter_queue
    link = t.ChainLink(queue_name="next", job_name="follow")
    cfg = t.QueueConfig(default_job_options=t.JobOptions(chain_to=[link]))
    await expect(
        Code.INVALID_ARGUMENT,
        queues.RegisterQueue(qpb.RegisterQueueRequest(name="q", config=cfg)),
        "default_job_options.chain_to",
    )
    cfg = t.QueueConfig(default_job_options=t.JobOptions(job_id="x"))
    await expect(
        Code.INVALID_ARGUMENT, queues.RegisterQueue(qpb.RegisterQueueRequest(name="q", config=cfg)), "job_id"
    )
    listed = await queues.ListQueues(qpb.ListQueuesRequest())
    assert [q.name for q in listed.queues] == ["dead-letter-queue", "emails"]


async def test_list_and_clean_bad_input(queues: qrpc.QueueServiceStub, jobs: jrpc.QueueServiceStub) -> None:
    await expect(Code.INVALID_ARGUMENT, jobs.ListJobs(jpb.ListJobsRequest(queue_name="emails")), "state")
    await expect(
        Code.INVALID_ARGUMENT,
        jobs.ListJobs(jpb.ListJobsRequest(queue_name="emails", state=t.JOB_STATE_WAITING, page_size=5000)),
        "page_size",
    )
    await expect(
        Code.INVALID_ARGUMENT,
        jobs.ListJobs(
            jpb.ListJobsRequest(queue_name="emails", state=t.JOB_STATE_WAITING, page_token="garbage!")
        ),
        "page_token",
    )
    await expect(
        Code.INVALID_ARGUMENT,
        queues.CleanQueue(qpb.CleanQueueRequest(name="emails", state=t.JOB_STATE_ACTIVE)),
        "active",
    )
    # No state: the states it cleans, not every state (it listed ACTIVE, which it then refuses).
    unset = await expect(Code.INVALID_ARGUMENT, queues.CleanQueue(qpb.CleanQueueRequest(name="emails")))
    cleanable = "1 (WAITING), 3 (DELAYED), 4 (COMPLETED), 5 (FAILED), 6 (PAUSED) or 7 (CANCELLED)"
    assert unset == f"state: is required: use {cleanable}", unset


async def test_pagination(queues: qrpc.QueueServiceStub, jobs: jrpc.QueueServiceStub) -> None:
    for i in range(5):
        await jobs.AddJob(jpb.AddJobRequest(queue_name="emails", job=jpb.NewJob(name=f"j{i}")))
    seen, token = [], ""
    while True:
        page = await jobs.ListJobs(
            jpb.ListJobsRequest(queue_name="emails", state=t.JOB_STATE_WAITING, page_size=2, page_token=token)
        )
        assert page.total_size == 5
        seen += [j.name for j in page.jobs]
        token = page.next_page_token
        if not token:
            break
    assert seen == [f"j{i}" for i in range(5)]


@pytest.mark.parametrize("position", ["9223372036854775807", "99999999999999999999999", "-1", "1.5"])
async def test_crafted_page_tokens_are_refused_by_every_list(
    queues: qrpc.QueueServiceStub, jobs: jrpc.QueueServiceStub, position: str
) -> None:
    """A token naming a position Redis cannot read (past 64 bits) was an INTERNAL error for the sorted sets
    (finished, active, delayed), workflow runs and job logs; every list now refuses it as a bad token."""
    import base64

    from queue_manager.v1 import workflows_pb2 as wpb

    def token(kind: str) -> str:
        return base64.urlsafe_b64encode(f"{kind}:{position}".encode()).decode()

    added = await jobs.AddJob(jpb.AddJobRequest(queue_name="emails", job=jpb.NewJob(name="j")))
    for state in (
        t.JOB_STATE_WAITING,
        t.JOB_STATE_ACTIVE,
        t.JOB_STATE_DELAYED,
        t.JOB_STATE_COMPLETED,
        t.JOB_STATE_FAILED,
        t.JOB_STATE_CANCELLED,
    ):
        request = jpb.ListJobsRequest(queue_name="emails", state=state, page_token=token("o"))
        await expect(Code.INVALID_ARGUMENT, jobs.ListJobs(request), "page_token", "ListJobs")
    await expect(
        Code.INVALID_ARGUMENT,
        queues.ListWorkflows(
            wpb.ListWorkflowsRequest(page_token=base64.urlsafe_b64encode(f"w:{position}:r".encode()).decode())
        ),
        "page_token",
        "ListWorkflows",
    )
    logs = jpb.GetJobLogsRequest(queue_name="emails", job_id=added.job.id, page_token=token("l"))
    await expect(Code.INVALID_ARGUMENT, jobs.GetJobLogs(logs), "page_token", "GetJobLogs")
    # The largest score a cursor may name still reads as an empty page (delayed jobs come soonest first).
    far = base64.urlsafe_b64encode(f"s:{2**53}:j".encode()).decode()
    page = await jobs.ListJobs(
        jpb.ListJobsRequest(queue_name="emails", state=t.JOB_STATE_DELAYED, page_token=far)
    )
    assert not page.jobs and not page.next_page_token


async def test_bulk_stream_ids_in_order_and_all_or_nothing(
    queues: qrpc.QueueServiceStub, jobs: jrpc.QueueServiceStub
) -> None:
    async def good() -> AsyncIterator[jpb.AddBulkRequest]:
        for chunk in range(3):
            yield jpb.AddBulkRequest(
                queue_name="emails",
                jobs=[
                    jpb.NewJob(name=f"n{chunk}-{i}", options=t.JobOptions(job_id=f"id-{chunk}-{i}"))
                    for i in range(100)
                ],
            )

    r = await jobs.AddBulk(good())
    assert list(r.job_ids) == [f"id-{c}-{i}" for c in range(3) for i in range(100)]
    assert r.created_count == 300

    async def bad() -> AsyncIterator[jpb.AddBulkRequest]:
        yield jpb.AddBulkRequest(queue_name="emails", jobs=[jpb.NewJob(name="fine")] * 10)
        yield jpb.AddBulkRequest(queue_name="emails", jobs=[jpb.NewJob(name="")])

    await expect(Code.INVALID_ARGUMENT, jobs.AddBulk(bad()), "jobs[10].name")

    async def unknown_queue() -> AsyncIterator[jpb.AddBulkRequest]:
        yield jpb.AddBulkRequest(queue_name="emails", jobs=[jpb.NewJob(name="fine")])
        yield jpb.AddBulkRequest(queue_name="nope", jobs=[jpb.NewJob(name="fine")])

    await expect(Code.NOT_FOUND, jobs.AddBulk(unknown_queue()), "'nope'")
    m = await queues.GetQueueMetrics(qpb.GetQueueMetricsRequest(name="emails"))
    assert m.metrics.waiting == 300


async def test_health_reflects_redis(server: RunningServer, channel: grpc.aio.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    r = await stub.Check(health_pb2.HealthCheckRequest(service="queue_manager.v1.QueueService"))
    assert r.status == health_pb2.HealthCheckResponse.SERVING
    monitor = next(c for c in server.app.components if c.name == "health")
    # Its probe stopped first: one under way when the status is set would find Redis up and set it back.
    await monitor.stop()
    await monitor.set(False)  # type: ignore[attr-defined]
    r = await stub.Check(health_pb2.HealthCheckRequest())
    assert r.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_redis_unreachable_at_start_is_a_clear_startup_error(server_factory: ServerFactory) -> None:
    with pytest.raises(StartupError, match="cannot reach Redis"):
        await server_factory(redis_url="redis://127.0.0.1:1/0")


async def test_redis_down_is_unavailable_then_recovers(server_factory: ServerFactory, redis_url: str) -> None:
    proxy = Proxy(redis_url)
    await proxy.start()
    try:
        srv = await server_factory(redis_url=proxy.url)
        async with grpc.aio.insecure_channel(srv.address) as ch:
            stub = qrpc.QueueServiceStub(ch)
            await stub.RegisterQueue(qpb.RegisterQueueRequest(name="q"))
            proxy.cut()
            await expect(
                Code.UNAVAILABLE, stub.GetQueueMetrics(qpb.GetQueueMetricsRequest(name="q")), "Redis"
            )
            proxy.restore()
            m = await stub.GetQueueMetrics(qpb.GetQueueMetricsRequest(name="q"))
            assert m.metrics.queue_name == "q"
    finally:
        await proxy.stop()


async def test_delayed_job_is_promoted_on_time_without_workers(
    queues: qrpc.QueueServiceStub, jobs: jrpc.QueueServiceStub
) -> None:
    import time

    added = await jobs.AddJob(
        jpb.AddJobRequest(
            queue_name="emails",
            job=jpb.NewJob(
                name="later", options=t.JobOptions(delay=duration_pb2.Duration(nanos=300_000_000))
            ),
        )
    )
    start = time.perf_counter()
    assert added.job.state == t.JOB_STATE_DELAYED
    while True:
        got = await jobs.GetJob(jpb.GetJobRequest(queue_name="emails", job_id=added.job.id))
        if got.job.state == t.JOB_STATE_WAITING:
            break
        assert time.perf_counter() - start < 2.0
        await asyncio.sleep(0.01)
    # Timers armed from the add event: on time, not at the next periodic scan (5 s).
    assert 0.25 <= time.perf_counter() - start < 0.6


async def test_bulk_stream_over_the_limit_is_rejected_whole(
    queues: qrpc.QueueServiceStub, jobs: jrpc.QueueServiceStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    from queue_manager_server.services import jobs as jobs_module

    monkeypatch.setattr(jobs_module, "MAX_STREAM_JOBS", 50)

    async def big() -> AsyncIterator[jpb.AddBulkRequest]:
        for _ in range(3):
            yield jpb.AddBulkRequest(queue_name="emails", jobs=[jpb.NewJob(name="x")] * 20)

    await expect(Code.INVALID_ARGUMENT, jobs.AddBulk(big()), "at most 50 jobs", "several streams")
    m = await queues.GetQueueMetrics(qpb.GetQueueMetricsRequest(name="emails"))
    assert m.metrics.waiting == 0


async def test_dead_letter_copy_of_a_longest_id_job_is_readable(
    queues: qrpc.QueueServiceStub, jobs: jrpc.QueueServiceStub, engine: Engine
) -> None:
    long_id = "x" * 200
    await jobs.AddJob(
        jpb.AddJobRequest(queue_name="emails", job=jpb.NewJob(name="n", options=t.JobOptions(job_id=long_id)))
    )
    (claimed,) = (await engine.claim("emails", 1, "tok", "w", 30_000)).jobs
    await engine.fail("emails", [(claimed.id, "tok", "boom", "", True)])
    got = await jobs.GetJob(jpb.GetJobRequest(queue_name="dead-letter-queue", job_id=f"emails:{long_id}"))
    assert got.job.data.json.struct_value["original_job_id"] == long_id
    assert got.job.data.json.struct_value["failure_reason"] == "boom"


async def test_json_payload_rules(queues: qrpc.QueueServiceStub, jobs: jrpc.QueueServiceStub) -> None:
    nan = struct_pb2.Value(number_value=float("nan"))
    await expect(
        Code.INVALID_ARGUMENT,
        jobs.AddJob(
            jpb.AddJobRequest(queue_name="emails", job=jpb.NewJob(name="a", data=t.Payload(json=nan)))
        ),
        "job.data",
        "NaN",
    )
    raw_nan = t.Payload(raw=b'{"x": NaN}', content_type="application/json")
    await expect(
        Code.INVALID_ARGUMENT,
        jobs.AddJob(jpb.AddJobRequest(queue_name="emails", job=jpb.NewJob(name="a", data=raw_nan))),
        "job.data",
    )
    # A JSON media type with parameters is JSON too: validated, and shown as JSON on reads. The AddJob
    # answer keeps the form of the request (raw bytes in, raw bytes back).
    with_charset = t.Payload(raw=b'{"x": 1}', content_type="application/json; charset=utf-8")
    added = await jobs.AddJob(
        jpb.AddJobRequest(queue_name="emails", job=jpb.NewJob(name="a", data=with_charset))
    )
    assert added.job.data.raw == b'{"x":1}' or added.job.data.raw == b'{"x": 1}'
    got = await jobs.GetJob(jpb.GetJobRequest(queue_name="emails", job_id=added.job.id))
    assert got.job.data.json.struct_value["x"] == 1
    as_json = await jobs.AddJob(
        jpb.AddJobRequest(
            queue_name="emails", job=jpb.NewJob(name="a", data=t.Payload(json=got.job.data.json))
        )
    )
    assert as_json.job.data.json.struct_value["x"] == 1


async def test_deeply_nested_json_is_read_back_or_refused(
    queues: qrpc.QueueServiceStub, jobs: jrpc.QueueServiceStub
) -> None:
    """JSON data nested deeper than a google.protobuf.Value can carry (protobuf readers stop at 100 message
    levels, two per JSON level) is read back as raw JSON bytes; data nested deeper than the server's JSON
    reader goes is refused INVALID_ARGUMENT at the add. Both were INTERNAL."""

    def nested(depth: int) -> t.Payload:
        return t.Payload(raw=b"[" * depth + b"]" * depth, content_type="application/json")

    for depth, form in ((32, "json"), (33, "raw"), (60, "raw"), (500, "raw")):
        added = await jobs.AddJob(
            jpb.AddJobRequest(queue_name="emails", job=jpb.NewJob(name="deep", data=nested(depth)))
        )
        got = await jobs.GetJob(jpb.GetJobRequest(queue_name="emails", job_id=added.job.id))
        assert got.job.data.WhichOneof("body") == form, depth
        if form == "raw":
            assert got.job.data.raw == nested(depth).raw and got.job.data.content_type == "application/json"
        listed = await jobs.ListJobs(jpb.ListJobsRequest(queue_name="emails", state=t.JOB_STATE_WAITING))
        assert added.job.id in {j.id for j in listed.jobs}
    await expect(
        Code.INVALID_ARGUMENT,
        jobs.AddJob(jpb.AddJobRequest(queue_name="emails", job=jpb.NewJob(name="a", data=nested(5_000)))),
        "job.data",
        "too deeply",
    )


async def test_bulk_stream_keeps_fifo_order_across_chunks(
    queues: qrpc.QueueServiceStub, jobs: jrpc.QueueServiceStub, engine: Engine
) -> None:
    async def stream() -> AsyncIterator[jpb.AddBulkRequest]:
        for start in range(0, 7_000, 500):
            yield jpb.AddBulkRequest(
                queue_name="emails", jobs=[jpb.NewJob(name=str(i)) for i in range(start, start + 500)]
            )

    r = await jobs.AddBulk(stream())
    assert len(r.job_ids) == 7_000
    names: list[str] = []
    while batch := (await engine.claim("emails", 1000, "t", "w", 60_000)).jobs:
        names += [j.name for j in batch]
    assert names == [str(i) for i in range(7_000)]


async def test_a_chain_link_or_step_name_is_reported_by_its_field(
    queues: qrpc.QueueServiceStub, jobs: jrpc.QueueServiceStub
) -> None:
    """A ChainLink and a WorkflowStep name their job in `job_name` (a NewJob in `name`): the error says so."""
    link = t.ChainLink(queue_name="emails", job_name="")
    chained = jpb.NewJob(name="first", options=t.JobOptions(chain_to=[t.ChainLink(job_name="x"), link]))
    chained.options.chain_to[0].queue_name = "emails"
    details = await expect(
        Code.INVALID_ARGUMENT, jobs.AddJob(jpb.AddJobRequest(queue_name="emails", job=chained))
    )
    assert details.startswith("job.options.chain_to[1].job_name: is required"), details
    step = wpb.WorkflowStep(key="a", queue_name="emails", job_name="")
    details = await expect(
        Code.INVALID_ARGUMENT,
        jobs.ExecuteWorkflow(wpb.ExecuteWorkflowRequest(workflow=wpb.Workflow(steps=[step]))),
    )
    assert details.startswith("workflow.steps[0].job_name: is required"), details


async def test_job_id_errors_state_one_rule_to_add_and_to_look_up(
    queues: qrpc.QueueServiceStub, jobs: jrpc.QueueServiceStub
) -> None:
    rule = (
        "use 1-200 letters, digits and - _ . @ : (a dead-letter copy's id, '<queue>:<job id>', may have up "
        "to 301)"
    )
    added = await expect(
        Code.INVALID_ARGUMENT,
        jobs.AddJob(
            jpb.AddJobRequest(
                queue_name="emails", job=jpb.NewJob(name="n", options=t.JobOptions(job_id="x" * 201))
            )
        ),
    )
    looked_up = await expect(
        Code.INVALID_ARGUMENT, jobs.GetJob(jpb.GetJobRequest(queue_name="emails", job_id="x" * 302))
    )
    spaced = await expect(
        Code.INVALID_ARGUMENT, jobs.RemoveJob(jpb.RemoveJobRequest(queue_name="emails", job_id="a b"))
    )
    for details in (added, looked_up, spaced):
        assert details.endswith(f"is not a valid job id: {rule}"), details


async def test_unknown_enum_values_are_named_as_unknown_with_the_known_ones(
    queues: qrpc.QueueServiceStub, jobs: jrpc.QueueServiceStub
) -> None:
    """proto3 enums are open: a number the server does not know arrives as is (grpcurl sends any)."""
    states = "1 (WAITING), 2 (ACTIVE), 3 (DELAYED), 4 (COMPLETED), 5 (FAILED), 6 (PAUSED) or 7 (CANCELLED)"
    listed = await expect(
        Code.INVALID_ARGUMENT,
        jobs.ListJobs(jpb.ListJobsRequest(queue_name="emails", state=42)),  # type: ignore[arg-type]
    )
    assert listed == f"state: 42 is not a known JobState value: use {states}"
    cleaned = await expect(
        Code.INVALID_ARGUMENT,
        queues.CleanQueue(qpb.CleanQueueRequest(name="emails", state=42)),  # type: ignore[arg-type]
    )
    assert cleaned == listed
    unset = await expect(Code.INVALID_ARGUMENT, jobs.ListJobs(jpb.ListJobsRequest(queue_name="emails")))
    assert unset == f"state: is required: use {states}"
    retried = await expect(
        Code.INVALID_ARGUMENT,
        jobs.RetryFailedJobs(jpb.RetryFailedJobsRequest(queue_name="emails", state=t.JOB_STATE_WAITING)),
    )
    assert retried == (
        "state: 1 (WAITING) is not accepted here: use 5 (FAILED) or 7 (CANCELLED), or leave it unset (0) for "
        "failed jobs"
    )
    levels = "1 (CRITICAL), 2 (HIGH), 3 (NORMAL), 4 (LOW) or 5 (BACKGROUND)"
    added = await expect(
        Code.INVALID_ARGUMENT,
        jobs.AddJob(
            jpb.AddJobRequest(
                queue_name="emails", job=jpb.NewJob(name="n", options=t.JobOptions(priority=99))
            )  # type: ignore[arg-type]
        ),
    )
    assert added == (
        f"job.options.priority: 99 is not a known JobPriority value: use {levels}, or leave it unset (0) for "
        "the queue's default"
    )
    job = await jobs.AddJob(jpb.AddJobRequest(queue_name="emails", job=jpb.NewJob(name="n")))
    for priority, problem in (
        (99, f"99 is not a known JobPriority value: use {levels}"),
        (0, f"is required: use {levels}"),
    ):
        changed = await expect(
            Code.INVALID_ARGUMENT,
            jobs.ChangeJobPriority(
                jpb.ChangeJobPriorityRequest(queue_name="emails", job_id=job.job.id, priority=priority)  # type: ignore[arg-type]
            ),
        )
        assert changed == f"priority: {problem}"


async def test_run_times_go_from_1970_to_9999_and_say_so(
    queues: qrpc.QueueServiceStub, jobs: jrpc.QueueServiceStub
) -> None:
    """A job's schedule_time and a schedule's start_time/end_time: before 1970 is refused with the range
    (docs/security.md states the same); the epoch itself and the last second of 9999 are accepted."""
    before = timestamp_pb2.Timestamp(seconds=-315_619_200)  # 1960-01-01
    job = jpb.NewJob(name="n", options=t.JobOptions(schedule_time=before))
    details = await expect(
        Code.INVALID_ARGUMENT, jobs.AddJob(jpb.AddJobRequest(queue_name="emails", job=job))
    )
    assert details == (
        "job.options.schedule_time: 1960-01-01T00:00:00Z is out of range: use a time from "
        "1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z"
    )
    schedule = spb.Schedule(
        id="s", queue_name="emails", every=duration_pb2.Duration(seconds=60), job=jpb.NewJob(name="n")
    )
    for name in ("start_time", "end_time"):
        bad = spb.Schedule()
        bad.CopyFrom(schedule)
        getattr(bad, name).CopyFrom(before)
        details = await expect(
            Code.INVALID_ARGUMENT, jobs.UpsertSchedule(spb.UpsertScheduleRequest(schedule=bad))
        )
        assert details.startswith(
            f"schedule.{name}: 1960-01-01T00:00:00Z is out of range: use a time from 1970"
        )
    for seconds in (0, 253_402_300_799):
        job = jpb.NewJob(
            name="n", options=t.JobOptions(schedule_time=timestamp_pb2.Timestamp(seconds=seconds))
        )
        await jobs.AddJob(jpb.AddJobRequest(queue_name="emails", job=job))


async def test_part_of_a_millisecond_rounds_up_never_to_zero(
    queues: qrpc.QueueServiceStub, jobs: jrpc.QueueServiceStub
) -> None:
    """0.4 ms read as 0 would refuse a dedup ttl (at least 1 ms) and turn a timeout into none."""
    sub_ms = duration_pb2.Duration(nanos=400_000)
    job = jpb.NewJob(name="n", options=t.JobOptions(dedup=t.Dedup(key="k", ttl=sub_ms), timeout=sub_ms))
    added = await jobs.AddJob(jpb.AddJobRequest(queue_name="emails", job=job))
    assert added.created
    got = await jobs.GetJob(jpb.GetJobRequest(queue_name="emails", job_id=added.job.id))
    assert got.job.options.timeout.ToMilliseconds() == 1, got.job.options
