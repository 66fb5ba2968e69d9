package queuemanager_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	qm "github.com/queue-manager/queue-manager/clients/go/queuemanager"
)

func TestRedriveAndRetryWithDataRunFailedJobsAgain(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	ctx := testContext(t)
	dlq := newQueue(t, c, nil)
	queue := dlq + "-src"
	if _, _, err := c.RegisterQueue(ctx, queue, &qm.QueueConfig{DeadLetterQueue: dlq}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = c.ObliterateQueue(context.Background(), queue, true) })
	// The copy reaches the dead-letter queue after the failure: its ADDED event says when.
	copies, err := c.WatchJobEvents(ctx, dlq, qm.EventFilter{Types: []qm.JobEventType{qm.EventAdded}})
	if err != nil {
		t.Fatal(err)
	}
	defer copies.Close()

	var mu sync.Mutex
	runs := map[string]int{}
	startWorker(t, c, qm.WorkerConfig{Handlers: map[string]qm.Handler{
		queue: func(ctx context.Context, job *qm.Job) (any, error) {
			mu.Lock()
			runs[job.ID]++
			first := runs[job.ID] == 1
			mu.Unlock()
			if first {
				return nil, qm.Unrecoverable(errors.New("bad input"))
			}
			var data struct{ N int }
			return data.N, job.Decode(&data)
		},
	}})

	redriven := add(t, c, queue, "charge", map[string]int{"n": 1}, nil)
	if done := waitFinished(t, c, queue, redriven.ID); done.State != qm.StateFailed {
		t.Fatalf("the first run must fail the job for good: %+v", done)
	}
	if ev, err := copies.Recv(); err != nil || ev.JobID != queue+":"+redriven.ID {
		t.Fatalf("want the dead-letter copy %s:%s added: %v %+v", queue, redriven.ID, err, ev)
	}
	result, err := c.RedriveDeadLetters(ctx, dlq, qm.RedriveOptions{OriginalQueue: queue})
	if err != nil || result.Count != 1 || result.Queues[queue] != (qm.RedrivenQueue{Count: 1, Retried: 1}) {
		t.Fatalf("RedriveDeadLetters must run the failed original again: %v %+v", err, result)
	}
	var n int
	if done := waitFinished(t, c, queue, redriven.ID); done.State != qm.StateCompleted || done.DecodeResult(&n) != nil ||
		n != 1 {
		t.Fatalf("the redriven job must complete with its data: %+v", done)
	}
	if _, err := c.GetJob(ctx, dlq, queue+":"+redriven.ID); !errors.Is(err, qm.ErrNotFound) {
		t.Fatalf("the copy must leave the dead-letter queue: %v", err)
	}

	edited := add(t, c, queue, "charge", map[string]int{"n": 2}, nil)
	if done := waitFinished(t, c, queue, edited.ID); done.State != qm.StateFailed {
		t.Fatalf("the first run must fail the job for good: %+v", done)
	}
	if _, err := c.RetryJobWithData(ctx, queue, edited.ID, nil); err == nil {
		t.Fatal("RetryJobWithData without data must be refused")
	}
	var data struct{ N int }
	if job, err := c.RetryJobWithData(ctx, queue, edited.ID, map[string]int{"n": 5}); err != nil ||
		job.State.Finished() || job.Decode(&data) != nil || data.N != 5 {
		// Waiting, or active already: the worker may take it before the answer is read.
		t.Fatalf("RetryJobWithData must run the job again with the new data: %v %+v", err, job)
	}
	if done := waitFinished(t, c, queue, edited.ID); done.State != qm.StateCompleted || done.DecodeResult(&n) != nil ||
		n != 5 {
		t.Fatalf("the retried job must run with the new data: %+v", done)
	}
	if _, err := c.RedriveDeadLetters(ctx, queue+"-missing", qm.RedriveOptions{}); !errors.Is(err, qm.ErrNotFound) {
		t.Fatalf("RedriveDeadLetters of an unknown queue: want ErrNotFound, got %v", err)
	}
}
