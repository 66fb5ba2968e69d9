package queuemanager_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"

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

// streamEvents records, through a stream interceptor, when the worker half-closes its stream
// ("half-closed") and when it reads the stream's end ("ended"), in the order they happen.
type streamEvents chan string

func (e streamEvents) intercept(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string,
	streamer grpc.Streamer, opts ...grpc.CallOption,
) (grpc.ClientStream, error) {
	stream, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil || !strings.HasSuffix(method, "/Connect") {
		return stream, err
	}
	return &watchedStream{ClientStream: stream, events: e}, nil
}

type watchedStream struct {
	grpc.ClientStream
	events streamEvents
	ended  sync.Once
}

func (s *watchedStream) note(event string) {
	select {
	case s.events <- event:
	default:
	}
}

func (s *watchedStream) CloseSend() error {
	err := s.ClientStream.CloseSend()
	s.note("half-closed")
	return err
}

func (s *watchedStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err != nil {
		s.ended.Do(func() { s.note("ended") })
	}
	return err
}

func TestDrainFinishesRunsAndReconnects(t *testing.T) {
	address := os.Getenv(drainAddressEnv)
	if address == "" {
		t.Skipf("%s is not set: tests/test_client_go.py runs this test with a server it restarts", drainAddressEnv)
	}
	events := make(streamEvents, 100)
	c := dial(t, address, qm.WithDialOptions(grpc.WithStreamInterceptor(events.intercept)))
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
	// Another worker (on its own connection) holds a job through the drain: the server keeps every stream
	// open while any worker holds a lease, so the first worker's stream can end early only because that
	// worker half-closed it once its run was done.
	other := dial(t, address)
	held := newQueue(t, other, nil)
	holding := make(chan struct{}, 1)
	releaseHeld := make(chan struct{})
	startWorker(t, other, qm.WorkerConfig{Handlers: map[string]qm.Handler{
		held: func(context.Context, *qm.Job) (any, error) {
			holding <- struct{}{}
			<-releaseHeld
			return nil, nil
		},
	}})
	heldJob := add(t, other, held, "held", nil, nil)
	receive(t, holding, "the held run")
	long := add(t, c, queue, "long", nil, nil)
	receive(t, started, "the long run")
	fmt.Println("DRAIN-READY")
	for receive(t, logs.messages, "the drain command") != "the server asks to drain" {
	}
	close(release) // the run finishes on the draining stream
	first := receive(t, events, "the worker to half-close its drained stream")
	second := receive(t, events, "the drained stream to end")
	if first != "half-closed" || second != "ended" {
		t.Fatalf("once its runs are done the worker must half-close its drained stream, then the server ends "+
			"it: got %q then %q", first, second)
	}
	close(releaseHeld)
	restarted := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
		restarted <- strings.TrimSpace(line)
	}()
	if line := receive(t, restarted, "the driver to restart the server"); line != "RESTARTED" {
		t.Fatalf("the driver said %q", line)
	}
	fresh := dial(t, address)
	for _, ran := range []struct{ queue, id string }{{queue, long.ID}, {held, heldJob.ID}} {
		job, err := fresh.GetJob(testContext(t), ran.queue, ran.id)
		if err != nil || job.State != qm.StateCompleted || job.StalledCount != 0 {
			t.Fatalf("the run must complete on the draining stream, without a stall: %v %+v", err, job)
		}
	}
	after := add(t, fresh, queue, "after", nil, nil)
	if job := waitFinished(t, fresh, queue, after.ID); job.State != qm.StateCompleted ||
		string(job.Result) != `"after"` {
		t.Fatalf("the worker must reconnect to the restarted server and run new jobs: %+v", job)
	}
}
