package queuemanager_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	qm "github.com/queue-manager/queue-manager/clients/go/queuemanager"
)

// splitAddressEnv names an address whose worker streams reach one server and every other call another, both
// on one Redis (tests/test_client_go.py starts them behind tests/split_proxy.py); the streams' server bounds
// a worker's credits to 4 (--max-worker-credits).
const splitAddressEnv = "QM_TEST_SPLIT_ADDRESS"

// parkedJobs is well past the streams' server's bound of credits (--max-worker-credits 4).
const parkedJobs = 16

// TestParkedRunsThroughAnotherServerFreeTheirLeases: the worker's WaitForEvent and WaitForChildren calls
// reach another server than its stream, which learns that those runs ended only from the reports' parked
// items. Without them it kept counting the parked leases against the worker's credits and stopped
// delivering once four had parked.
func TestParkedRunsThroughAnotherServerFreeTheirLeases(t *testing.T) {
	t.Parallel()
	address := os.Getenv(splitAddressEnv)
	if address == "" {
		t.Skipf("%s is not set: run these tests through tests/test_client_go.py", splitAddressEnv)
	}
	c := dial(t, address)
	ctx := testContext(t)
	events := newQueue(t, c, nil)
	parents := newQueue(t, c, nil)
	children := newQueue(t, c, nil) // no worker takes these: every parent stays parked
	type step struct{ I int }
	startWorker(t, c, qm.WorkerConfig{Concurrency: 2, Handlers: map[string]qm.Handler{
		events: func(ctx context.Context, job *qm.Job) (any, error) {
			var in step
			if err := job.Decode(&in); err != nil {
				return nil, err
			}
			return nil, job.WaitForEvent(ctx, []string{fmt.Sprintf("%s:go:%d", events, in.I)}, nil)
		},
		parents: func(ctx context.Context, job *qm.Job) (any, error) {
			return nil, job.WaitForChildren(ctx, []qm.ChildSpec{{Queue: children, Name: "part"}}, nil)
		},
	}})
	jobs := make([]qm.NewJob, parkedJobs)
	for i := range jobs {
		jobs[i] = qm.NewJob{Name: "x", Data: step{I: i}}
	}
	for _, queue := range []string{events, parents} {
		if _, err := c.AddBulk(ctx, queue, jobs); err != nil {
			t.Fatalf("AddBulk(%s): %v", queue, err)
		}
	}
	for _, queue := range []string{events, parents} {
		var delayed uint64
		for delayed != parkedJobs {
			metrics, err := c.GetQueueMetrics(ctx, queue)
			if err != nil {
				t.Fatalf("only %d of %d jobs of %s parked (the worker stopped getting jobs): %v",
					delayed, parkedJobs, queue, err)
			}
			delayed = metrics.Delayed
			time.Sleep(20 * time.Millisecond)
		}
	}
}
