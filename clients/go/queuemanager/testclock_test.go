package queuemanager_test

import (
	"errors"
	"os"
	"testing"
	"time"

	qm "github.com/queue-manager/queue-manager/clients/go/queuemanager"
)

// clockServer is a server on the test clock, alone on its key prefix (tests/test_client_go.py).
func clockServer(t *testing.T) *qm.Client {
	t.Helper()
	address := os.Getenv("QM_TEST_CLOCK_ADDRESS")
	if address == "" {
		t.Skip("QM_TEST_CLOCK_ADDRESS is not set: run these tests through tests/test_client_go.py")
	}
	return dial(t, address)
}

// TestAdvanceTestClockRunsADelayedJobWithoutWaiting: a job delayed a day stays delayed after 23 hours of
// the test server's clock and is waiting after one more, and the clock reads the time it was moved to.
func TestAdvanceTestClockRunsADelayedJobWithoutWaiting(t *testing.T) {
	c := clockServer(t)
	ctx := testContext(t)
	queue := newQueue(t, c, nil)
	start, err := c.TestClockNow(ctx)
	if err != nil {
		t.Fatalf("TestClockNow: %v", err)
	}
	job := add(t, c, queue, "remind", map[string]any{"to": "a@example.com"}, &qm.JobOptions{Delay: 24 * time.Hour})
	if _, err := c.AdvanceTestClock(ctx, 23*time.Hour); err != nil {
		t.Fatalf("AdvanceTestClock: %v", err)
	}
	if got, err := c.GetJob(ctx, queue, job.ID); err != nil || got.State != qm.StateDelayed {
		t.Fatalf("after 23 h the job must still be delayed: %v %+v", err, got)
	}
	now, err := c.AdvanceTestClock(ctx, time.Hour)
	if err != nil {
		t.Fatalf("AdvanceTestClock: %v", err)
	}
	if got, err := c.GetJob(ctx, queue, job.ID); err != nil || got.State != qm.StateWaiting {
		t.Fatalf("after 24 h the job must be waiting: %v %+v", err, got)
	}
	if moved := now.Sub(start); moved < 24*time.Hour || moved > 24*time.Hour+time.Minute {
		t.Fatalf("the clock moved %v, want 24 h", moved)
	}
	if _, err := c.AdvanceTestClock(ctx, -time.Second); err == nil || errors.Is(err, qm.ErrFailedPrecondition) {
		t.Fatalf("a negative move must be refused before the call: %v", err)
	}
}

// TestAdvanceTestClockIsRefusedOnRealTime: a server on real time refuses to move or read a test clock.
func TestAdvanceTestClockIsRefusedOnRealTime(t *testing.T) {
	c := newClient(t)
	ctx := testContext(t)
	if _, err := c.AdvanceTestClock(ctx, time.Hour); !errors.Is(err, qm.ErrFailedPrecondition) {
		t.Fatalf("AdvanceTestClock on a real-time server: want ErrFailedPrecondition, got %v", err)
	}
	if _, err := c.TestClockNow(ctx); !errors.Is(err, qm.ErrFailedPrecondition) {
		t.Fatalf("TestClockNow on a real-time server: want ErrFailedPrecondition, got %v", err)
	}
}
