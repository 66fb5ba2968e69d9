package queuemanager_test

import (
	"errors"
	"testing"
	"time"

	qm "github.com/queue-manager/queue-manager/clients/go/queuemanager"
)

// TestPullWorkerFetchesCompletesAndFails: FetchJobs leases jobs without a stream; a PulledJob extends its
// lease, reports progress and completes, another fails and is fetched again, and a late completion after
// the job finished is refused as a lost lease.
func TestPullWorkerFetchesCompletesAndFails(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	ctx := testContext(t)
	q := newQueue(t, c, nil)
	a := add(t, c, q, "a", map[string]int{"n": 1}, nil)
	b := add(t, c, q, "b", nil, &qm.JobOptions{Attempts: 2})
	jobs, err := c.FetchJobs(ctx, q, qm.FetchOptions{MaxJobs: 5, WorkerName: "go-pull"})
	if err != nil || len(jobs) != 2 {
		t.Fatalf("FetchJobs: %v, %d jobs", err, len(jobs))
	}
	first, second := jobs[0], jobs[1]
	var data map[string]int
	if err := first.Decode(&data); err != nil || data["n"] != 1 || first.ID != a.ID || second.ID != b.ID {
		t.Fatalf("fetched %s %v (%v), %s", first.ID, data, err, second.ID)
	}
	before := first.LeaseExpires
	if until, err := first.ExtendLease(ctx, 2*time.Minute); err != nil || !until.After(before) {
		t.Fatalf("ExtendLease: %v, %s (was %s)", err, until, before)
	}
	if err := first.ReportProgress(ctx, 50, "half way"); err != nil {
		t.Fatalf("ReportProgress: %v", err)
	}
	if err := first.Complete(ctx, "done"); err != nil {
		t.Fatalf("Complete: %v", err)
	}
	if out, err := second.Fail(ctx, "boom", nil); err != nil || !out.WillRetry {
		t.Fatalf("Fail: %+v, %v", out, err)
	}
	again, err := c.FetchJobs(ctx, q, qm.FetchOptions{})
	if err != nil || len(again) != 1 || again[0].ID != b.ID || again[0].AttemptsMade != 1 {
		t.Fatalf("FetchJobs again: %v, %+v", err, again)
	}
	if out, err := again[0].Fail(ctx, "boom again", nil); err != nil || out.WillRetry {
		t.Fatalf("last Fail: %+v, %v", out, err)
	}
	if err := first.Complete(ctx, "late"); !errors.Is(err, qm.ErrFailedPrecondition) {
		t.Fatalf("late Complete: %v, want ErrFailedPrecondition", err)
	}
	if got, err := c.GetJob(ctx, q, a.ID); err != nil || got.State != qm.StateCompleted {
		t.Fatalf("GetJob: %v, %+v", err, got)
	}
}

// TestPullLongPollAnswersAJobAddedWhileItWaits: a fetch that waits answers as soon as a job is added (the
// server wakes it); one that nothing wakes answers empty at its deadline; bad options and an unknown queue
// are refused.
func TestPullLongPollAnswersAJobAddedWhileItWaits(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	ctx := testContext(t)
	q := newQueue(t, c, nil)
	got := make(chan []*qm.PulledJob, 1)
	go func() {
		jobs, err := c.FetchJobs(ctx, q, qm.FetchOptions{Wait: 20 * time.Second})
		if err != nil {
			t.Errorf("FetchJobs: %v", err)
		}
		got <- jobs
	}()
	job := add(t, c, q, "late", nil, nil)
	if jobs := receive(t, got, "the long poll's answer"); len(jobs) != 1 || jobs[0].ID != job.ID {
		t.Fatalf("long poll answered %+v", jobs)
	}
	if jobs, err := c.FetchJobs(ctx, q, qm.FetchOptions{Wait: 200 * time.Millisecond}); err != nil || len(jobs) != 0 {
		t.Fatalf("empty long poll: %v, %d jobs", err, len(jobs))
	}
	if _, err := c.FetchJobs(ctx, q, qm.FetchOptions{MaxJobs: 1001}); err == nil {
		t.Fatal("MaxJobs 1001 was not refused")
	}
	if _, err := c.FetchJobs(ctx, q, qm.FetchOptions{Wait: time.Minute}); err == nil {
		t.Fatal("a wait of a minute was not refused")
	}
	if _, err := c.FetchJobs(ctx, q, qm.FetchOptions{Lease: time.Millisecond}); !errors.Is(err, qm.ErrInvalidArgument) {
		t.Fatalf("a lease of 1 ms: %v, want ErrInvalidArgument", err)
	}
	if _, err := c.FetchJobs(ctx, q+"-nowhere", qm.FetchOptions{}); !errors.Is(err, qm.ErrNotFound) {
		t.Fatalf("unknown queue: %v, want ErrNotFound", err)
	}
}
