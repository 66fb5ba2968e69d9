package queuemanager_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	qm "github.com/queue-manager/queue-manager/clients/go/queuemanager"
)

// stateOf is the worker's state as ListWorkers shows it ("" when it is not listed).
func stateOf(t *testing.T, c *qm.Client, queue, id string) qm.WorkerState {
	t.Helper()
	workers, err := c.ListWorkers(testContext(t), queue)
	if err != nil {
		t.Fatalf("ListWorkers: %v", err)
	}
	for _, w := range workers {
		if w.ID == id {
			return w.State
		}
	}
	return ""
}

// Operators' commands (QuietWorker, ResumeWorker, StopWorker over ControlWorker): the worker obeys QUIET
// (nothing delivered, its run in hand finishes), RESUME and STOP (Run returns by itself), and ListWorkers
// shows its state.
func TestWorkerObeysQuietResumeAndStop(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	queue := newQueue(t, c, nil)
	started := make(chan string, 4)
	release := make(chan struct{})
	w, err := c.NewWorker(qm.WorkerConfig{Concurrency: 2, Logger: quietLogger(), Handlers: map[string]qm.Handler{
		queue: func(ctx context.Context, job *qm.Job) (any, error) {
			started <- job.Name
			if job.Name == "held" {
				<-release
			}
			return job.Name, nil
		},
	}})
	if err != nil {
		t.Fatalf("NewWorker: %v", err)
	}
	ran := make(chan error, 1)
	go func() { ran <- w.Run(context.Background()) }()
	t.Cleanup(func() { _ = w.Shutdown(testContext(t)) })
	if err := w.WaitConnected(testContext(t)); err != nil {
		t.Fatalf("WaitConnected: %v", err)
	}
	if state := stateOf(t, c, queue, w.ID()); state != qm.WorkerActive {
		t.Fatalf("listed as %q before any command", state)
	}
	held := add(t, c, queue, "held", nil, nil)
	receive(t, started, "the held run")
	quiet, err := c.QuietWorker(testContext(t), w.ID())
	if err != nil || quiet.State != qm.WorkerQuiet || !quiet.Changed || quiet.Concurrency != 2 {
		t.Fatalf("QuietWorker: %v %+v", err, quiet)
	}
	if state := stateOf(t, c, queue, w.ID()); state != qm.WorkerQuiet {
		t.Fatalf("listed as %q once quiet", state)
	}
	if again, err := c.QuietWorker(testContext(t), w.ID()); err != nil || again.Changed {
		t.Fatalf("QuietWorker again: %v %+v", err, again)
	}
	close(release) // the run in hand finishes while quiet
	if job := waitFinished(t, c, queue, held.ID); job.State != qm.StateCompleted {
		t.Fatalf("the held job: %+v", job)
	}
	// A job added while it is quiet goes to another worker, although this one has free slots.
	other := startWorker(t, c, qm.WorkerConfig{Handlers: map[string]qm.Handler{
		queue: func(ctx context.Context, job *qm.Job) (any, error) { return "other", nil },
	}})
	meanwhile := add(t, c, queue, "while-quiet", nil, nil)
	if job := waitFinished(t, c, queue, meanwhile.ID); job.State != qm.StateCompleted {
		t.Fatalf("the job added while quiet: %+v", job)
	}
	if err := other.Shutdown(testContext(t)); err != nil {
		t.Fatalf("the other worker's Shutdown: %v", err)
	}
	if len(started) != 0 {
		t.Fatalf("the quiet worker ran %q", <-started)
	}
	if resumed, err := c.ResumeWorker(testContext(t), w.ID()); err != nil || resumed.State != qm.WorkerActive {
		t.Fatalf("ResumeWorker: %v %+v", err, resumed)
	}
	add(t, c, queue, "after-resume", nil, nil)
	if name := receive(t, started, "a run after RESUME"); name != "after-resume" {
		t.Fatalf("ran %q after RESUME", name)
	}
	if stopped, err := c.StopWorker(testContext(t), w.ID()); err != nil || stopped.State != qm.WorkerStopping {
		t.Fatalf("StopWorker: %v %+v", err, stopped)
	}
	if err := receive(t, ran, "Run to return after STOP"); err != nil {
		t.Fatalf("Run after STOP: %v", err)
	}
	if !w.StoppedByServer() {
		t.Fatal("StoppedByServer is false after STOP")
	}
	if state := stateOf(t, c, queue, w.ID()); state != "" {
		t.Fatalf("listed as %q after its run ended: it must not reconnect", state)
	}
}

// SetWorkerConcurrency: a higher concurrency starts more runs at once; a lower one takes effect as runs
// finish (their slots are given up, not handed back as credits).
func TestSetWorkerConcurrencyRaisesAndLowersTheRuns(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	queue := newQueue(t, c, nil)
	var mu sync.Mutex
	running := 0
	started := make(chan string, 8)
	gates := make(chan struct{}, 8)
	w := startWorker(t, c, qm.WorkerConfig{Concurrency: 1, Handlers: map[string]qm.Handler{
		queue: func(ctx context.Context, job *qm.Job) (any, error) {
			mu.Lock()
			running++
			mu.Unlock()
			started <- job.Name
			select {
			case <-gates:
			case <-ctx.Done():
			}
			mu.Lock()
			running--
			mu.Unlock()
			return nil, nil
		},
	}})
	runningNow := func() int {
		mu.Lock()
		defer mu.Unlock()
		return running
	}
	settle := func() { time.Sleep(300 * time.Millisecond) } // to see that nothing more starts
	jobs := make([]qm.NewJob, 5)
	for i := range jobs {
		jobs[i] = qm.NewJob{Name: "j"}
	}
	if _, err := c.AddBulk(testContext(t), queue, jobs); err != nil {
		t.Fatalf("AddBulk: %v", err)
	}
	receive(t, started, "the first run")
	settle()
	if n := runningNow(); n != 1 {
		t.Fatalf("%d runs at concurrency 1", n)
	}
	raised, err := c.SetWorkerConcurrency(testContext(t), w.ID(), 3)
	if err != nil || raised.Concurrency != 3 || !raised.Changed || raised.State != qm.WorkerActive {
		t.Fatalf("SetWorkerConcurrency(3): %v %+v", err, raised)
	}
	receive(t, started, "a second run once raised")
	receive(t, started, "a third run once raised")
	if got := w.Concurrency(); got != 3 {
		t.Fatalf("Concurrency() = %d after the raise", got)
	}
	if _, err := c.SetWorkerConcurrency(testContext(t), w.ID(), 1); err != nil {
		t.Fatalf("SetWorkerConcurrency(1): %v", err)
	}
	deadline := time.Now().Add(wait)
	for w.Concurrency() != 1 { // the command reached the worker before its runs finish
		if time.Now().After(deadline) {
			t.Fatal("the worker did not take the lower concurrency")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for range 3 {
		gates <- struct{}{}
	}
	receive(t, started, "a run after the decrease")
	settle()
	if n := runningNow(); n != 1 {
		t.Fatalf("%d runs at once after lowering the concurrency to 1", n)
	}
	gates <- struct{}{}
	receive(t, started, "the last run")
	if n := runningNow(); n != 1 {
		t.Fatalf("%d runs at once after lowering the concurrency to 1", n)
	}
	gates <- struct{}{}
}

// Bad arguments are refused before the call; an unknown worker is ErrNotFound.
func TestWorkerControlRefusesBadArguments(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	queue := newQueue(t, c, nil)
	w := startWorker(t, c, qm.WorkerConfig{Handlers: map[string]qm.Handler{
		queue: func(ctx context.Context, job *qm.Job) (any, error) { return nil, nil },
	}})
	for _, n := range []int{0, -1, qm.MaxConcurrency + 1} {
		_, err := c.SetWorkerConcurrency(testContext(t), w.ID(), n)
		if err == nil || !strings.Contains(err.Error(), "concurrency must be from 1 to 100000") {
			t.Fatalf("SetWorkerConcurrency(%d): %v", n, err)
		}
	}
	if _, err := c.QuietWorker(testContext(t), ""); err == nil || !strings.Contains(err.Error(), "worker id is empty") {
		t.Fatalf("QuietWorker(\"\"): %v", err)
	}
	if _, err := c.StopWorker(testContext(t), w.ID()+"-gone"); !errors.Is(err, qm.ErrNotFound) {
		t.Fatalf("StopWorker of an unknown worker: want ErrNotFound, got %v", err)
	}
}
