package queuemanager_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	qm "github.com/queue-manager/queue-manager/clients/go/queuemanager"
)

// collect ranges over the stream's events in a goroutine, handing each one (and a final error, if any) to
// the returned channel; the channel is closed when the loop ends.
func collect(events *qm.JobEventStream) <-chan any {
	out := make(chan any, 100)
	go func() {
		defer close(out)
		for ev, err := range events.Events() {
			if err != nil {
				out <- err
				return
			}
			out <- ev
		}
	}()
	return out
}

// nextEvent waits for the next event from collect's channel.
func nextEvent(t *testing.T, ch <-chan any) *qm.JobEvent {
	t.Helper()
	v, ok := within(t, ch)
	if !ok {
		t.Fatal("the event stream ended")
	}
	ev, isEvent := v.(*qm.JobEvent)
	if !isEvent {
		t.Fatalf("the event stream failed: %v", v)
	}
	return ev
}

// within waits for a value of ch, or for ch to be closed (ok false).
func within(t *testing.T, ch <-chan any) (v any, ok bool) {
	t.Helper()
	select {
	case v, ok = <-ch:
		return v, ok
	case <-time.After(wait):
		t.Fatalf("nothing from the event stream within %s", wait)
		return nil, false
	}
}

func TestWatchJobEventsFollowsEachJob(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	queue := newQueue(t, c, nil)
	events, err := c.WatchJobEvents(testContext(t), queue, qm.EventFilter{})
	if err != nil {
		t.Fatalf("WatchJobEvents: %v", err)
	}
	defer events.Close()
	stream := collect(events)

	// WatchJobEvents returned, so the server watches: an add made now is in the stream.
	later := add(t, c, queue, "later", nil, &qm.JobOptions{Delay: time.Hour})
	if ev := nextEvent(t, stream); ev.Type != qm.EventAdded || ev.JobID != later.ID || ev.JobName != "later" ||
		ev.Queue != queue || ev.Time.IsZero() || !ev.RunAt.Equal(later.RunTime) {
		t.Fatalf("want ADDED of the delayed job with its run time %s: %+v", later.RunTime, ev)
	}
	if _, err := c.RemoveJob(testContext(t), queue, later.ID); err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, stream); ev.Type != qm.EventRemoved || ev.JobID != later.ID {
		t.Fatalf("want REMOVED of the delayed job: %+v", ev)
	}

	progressed := make(chan struct{})
	startWorker(t, c, qm.WorkerConfig{Handlers: map[string]qm.Handler{
		queue: func(ctx context.Context, job *qm.Job) (any, error) {
			if job.Name == "broken" {
				return nil, qm.Unrecoverable(errors.New("disk full"))
			}
			if err := job.ReportProgress(map[string]int{"pct": 50}); err != nil {
				return nil, err
			}
			select { // completes once the test has seen the progress event
			case <-progressed:
				return "ok", nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		},
	}})
	release := sync.OnceFunc(func() { close(progressed) })
	t.Cleanup(release) // before the worker's cleanup: a failed test does not hold the handler
	work := add(t, c, queue, "work", nil, nil)
	want := []struct {
		kind    qm.JobEventType
		attempt int
	}{{qm.EventAdded, 0}, {qm.EventActive, 1}, {qm.EventProgress, 0}}
	for _, w := range want {
		ev := nextEvent(t, stream)
		if ev.Type != w.kind || ev.JobID != work.ID || ev.JobName != "work" || ev.Attempt != w.attempt {
			t.Fatalf("want %s (attempt %d) of job %s: %+v", w.kind, w.attempt, work.ID, ev)
		}
		// A whole number comes as a JSON integer (`50`, not `50.0`: an int field reads it).
		var progress struct{ Pct int }
		if ev.Type == qm.EventProgress && (json.Unmarshal(ev.Progress, &progress) != nil || progress.Pct != 50) {
			t.Fatalf("the progress must come as its JSON text, whole numbers as integers: %q", ev.Progress)
		}
	}
	release()
	if ev := nextEvent(t, stream); ev.Type != qm.EventCompleted || ev.JobID != work.ID || ev.Attempt != 1 {
		t.Fatalf("want COMPLETED of job %s: %+v", work.ID, ev)
	}

	broken := add(t, c, queue, "broken", nil, nil)
	for _, kind := range []qm.JobEventType{qm.EventAdded, qm.EventActive, qm.EventFailed} {
		ev := nextEvent(t, stream)
		if ev.Type != kind || ev.JobID != broken.ID {
			t.Fatalf("want %s of job %s: %+v", kind, broken.ID, ev)
		}
		if kind == qm.EventFailed && (ev.FailedReason != "disk full" || ev.Attempt != 1) {
			t.Fatalf("FAILED must carry the reason and the attempts made: %+v", ev)
		}
	}
	if got := fmt.Sprint(qm.EventRetrying, " ", qm.JobEventType(99)); got != "retrying 99" {
		t.Fatalf("JobEventType.String: %q", got)
	}
}

func TestWatchJobEventsFiltersAndEnds(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	queue := newQueue(t, c, nil)
	if _, err := c.WatchJobEvents(testContext(t), queue+"-missing", qm.EventFilter{}); !errors.Is(err, qm.ErrNotFound) {
		t.Fatalf("watching an unknown queue: want ErrNotFound from WatchJobEvents, got %v", err)
	}
	// Bad filters are refused before the call (a request that reached the server would fail with its
	// *qm.Error).
	for _, bad := range []struct {
		filter qm.EventFilter
		hint   string
	}{
		{qm.EventFilter{Types: []qm.JobEventType{qm.EventAdded, 99}}, "unknown job event type 99"},
		{qm.EventFilter{JobNames: []string{"a", ""}}, "JobNames[1] is empty"},
		{qm.EventFilter{JobNames: []string{"\xff"}}, "not valid UTF-8"},
	} {
		_, err := c.WatchJobEvents(testContext(t), queue+"-missing", bad.filter)
		var fromServer *qm.Error
		if err == nil || errors.As(err, &fromServer) || !strings.Contains(err.Error(), bad.hint) {
			t.Errorf("WatchJobEvents(%+v): want a refusal before the call mentioning %q, got %v", bad.filter, bad.hint, err)
		}
	}
	filtered, err := c.WatchJobEvents(testContext(t), queue, qm.EventFilter{
		Types: []qm.JobEventType{qm.EventCompleted}, JobNames: []string{"keep"},
	})
	if err != nil {
		t.Fatalf("WatchJobEvents: %v", err)
	}
	stream := collect(filtered)
	startWorker(t, c, qm.WorkerConfig{Handlers: map[string]qm.Handler{
		queue: func(ctx context.Context, job *qm.Job) (any, error) { return nil, nil },
	}})
	// The other job's events all come before the kept job's: had the filter let any through, it would be
	// the first event.
	other := add(t, c, queue, "other", nil, nil)
	waitFinished(t, c, queue, other.ID)
	keep := add(t, c, queue, "keep", nil, nil)
	waitFinished(t, c, queue, keep.ID)
	if ev := nextEvent(t, stream); ev.Type != qm.EventCompleted || ev.JobID != keep.ID {
		t.Fatalf("the filter keeps only COMPLETED of jobs named keep: %+v", ev)
	}

	// Close ends the range loop, without an error.
	filtered.Close()
	if v, ok := within(t, stream); ok {
		t.Fatalf("after Close the loop must end without an element: %v", v)
	}
	filtered.Close() // twice is harmless

	// Cancelling the context ends a waiting Recv with an error matching context.Canceled.
	ctx, cancel := context.WithCancel(testContext(t))
	events, err := c.WatchJobEvents(ctx, queue, qm.EventFilter{})
	if err != nil {
		t.Fatalf("WatchJobEvents: %v", err)
	}
	received := make(chan error, 1)
	go func() {
		_, err := events.Recv()
		received <- err
	}()
	cancel()
	if err := receive(t, received, "Recv to end"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Recv after the context was cancelled: want context.Canceled, got %v", err)
	}
}
