package queuemanager_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"

	qm "github.com/queue-manager/queue-manager/clients/go/queuemanager"
)

// drainAddressEnv names the server of TestDrainFinishesRunsAndReconnects, which tests/test_client_go.py
// stops (the server sends DRAIN) and starts again on the same address while the test runs; the test
// says "DRAIN-READY" on stdout when its job is running, and the driver answers "RESTARTED" on stdin.
const drainAddressEnv = "QM_TEST_DRAIN_ADDRESS"

// recordedLogs is a slog handler that passes each message to a channel.
type recordedLogs struct{ messages chan string }

func (h recordedLogs) Enabled(context.Context, slog.Level) bool { return true }
func (h recordedLogs) Handle(_ context.Context, r slog.Record) error {
	select {
	case h.messages <- r.Message:
	default:
	}
	return nil
}
func (h recordedLogs) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h recordedLogs) WithGroup(string) slog.Handler      { return h }

func TestDrainFinishesRunsAndReconnects(t *testing.T) {
	address := os.Getenv(drainAddressEnv)
	if address == "" {
		t.Skipf("%s is not set: tests/test_client_go.py runs this test with a server it restarts", drainAddressEnv)
	}
	c := dial(t, address)
	queue := newQueue(t, c, nil)
	logs := recordedLogs{messages: make(chan string, 100)}
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	startWorker(t, c, qm.WorkerConfig{Concurrency: 2, Logger: slog.New(logs), Handlers: map[string]qm.Handler{
		queue: func(ctx context.Context, job *qm.Job) (any, error) {
			if job.Name == "long" {
				started <- struct{}{}
				<-release
			}
			return job.Name, nil
		},
	}})
	long := add(t, c, queue, "long", nil, nil)
	receive(t, started, "the long run")
	fmt.Println("DRAIN-READY")
	for receive(t, logs.messages, "the drain command") != "the server asks to drain" {
	}
	close(release) // the run finishes on the draining stream
	restarted := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
		restarted <- strings.TrimSpace(line)
	}()
	if line := receive(t, restarted, "the driver to restart the server"); line != "RESTARTED" {
		t.Fatalf("the driver said %q", line)
	}
	fresh := dial(t, address)
	job, err := fresh.GetJob(testContext(t), queue, long.ID)
	if err != nil || job.State != qm.StateCompleted || job.StalledCount != 0 {
		t.Fatalf("the run must complete on the draining stream, without a stall: %v %+v", err, job)
	}
	after := add(t, fresh, queue, "after", nil, nil)
	if job := waitFinished(t, fresh, queue, after.ID); job.State != qm.StateCompleted ||
		string(job.Result) != `"after"` {
		t.Fatalf("the worker must reconnect to the restarted server and run new jobs: %+v", job)
	}
}
