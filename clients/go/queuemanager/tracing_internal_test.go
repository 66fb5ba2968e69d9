package queuemanager

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Tracing is decided once: off for the global provider before otel.SetTracerProvider (this test binary
// never sets it) and for no-op providers, so that untraced adds and runs do no per-job work.
func TestTracingIsOffWithoutAProvider(t *testing.T) {
	sdk := sdktrace.NewTracerProvider()
	defer func() { _ = sdk.Shutdown(context.Background()) }()
	deprecated := trace.NewNoopTracerProvider() //nolint:staticcheck // still in use: it must count as off
	for _, off := range []trace.TracerProvider{nil, noop.NewTracerProvider(), deprecated} {
		if newTracing(off) != nil {
			t.Fatalf("tracing must be off with %T", off)
		}
	}
	on := newTracing(sdk)
	if on == nil {
		t.Fatal("tracing must be on with an SDK provider")
	}
	c, err := New("127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	if c.traced() != nil {
		t.Fatal("a client without WithTracerProvider must not trace while the global provider is unset")
	}
	// With no propagator set globally, the context goes out as W3C traceparent (and tracestate).
	ctx, span := on.publish(context.Background(), "q", -1)
	defer span.End()
	if got := on.traceContext(ctx); len(got) != 1 || len(got["traceparent"]) != 55 {
		t.Fatalf("the W3C trace context of a span: %v", got)
	}
}
