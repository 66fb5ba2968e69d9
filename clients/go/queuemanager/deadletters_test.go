package queuemanager_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	qm "github.com/queue-manager/queue-manager/clients/go/queuemanager"
)

func TestRedriveAndRetryWithDataRunFailedJobsAgain(t *testing.T) {
	t.Parallel()
	c, ctx, dlq, queue, copies := failOnceWithCopies(t)
	defer copies.Close()

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
	// nil is new data too: JSON null, as AddJob stores nil (RetryJob keeps the job's data).
	nulled := add(t, c, queue, "charge", map[string]int{"n": 3}, nil)
	if done := waitFinished(t, c, queue, nulled.ID); done.State != qm.StateFailed {
		t.Fatalf("the first run must fail the job for good: %+v", done)
	}
	if job, err := c.RetryJobWithData(ctx, queue, nulled.ID, nil); err != nil || string(job.Data) != "null" {
		t.Fatalf("RetryJobWithData(nil) must run the job again with JSON null: %v %+v", err, job)
	}
	if _, err := c.RedriveDeadLetters(ctx, queue+"-missing", qm.RedriveOptions{}); !errors.Is(err, qm.ErrNotFound) {
		t.Fatalf("RedriveDeadLetters of an unknown queue: want ErrNotFound, got %v", err)
	}
}

func TestRedriveWithDataRunsTheOriginalWithItInOneCall(t *testing.T) {
	t.Parallel()
	c, ctx, dlq, queue, copies := failOnceWithCopies(t)
	defer copies.Close()
	ids := make([]string, 2)
	for i := range ids {
		job := add(t, c, queue, "charge", map[string]int{"n": i + 1}, nil)
		if done := waitFinished(t, c, queue, job.ID); done.State != qm.StateFailed {
			t.Fatalf("the first run must fail the job for good: %+v", done)
		}
		if _, err := copies.Recv(); err != nil {
			t.Fatal(err)
		}
		ids[i] = queue + ":" + job.ID
	}
	// Refused with two copies: neither changes.
	opts := qm.RedriveOptions{JobIDs: ids, Data: map[string]int{"n": 7}}
	if _, err := c.RedriveDeadLetters(ctx, dlq, opts); !errors.Is(err, qm.ErrInvalidArgument) ||
		!strings.Contains(err.Error(), "data") {
		t.Fatalf("Data with two copies: want ErrInvalidArgument naming data, got %v", err)
	}
	for i, id := range ids {
		job, err := c.GetJob(ctx, dlq, id)
		if err != nil {
			t.Fatal(err)
		}
		if d, ok := qm.DeadLetterFromJob(job); !ok || string(d.OriginalData) != fmt.Sprintf(`{"n":%d}`, i+1) {
			t.Fatalf("a refused redrive must leave the copy as it was: %+v", d)
		}
	}
	opts.JobIDs = ids[:1]
	result, err := c.RedriveDeadLetters(ctx, dlq, opts)
	if err != nil || result.Count != 1 || result.Queues[queue] != (qm.RedrivenQueue{Count: 1, Retried: 1}) {
		t.Fatalf("RedriveDeadLetters with Data must run the failed original again: %v %+v", err, result)
	}
	var n int
	original := strings.TrimPrefix(ids[0], queue+":")
	if done := waitFinished(t, c, queue, original); done.State != qm.StateCompleted || done.DecodeResult(&n) != nil ||
		n != 7 {
		t.Fatalf("the redriven job must run with the new data: %+v", done)
	}
}

func TestListDeadLettersReadsEachCopy(t *testing.T) {
	t.Parallel()
	c, ctx, dlq, queue, copies := queueWithCopies(t)
	defer copies.Close()
	startWorker(t, c, qm.WorkerConfig{Handlers: map[string]qm.Handler{
		queue: func(ctx context.Context, job *qm.Job) (any, error) {
			return nil, qm.Unrecoverable(errors.New("no " + job.Name))
		},
	}})
	stranger := add(t, c, dlq, "not-a-copy", map[string]int{"n": 1}, nil) // added directly: left out
	if _, err := copies.Recv(); err != nil {
		t.Fatal(err)
	}
	charge := add(t, c, queue, "charge", map[string]int{"amount": 5}, nil)
	blob := add(t, c, queue, "blob", []byte{0, 1, 254}, nil)
	for range 2 {
		if _, err := copies.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	page, err := c.ListDeadLetters(ctx, dlq, 0, 10, "")
	if err != nil || page.NextPageToken != "" || page.Total != 3 || len(page.DeadLetters) != 2 {
		t.Fatalf("want the two copies of three jobs: %v %+v", err, page)
	}
	byName := map[string]*qm.DeadLetter{}
	for _, d := range page.DeadLetters {
		byName[d.OriginalName] = d
	}
	got := byName["charge"]
	if got == nil || got.ID != queue+":"+charge.ID || got.State != qm.StateWaiting || got.OriginalQueue != queue ||
		got.OriginalJobID != charge.ID || string(got.OriginalData) != `{"amount":5}` ||
		got.OriginalContentType != qm.ContentTypeJSON || !strings.Contains(got.FailureReason, "no charge") ||
		got.AttemptsMade != 1 || got.DeadTime.IsZero() {
		t.Fatalf("the JSON job's copy: %+v", got)
	}
	if got := byName["blob"]; got == nil || got.OriginalJobID != blob.ID || string(got.OriginalData) != "\x00\x01\xfe" ||
		got.OriginalContentType != "application/octet-stream" {
		t.Fatalf("the bytes job's copy: %+v", got)
	}
	job, err := c.GetJob(ctx, dlq, stranger.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := qm.DeadLetterFromJob(job); ok {
		t.Fatal("a job added to the dead-letter queue directly is no copy")
	}
	if failed, err := c.ListDeadLetters(ctx, dlq, qm.StateFailed, 0, ""); err != nil || len(failed.DeadLetters) != 0 {
		t.Fatalf("no copy is failed: %v %+v", err, failed)
	}
	if _, err := c.ListDeadLetters(ctx, dlq+"-missing", 0, 0, ""); !errors.Is(err, qm.ErrNotFound) {
		t.Fatalf("an unknown queue: want ErrNotFound, got %v", err)
	}
}

// failOnceWithCopies makes a queue whose dead-letter queue is its own, and a worker whose handler fails
// each job's first run for good (Unrecoverable) and returns its data's N on a later run; copies follows
// the copies' ADDED events in the dead-letter queue (a copy arrives there after its failure).
func failOnceWithCopies(t *testing.T) (*qm.Client, context.Context, string, string, *qm.JobEventStream) {
	t.Helper()
	c, ctx, dlq, queue, copies := queueWithCopies(t)
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
	return c, ctx, dlq, queue, copies
}

// queueWithCopies makes a queue (returned) whose dead-letter queue (dlq) is its own, and follows the ADDED
// events of the dead-letter queue (copies; the caller closes it).
func queueWithCopies(t *testing.T) (c *qm.Client, ctx context.Context, dlq, queue string, copies *qm.JobEventStream) {
	t.Helper()
	c = newClient(t)
	ctx = testContext(t)
	dlq = newQueue(t, c, nil)
	queue = dlq + "-src"
	if _, _, err := c.RegisterQueue(ctx, queue, &qm.QueueConfig{DeadLetterQueue: dlq}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = c.ObliterateQueue(context.Background(), queue, true) })
	copies, err := c.WatchJobEvents(ctx, dlq, qm.EventFilter{Types: []qm.JobEventType{qm.EventAdded}})
	if err != nil {
		t.Fatal(err)
	}
	return c, ctx, dlq, queue, copies
}
