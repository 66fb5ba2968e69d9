package queuemanager_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	qm "github.com/queue-manager/queue-manager/clients/go/queuemanager"
)

// Each test has its own SDK tracer provider, passed explicitly: the global one stays unset in this test
// binary, so the default path is the untraced one.

// theirTraceparent is a caller's own trace context (the W3C specification's example).
const theirTraceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// traced is a tracer provider that keeps its finished spans in memory and says when one ends.
type traced struct {
	*sdktrace.TracerProvider
	spans *tracetest.InMemoryExporter
	ended chan struct{}
}

// endSignal is a span processor that wakes a waiting test when a span ends (after the exporter, which
// is registered before it, has it).
type endSignal chan struct{}

func (endSignal) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (e endSignal) OnEnd(sdktrace.ReadOnlySpan) {
	select {
	case e <- struct{}{}:
	default:
	}
}
func (endSignal) Shutdown(context.Context) error   { return nil }
func (endSignal) ForceFlush(context.Context) error { return nil }

func newTraced(t *testing.T) *traced {
	t.Helper()
	tr := &traced{spans: tracetest.NewInMemoryExporter(), ended: make(chan struct{}, 1)}
	tr.TracerProvider = sdktrace.NewTracerProvider(
		sdktrace.WithSyncer(tr.spans), sdktrace.WithSpanProcessor(endSignal(tr.ended)),
	)
	t.Cleanup(func() { _ = tr.Shutdown(context.Background()) })
	return tr
}

func (tr *traced) named(name string) []tracetest.SpanStub {
	var out []tracetest.SpanStub
	for _, s := range tr.spans.GetSpans() {
		if s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

// wait returns the finished spans of that name once there are count of them.
func (tr *traced) wait(t *testing.T, name string, count int) []tracetest.SpanStub {
	t.Helper()
	deadline := time.After(wait)
	for {
		if spans := tr.named(name); len(spans) >= count {
			return spans
		}
		select {
		case <-tr.ended:
		case <-deadline:
			t.Fatalf("timed out after %s waiting for %d span(s) %q; have %d", wait, count, name,
				len(tr.named(name)))
		}
	}
}

func childOf(span, parent tracetest.SpanStub) bool {
	return span.Parent.TraceID() == parent.SpanContext.TraceID() && span.Parent.SpanID() == parent.SpanContext.SpanID()
}

func attr(span tracetest.SpanStub, key string) attribute.Value {
	for _, kv := range span.Attributes {
		if string(kv.Key) == key {
			return kv.Value
		}
	}
	return attribute.Value{}
}

func noopHandler(context.Context, *qm.Job) (any, error) { return nil, nil }

func TestTracingRunIsAChildOfItsAdd(t *testing.T) {
	t.Parallel()
	tr := newTraced(t)
	c := newClient(t, qm.WithTracerProvider(tr))
	queue := newQueue(t, c, nil)
	app := tr.Tracer("app")
	startWorker(t, c, qm.WorkerConfig{Handlers: map[string]qm.Handler{
		queue: func(ctx context.Context, job *qm.Job) (any, error) {
			_, span := app.Start(ctx, "render") // the handler's own span nests under the run's
			span.End()
			return "sent", nil
		},
	}})
	tags := map[string]string{"tenant": "acme"}
	job := add(t, c, queue, "send", nil, &qm.JobOptions{Metadata: &qm.Metadata{Attributes: tags}})
	waitFinished(t, c, queue, job.ID)
	if len(tags) != 1 {
		t.Fatalf("the caller's attributes must not be changed: %v", tags)
	}

	publish := tr.wait(t, queue+" publish", 1)[0]
	process := tr.wait(t, queue+" process", 1)[0]
	render := tr.wait(t, "render", 1)[0]
	if publish.SpanKind != trace.SpanKindProducer || attr(publish, "messaging.message.id").AsString() != job.ID ||
		attr(publish, "messaging.destination.name").AsString() != queue ||
		attr(publish, "messaging.system").AsString() != "queue_manager" ||
		attr(publish, "messaging.operation").AsString() != "publish" {
		t.Fatalf("the add's span: %+v", publish)
	}
	if process.SpanKind != trace.SpanKindConsumer || !childOf(process, publish) ||
		attr(process, "messaging.message.id").AsString() != job.ID ||
		attr(process, "messaging.operation").AsString() != "process" ||
		attr(process, "queue_manager.job.name").AsString() != "send" ||
		attr(process, "queue_manager.job.attempt").AsInt64() != 1 || process.Status.Code == codes.Error {
		t.Fatalf("the run's span must be a CONSUMER child of the add's: %+v", process)
	}
	if !childOf(render, process) {
		t.Fatalf("the handler's span must be a child of the run's: %+v", render)
	}
	stored, err := c.GetJob(testContext(t), queue, job.ID)
	if err != nil {
		t.Fatal(err)
	}
	traceparent := stored.Metadata.Attributes["traceparent"]
	if !strings.Contains(traceparent, publish.SpanContext.TraceID().String()+"-"+publish.SpanContext.SpanID().String()) ||
		stored.Metadata.Attributes["tenant"] != "acme" {
		t.Fatalf("the job must carry the add's trace context beside its own attributes: %v", stored.Metadata.Attributes)
	}
}

func TestTracingBulkJobsRunUnderTheBatchSpan(t *testing.T) {
	t.Parallel()
	tr := newTraced(t)
	c := newClient(t, qm.WithTracerProvider(tr))
	queue := newQueue(t, c, nil)
	shared := &qm.JobOptions{Metadata: &qm.Metadata{Attributes: map[string]string{"batch": "1"}}}
	jobs := []qm.NewJob{{Name: "a", Options: shared}, {Name: "b", Options: shared}, {Name: "c"}}
	if _, err := c.AddBulk(testContext(t), queue, jobs); err != nil {
		t.Fatalf("AddBulk: %v", err)
	}
	if len(shared.Metadata.Attributes) != 1 {
		t.Fatalf("options shared by several jobs must not be changed: %v", shared.Metadata.Attributes)
	}
	startWorker(t, c, qm.WorkerConfig{Handlers: map[string]qm.Handler{queue: noopHandler}})
	batch := tr.wait(t, queue+" publish", 1)
	if len(batch) != 1 || attr(batch[0], "messaging.batch.message_count").AsInt64() != 3 {
		t.Fatalf("AddBulk must be one span counting its jobs: %+v", batch)
	}
	for _, run := range tr.wait(t, queue+" process", 3) {
		if !childOf(run, batch[0]) {
			t.Fatalf("each bulk job's run must be a child of the batch's span: %+v", run)
		}
	}
}

func TestTracingFailedRunHasErrorStatusAndTheException(t *testing.T) {
	t.Parallel()
	tr := newTraced(t)
	c := newClient(t, qm.WithTracerProvider(tr))
	queue := newQueue(t, c, nil)
	startWorker(t, c, qm.WorkerConfig{Handlers: map[string]qm.Handler{
		queue: func(_ context.Context, job *qm.Job) (any, error) {
			if job.Name == "panics" {
				panic("out of ink")
			}
			return nil, errors.New("printer on fire")
		},
	}})
	for _, name := range []string{"fails", "panics"} {
		job := add(t, c, queue, name, nil, &qm.JobOptions{Attempts: 1})
		if done := waitFinished(t, c, queue, job.ID); done.State != qm.StateFailed {
			t.Fatalf("%s: %s", name, done.State)
		}
	}
	runs := tr.wait(t, queue+" process", 2)
	for _, run := range runs {
		want := "printer on fire"
		if run.Name == queue+" process" && attr(run, "queue_manager.job.name").AsString() == "panics" {
			want = "panic: out of ink"
		}
		if run.Status.Code != codes.Error || run.Status.Description != want || len(run.Events) != 1 ||
			run.Events[0].Name != "exception" {
			t.Fatalf("a failed run must have ERROR status %q and an exception event: %+v", want, run)
		}
		event := map[string]string{}
		for _, kv := range run.Events[0].Attributes {
			event[string(kv.Key)] = kv.Value.Emit()
		}
		if event["exception.message"] != want {
			t.Fatalf("the exception event must hold the error: %v", event)
		}
		if panicked := want != "printer on fire"; panicked != strings.Contains(event["exception.stacktrace"], "panic") {
			t.Fatalf("a panic's event holds its stack, an error's none: %v", event)
		}
	}
}

func TestTracingKeepsACallersTraceparent(t *testing.T) {
	t.Parallel()
	tr := newTraced(t)
	c := newClient(t, qm.WithTracerProvider(tr))
	queue := newQueue(t, c, nil)
	job := add(t, c, queue, "theirs", nil, &qm.JobOptions{
		Metadata: &qm.Metadata{Attributes: map[string]string{"traceparent": theirTraceparent}},
	})
	stored, err := c.GetJob(testContext(t), queue, job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got := stored.Metadata.Attributes; len(got) != 1 || got["traceparent"] != theirTraceparent {
		t.Fatalf("a caller's traceparent must be kept, whole: %v", got)
	}
	startWorker(t, c, qm.WorkerConfig{Handlers: map[string]qm.Handler{queue: noopHandler}})
	run := tr.wait(t, queue+" process", 1)[0]
	if run.Parent.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" ||
		run.Parent.SpanID().String() != "00f067aa0ba902b7" || !run.Parent.IsRemote() {
		t.Fatalf("the run must continue the caller's trace: %+v", run.Parent)
	}
}

func TestTracingWorkflowIsOneTrace(t *testing.T) {
	t.Parallel()
	tr := newTraced(t)
	c := newClient(t, qm.WithTracerProvider(tr))
	queue := newQueue(t, c, nil)
	startWorker(t, c, qm.WorkerConfig{Handlers: map[string]qm.Handler{queue: noopHandler}})
	_, _, err := c.ExecuteWorkflow(testContext(t), qm.Workflow{ID: "traced", Steps: []qm.WorkflowStep{
		{Key: "first", Queue: queue, Name: "one", OnSuccess: []qm.WorkflowStep{{Key: "then", Queue: queue, Name: "two"}}},
	}}, "")
	if err != nil {
		t.Fatalf("ExecuteWorkflow: %v", err)
	}
	publish := tr.wait(t, "workflow traced publish", 1)[0]
	if attr(publish, "queue_manager.workflow.run_id").AsString() == "" || publish.SpanKind != trace.SpanKindProducer {
		t.Fatalf("the workflow's span: %+v", publish)
	}
	for _, run := range tr.wait(t, queue+" process", 2) {
		if !childOf(run, publish) {
			t.Fatalf("every step's run must be a child of the workflow's span: %+v", run)
		}
	}
}

func TestTracingOffAddsNothing(t *testing.T) {
	t.Parallel()
	// No provider (the global one is unset here), and a no-op one: jobs are stored as without tracing.
	for _, c := range []*qm.Client{newClient(t), newClient(t, qm.WithTracerProvider(noop.NewTracerProvider()))} {
		queue := newQueue(t, c, nil)
		spans := make(chan bool, 1)
		startWorker(t, c, qm.WorkerConfig{Handlers: map[string]qm.Handler{
			queue: func(ctx context.Context, _ *qm.Job) (any, error) {
				spans <- trace.SpanContextFromContext(ctx).IsValid()
				return nil, nil
			},
		}})
		job := add(t, c, queue, "plain", nil, nil)
		bulk, err := c.AddBulk(testContext(t), queue, []qm.NewJob{{Name: "bulk"}})
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range []string{job.ID, bulk.JobIDs[0]} {
			if stored := waitFinished(t, c, queue, id); len(stored.Metadata.Attributes) != 0 {
				t.Fatalf("an untraced add must add no attribute: %v", stored.Metadata.Attributes)
			}
			if receive(t, spans, "a run") {
				t.Fatal("an untraced run's context must hold no span")
			}
		}
	}
}

// Set by tests/test_client_go.py for TestTracedWorkerContinuesAPythonTrace: a server, the queue of a job
// that the Python client added with tracing on, and the trace and span ids of its add's span.
const (
	pythonTraceAddressEnv = "QM_TEST_TRACE_ADDRESS"
	pythonTraceQueueEnv   = "QM_TEST_TRACE_QUEUE"
	pythonTraceParentEnv  = "QM_TEST_TRACE_PARENT" // "{trace id}-{span id}", in hex
)

// TestTracedWorkerContinuesAPythonTrace runs, in a Go worker, a job that the Python client added with
// tracing on: the run's span must continue the Python add's trace. Run only by tests/test_client_go.py.
func TestTracedWorkerContinuesAPythonTrace(t *testing.T) {
	address := os.Getenv(pythonTraceAddressEnv)
	if address == "" {
		t.Skip("run by tests/test_client_go.py, which adds the job with the Python client")
	}
	tr := newTraced(t)
	c := dial(t, address)
	queue := os.Getenv(pythonTraceQueueEnv)
	startWorker(t, c, qm.WorkerConfig{
		TracerProvider: tr, Handlers: map[string]qm.Handler{queue: func(context.Context, *qm.Job) (any, error) {
			return "go ran it", nil
		}},
	})
	run := tr.wait(t, queue+" process", 1)[0]
	parent := run.Parent.TraceID().String() + "-" + run.Parent.SpanID().String()
	if want := os.Getenv(pythonTraceParentEnv); parent != want || run.SpanContext.TraceID() != run.Parent.TraceID() {
		t.Fatalf("the Go run's parent is %s, want the Python add's span %s", parent, want)
	}
}

// pythonWorkerQueueEnv, set by tests/test_client_go.py with pythonTraceAddressEnv, names the queue that
// TestTracedAddForAPythonWorker adds its job to.
const pythonWorkerQueueEnv = "QM_TEST_TRACE_ADD_QUEUE"

// TestTracedAddForAPythonWorker adds a job with tracing on and says "GO-TRACE {job id} {trace id}-{span
// id}" of its add's span on stdout; a Python worker then runs the job, and its run's span must continue
// this trace. Run only by tests/test_client_go.py.
func TestTracedAddForAPythonWorker(t *testing.T) {
	address, queue := os.Getenv(pythonTraceAddressEnv), os.Getenv(pythonWorkerQueueEnv)
	if address == "" || queue == "" {
		t.Skip("run by tests/test_client_go.py, which runs the job in a Python worker")
	}
	tr := newTraced(t)
	c := dial(t, address, qm.WithTracerProvider(tr))
	job := add(t, c, queue, "from-go", map[string]string{"from": "go"}, nil)
	publish := tr.wait(t, queue+" publish", 1)[0]
	_, _ = os.Stdout.WriteString("GO-TRACE " + job.ID + " " + publish.SpanContext.TraceID().String() + "-" +
		publish.SpanContext.SpanID().String() + "\n")
}

// TestTracingPulledRunIsAChildOfItsAdd: PulledJob.Span gives a fetched job's run the CONSUMER span a stream
// worker's run has, under its add's span, with the spans started from its context under it.
func TestTracingPulledRunIsAChildOfItsAdd(t *testing.T) {
	t.Parallel()
	tr := newTraced(t)
	c := newClient(t, qm.WithTracerProvider(tr))
	queue := newQueue(t, c, nil)
	job := add(t, c, queue, "resize", map[string]int{"w": 3}, nil)
	ctx := testContext(t)
	pulled, err := c.FetchJobs(ctx, queue, qm.FetchOptions{})
	if err != nil || len(pulled) != 1 {
		t.Fatalf("FetchJobs: %v, %d jobs", err, len(pulled))
	}
	err = pulled[0].Span(ctx, func(ctx context.Context) error {
		_, work := tr.Tracer("app").Start(ctx, "work")
		work.End()
		return pulled[0].Complete(ctx, "ok")
	})
	if err != nil {
		t.Fatal(err)
	}
	publish := tr.wait(t, queue+" publish", 1)[0]
	run := tr.wait(t, queue+" process", 1)[0]
	work := tr.wait(t, "work", 1)[0]
	if run.SpanKind != trace.SpanKindConsumer || !childOf(run, publish) || !childOf(work, run) ||
		attr(run, "messaging.system").AsString() != "queue_manager" ||
		attr(run, "messaging.operation").AsString() != "process" ||
		attr(run, "messaging.destination.name").AsString() != queue ||
		attr(run, "messaging.message.id").AsString() != job.ID ||
		attr(run, "queue_manager.job.name").AsString() != "resize" ||
		attr(run, "queue_manager.job.attempt").AsInt64() != 1 || len(run.Attributes) != 6 ||
		run.Status.Code != codes.Unset {
		t.Fatalf("a pulled run's span must be a stream run's, under its add's: %+v", run)
	}
}

// TestTracingPulledRunFailsWithErrorStatus: Fail, an error returned and a panic each end a pulled run's span
// with ERROR status (the error and the panic as an exception event); without tracing the run just runs.
func TestTracingPulledRunFailsWithErrorStatus(t *testing.T) {
	t.Parallel()
	tr := newTraced(t)
	c := newClient(t, qm.WithTracerProvider(tr))
	queue := newQueue(t, c, nil)
	ctx := testContext(t)
	for _, name := range []string{"a", "b", "c"} {
		add(t, c, queue, name, nil, &qm.JobOptions{Attempts: 1})
	}
	jobs, err := c.FetchJobs(ctx, queue, qm.FetchOptions{MaxJobs: 3})
	if err != nil || len(jobs) != 3 {
		t.Fatalf("FetchJobs: %v, %d jobs", err, len(jobs))
	}
	byName := map[string]*qm.PulledJob{}
	for _, j := range jobs {
		byName[j.Name] = j
	}
	if err := byName["a"].Span(ctx, func(ctx context.Context) error {
		_, err := byName["a"].Fail(ctx, "disk full", nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	crashed := errors.New("crashed")
	if err := byName["b"].Span(ctx, func(context.Context) error { return crashed }); !errors.Is(err, crashed) {
		t.Fatalf("Span must return the run's error: %v", err)
	}
	func() {
		defer func() {
			if p := recover(); p != "out of ink" {
				t.Fatalf("Span must panic on with the run's panic: %v", p)
			}
		}()
		_ = byName["c"].Span(ctx, func(context.Context) error { panic("out of ink") })
	}()
	want := map[string]struct {
		status string
		events int
	}{"a": {"disk full", 0}, "b": {"crashed", 1}, "c": {"panic: out of ink", 1}}
	for _, run := range tr.wait(t, queue+" process", 3) {
		name := attr(run, "queue_manager.job.name").AsString()
		if run.Status.Code != codes.Error || run.Status.Description != want[name].status ||
			len(run.Events) != want[name].events {
			t.Fatalf("run %s: want ERROR %q with %d event(s): %+v", name, want[name].status, want[name].events, run)
		}
	}

	plain := newClient(t)
	add(t, plain, queue, "d", nil, nil)
	untraced, err := plain.FetchJobs(ctx, queue, qm.FetchOptions{})
	if err != nil || len(untraced) != 1 {
		t.Fatalf("FetchJobs: %v, %d jobs", err, len(untraced))
	}
	if err := untraced[0].Span(ctx, func(ctx context.Context) error {
		if trace.SpanFromContext(ctx).SpanContext().IsValid() {
			t.Error("no span without tracing")
		}
		return untraced[0].Complete(ctx, nil)
	}); err != nil {
		t.Fatal(err)
	}
}
