package queuemanager

// OpenTelemetry tracing, as the Python client does it (clients/python/queue_manager/tracing.py;
// docs/observability.md "Tracing (OpenTelemetry)"): a PRODUCER span per add, a CONSUMER span per run (a
// stream worker's, or a pulled job's: PulledJob.Span), and the W3C trace context carried from one to the
// other in the job's Metadata.Attributes ("traceparent", "tracestate", and "baggage" when there is some).
//
// Tracing is off, decided once per Client (at its first add or pulled run's span) and per Worker (at Run),
// when the tracer provider is a no-op one or the global provider before otel.SetTracerProvider: the add and
// run paths then do nothing more per job than test a nil tracer, and jobs are stored exactly as without
// tracing.

import (
	"context"
	"maps"
	"reflect"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	pb "github.com/queue-manager/queue-manager/clients/go/gen/queue_manager/v1"
)

const (
	// tracerName is the instrumentation scope of this package's spans.
	tracerName = "github.com/queue-manager/queue-manager/clients/go/queuemanager"
	// messagingSystem is messaging.system: how the conventions name the broker ("kafka", "rabbitmq").
	messagingSystem = "queue_manager"
	// traceparentKey is the attribute whose presence means a job has a trace context already: the
	// caller's own is kept, whole.
	traceparentKey = "traceparent"
	// The server's limits on metadata attributes: trace context that would break them is left out, so that
	// turning tracing on never makes an add fail (baggage in particular may be longer than a value may be).
	maxAttributes     = 100
	maxAttributeChars = 2000
)

// WithTracerProvider traces the client's adds (and the runs of workers it makes, unless their
// WorkerConfig.TracerProvider says otherwise) with this OpenTelemetry provider. Default: the global one,
// otel.GetTracerProvider(), read at the first add; tracing is off while that is unset or a no-op provider.
func WithTracerProvider(provider trace.TracerProvider) Option {
	return func(s *settings) { s.tracerProvider = provider }
}

// tracing is what a traced client or worker needs: its tracer and the propagator that writes and reads the
// trace context. A nil *tracing means tracing is off.
type tracing struct {
	tracer     trace.Tracer
	propagator propagation.TextMapPropagator
}

// newTracing returns the tracing of a provider (nil: the global one), or nil when tracing is off.
func newTracing(provider trace.TracerProvider) *tracing {
	if provider == nil {
		provider = otel.GetTracerProvider()
	}
	if tracingOff(provider) {
		return nil
	}
	// The global propagator, when the application set one; else the W3C propagators, which are the
	// defaults of OpenTelemetry in Python (the global one in Go propagates nothing until it is set), so that
	// workers of every language read what this side writes.
	propagator := otel.GetTextMapPropagator()
	if len(propagator.Fields()) == 0 {
		propagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	}
	return &tracing{
		tracer:     provider.Tracer(tracerName, trace.WithInstrumentationVersion(Version)),
		propagator: propagator,
	}
}

// tracingOff reports whether a provider records nothing: a no-op provider, or the global provider before
// otel.SetTracerProvider (a delegate of OpenTelemetry's internal package; once a provider is set,
// otel.GetTracerProvider returns that provider itself). These have no exported type to test for.
func tracingOff(provider trace.TracerProvider) bool {
	if _, ok := provider.(noop.TracerProvider); ok {
		return true
	}
	t := reflect.TypeOf(provider)
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.PkgPath() {
	case "go.opentelemetry.io/otel/internal/global":
		return true
	case "go.opentelemetry.io/otel/trace": // trace.NewNoopTracerProvider, deprecated
		return t.Name() == "noopTracerProvider"
	}
	return false
}

// ----------------------------------------------------------------- producer

// publish starts the PRODUCER span of one add (batch < 0) or of one bulk add of batch jobs; the returned
// context holds it.
func (t *tracing) publish(ctx context.Context, queue string, batch int) (context.Context, trace.Span) {
	attrs := []attribute.KeyValue{
		attribute.String("messaging.system", messagingSystem),
		attribute.String("messaging.operation", "publish"),
		attribute.String("messaging.destination.name", queue),
	}
	if batch >= 0 {
		attrs = append(attrs, attribute.Int("messaging.batch.message_count", batch))
	}
	return t.tracer.Start(ctx, queue+" publish", trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(attrs...))
}

// publishWorkflow starts the PRODUCER span of one ExecuteWorkflow: every step's job carries its context
// (the server copies the run's metadata attributes into each step's job).
func (t *tracing) publishWorkflow(ctx context.Context, workflow *pb.Workflow) (context.Context, trace.Span) {
	name := "workflow publish"
	if workflow.GetId() != "" {
		name = "workflow " + workflow.GetId() + " publish"
	}
	return t.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(
		attribute.String("messaging.system", messagingSystem),
		attribute.String("messaging.operation", "publish"),
		attribute.Int("messaging.batch.message_count", len(workflow.GetSteps())),
		attribute.String("queue_manager.workflow.id", workflow.GetId()),
	))
}

// traceContext is what the propagator writes for the span in ctx, less any value longer than an attribute
// may be.
func (t *tracing) traceContext(ctx context.Context) map[string]string {
	carrier := propagation.MapCarrier{}
	t.propagator.Inject(ctx, carrier)
	maps.DeleteFunc(carrier, func(_, value string) bool { return len(value) > maxAttributeChars })
	return carrier
}

// carry returns a job's (or a workflow run's) attributes with the trace context added, unless the caller
// set a traceparent of their own (theirs is kept, whole) or the attributes would pass the server's count
// limit. The caller's map is never changed: options are often shared by many jobs.
func carry(attributes, traceContext map[string]string) map[string]string {
	if _, ok := attributes[traceparentKey]; ok || len(attributes)+len(traceContext) > maxAttributes {
		return attributes
	}
	out := make(map[string]string, len(attributes)+len(traceContext))
	maps.Copy(out, attributes)
	maps.Copy(out, traceContext)
	return out
}

// carryJob puts the trace context into a job's metadata attributes (see carry).
func carryJob(job *pb.NewJob, traceContext map[string]string) {
	if job.Options == nil {
		job.Options = &pb.JobOptions{}
	}
	if job.Options.Metadata == nil {
		job.Options.Metadata = &pb.JobMetadata{}
	}
	job.Options.Metadata.Attributes = carry(job.Options.Metadata.Attributes, traceContext)
}

// endPublish ends a PRODUCER span: ERROR status and the error recorded when the add failed.
func endPublish(span trace.Span, err error, attrs ...attribute.KeyValue) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(otelcodes.Error, err.Error())
	} else {
		span.SetAttributes(attrs...)
	}
	span.End()
}

// ----------------------------------------------------------------- consumer

// process starts the CONSUMER span of one run, in a context derived from ctx that the handler gets (its
// own spans nest under it). Its parent is the trace context in the job's attributes, not a link to it: a
// job is one message that one worker runs at a time, so the conventions' reason for links (a consumer
// taking a batch that many producers sent) does not arise, and a child puts the run in the producer's
// trace. Retried and redelivered runs are siblings, told apart by queue_manager.job.attempt.
func (t *tracing) process(ctx context.Context, job *Job) (context.Context, trace.Span) {
	if len(job.Metadata.Attributes) > 0 {
		ctx = t.propagator.Extract(ctx, propagation.MapCarrier(job.Metadata.Attributes))
	}
	return t.tracer.Start(ctx, job.Queue+" process", trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			attribute.String("messaging.system", messagingSystem),
			attribute.String("messaging.operation", "process"),
			attribute.String("messaging.destination.name", job.Queue),
			attribute.String("messaging.message.id", job.ID),
			attribute.String("queue_manager.job.name", job.Name),
			attribute.Int("queue_manager.job.attempt", job.AttemptsMade+1),
		))
}

// recordFailure marks a run's span failed: the error as an "exception" event (with the panic's stack when
// there is one), ERROR status with the failure's message.
func recordFailure(span trace.Span, err error, message, stack string) {
	if stack != "" {
		span.RecordError(err, trace.WithAttributes(attribute.String("exception.stacktrace", stack)))
	} else {
		span.RecordError(err)
	}
	span.SetStatus(otelcodes.Error, message)
}
