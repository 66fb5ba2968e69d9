package queuemanager_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	qm "github.com/queue-manager/queue-manager/clients/go/queuemanager"
)

// TestWaitForEventParksTheJobUntilPushEvent: a handler waits with Job.WaitForEvent; its job is parked
// (delayed with no due time, its checkpoint written, EventWait shown by GetJob), PushEvent wakes it (a repeat
// of its event id changes nothing), and its next run, the same attempt, reads Job.Event.
func TestWaitForEventParksTheJobUntilPushEvent(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	ctx := testContext(t)
	queue := newQueue(t, c, nil)
	key := queue + ":paid"
	waited := make(chan *qm.WaitingForEventError, 1)
	var mu sync.Mutex
	var seen []string
	startWorker(t, c, qm.WorkerConfig{Concurrency: 1, Handlers: map[string]qm.Handler{
		queue: func(ctx context.Context, job *qm.Job) (any, error) {
			if job.Event == nil {
				err := job.WaitForEvent(ctx, []string{key, queue + ":cancelled"}, &qm.WaitForEventOptions{
					Data: map[string]string{"step": "ship"}, HasData: true,
				})
				var waiting *qm.WaitingForEventError
				if errors.As(err, &waiting) {
					waited <- waiting
				}
				return nil, err
			}
			var in struct{ Amount int }
			if err := job.Event.Decode(&in); err != nil {
				return nil, err
			}
			mu.Lock()
			seen = append(seen, fmt.Sprintf("%s %s %t", job.Event.Key, job.Event.EventID, job.EventTimedOut()))
			mu.Unlock()
			return in.Amount, nil
		},
	}})
	job := add(t, c, queue, "ship", nil, &qm.JobOptions{Attempts: 1})
	waiting := receive(t, waited, "the job's wait")
	if len(waiting.Keys) != 2 || !waiting.Until.IsZero() {
		t.Fatalf("want a wait for 2 keys with no timeout, got %+v", waiting)
	}
	parked, err := c.GetJob(ctx, queue, job.ID)
	if err != nil {
		t.Fatalf("GetJob: %v", err)
	}
	if parked.State != qm.StateDelayed || !parked.RunTime.IsZero() || parked.AttemptsMade != 0 ||
		string(parked.Data) != `{"step":"ship"}` || parked.EventWait == nil || parked.EventWait.Keys[0] != key || parked.Event != nil {
		t.Fatalf("want parked in delayed for the event: %s %v %d %s %+v", parked.State, parked.RunTime,
			parked.AttemptsMade, parked.Data, parked.EventWait)
	}
	pushed, err := c.PushEvent(ctx, key, map[string]int{"amount": 12}, queue+"-1")
	if err != nil || len(pushed.Woken) != 1 || pushed.Woken[0].ID != job.ID || pushed.Duplicate ||
		pushed.WokenCount != 1 || pushed.WokenTruncated {
		t.Fatalf("want the job woken: %+v %v", pushed, err)
	}
	again, err := c.PushEvent(ctx, key, nil, queue+"-1")
	if err != nil || !again.Duplicate || !again.PushedAt.Equal(pushed.PushedAt) {
		t.Fatalf("want a duplicate answered as the first push: %+v %v", again, err)
	}
	done := waitFinished(t, c, queue, job.ID)
	if done.State != qm.StateCompleted || string(done.Result) != "12" || done.AttemptsMade != 1 || done.Event == nil {
		t.Fatalf("want completed with the event's amount on its one attempt: %s %s %d (%s)",
			done.State, done.Result, done.AttemptsMade, done.FailedReason)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 1 || seen[0] != key+" "+queue+"-1 false" {
		t.Fatalf("want one run with the event, got %q", seen)
	}
}

// TestWaitForEventTimesOutAndBadKeysAreRefused: a wait with a timeout runs the job again with no event
// (Job.EventTimedOut), and a wait for no key or a key with a control character is refused with
// ErrInvalidArgument, the run going on.
func TestWaitForEventTimesOutAndBadKeysAreRefused(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	queue := newQueue(t, c, nil)
	startWorker(t, c, qm.WorkerConfig{Concurrency: 1, Handlers: map[string]qm.Handler{
		queue: func(ctx context.Context, job *qm.Job) (any, error) {
			if job.EventWait != nil {
				return fmt.Sprintf("timed out %t", job.EventTimedOut()), nil
			}
			for _, keys := range [][]string{nil, {"bad\nkey"}} {
				if err := job.WaitForEvent(ctx, keys, nil); !errors.Is(err, qm.ErrInvalidArgument) {
					return nil, qm.Unrecoverable(fmt.Errorf("want ErrInvalidArgument for %q, got %w", keys, err))
				}
			}
			return nil, job.WaitForEvent(ctx, []string{queue + ":never"}, &qm.WaitForEventOptions{Timeout: 300 * time.Millisecond})
		},
	}})
	done := waitFinished(t, c, queue, add(t, c, queue, "w", nil, &qm.JobOptions{Attempts: 1}).ID)
	if done.State != qm.StateCompleted || string(done.Result) != `"timed out true"` || done.EventWait == nil || done.EventWait.Until.IsZero() {
		t.Fatalf("want completed after the timeout: %s %s (%s)", done.State, done.Result, done.FailedReason)
	}
}

// TestEventTriggersAddAJobForAMatchingPush: UpsertEventTrigger makes a push of a matching key add the
// trigger's job with the event's data (PushEvent answers it in Added); ListEventTriggers shows it,
// DeleteEventTrigger stops it, and a pattern with a star in the middle is ErrInvalidArgument.
func TestEventTriggersAddAJobForAMatchingPush(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	ctx := testContext(t)
	queue := newQueue(t, c, nil)
	made, created, err := c.UpsertEventTrigger(ctx, &qm.EventTrigger{
		ID: queue, KeyPattern: queue + ":*", Queue: queue, JobName: "announce",
		JobOptions: &qm.JobOptions{Priority: qm.PriorityHigh},
	})
	if err != nil || !created || made.KeyPattern != queue+":*" || made.CreateTime.IsZero() {
		t.Fatalf("want the trigger created: %+v %t %v", made, created, err)
	}
	t.Cleanup(func() { _, _ = c.DeleteEventTrigger(context.Background(), queue) })
	listed, err := c.ListEventTriggers(ctx, queue)
	if err != nil || len(listed) != 1 || listed[0].ID != queue || listed[0].JobName != "announce" {
		t.Fatalf("want the trigger listed: %+v %v", listed, err)
	}
	pushed, err := c.PushEvent(ctx, queue+":built", map[string]string{"sha": "abc"}, "")
	if err != nil || len(pushed.Added) != 1 || pushed.Added[0].Queue != queue {
		t.Fatalf("want one job added: %+v %v", pushed, err)
	}
	job, err := c.GetJob(ctx, queue, pushed.Added[0].ID)
	if err != nil || job.Name != "announce" || string(job.Data) != `{"sha":"abc"}` || job.Priority != qm.PriorityHigh {
		t.Fatalf("want the trigger's job with the event's data: %+v %v", job, err)
	}
	if _, err := c.DeleteEventTrigger(ctx, queue); err != nil {
		t.Fatalf("DeleteEventTrigger: %v", err)
	}
	if pushed, err := c.PushEvent(ctx, queue+":built", nil, ""); err != nil || len(pushed.Added) != 0 {
		t.Fatalf("want no job once the trigger is deleted: %+v %v", pushed, err)
	}
	if _, err := c.DeleteEventTrigger(ctx, queue); !errors.Is(err, qm.ErrNotFound) {
		t.Fatalf("want ErrNotFound for a deleted trigger, got %v", err)
	}
	_, _, err = c.UpsertEventTrigger(ctx, &qm.EventTrigger{ID: "x", KeyPattern: "a*b", Queue: queue, JobName: "j"})
	if !errors.Is(err, qm.ErrInvalidArgument) {
		t.Fatalf("want ErrInvalidArgument for a star in the middle, got %v", err)
	}
}
