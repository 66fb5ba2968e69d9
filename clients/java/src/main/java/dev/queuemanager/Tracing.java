package dev.queuemanager;

import io.opentelemetry.api.GlobalOpenTelemetry;
import io.opentelemetry.api.baggage.propagation.W3CBaggagePropagator;
import io.opentelemetry.api.common.AttributeKey;
import io.opentelemetry.api.trace.Span;
import io.opentelemetry.api.trace.SpanKind;
import io.opentelemetry.api.trace.StatusCode;
import io.opentelemetry.api.trace.Tracer;
import io.opentelemetry.api.trace.TracerProvider;
import io.opentelemetry.api.trace.propagation.W3CTraceContextPropagator;
import io.opentelemetry.context.Context;
import io.opentelemetry.context.propagation.TextMapGetter;
import io.opentelemetry.context.propagation.TextMapPropagator;
import java.util.LinkedHashMap;
import java.util.Map;
import queue_manager.v1.Jobs;
import queue_manager.v1.Types;

/**
 * OpenTelemetry tracing, as the Python, TypeScript and Go clients do it (docs/observability.md "Tracing
 * (OpenTelemetry)"): a PRODUCER span per add or bulk add, a CONSUMER span per run of a {@link Worker}, and
 * the W3C trace context carried from one to the other in the job's metadata attributes ("traceparent",
 * "tracestate", and "baggage" when there is some).
 *
 * <p>Tracing is off (a null {@code Tracing}), decided once per client at its first add and per worker when
 * it starts, when the provider is a no-op one or, with none given, while no global OpenTelemetry is set: the
 * add and run paths then do nothing more per job than test for null, and jobs are stored exactly as without
 * tracing.
 */
final class Tracing {
  // The instrumentation scope of this client's spans.
  private static final String SCOPE = "dev.queuemanager";
  // messaging.system: how the conventions name the broker ("kafka", "rabbitmq").
  private static final String MESSAGING_SYSTEM = "queue_manager";
  // The attribute whose presence means a job has a trace context already: the caller's own is kept, whole.
  private static final String TRACEPARENT = "traceparent";
  // The server's limits on metadata attributes: trace context that would break them is left out, so that
  // turning tracing on never makes an add fail (baggage in particular may be longer than a value may be).
  private static final int MAX_ATTRIBUTES = 100;
  private static final int MAX_ATTRIBUTE_CHARS = 2000;

  private static final AttributeKey<String> SYSTEM = AttributeKey.stringKey("messaging.system");
  private static final AttributeKey<String> OPERATION = AttributeKey.stringKey("messaging.operation");
  private static final AttributeKey<String> DESTINATION = AttributeKey.stringKey("messaging.destination.name");
  private static final AttributeKey<Long> BATCH = AttributeKey.longKey("messaging.batch.message_count");
  static final AttributeKey<String> MESSAGE_ID = AttributeKey.stringKey("messaging.message.id");
  private static final AttributeKey<String> JOB_NAME = AttributeKey.stringKey("queue_manager.job.name");
  private static final AttributeKey<Long> JOB_ATTEMPT = AttributeKey.longKey("queue_manager.job.attempt");

  // Reads a job's attributes for the propagator (keys(), deprecated in the API, is left to its default).
  private static final TextMapGetter<Map<String, String>> ATTRIBUTES =
      (carrier, key) -> carrier == null ? null : carrier.get(key);

  private final Tracer tracer;
  private final TextMapPropagator propagator;

  private Tracing(Tracer tracer, TextMapPropagator propagator) {
    this.tracer = tracer;
    this.propagator = propagator;
  }

  /** The tracing of a provider (null: the global one), or null when tracing is off. */
  static Tracing of(TracerProvider provider) {
    // isSet, not get: get would install a no-op global, and the application's later set would then fail.
    boolean global = GlobalOpenTelemetry.isSet();
    if (provider == null) {
      if (!global) {
        return null;
      }
      provider = GlobalOpenTelemetry.get().getTracerProvider();
    }
    Tracer tracer = provider.tracerBuilder(SCOPE).setInstrumentationVersion(QueueManager.VERSION).build();
    // A no-op provider (TracerProvider.noop(), OpenTelemetry.noop()'s) hands out the API's one no-op tracer.
    if (tracer == TracerProvider.noop().get(SCOPE)) {
      return null;
    }
    // The global propagator, when the application set one; else the W3C propagators, which are the defaults
    // of OpenTelemetry in Python (the API's own propagate nothing until one is set), so that workers of every
    // language read what this side writes.
    TextMapPropagator propagator =
        global ? GlobalOpenTelemetry.get().getPropagators().getTextMapPropagator() : TextMapPropagator.noop();
    if (propagator.fields().isEmpty()) {
      propagator =
          TextMapPropagator.composite(
              W3CTraceContextPropagator.getInstance(), W3CBaggagePropagator.getInstance());
    }
    return new Tracing(tracer, propagator);
  }

  // ----------------------------------------------------------------- producer

  /** Starts the PRODUCER span of one add (batch < 0) or of one bulk add of batch jobs, under the current. */
  Span publish(String queue, int batch) {
    var span =
        tracer
            .spanBuilder(queue + " publish")
            .setSpanKind(SpanKind.PRODUCER)
            .setAttribute(SYSTEM, MESSAGING_SYSTEM)
            .setAttribute(OPERATION, "publish")
            .setAttribute(DESTINATION, queue);
    if (batch >= 0) {
      span.setAttribute(BATCH, (long) batch);
    }
    return span.startSpan();
  }

  /** What the propagator writes for a span, less any value longer than an attribute may be. */
  Map<String, String> traceContext(Span span) {
    Map<String, String> carrier = new LinkedHashMap<>();
    propagator.inject(Context.current().with(span), carrier, (c, key, value) -> c.put(key, value));
    carrier.values().removeIf(value -> value.length() > MAX_ATTRIBUTE_CHARS);
    return carrier;
  }

  /**
   * A job with the trace context in its metadata attributes, unless the caller set a traceparent of their
   * own (theirs is kept, whole) or the attributes would pass the server's count limit.
   */
  static Jobs.NewJob carry(Jobs.NewJob job, Map<String, String> traceContext) {
    Map<String, String> attributes = job.getOptions().getMetadata().getAttributesMap();
    if (attributes.containsKey(TRACEPARENT) || attributes.size() + traceContext.size() > MAX_ATTRIBUTES) {
      return job;
    }
    var b = job.toBuilder();
    b.getOptionsBuilder().getMetadataBuilder().putAllAttributes(traceContext);
    return b.build();
  }

  /** Ends a PRODUCER span whose add failed: ERROR status and the exception recorded. */
  static void failed(Span span, Throwable error) {
    span.recordException(error);
    span.setStatus(StatusCode.ERROR, String.valueOf(error.getMessage()));
  }

  // ----------------------------------------------------------------- consumer

  /**
   * Starts the CONSUMER span of one run. Its parent is the trace context in the job's attributes, not a link
   * to it: a job is one message that one worker runs at a time, so the conventions' reason for links (a
   * consumer taking a batch that many producers sent) does not arise, and a child puts the run in the
   * producer's trace. Retried and redelivered runs are siblings, told apart by queue_manager.job.attempt.
   */
  Span process(Types.Job job) {
    // The job's metadata is stored beside its options; either may carry the attributes.
    Map<String, String> attributes =
        job.getOptions().hasMetadata()
            ? job.getOptions().getMetadata().getAttributesMap()
            : job.getMetadata().getAttributesMap();
    Context parent =
        attributes.isEmpty() ? Context.root() : propagator.extract(Context.root(), attributes, ATTRIBUTES);
    return tracer
        .spanBuilder(job.getQueueName() + " process")
        .setParent(parent)
        .setSpanKind(SpanKind.CONSUMER)
        .setAttribute(SYSTEM, MESSAGING_SYSTEM)
        .setAttribute(OPERATION, "process")
        .setAttribute(DESTINATION, job.getQueueName())
        .setAttribute(MESSAGE_ID, job.getId())
        .setAttribute(JOB_NAME, job.getName())
        .setAttribute(JOB_ATTEMPT, (long) job.getAttemptsMade() + 1)
        .startSpan();
  }

  /**
   * Ends a run's span: failed runs (the handler threw, timed out, or its result could not be sent) get ERROR
   * status with the failure's message, and the handler's exception as an "exception" event.
   */
  static void endProcess(Span span, Throwable error, String failure) {
    if (failure != null) {
      if (error != null) {
        span.recordException(error);
      }
      span.setStatus(StatusCode.ERROR, failure);
    }
    span.end();
  }
}
