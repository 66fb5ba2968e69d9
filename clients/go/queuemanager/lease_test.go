package queuemanager_test

import (
	"context"
	"errors"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	qm "github.com/queue-manager/queue-manager/clients/go/queuemanager"
)

// leaseEnv is the test server's lease duration in milliseconds (tests/test_client_go.py makes it short,
// so that a run outlives several leases in little time).
const leaseEnv = "QM_TEST_LEASE_MS"

func serverLease(t *testing.T) time.Duration {
	t.Helper()
	ms, err := strconv.Atoi(os.Getenv(leaseEnv))
	if err != nil || ms <= 0 {
		t.Skipf("%s is not set: run through tests/test_client_go.py", leaseEnv)
	}
	return time.Duration(ms) * time.Millisecond
}

func TestHeartbeatsKeepALongRunLeased(t *testing.T) {
	t.Parallel()
	lease := serverLease(t)
	c := newClient(t)
	queue := newQueue(t, c, nil)
	var runs atomic.Int32
	startWorker(t, c, qm.WorkerConfig{Concurrency: 1, Handlers: map[string]qm.Handler{
		queue: func(ctx context.Context, job *qm.Job) (any, error) {
			runs.Add(1)
			select {
			case <-time.After(3 * lease): // the run itself outlives three leases
				return "kept", nil
			case <-ctx.Done():
				return nil, context.Cause(ctx)
			}
		},
	}})
	job := waitFinished(t, c, queue, add(t, c, queue, "long", nil, nil).ID)
	if job.State != qm.StateCompleted || job.StalledCount != 0 || runs.Load() != 1 {
		t.Fatalf("a run extended by heartbeats must keep its lease: %s, stalled %d, runs %d (%s)",
			job.State, job.StalledCount, runs.Load(), job.FailedReason)
	}
}

func TestRejectedExtensionStopsTheRun(t *testing.T) {
	t.Parallel()
	serverLease(t)
	c := newClient(t)
	queue := newQueue(t, c, nil)
	started := make(chan struct{}, 1)
	cause := make(chan error, 1)
	startWorker(t, c, qm.WorkerConfig{Concurrency: 1, Handlers: map[string]qm.Handler{
		queue: func(ctx context.Context, job *qm.Job) (any, error) {
			started <- struct{}{}
			<-ctx.Done()
			cause <- context.Cause(ctx)
			return nil, nil
		},
	}})
	add(t, c, queue, "doomed", nil, nil)
	receive(t, started, "the run to start")
	// The job is gone: the next heartbeat's extension is rejected, so the lease is lost.
	if _, err := c.ObliterateQueue(testContext(t), queue, true); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, cause, "the run's context to end"); !errors.Is(got, qm.ErrLeaseLost) {
		t.Fatalf("the run's context ended with %v, want ErrLeaseLost", got)
	}
}
