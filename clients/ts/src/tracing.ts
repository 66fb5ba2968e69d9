/**
 * OpenTelemetry tracing: a PRODUCER span per add, a CONSUMER span per run (a stream worker's, or a pulled
 * job's: `PulledJob.span`), and the W3C trace context carried
 * from one to the other in the job's `metadata.attributes` (`traceparent`, `tracestate`); the Python client's
 * tracing.py, in Node, with the same span names, attributes and attribute rules (docs/observability.md).
 *
 * `@opentelemetry/api` does nothing by itself: with no tracer provider configured (the global provider still
 * the API's proxy to its no-op provider, and none passed), `tracerOf` answers undefined, once, and the add
 * and run paths then cost one test per job and add nothing to jobs.
 *
 * The context is written and read by the global propagator, as for any instrumented library (W3C trace
 * context and baggage once an SDK registers them). Node's API has a no-op propagator until then, so when the
 * global one wrote no `traceparent` this module writes the W3C `traceparent` and `tracestate` itself, and
 * reads them itself when the global one found no parent: a job always crosses languages with its trace.
 */
import {
  ProxyTracerProvider,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  context,
  createTraceState,
  isSpanContextValid,
  propagation,
  trace,
  type Attributes,
  type Context,
  type Span,
  type SpanContext,
  type Tracer,
  type TracerProvider,
} from "@opentelemetry/api";
import { create } from "@bufbuild/protobuf";
import type { NewJob } from "./gen/queue_manager/v1/jobs_pb.js";
import { JobMetadataSchema, JobOptionsSchema } from "./gen/queue_manager/v1/types_pb.js";
import { WorkflowMetadataSchema, type Workflow } from "./gen/queue_manager/v1/workflows_pb.js";
import type { ActiveJob } from "./context.js";
import { errorText } from "./errors.js";
import { clientVersion } from "./worker-options.js";

/** messaging.system: how the conventions name the broker (Kafka is "kafka", RabbitMQ "rabbitmq"). */
export const SYSTEM = "queue_manager";
/** The attribute whose presence means a job already has a trace context: a caller's own is kept. */
export const TRACEPARENT = "traceparent";
const TRACESTATE = "tracestate";
// The server's limits on metadata attributes (server validate.py; docs/api.md): trace context that would
// break them is left out, so that turning tracing on never makes an add fail (baggage may be longer than an
// attribute may be).
const MAX_ATTRIBUTES = 100;
const MAX_VALUE_CHARS = 2_000;
// The API's no-op provider: what its proxy (the global provider) delegates to until an SDK registers one.
const NOOP_PROVIDER = new ProxyTracerProvider().getDelegate();
// W3C Trace Context: version-traceid-parentid-flags, and nothing after them in version 00.
const TRACEPARENT_FORMAT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;

/**
 * The client's tracer, from `provider` or else the global provider; undefined when tracing is off: no
 * provider is configured (the global one still delegates to the API's no-op provider) or `provider` is a
 * no-op one.
 */
export function tracerOf(provider?: TracerProvider): Tracer | undefined {
  let chosen = provider ?? trace.getTracerProvider();
  // The global provider is always the API's proxy: what counts is what it delegates to. Duck-typed: an
  // application's own copy of the API has its own proxy class.
  const delegate = (chosen as { getDelegate?: () => TracerProvider }).getDelegate;
  if (typeof delegate === "function") {
    chosen = delegate.call(chosen);
  }
  if (chosen === NOOP_PROVIDER || chosen.constructor === NOOP_PROVIDER.constructor) {
    return undefined;
  }
  return chosen.getTracer(SYSTEM, clientVersion());
}

// ---------------------------------------------------------------- producer

/** The attributes of a PRODUCER span for one add (`batch` undefined) or one bulk add of `batch` jobs. */
export function publishAttributes(queueName: string, batch?: number): Attributes {
  const attributes: Attributes = {
    "messaging.system": SYSTEM,
    "messaging.operation": "publish",
    "messaging.destination.name": queueName,
  };
  if (batch !== undefined) {
    attributes["messaging.batch.message_count"] = batch;
  }
  return attributes;
}

/**
 * Runs `add` inside a PRODUCER span named `name`, current while it runs (a span of the caller's is its
 * parent); an add that throws ends it with ERROR status and the exception recorded.
 */
export function publish<T>(tracer: Tracer, name: string, attributes: Attributes, add: (span: Span) => Promise<T>): Promise<T> {
  return tracer.startActiveSpan(name, { kind: SpanKind.PRODUCER, attributes }, async (span) => {
    try {
      return await add(span);
    } catch (err) {
      recordFailure(span, err, errorText(err));
      throw err;
    } finally {
      span.end();
    }
  });
}

/**
 * What the global propagator writes for `span` (and the W3C `traceparent` and `tracestate`, when it wrote no
 * `traceparent`: Node's default propagator writes nothing), less any value longer than an attribute may be.
 */
export function traceContext(span: Span): Record<string, string> {
  const carrier: Record<string, string> = {};
  propagation.inject(trace.setSpan(context.active(), span), carrier);
  if (!(TRACEPARENT in carrier)) {
    const { traceId, spanId, traceFlags, traceState } = span.spanContext();
    carrier[TRACEPARENT] = `00-${traceId}-${spanId}-${(traceFlags & 0xff).toString(16).padStart(2, "0")}`;
    const state = traceState?.serialize();
    if (state) {
      carrier[TRACESTATE] = state;
    }
  }
  for (const [key, value] of Object.entries(carrier)) {
    if (value.length > MAX_VALUE_CHARS) {
      delete carrier[key];
    }
  }
  return carrier;
}

/**
 * Puts the trace context into a job's (or a workflow run's) metadata attributes, unless the caller set a
 * `traceparent` of their own (theirs is kept, whole) or the attributes would pass the server's count limit.
 */
export function carry(attributes: Record<string, string>, traceContext: Record<string, string>): void {
  if (Object.hasOwn(attributes, TRACEPARENT)) {
    return;
  }
  if (Object.keys(attributes).length + Object.keys(traceContext).length > MAX_ATTRIBUTES) {
    return;
  }
  Object.assign(attributes, traceContext);
}

/** The metadata attributes of a job to add, its options and metadata made if it had none. */
export function jobAttributes(job: NewJob): Record<string, string> {
  job.options ??= create(JobOptionsSchema);
  job.options.metadata ??= create(JobMetadataSchema);
  return job.options.metadata.attributes;
}

/** The metadata attributes of a workflow run to start (the server copies them into every step's job). */
export function workflowAttributes(workflow: Workflow): Record<string, string> {
  workflow.metadata ??= create(WorkflowMetadataSchema);
  return workflow.metadata.attributes;
}

// ---------------------------------------------------------------- consumer

/**
 * The CONSUMER span of one run, and the context to run the processor in (the span current, so the
 * processor's own spans nest under it). The caller ends the span when the run ends.
 *
 * Its parent is the trace context in the job's metadata attributes, not a link to it: a job is one message
 * one worker runs at a time, so a child puts the run in the producer's trace (as the Python client, Celery,
 * BullMQ and Temporal do). Retried and redelivered runs are siblings under the same producer span, told
 * apart by `queue_manager.job.attempt`. The run's context is the extracted one (its baggage included).
 */
export function startProcess(tracer: Tracer, job: RunJob): { span: Span; context: Context } {
  const attributes = job.metadata.attributes;
  let parent = ROOT_CONTEXT;
  if (Object.keys(attributes).length) {
    parent = propagation.extract(ROOT_CONTEXT, attributes);
    const remote = trace.getSpanContext(parent);
    if (remote === undefined || !isSpanContextValid(remote)) {
      const w3c = parseTraceparent(attributes[TRACEPARENT], attributes[TRACESTATE]);
      if (w3c !== undefined) {
        parent = trace.setSpanContext(parent, w3c);
      }
    }
  }
  const span = tracer.startSpan(
    `${job.queueName} process`,
    {
      kind: SpanKind.CONSUMER,
      attributes: {
        "messaging.system": SYSTEM,
        "messaging.operation": "process",
        "messaging.destination.name": job.queueName,
        "messaging.message.id": job.id,
        "queue_manager.job.name": job.name,
        "queue_manager.job.attempt": job.attemptsMade + 1,
      },
    },
    parent,
  );
  return { span, context: trace.setSpan(parent, span) };
}

/** What a run's span reads of its job: a stream worker's `ActiveJob`, or a pulled job's `Job`. */
export type RunJob = Pick<ActiveJob, "id" | "name" | "queueName" | "attemptsMade"> & {
  readonly metadata: { readonly attributes: Record<string, string> };
};

/** Marks a span failed: the exception as an event, ERROR status with the failure's message. */
export function recordFailure(span: Span, error: unknown, message: string): void {
  if (error instanceof Error) {
    span.recordException(error);
  } else {
    span.recordException(message);
  }
  span.setStatus({ code: SpanStatusCode.ERROR, message });
}

/** A W3C `traceparent` (and `tracestate`) as a remote span context; undefined when it is not one. */
function parseTraceparent(traceparent: string | undefined, tracestate: string | undefined): SpanContext | undefined {
  const match = traceparent === undefined ? null : TRACEPARENT_FORMAT.exec(traceparent.trim());
  if (match === null || match[1] === "ff" || (match[1] === "00" && match[5] !== undefined)) {
    return undefined;
  }
  const spanContext: SpanContext = {
    traceId: match[2]!,
    spanId: match[3]!,
    traceFlags: parseInt(match[4]!, 16),
    isRemote: true,
    traceState: tracestate ? createTraceState(tracestate) : undefined,
  };
  return isSpanContextValid(spanContext) ? spanContext : undefined;
}
