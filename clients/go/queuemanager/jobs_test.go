package queuemanager_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	qm "github.com/queue-manager/queue-manager/clients/go/queuemanager"
)

func TestAddBulkOverOneMessageLimit(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	queue := newQueue(t, c, nil)
	// 17 jobs of about 1 MB each: each is under the payload limit, all of them are over the transport's 16 MiB
	// limit of one message, so the client must split them by size as well as by count.
	data := strings.Repeat("a", 1_000_000)
	jobs := make([]qm.NewJob, 17)
	for i := range jobs {
		jobs[i] = qm.NewJob{Name: "big", Data: data}
	}
	bulk, err := c.AddBulk(testContext(t), queue, jobs)
	if err != nil || len(bulk.JobIDs) != 17 || bulk.Created != 17 {
		t.Fatalf("AddBulk of 17 MB: %v %+v", err, bulk)
	}
	last, err := c.GetJob(testContext(t), queue, bulk.JobIDs[16])
	var got string
	if err != nil || last.Decode(&got) != nil || got != data {
		t.Fatalf("the last job must hold its data: %v", err)
	}
}

func TestAddJobBatchKeepsEachOutcome(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	queue := newQueue(t, c, nil)
	outcomes, err := c.AddJobBatch(testContext(t), []qm.BatchJob{
		{Queue: queue, NewJob: qm.NewJob{Name: "first", Data: map[string]int{"n": 1}}},
		{Queue: queue + "-missing", NewJob: qm.NewJob{Name: "lost"}},
		{Queue: queue, NewJob: qm.NewJob{Name: ""}},
		{Queue: queue, NewJob: qm.NewJob{Name: "kept", Options: &qm.JobOptions{JobID: "batch-1", Attempts: 3}}},
		{Queue: queue, NewJob: qm.NewJob{Name: "again", Options: &qm.JobOptions{JobID: "batch-1"}}},
	})
	if err != nil || len(outcomes) != 5 {
		t.Fatalf("AddJobBatch: %v %+v", err, outcomes)
	}
	first, missing, unnamed, kept, again := outcomes[0], outcomes[1], outcomes[2], outcomes[3], outcomes[4]
	var n struct{ N int }
	if first.Err != nil || !first.Job.Created || first.Job.Queue != queue || first.Job.Decode(&n) != nil || n.N != 1 {
		t.Fatalf("the valid job must be added: %+v %v", first.Job, first.Err)
	}
	if missing.Job != nil || !errors.Is(missing.Err, qm.ErrNotFound) {
		t.Fatalf("a job of an unknown queue must fail alone with ErrNotFound: %+v", missing)
	}
	var refused *qm.Error
	if unnamed.Job != nil || !errors.Is(unnamed.Err, qm.ErrInvalidArgument) || !errors.As(unnamed.Err, &refused) ||
		!strings.Contains(refused.Message, "name") {
		t.Fatalf("a job without a name must fail alone with ErrInvalidArgument naming the field: %+v", unnamed)
	}
	if kept.Err != nil || !kept.Job.Created || kept.Job.ID != "batch-1" || kept.Job.MaxAttempts != 3 {
		t.Fatalf("the job with options must be added with them: %+v %v", kept.Job, kept.Err)
	}
	if again.Err != nil || again.Job.Created || again.Job.ID != "batch-1" || again.Job.Name != "kept" {
		t.Fatalf("a taken job id must answer the existing job with Created false: %+v %v", again.Job, again.Err)
	}
	page, err := c.ListJobs(testContext(t), queue, qm.StateWaiting, 0, "")
	if err != nil || page.Total != 2 {
		t.Fatalf("two jobs must be stored: %v %+v", err, page)
	}
	tooMany := make([]qm.BatchJob, 1001)
	if _, err := c.AddJobBatch(testContext(t), tooMany); err == nil || !strings.Contains(err.Error(), "at most 1000") {
		t.Fatalf("1,001 jobs must be refused before sending: %v", err)
	}
}

func TestGetJobLogsPagesThroughTheLog(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	queue := newQueue(t, c, nil)
	startWorker(t, c, qm.WorkerConfig{Handlers: map[string]qm.Handler{
		queue: func(ctx context.Context, job *qm.Job) (any, error) {
			for i := range 5 {
				job.Log(fmt.Sprintf("line %d", i))
			}
			return nil, nil
		},
	}})
	job := add(t, c, queue, "logged", nil, nil)
	if done := waitFinished(t, c, queue, job.ID); done.State != qm.StateCompleted {
		t.Fatalf("the job must complete: %+v", done)
	}
	var lines []string
	token := ""
	for pages := 0; ; pages++ {
		page, err := c.GetJobLogs(testContext(t), queue, job.ID, 2, token)
		if err != nil || page.Total != 5 || len(page.Lines) > 2 || pages > 3 {
			t.Fatalf("GetJobLogs page %d: %v %+v", pages, err, page)
		}
		for _, line := range page.Lines {
			if line.Time.IsZero() {
				t.Fatalf("a line without its time: %+v", line)
			}
			lines = append(lines, line.Message)
		}
		if token = page.NextPageToken; token == "" {
			break
		}
	}
	if want := []string{"line 0", "line 1", "line 2", "line 3", "line 4"}; !slices.Equal(lines, want) {
		t.Fatalf("the log, oldest first: %q, want %q", lines, want)
	}
	if _, err := c.GetJobLogs(testContext(t), queue, "no-such-job", 0, ""); !errors.Is(err, qm.ErrNotFound) {
		t.Fatalf("GetJobLogs of an unknown job: want ErrNotFound, got %v", err)
	}
	if _, err := c.GetJobLogs(testContext(t), queue, job.ID, -1, ""); err == nil {
		t.Fatal("a negative page size must be refused")
	}
}

func TestRetryFailedJobsRunsThemAgain(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	queue := newQueue(t, c, nil)
	var mu sync.Mutex
	runs := map[string]int{}
	startWorker(t, c, qm.WorkerConfig{Handlers: map[string]qm.Handler{
		queue: func(ctx context.Context, job *qm.Job) (any, error) {
			mu.Lock()
			runs[job.ID]++
			first := runs[job.ID] == 1
			mu.Unlock()
			if first {
				return nil, qm.Unrecoverable(errors.New("broken the first time"))
			}
			return "fixed", nil
		},
	}})
	a, b := add(t, c, queue, "a", nil, nil), add(t, c, queue, "b", nil, nil)
	for _, job := range []*qm.Job{a, b} {
		if done := waitFinished(t, c, queue, job.ID); done.State != qm.StateFailed {
			t.Fatalf("the first run must fail the job for good: %+v", done)
		}
	}
	count, err := c.RetryFailedJobs(testContext(t), queue, 0)
	if err != nil || count != 2 {
		t.Fatalf("RetryFailedJobs must run both failed jobs again: %d %v", count, err)
	}
	for _, job := range []*qm.Job{a, b} {
		if done := waitFinished(t, c, queue, job.ID); done.State != qm.StateCompleted {
			t.Fatalf("the retried job must complete: %+v", done)
		}
	}
	cancelled := add(t, c, queue, "cancelled", nil, &qm.JobOptions{Delay: wait})
	if _, err := c.CancelJob(testContext(t), queue, cancelled.ID, "not now"); err != nil {
		t.Fatal(err)
	}
	if count, err := c.RetryFailedJobs(testContext(t), queue, qm.StateCancelled); err != nil || count != 1 {
		t.Fatalf("RetryFailedJobs(StateCancelled) must run the cancelled job again: %d %v", count, err)
	}
	if _, err := c.RetryFailedJobs(testContext(t), queue, qm.StateWaiting); !errors.Is(err, qm.ErrInvalidArgument) {
		t.Fatalf("RetryFailedJobs(StateWaiting): want ErrInvalidArgument, got %v", err)
	}
	if _, err := c.RetryFailedJobs(testContext(t), queue+"-missing", 0); !errors.Is(err, qm.ErrNotFound) {
		t.Fatalf("RetryFailedJobs of an unknown queue: want ErrNotFound, got %v", err)
	}
}

func TestJobNotStartedInTimeExpires(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	queue := newQueue(t, c, nil)
	late := add(t, c, queue, "quote", nil, &qm.JobOptions{ExpireAfter: 100 * time.Millisecond})
	if late.ExpireAfter != 100*time.Millisecond || late.ExpireTime.Sub(late.CreateTime) != 100*time.Millisecond {
		t.Fatalf("the expiry must be stored and counted from the add: %+v", late)
	}
	time.Sleep(time.Until(late.ExpireTime) + 50*time.Millisecond) // a short expiry, waited out
	var ran sync.Map
	startWorker(t, c, qm.WorkerConfig{Handlers: map[string]qm.Handler{
		queue: func(ctx context.Context, job *qm.Job) (any, error) { ran.Store(job.ID, true); return nil, nil },
	}})
	gone := waitFinished(t, c, queue, late.ID)
	if gone.State != qm.StateCancelled || !strings.HasPrefix(gone.CancelReason, "expired: not started within 100ms") {
		t.Fatalf("the expired job must end cancelled as expired: %v %q", gone.State, gone.CancelReason)
	}
	if _, did := ran.Load(late.ID); did {
		t.Fatal("an expired job must never run")
	}
	_, err := c.AddJob(testContext(t), queue, "bad", nil, &qm.JobOptions{ExpireAfter: -time.Second})
	if !errors.Is(err, qm.ErrInvalidArgument) || !strings.Contains(err.Error(), "expire_after") {
		t.Fatalf("a negative expiry must be refused naming the field: %v", err)
	}
}

func TestDedupReplaceGivesThePendingJobTheLastData(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	queue := newQueue(t, c, nil)
	debounce := func() *qm.JobOptions {
		return &qm.JobOptions{
			Delay: time.Minute, Dedup: &qm.Dedup{Key: "doc", TTL: time.Minute, Mode: qm.DedupReplace},
		}
	}
	first, err := c.AddJob(testContext(t), queue, "reindex", map[string]int{"n": 1}, debounce())
	if err != nil || !first.Created || first.Replaced || first.State != qm.StateDelayed {
		t.Fatalf("the first add must create a delayed job: %v %+v", err, first)
	}
	again, err := c.AddJob(testContext(t), queue, "again", map[string]int{"n": 2}, debounce())
	var n struct{ N int }
	if err != nil || again.Created || !again.Replaced || again.ID != first.ID || again.Name != "again" ||
		again.Decode(&n) != nil || n.N != 2 {
		t.Fatalf("a duplicate must replace the delayed job's name and data: %v %+v", err, again)
	}
	bulk, err := c.AddBulk(testContext(t), queue, []qm.NewJob{
		{Name: "b", Data: map[string]int{"n": 3}, Options: debounce()},
		{Name: "b", Data: map[string]int{"n": 4}, Options: debounce()},
	})
	if err != nil || bulk.Created != 0 || bulk.Replaced != 2 || bulk.JobIDs[0] != first.ID || bulk.JobIDs[1] != first.ID {
		t.Fatalf("each bulk duplicate must replace the job in turn: %v %+v", err, bulk)
	}
	stored, err := c.GetJob(testContext(t), queue, first.ID)
	if err != nil || stored.Decode(&n) != nil || n.N != 4 {
		t.Fatalf("the job must hold the last data: %v %+v", err, stored)
	}
	_, err = c.AddJob(testContext(t), queue, "x", nil, &qm.JobOptions{Dedup: &qm.Dedup{Key: "k", Mode: qm.DedupExtend}})
	if !errors.Is(err, qm.ErrInvalidArgument) || !strings.Contains(err.Error(), "dedup.ttl") {
		t.Fatalf("EXTEND without a TTL must be refused naming the field: %v", err)
	}
}
