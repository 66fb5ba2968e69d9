"""OpenTelemetry tracing: producer spans, worker spans under them, the trace context carried in the jobs'
metadata attributes through the server (chains, workflows), and nothing at all without a tracer provider.

Each test has its own SDK tracer provider, passed explicitly (the global one can be set once per process,
and is left unset so the default path is the untraced one) with an in-memory exporter."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator

import pytest
from opentelemetry import baggage, context, trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from queue_manager import Job, JobContext, JobState, QueueManager, SyncQueueManager
from tests.conftest import RunningServer
from tests.rawworker import eventually

WAIT = 20.0
# A caller's own trace context (the W3C specification's example).
THEIR_TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


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
    client = QueueManager(address=server.address, concurrency=4, tracer_provider=provider)
    for name in ("emails", "reports"):
        await client.register_queue(name)
    yield client
    await client.shutdown()


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


async def spans(exporter: InMemorySpanExporter, name: str, count: int) -> list[ReadableSpan]:
    """The finished spans of that name, once there are `count` of them."""

    async def enough() -> bool:
        return len(named(exporter, name)) >= count

    await eventually(enough, timeout=WAIT)
    return named(exporter, name)


def child_of(span: ReadableSpan, parent: ReadableSpan) -> bool:
    assert span.context is not None and parent.context is not None and span.parent is not None
    return span.context.trace_id == parent.context.trace_id and span.parent.span_id == parent.context.span_id


async def test_a_run_is_a_child_of_its_add_and_the_processors_spans_nest_under_it(
    qm: QueueManager, exporter: InMemorySpanExporter, provider: TracerProvider
) -> None:
    user_tracer = provider.get_tracer("app")

    @qm.processor("emails")
    async def send(job: JobContext) -> str:
        with user_tracer.start_as_current_span("render"):
            await asyncio.sleep(0)
        return "sent"

    await qm.start_workers()
    job = await qm.add_job("emails", "welcome", {"to": "a@example.com"})
    assert (await qm.wait_for_job("emails", job.id, timeout=WAIT)).state == JobState.COMPLETED

    [publish] = await spans(exporter, "emails publish", 1)
    [run] = await spans(exporter, "emails process", 1)
    [render] = await spans(exporter, "render", 1)
    assert publish.kind == SpanKind.PRODUCER and run.kind == SpanKind.CONSUMER
    assert child_of(run, publish) and child_of(render, run)
    assert dict(publish.attributes or {}) == {
        "messaging.system": "queue_manager",
        "messaging.operation": "publish",
        "messaging.destination.name": "emails",
        "messaging.message.id": job.id,
    }
    assert dict(run.attributes or {}) == {
        "messaging.system": "queue_manager",
        "messaging.operation": "process",
        "messaging.destination.name": "emails",
        "messaging.message.id": job.id,
        "queue_manager.job.name": "welcome",
        "queue_manager.job.attempt": 1,
    }
    assert run.status.status_code == StatusCode.UNSET
    # The context travelled in the job's metadata: W3C traceparent of the publish span.
    assert publish.context is not None
    traceparent = job.metadata.attributes["traceparent"]
    assert traceparent.startswith(f"00-{publish.context.trace_id:032x}-{publish.context.span_id:016x}-")


async def test_a_plain_def_processor_runs_inside_its_span_in_its_thread(
    qm: QueueManager, exporter: InMemorySpanExporter, provider: TracerProvider
) -> None:
    user_tracer = provider.get_tracer("app")
    threads: list[str] = []

    @qm.processor("emails")
    def send(job: JobContext) -> None:
        threads.append(threading.current_thread().name)
        with user_tracer.start_as_current_span("smtp"):
            pass

    await qm.start_workers()
    job = await qm.add_job("emails", "welcome")
    assert (await qm.wait_for_job("emails", job.id, timeout=WAIT)).state == JobState.COMPLETED
    [run] = await spans(exporter, "emails process", 1)
    [smtp] = await spans(exporter, "smtp", 1)
    assert threads[0].startswith("qm-processor") and child_of(smtp, run)


async def test_each_job_of_a_bulk_add_runs_under_the_batch_span(
    qm: QueueManager, exporter: InMemorySpanExporter
) -> None:
    @qm.processor("reports")
    async def build(job: JobContext) -> int:
        return int(job.data)

    await qm.start_workers()
    ids = await qm.add_bulk("reports", [{"name": "daily", "data": i} for i in range(5)])
    for job_id in ids:
        assert (await qm.wait_for_job("reports", job_id, timeout=WAIT)).state == JobState.COMPLETED

    [publish] = await spans(exporter, "reports publish", 1)
    runs = await spans(exporter, "reports process", 5)
    assert (publish.attributes or {})["messaging.batch.message_count"] == 5
    assert all(child_of(run, publish) for run in runs)
    assert sorted((run.attributes or {})["messaging.message.id"] for run in runs) == sorted(ids)


async def test_the_blocking_client_traces_its_adds_too(
    server: RunningServer, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    def produce() -> Job:
        with SyncQueueManager(server.address, tracer_provider=provider) as client:
            client.register_queue("emails")
            job = client.add_job("emails", "welcome")
            client.add_bulk("emails", [{"name": "digest"}, {"name": "digest"}])
            return job

    # In a thread: the server runs on this test's event loop.
    job = await asyncio.to_thread(produce)
    [one, batch] = exporter.get_finished_spans()
    assert one.name == batch.name == "emails publish" and one.kind == SpanKind.PRODUCER
    assert (one.attributes or {})["messaging.message.id"] == job.id
    assert (batch.attributes or {})["messaging.batch.message_count"] == 2
    assert one.context is not None
    assert job.metadata.attributes["traceparent"].split("-")[1] == f"{one.context.trace_id:032x}"


async def test_a_failed_run_has_error_status_and_the_exception(
    qm: QueueManager, exporter: InMemorySpanExporter
) -> None:
    @qm.processor("emails")
    async def send(job: JobContext) -> None:
        raise ConnectionError("smtp refused")

    await qm.start_workers()
    job = await qm.add_job("emails", "welcome", None, {"attempts": 2, "backoff": 1})
    assert (await qm.wait_for_job("emails", job.id, timeout=WAIT)).state == JobState.FAILED

    runs = sorted(await spans(exporter, "emails process", 2), key=lambda s: s.start_time or 0)
    [publish] = named(exporter, "emails publish")
    assert [(r.attributes or {})["queue_manager.job.attempt"] for r in runs] == [1, 2]
    for run in runs:
        assert child_of(run, publish)
        assert run.status.status_code == StatusCode.ERROR
        assert run.status.description == "smtp refused"
        [event] = run.events
        assert event.name == "exception"
        assert (event.attributes or {})["exception.type"] == "ConnectionError"
        assert (event.attributes or {})["exception.message"] == "smtp refused"


async def test_a_chain_is_one_trace(qm: QueueManager, exporter: InMemorySpanExporter) -> None:
    done = asyncio.Event()

    @qm.processor("emails")
    async def send(job: JobContext) -> str:
        return "sent"

    @qm.processor("reports")
    async def report(job: JobContext) -> None:
        done.set()

    await qm.start_workers()
    chain = {"chain_to": [{"queue_name": "reports", "job_name": "delivery-report"}]}
    first = await qm.add_job("emails", "welcome", None, chain)
    async with asyncio.timeout(WAIT):
        await done.wait()

    [publish] = named(exporter, "emails publish")
    [run] = await spans(exporter, "emails process", 1)
    [link_run] = await spans(exporter, "reports process", 1)
    assert child_of(run, publish) and child_of(link_run, publish)
    root = await qm.get_job("emails", first.id)
    link = await qm.get_job("reports", root.children[0].job_id)
    assert link.metadata.attributes["traceparent"] == first.metadata.attributes["traceparent"]


async def test_a_workflow_is_one_trace(qm: QueueManager, exporter: InMemorySpanExporter) -> None:
    @qm.processor("emails")
    async def send(job: JobContext) -> str:
        return "sent"

    @qm.processor("reports")
    async def report(job: JobContext) -> str:
        return "filed"

    await qm.start_workers()
    workflow = {
        "id": "signup",
        "steps": [
            {
                "key": "welcome",
                "queue_name": "emails",
                "job_name": "welcome",
                "on_success": [{"key": "file", "queue_name": "reports", "job_name": "file"}],
            }
        ],
        "metadata": {"correlation_id": "req-1"},
    }
    run_id = await qm.execute_workflow(workflow)
    [publish] = await spans(exporter, "workflow signup publish", 1)
    [first] = await spans(exporter, "emails process", 1)
    [second] = await spans(exporter, "reports process", 1)
    assert publish.kind == SpanKind.PRODUCER
    assert (publish.attributes or {})["queue_manager.workflow.run_id"] == run_id
    assert child_of(first, publish) and child_of(second, publish)
    run = await qm.get_workflow(run_id)
    step = await qm.get_job("reports", run.step("file").job_id)
    assert step.metadata.correlation_id == "req-1"
    assert step.metadata.attributes["traceparent"] == run.attributes["traceparent"]


async def test_a_callers_own_traceparent_is_kept(qm: QueueManager, exporter: InMemorySpanExporter) -> None:
    @qm.processor("emails")
    async def send(job: JobContext) -> None:
        return None

    await qm.start_workers()
    own = {"traceparent": THEIR_TRACEPARENT, "tenant": "acme"}
    job = await qm.add_job("emails", "welcome", None, {"metadata": {"attributes": own}})
    assert job.metadata.attributes == own
    await qm.wait_for_job("emails", job.id, timeout=WAIT)
    [run] = await spans(exporter, "emails process", 1)
    assert run.context is not None and run.parent is not None
    assert f"{run.context.trace_id:032x}" == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert f"{run.parent.span_id:016x}" == "00f067aa0ba902b7"


async def test_a_traced_add_keeps_the_queues_default_metadata(
    qm: QueueManager, exporter: InMemorySpanExporter
) -> None:
    defaults = {"metadata": {"correlation_id": "from-queue", "tags": ["q"], "attributes": {"team": "mail"}}}
    await qm.register_queue("emails", default_job_options=defaults)
    job = await qm.add_job("emails", "welcome")
    assert job.metadata.correlation_id == "from-queue" and job.metadata.tags == ["q"]
    assert job.metadata.attributes["team"] == "mail" and "traceparent" in job.metadata.attributes
    # The job's own win over the defaults; the tags of both are kept.
    own = {"correlation_id": "from-job", "tags": ["j"], "attributes": {"team": "billing"}}
    job = await qm.add_job("emails", "invoice", None, {"metadata": own})
    assert job.metadata.correlation_id == "from-job" and job.metadata.tags == ["q", "j"]
    assert job.metadata.attributes["team"] == "billing"


async def test_without_a_tracer_provider_jobs_are_added_as_they_were(server: RunningServer) -> None:
    # No provider passed and none set globally (this module never sets one): tracing is off.
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    async with QueueManager(address=server.address) as client:
        await client.register_queue("emails")
        plain = await client.add_job("emails", "welcome")
        own = {"correlation_id": "c-1", "attributes": {"tenant": "acme"}}
        with_metadata = await client.add_job("emails", "invoice", None, {"metadata": own})
        await client.add_bulk("emails", [{"name": "digest"}])
        stored = await client.get_job("emails", plain.id)
        assert stored.metadata.attributes == {} and stored.metadata.correlation_id == ""
        assert stored.options.metadata is None
        stored = await client.get_job("emails", with_metadata.id)
        assert stored.metadata.attributes == {"tenant": "acme"} and stored.metadata.correlation_id == "c-1"
        [bulk] = (await client.list_jobs("emails", "waiting"))[0][2:]
        assert bulk.metadata.attributes == {}


async def test_trace_context_longer_than_an_attribute_may_be_is_left_out(
    qm: QueueManager, exporter: InMemorySpanExporter
) -> None:
    token = context.attach(baggage.set_baggage("blob", "x" * 3000))
    try:
        job = await qm.add_job("emails", "welcome")
    finally:
        context.detach(token)
    assert "traceparent" in job.metadata.attributes and "baggage" not in job.metadata.attributes


async def test_chain_links_inherit_attributes_under_their_own(server: RunningServer) -> None:
    # The server's part alone, with an untraced client: a link inherits its predecessor's attributes, its
    # own win, and one with a traceparent of its own takes no tracestate from another trace.
    async with QueueManager(address=server.address) as client:
        await client.register_queue("emails")
        await client.register_queue("reports")

        @client.processor("emails")
        async def send(job: JobContext) -> None:
            return None

        @client.processor("reports")
        async def report(job: JobContext) -> None:
            return None

        ours = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        chain = [
            {
                "queue_name": "reports",
                "job_name": "a",
                "options": {"metadata": {"attributes": {"tenant": "t2"}}},
            },
            {
                "queue_name": "emails",
                "job_name": "b",
                "options": {"metadata": {"attributes": {"traceparent": ours}}},
            },
        ]
        own = {"traceparent": THEIR_TRACEPARENT, "tracestate": "vendor=1", "tenant": "t1"}
        first = await client.add_job(
            "emails", "root", None, {"metadata": {"attributes": own}, "chain_to": chain}
        )
        await client.start_workers()

        async def links() -> list[Job]:
            found: list[Job] = []
            job = await client.get_job("emails", first.id)
            while job.children:
                child = job.children[0]
                job = await client.get_job(child.queue_name, child.job_id)
                found.append(job)
            return found

        async def both_done() -> bool:
            found = await links()
            return len(found) == 2 and found[1].state == JobState.COMPLETED

        await eventually(both_done, timeout=WAIT)
        second, third = await links()
        assert second.metadata.attributes == {**own, "tenant": "t2"}
        assert third.metadata.attributes == {"traceparent": ours, "tenant": "t2"}


async def test_workflow_attributes_reach_every_steps_job_under_its_own(server: RunningServer) -> None:
    async with QueueManager(address=server.address) as client:
        await client.register_queue("emails")
        step = {"key": "s", "queue_name": "emails", "job_name": "welcome"}
        own = {"metadata": {"tags": ["step"], "attributes": {"tenant": "t2"}}}
        workflow = {
            "steps": [step, {**step, "key": "o", "options": own}],
            "metadata": {"correlation_id": "req-1", "attributes": {"tenant": "t1", "origin": "signup"}},
        }
        run = await client.get_workflow(await client.execute_workflow(workflow))
        assert run.attributes == {"tenant": "t1", "origin": "signup"}
        plain = await client.get_job("emails", run.step("s").job_id)
        with_own = await client.get_job("emails", run.step("o").job_id)
        assert plain.metadata.correlation_id == "req-1"
        assert plain.metadata.attributes == {"tenant": "t1", "origin": "signup"}
        assert with_own.metadata.correlation_id == "" and with_own.metadata.tags == ["step"]
        assert with_own.metadata.attributes == {"tenant": "t2", "origin": "signup"}
