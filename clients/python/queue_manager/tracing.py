"""OpenTelemetry tracing: a PRODUCER span per add, a CONSUMER span per run (a stream worker's, or a pulled
job's: `PulledJob.span`), and the W3C trace context carried from one to the other in the job's
``metadata.attributes`` (``traceparent``, ``tracestate``).

Optional: ``pip install queue-manager[otel]`` brings ``opentelemetry-api``. Without it, or with no tracer
provider configured (the global one still the API's proxy or a no-op one), `tracer` answers None once, and
the add and run paths then do nothing more per job than test that for None. Span names and attributes follow
the OpenTelemetry messaging conventions (``{queue} publish``, ``{queue} process``); docs/observability.md
lists them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

from queue_manager._version import client_version

try:
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, StatusCode
except ImportError:  # the [otel] extra is not installed: tracing stays off
    propagate = trace = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer, TracerProvider

    from queue_manager.convert import Job
    from queue_manager.v1 import jobs_pb2, types_pb2, workflows_pb2

__all__ = [
    "TRACEPARENT",
    "carry",
    "carry_bulk",
    "process",
    "process_pulled",
    "publish",
    "publish_workflow",
    "record_failed_run",
    "record_failure",
    "trace_context",
    "tracer",
]

# messaging.system: how the conventions name the broker (Kafka is "kafka", RabbitMQ "rabbitmq").
SYSTEM = "queue_manager"
# The attribute whose presence means a job already has a trace context: a caller's own is kept.
TRACEPARENT = "traceparent"
# The server's limits on metadata attributes (server validate.py; docs/api.md): trace context that would
# break them is left out, so that turning tracing on never makes an add fail. Baggage in particular may be
# longer than an attribute may be.
_MAX_ATTRIBUTES = 100
_MAX_VALUE_CHARS = 2_000


def tracer(provider: TracerProvider | None = None) -> Tracer | None:
    """The tracer of this library, from `provider` or else the global provider; None when tracing is off:
    opentelemetry-api is not installed, or no provider is configured (the global provider is still the
    API's proxy, or either one is a no-op provider)."""
    if trace is None:
        return None
    if provider is None:
        provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return None
    return provider.get_tracer("queue_manager", client_version())


# ----------------------------------------------------------------- producer


@contextmanager
def publish(tracer: Tracer, queue: str, batch: int | None = None) -> Iterator[Span]:
    """The PRODUCER span of one add (`batch` None) or of one bulk add of `batch` jobs, current while the
    add runs; an add that raises ends it with ERROR status and the exception recorded."""
    attributes: dict[str, str | int] = {
        "messaging.system": SYSTEM,
        "messaging.operation": "publish",
        "messaging.destination.name": queue,
    }
    if batch is not None:
        attributes["messaging.batch.message_count"] = batch
    with tracer.start_as_current_span(
        f"{queue} publish", kind=SpanKind.PRODUCER, attributes=attributes
    ) as span:
        yield span


@contextmanager
def publish_workflow(tracer: Tracer, workflow: workflows_pb2.Workflow) -> Iterator[Span]:
    """The PRODUCER span of one ExecuteWorkflow: every step's job carries its context (the server copies
    the run's metadata attributes into each step's job)."""
    attributes: dict[str, str | int] = {
        "messaging.system": SYSTEM,
        "messaging.operation": "publish",
        "messaging.batch.message_count": len(workflow.steps),
        "queue_manager.workflow.id": workflow.id,
    }
    name = f"workflow {workflow.id} publish" if workflow.id else "workflow publish"
    with tracer.start_as_current_span(name, kind=SpanKind.PRODUCER, attributes=attributes) as span:
        yield span


def trace_context(span: Span) -> dict[str, str]:
    """What the global propagator writes for `span` (W3C ``traceparent`` and ``tracestate`` by default, and
    ``baggage`` when there is some), less any value longer than an attribute may be."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    return {key: value for key, value in carrier.items() if len(value) <= _MAX_VALUE_CHARS}


def carry(
    metadata: types_pb2.JobMetadata | workflows_pb2.WorkflowMetadata, context: Mapping[str, str]
) -> None:
    """Puts the trace context into a job's (or a workflow run's) metadata attributes, unless the caller set
    a ``traceparent`` of their own (theirs is kept, whole) or the attributes would pass the server's count
    limit."""
    attributes: MutableMapping[str, str] = metadata.attributes
    if TRACEPARENT in attributes or len(attributes) + len(context) > _MAX_ATTRIBUTES:
        return
    attributes.update(context)


def carry_bulk(requests: Iterable[jobs_pb2.AddBulkRequest], context: Mapping[str, str]) -> None:
    """`carry` for every job of a bulk add: each gets the context of the batch's one span."""
    for request in requests:
        for job in request.jobs:
            carry(job.options.metadata, context)


# ----------------------------------------------------------------- consumer


@contextmanager
def process(tracer: Tracer, queue: str, job: types_pb2.Job) -> Iterator[Span]:
    """The CONSUMER span of one run, current while the run's code runs (the processor's own spans nest under
    it) and ended when it ends. The run's code reports failures itself (`record_failure`): what it raises
    through here is no failure of the job (a worker shutting down).

    Its parent is the trace context in the job's metadata attributes, not a link to it: a job is one
    message that one worker runs at a time, so the conventions' reason for links (a consumer taking a
    batch that many producers sent) does not arise, and a child puts the run in the producer's trace, where
    Celery's, BullMQ's and Temporal's tracing put it. Retried and redelivered runs are siblings under the
    same producer span, told apart by ``queue_manager.job.attempt``.
    """
    with _consumer(tracer, queue, job.id, job.name, job.attempts_made + 1, job.metadata.attributes) as span:
        yield span


@contextmanager
def process_pulled(tracer: Tracer, job: Job) -> Iterator[Span]:
    """The CONSUMER span of one pulled run (`PulledJob.span`), as `process` makes a stream worker's: a child
    of the job's trace context, current while the block runs. A block that raises an exception ends it with
    ERROR status and the exception recorded (a pull worker's own code is the run; nothing else catches it)."""
    with _consumer(
        tracer, job.queue_name, job.id, job.name, job.attempts_made + 1, job.metadata.attributes
    ) as span:
        try:
            yield span
        except Exception as exc:
            record_failure(span, exc, str(exc) or type(exc).__name__)
            raise


@contextmanager
def _consumer(
    tracer: Tracer, queue: str, job_id: str, name: str, attempt: int, carrier: Mapping[str, str]
) -> Iterator[Span]:
    parent = propagate.extract(carrier) if carrier else None
    span = tracer.start_span(
        f"{queue} process",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": SYSTEM,
            "messaging.operation": "process",
            "messaging.destination.name": queue,
            "messaging.message.id": job_id,
            "queue_manager.job.name": name,
            "queue_manager.job.attempt": attempt,
        },
    )
    with trace.use_span(span, end_on_exit=True, record_exception=False, set_status_on_exception=False):
        yield span


def record_failure(span: Span, exc: BaseException, message: str) -> None:
    """Marks a run's span failed: the exception as an event, ERROR status with the failure's message."""
    try:
        span.record_exception(exc)
    except Exception:  # a processor's exception class broke its own __str__ (worker_runs.py _failure_message)
        span.add_event("exception", {"exception.type": type(exc).__name__, "exception.message": message})
    span.set_status(StatusCode.ERROR, message)


def record_failed_run(span: Span, message: str) -> None:
    """Marks a run's span failed when no exception is at hand (a pulled job's `fail`): ERROR status with the
    failure's message."""
    span.set_status(StatusCode.ERROR, message)
