"""Pulled runs are observed as stream runs are: the completed and failed totals and the processing-time
histogram count them alike (a run reported with no duration is measured by the server from its fetch), a
traced pulled job is its bucket's exemplar, and `PulledJob.span` gives its run the CONSUMER span a stream
worker's run has, under the add's PRODUCER span."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from queue_manager import JobState, QueueManager, SyncQueueManager
from queue_manager.v1 import jobs_pb2 as jpb
from queue_manager.v1 import pull_pb2 as ppb
from queue_manager.v1 import queue_service_pb2 as qpb
from queue_manager.v1 import queue_service_pb2_grpc as qrpc
from queue_manager.v1 import worker_service_pb2 as pb
from tests.conftest import RunningServer, ServerFactory
from tests.metrics_workload import ms
from tests.rawworker import RawWorker
from tests.test_prometheus import Samples, scrape, scrape_openmetrics

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
# The families a run's outcome moves, per queue.
OUTCOME_FAMILIES = (
    "queue_jobs_completed_total",
    "queue_jobs_failed_total",
    "queue_job_processing_duration_ms",
)


def of_queue(samples: Samples, queue: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The outcome samples of one queue, without its label (so two queues' can be compared)."""
    out = {}
    for (name, labels), v in samples.items():
        if name.startswith(OUTCOME_FAMILIES) and ("queue", queue) in labels:
            out[(name, tuple(kv for kv in labels if kv[0] != "queue"))] = v
    return out


async def add(stub: qrpc.QueueServiceStub, queue: str, name: str, attempts: int = 1, trace: str = "") -> str:
    job = jpb.NewJob(name=name)
    job.options.attempts = attempts
    if trace:
        job.options.metadata.attributes["traceparent"] = f"00-{trace}-{SPAN}-01"
    return (await stub.AddJob(jpb.AddJobRequest(queue_name=queue, job=job))).job.id


async def test_pulled_runs_count_exactly_as_stream_runs(server_factory: ServerFactory) -> None:
    """The same outcomes with the same durations, one queue's over a worker stream and the other's pulled:
    completed in 20 ms, failed for good in 300 ms, failed with an attempt left in 7 ms. Every total and
    every bucket of the two queues is equal."""
    server = await server_factory(http_listen="127.0.0.1:0")
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = qrpc.QueueServiceStub(channel)
        for queue in ("streamed", "pulled"):
            await stub.RegisterQueue(qpb.RegisterQueueRequest(name=queue))
            for name, attempts in (("ok", 1), ("boom", 1), ("again", 2)):
                await add(stub, queue, name, attempts)
        outcomes = {"ok": ("done", 20), "boom": ("fail", 300), "again": ("fail", 7)}

        worker = RawWorker(server.address, ["streamed"])
        try:
            await worker.connect(credits=3)
            jobs = await worker.jobs(3)
            report = pb.WorkerReport()
            for j in jobs:
                kind, took = outcomes[j.job.name]
                ref = {"queue_name": "streamed", "job_id": j.job.id, "lease_token": j.lease_token}
                if kind == "done":
                    report.completions.append(pb.JobCompletion(**ref, duration=ms(took)))
                else:
                    report.failures.append(pb.JobFailure(**ref, message="x", duration=ms(took)))
            worker.report(report)
            worker.half_close()
            await worker.wait_end()
        finally:
            await worker.close()

        fetched = await stub.FetchJobs(ppb.FetchJobsRequest(queue_name="pulled", max_jobs=3))
        assert len(fetched.jobs) == 3
        for j in fetched.jobs:
            kind, took = outcomes[j.job.name]
            ref = {"queue_name": "pulled", "job_id": j.job.id, "lease_token": j.lease_token}
            if kind == "done":
                await stub.CompleteJob(ppb.CompleteJobRequest(**ref, duration=ms(took)))
            else:
                await stub.FailJob(ppb.FailJobRequest(**ref, message="x", duration=ms(took)))

    _, samples = await scrape(server)
    streamed, pulled = of_queue(samples, "streamed"), of_queue(samples, "pulled")
    assert streamed and pulled == streamed
    assert streamed[("queue_jobs_completed_total", ())] == 1
    assert streamed[("queue_jobs_failed_total", ())] == 1
    assert streamed[("queue_job_processing_duration_ms_count", ())] == 3


async def test_a_pulled_run_without_a_duration_is_measured_from_its_fetch(
    server_factory: ServerFactory,
) -> None:
    """A completion and a failure that report no duration (curl, ``qm pull``) are counted, measured by the
    server from the fetch to the outcome: 3 s on the test clock fall in the (2500, 5000] ms bucket."""
    server = await server_factory(http_listen="127.0.0.1:0", test_clock=True)
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = qrpc.QueueServiceStub(channel)
        await stub.RegisterQueue(qpb.RegisterQueueRequest(name="measured"))
        for name in ("ok", "boom"):
            await add(stub, "measured", name)
        fetched = await stub.FetchJobs(ppb.FetchJobsRequest(queue_name="measured", max_jobs=2))
        await server.app.advance_clock(3_000)
        for j in fetched.jobs:
            ref = {"queue_name": "measured", "job_id": j.job.id, "lease_token": j.lease_token}
            if j.job.name == "ok":
                await stub.CompleteJob(ppb.CompleteJobRequest(**ref))
            else:
                await stub.FailJob(ppb.FailJobRequest(**ref, message="boom"))
    _, samples = await scrape(server)
    runs = of_queue(samples, "measured")
    assert runs[("queue_job_processing_duration_ms_count", ())] == 2
    assert runs[("queue_job_processing_duration_ms_bucket", (("le", "2500.0"),))] == 0
    assert runs[("queue_job_processing_duration_ms_bucket", (("le", "5000.0"),))] == 2
    assert 6_000 <= runs[("queue_job_processing_duration_ms_sum", ())] < 10_000


async def test_traced_pulled_runs_are_the_buckets_exemplars(server_factory: ServerFactory) -> None:
    """A traced job fetched here is remembered as a streamed delivery is: reported at 20 ms it is the
    (10, 25] ms bucket's exemplar; one that reports no duration is measured by this server from its fetch."""
    server = await server_factory(http_listen="127.0.0.1:0")
    other = TRACE.replace("4", "5")
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = qrpc.QueueServiceStub(channel)
        await stub.RegisterQueue(qpb.RegisterQueueRequest(name="traced"))
        await add(stub, "traced", "reported", trace=TRACE)
        await add(stub, "traced", "unreported", trace=other)
        await add(stub, "traced", "plain")
        fetched = await stub.FetchJobs(ppb.FetchJobsRequest(queue_name="traced", max_jobs=3))
        assert server.app.dispatcher is not None
        assert len(server.app.dispatcher.exemplars.in_flight) == 2
        for j in fetched.jobs:
            request = ppb.CompleteJobRequest(queue_name="traced", job_id=j.job.id, lease_token=j.lease_token)
            if j.job.name != "unreported":
                request.duration.CopyFrom(ms(20))
            await stub.CompleteJob(request)
    assert not server.app.dispatcher.exemplars.in_flight
    text = await scrape_openmetrics(server)
    lines = [line for line in text.splitlines() if line.startswith("queue_job_processing_duration_ms_bucket")]
    with_exemplar = [line for line in lines if " # {" in line]
    assert len(with_exemplar) == 2, with_exemplar
    [reported] = [line for line in with_exemplar if TRACE in line]
    assert 'le="25.0"' in reported and f'span_id="{SPAN}"' in reported
    assert re.search(r"\} 20(\.0)? \d+(\.\d+)?$", reported), reported
    [measured] = [line for line in with_exemplar if other in line]
    # Measured by this server: a fetch and a completion a moment apart, well under the last bound.
    assert 'le="+Inf"' not in measured, measured


# ----------------------------------------------------------------- the client's CONSUMER span


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    yield spans
    spans.shutdown()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield tracer_provider
    tracer_provider.shutdown()


@pytest.fixture
async def qm(server: RunningServer, provider: TracerProvider) -> AsyncIterator[QueueManager]:
    async with QueueManager(address=server.address, tracer_provider=provider) as client:
        await client.register_queue("pull")
        yield client


def child_of(span: object, parent: object) -> bool:
    s, p = span, parent
    assert s.context is not None and p.context is not None and s.parent is not None  # type: ignore[attr-defined]
    return (
        s.context.trace_id == p.context.trace_id  # type: ignore[attr-defined]
        and s.parent.span_id == p.context.span_id  # type: ignore[attr-defined]
    )


async def test_a_pulled_run_has_a_consumer_span_under_its_add(
    qm: QueueManager, exporter: InMemorySpanExporter, provider: TracerProvider
) -> None:
    job = await qm.add_job("pull", "resize", {"w": 3})
    [pulled] = await qm.fetch_jobs("pull")
    with pulled.span() as span:
        assert span is not None
        with provider.get_tracer("app").start_as_current_span("work"):
            pass
        await pulled.complete("ok")
    spans = {s.name: s for s in exporter.get_finished_spans()}
    publish, run, work = spans["pull publish"], spans["pull process"], spans["work"]
    assert run.kind == SpanKind.CONSUMER and child_of(run, publish) and child_of(work, run)
    assert dict(run.attributes or {}) == {
        "messaging.system": "queue_manager",
        "messaging.operation": "process",
        "messaging.destination.name": "pull",
        "messaging.message.id": job.id,
        "queue_manager.job.name": "resize",
        "queue_manager.job.attempt": 1,
    }
    assert run.status.status_code == StatusCode.UNSET


async def test_a_failed_pulled_run_ends_its_span_with_error(
    qm: QueueManager, exporter: InMemorySpanExporter
) -> None:
    await qm.add_job("pull", "a", None, {"attempts": 2})
    await qm.add_job("pull", "b")
    first, second = await qm.fetch_jobs("pull", max_jobs=2)
    with first.span():
        await first.fail("disk full")
    with pytest.raises(RuntimeError), second.span():
        raise RuntimeError("crashed")
    failed, crashed = sorted(
        (s for s in exporter.get_finished_spans() if s.name == "pull process"),
        key=lambda s: (s.attributes or {})["queue_manager.job.name"],
    )
    assert (failed.status.status_code, failed.status.description) == (StatusCode.ERROR, "disk full")
    assert (crashed.status.status_code, crashed.status.description) == (StatusCode.ERROR, "crashed")
    assert [e.name for e in crashed.events] == ["exception"]
    # The retried job runs again: its next fetch is its second attempt.
    await second.fail("given up", no_retry=True)
    [again] = await qm.fetch_jobs("pull", wait=10)
    with again.span():
        await again.complete()
    last = [s for s in exporter.get_finished_spans() if s.name == "pull process"][-1]
    assert (last.attributes or {})["queue_manager.job.attempt"] == 2


async def test_sync_pulled_runs_have_spans_and_none_without_tracing(
    server: RunningServer, exporter: InMemorySpanExporter, provider: TracerProvider
) -> None:
    def work() -> None:
        with SyncQueueManager(address=server.address, tracer_provider=provider) as qm:
            qm.register_queue("sync-pull")
            qm.add_job("sync-pull", "x")
            [job] = qm.fetch_jobs("sync-pull")
            with job.span() as span:
                assert span is not None
                job.complete()
            assert qm.get_job("sync-pull", job.id).state == JobState.COMPLETED

    await asyncio.to_thread(work)  # the server runs on this thread's event loop
    [run] = [s for s in exporter.get_finished_spans() if s.name == "sync-pull process"]
    assert run.kind == SpanKind.CONSUMER
    async with QueueManager(address=server.address) as untraced:  # no provider: tracing is off
        await untraced.add_job("sync-pull", "y")
        [plain] = await untraced.fetch_jobs("sync-pull")
        with plain.span() as none:
            assert none is None
            await plain.complete()
