package queuemanager_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	qm "github.com/queue-manager/queue-manager/clients/go/queuemanager"
)

func TestWorkerCompletesWithResultProgressAndLogs(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	queue := newQueue(t, c, nil)
	startWorker(t, c, qm.WorkerConfig{Concurrency: 2, Handlers: map[string]qm.Handler{
		queue: func(ctx context.Context, job *qm.Job) (any, error) {
			var in struct{ A, B int }
			if err := job.Decode(&in); err != nil {
				return nil, err
			}
			if err := job.ReportProgress(50); err != nil {
				return nil, err
			}
			job.Log(fmt.Sprintf("adding %d and %d", in.A, in.B))
			return map[string]int{"sum": in.A + in.B}, nil
		},
	}})
	added := add(t, c, queue, "add", map[string]int{"a": 2, "b": 3}, nil)
	job := waitFinished(t, c, queue, added.ID)
	if job.State != qm.StateCompleted || job.AttemptsMade != 1 {
		t.Fatalf("want completed after one attempt, got %s (%s)", job.State, job.FailedReason)
	}
	var out struct{ Sum int }
	if err := job.DecodeResult(&out); err != nil || out.Sum != 5 {
		t.Fatalf("result %s: %v %+v", job.Result, err, out)
	}
	if string(job.Progress) != "50" || len(job.Logs) != 1 || job.Logs[0].Message != "adding 2 and 3" {
		t.Fatalf("progress %s, logs %+v", job.Progress, job.Logs)
	}
	if err := job.ReportProgress(1); err == nil {
		t.Fatal("ReportProgress outside a handler must fail")
	}
}

func TestFailuresAreRetriedThenFail(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	queue := newQueue(t, c, nil)
	var mu sync.Mutex
	runs := map[string]int{}
	startWorker(t, c, qm.WorkerConfig{Concurrency: 2, Handlers: map[string]qm.Handler{
		queue: func(ctx context.Context, job *qm.Job) (any, error) {
			mu.Lock()
			runs[job.ID]++
			n := runs[job.ID]
			mu.Unlock()
			if job.Name == "fatal" {
				return nil, qm.Unrecoverable(errors.New("bad input"))
			}
			if job.Name == "panics" {
				panic("out of range")
			}
			return nil, fmt.Errorf("boom %d", n)
		},
	}})
	retry := &qm.JobOptions{Attempts: 3, Backoff: &qm.Backoff{Type: qm.BackoffFixed, Delay: 20 * time.Millisecond}}
	flaky := add(t, c, queue, "flaky", nil, retry)
	fatal := add(t, c, queue, "fatal", nil, retry)
	panics := add(t, c, queue, "panics", nil, &qm.JobOptions{Attempts: 1})
	job := waitFinished(t, c, queue, flaky.ID)
	if job.State != qm.StateFailed || job.AttemptsMade != 3 || job.FailedReason != "boom 3" {
		t.Fatalf("want failed after 3 attempts with the last error, got %s, %d, %q",
			job.State, job.AttemptsMade, job.FailedReason)
	}
	job = waitFinished(t, c, queue, fatal.ID)
	if job.State != qm.StateFailed || job.AttemptsMade != 1 || job.FailedReason != "bad input" {
		t.Fatalf("Unrecoverable must fail for good at once: %s, %d, %q", job.State, job.AttemptsMade, job.FailedReason)
	}
	job = waitFinished(t, c, queue, panics.ID)
	if job.State != qm.StateFailed || job.FailedReason != "panic: out of range" ||
		!strings.Contains(job.Stacktrace, "worker_test.go") {
		t.Fatalf("a panic fails the attempt with its stack: %s, %q, %q", job.State, job.FailedReason, job.Stacktrace)
	}
	mu.Lock()
	defer mu.Unlock()
	if runs[flaky.ID] != 3 || runs[fatal.ID] != 1 {
		t.Fatalf("handler runs: %v", runs)
	}
}

func TestPrioritiesOrderTheRuns(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	queue := newQueue(t, c, nil)
	levels := []qm.Priority{qm.PriorityLow, qm.PriorityBackground, qm.PriorityNormal, qm.PriorityCritical, qm.PriorityHigh}
	for i, p := range levels {
		add(t, c, queue, p.String(), nil, &qm.JobOptions{Priority: p, JobID: fmt.Sprintf("j%d", i)})
	}
	order := make(chan string, len(levels))
	startWorker(t, c, qm.WorkerConfig{Concurrency: 1, Handlers: map[string]qm.Handler{
		queue: func(ctx context.Context, job *qm.Job) (any, error) {
			order <- job.Name
			return nil, nil
		},
	}})
	var got []string
	for range levels {
		got = append(got, receive(t, order, "the next run"))
	}
	want := "CRITICAL HIGH NORMAL LOW BACKGROUND"
	if strings.Join(got, " ") != want {
		t.Fatalf("runs in order %v, want %s", got, want)
	}
}

func TestDelayedJobRunsAfterItsDelay(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	queue := newQueue(t, c, nil)
	startWorker(t, c, qm.WorkerConfig{Concurrency: 1, Handlers: map[string]qm.Handler{
		queue: func(ctx context.Context, job *qm.Job) (any, error) { return nil, nil },
	}})
	const delay = 800 * time.Millisecond
	added := add(t, c, queue, "later", nil, &qm.JobOptions{Delay: delay})
	if added.State != qm.StateDelayed || added.RunTime.Sub(added.CreateTime) != delay {
		t.Fatalf("want delayed until create time + %s, got %s %s", delay, added.State, added.RunTime.Sub(added.CreateTime))
	}
	job := waitFinished(t, c, queue, added.ID)
	if job.State != qm.StateCompleted {
		t.Fatalf("want completed, got %s", job.State)
	}
	if started := job.ProcessTime.Sub(job.CreateTime); started < delay {
		t.Fatalf("the job started %s after its add, before its delay of %s", started, delay)
	}
}

func TestBulkJobsRunExactlyOnce(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	queue := newQueue(t, c, nil)
	const count = 1000
	jobs := make([]qm.NewJob, count)
	for i := range jobs {
		jobs[i] = qm.NewJob{Name: "bulk", Data: map[string]int{"i": i}}
	}
	result, err := c.AddBulk(testContext(t), queue, jobs)
	if err != nil || len(result.JobIDs) != count || result.Created != count {
		t.Fatalf("AddBulk: %v %+v", err, result)
	}
	var mu sync.Mutex
	seen := map[int]int{}
	done := make(chan struct{})
	startWorker(t, c, qm.WorkerConfig{Concurrency: 32, Handlers: map[string]qm.Handler{
		queue: func(ctx context.Context, job *qm.Job) (any, error) {
			var in struct{ I int }
			if err := job.Decode(&in); err != nil {
				return nil, err
			}
			mu.Lock()
			defer mu.Unlock()
			seen[in.I]++
			if len(seen) == count {
				close(done)
			}
			return in.I, nil
		},
	}})
	receive(t, done, "every bulk job to run")
	// Every job completed on the server (each outcome accepted), and none ran twice.
	deadline := time.Now().Add(wait)
	for {
		page, err := c.ListJobs(testContext(t), queue, qm.StateCompleted, 1, "")
		if err != nil {
			t.Fatal(err)
		}
		if page.Total == count {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d jobs completed", page.Total, count)
		}
		time.Sleep(20 * time.Millisecond) // the last completions travel in a report after the last run
	}
	mu.Lock()
	defer mu.Unlock()
	for i := range count {
		if seen[i] != 1 {
			t.Fatalf("job %d ran %d times", i, seen[i])
		}
	}
}

func TestCancelStopsTheRunningHandler(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	queue := newQueue(t, c, nil)
	started := make(chan struct{}, 1)
	cause := make(chan error, 1)
	startWorker(t, c, qm.WorkerConfig{Concurrency: 1, Handlers: map[string]qm.Handler{
		queue: func(ctx context.Context, job *qm.Job) (any, error) {
			started <- struct{}{}
			<-ctx.Done()
			cause <- context.Cause(ctx)
			return "finished anyway", nil
		},
	}})
	added := add(t, c, queue, "long", nil, nil)
	receive(t, started, "the run to start")
	if _, err := c.CancelJob(testContext(t), queue, added.ID, "user asked"); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, cause, "the handler's context to end"); !errors.Is(got, qm.ErrJobCancelled) {
		t.Fatalf("the run's context ended with %v, want ErrJobCancelled", got)
	}
	job := waitFinished(t, c, queue, added.ID)
	if job.State != qm.StateCancelled || job.CancelReason != "user asked" {
		t.Fatalf("want cancelled, got %s (%q)", job.State, job.CancelReason)
	}
}

func TestJobTimeoutEndsTheRun(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	queue := newQueue(t, c, nil)
	cause := make(chan error, 1)
	startWorker(t, c, qm.WorkerConfig{Concurrency: 1, Handlers: map[string]qm.Handler{
		queue: func(ctx context.Context, job *qm.Job) (any, error) {
			<-ctx.Done()
			cause <- context.Cause(ctx)
			return nil, ctx.Err()
		},
	}})
	added := add(t, c, queue, "slow", nil, &qm.JobOptions{Timeout: 300 * time.Millisecond, Attempts: 1})
	// The worker's own timer and the server's timeout race (the server counts from the claim, the worker
	// from the delivery a few ms later); either way the run's context ends with ErrJobTimeout (the server's
	// CANCEL_JOB says timed_out). TestServerTimeoutEndsTheRunAsTheWorkersOwn makes the server win.
	if got := receive(t, cause, "the timeout"); !errors.Is(got, qm.ErrJobTimeout) {
		t.Fatalf("the run's context ended with %v, want ErrJobTimeout", got)
	}
	job := waitFinished(t, c, queue, added.ID)
	if job.State != qm.StateFailed || job.FailedReason != "job timed out after 0.3s" {
		t.Fatalf("want failed for its timeout, got %s (%q)", job.State, job.FailedReason)
	}
	if len(job.Errors) != 1 || job.Errors[0].Kind != qm.JobErrorTimeout {
		t.Fatalf("want one timed-out run, got %+v", job.Errors)
	}
}

// TestServerTimeoutEndsTheRunAsTheWorkersOwn runs against a server that times each run out as soon as it is
// claimed (QM_TEST_SERVER_TIMEOUTS_ADDRESS), long before the run's own 30 s timer: the server's CANCEL_JOB
// says timed_out, and the worker ends the run as at its own timeout: the cause ErrJobTimeout, not
// ErrJobCancelled, and the attempt counted once, as timed out.
func TestServerTimeoutEndsTheRunAsTheWorkersOwn(t *testing.T) {
	t.Parallel()
	address := os.Getenv(serverTimeoutsAddressEnv)
	if address == "" {
		t.Skipf("%s is not set: run these tests through tests/test_client_go.py", serverTimeoutsAddressEnv)
	}
	c := dial(t, address)
	queue := newQueue(t, c, nil)
	cause := make(chan error, 1)
	startWorker(t, c, qm.WorkerConfig{Concurrency: 1, Handlers: map[string]qm.Handler{
		queue: func(ctx context.Context, job *qm.Job) (any, error) {
			<-ctx.Done()
			cause <- context.Cause(ctx)
			return nil, ctx.Err()
		},
	}})
	added := add(t, c, queue, "slow", nil, &qm.JobOptions{Timeout: 30 * time.Second, Attempts: 1})
	if got := receive(t, cause, "the server's timeout"); !errors.Is(got, qm.ErrJobTimeout) {
		t.Fatalf("the run's context ended with %v, want ErrJobTimeout", got)
	}
	job := waitFinished(t, c, queue, added.ID)
	if job.State != qm.StateFailed || job.FailedReason != "job timed out after 30s" || job.AttemptsMade != 1 {
		t.Fatalf("want failed once for its timeout, got %s (%q) after %d", job.State, job.FailedReason, job.AttemptsMade)
	}
	m, err := c.GetQueueMetrics(testContext(t), queue)
	if err != nil {
		t.Fatalf("GetQueueMetrics: %v", err)
	}
	if m.TimedOutTotal != 1 || m.RaisedTotal != 0 {
		t.Fatalf("want 1 timed-out run and none raised, got %d and %d", m.TimedOutTotal, m.RaisedTotal)
	}
}

// TestWorkerTimeoutIsRecordedAsTimedOut runs against a server that leaves job timeouts to the workers
// (QM_TEST_NO_TIMEOUTS_ADDRESS, alone on its key prefix): the worker's own timeout ends the run, and the
// server records it as timed out (JobFailure.TimedOut), not as an error the handler returned.
func TestWorkerTimeoutIsRecordedAsTimedOut(t *testing.T) {
	t.Parallel()
	address := os.Getenv(noTimeoutsAddressEnv)
	if address == "" {
		t.Skipf("%s is not set: run these tests through tests/test_client_go.py", noTimeoutsAddressEnv)
	}
	c := dial(t, address)
	queue := newQueue(t, c, nil)
	startWorker(t, c, qm.WorkerConfig{Concurrency: 1, Handlers: map[string]qm.Handler{
		queue: func(ctx context.Context, job *qm.Job) (any, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		},
	}})
	added := add(t, c, queue, "slow", nil, &qm.JobOptions{Timeout: 300 * time.Millisecond, Attempts: 1})
	job := waitFinished(t, c, queue, added.ID)
	if job.State != qm.StateFailed || len(job.Errors) != 1 || job.Errors[0].Kind != qm.JobErrorTimeout {
		t.Fatalf("want failed with one timed-out run, got %s with %+v", job.State, job.Errors)
	}
	m, err := c.GetQueueMetrics(testContext(t), queue)
	if err != nil {
		t.Fatalf("GetQueueMetrics: %v", err)
	}
	if m.TimedOutTotal != 1 || m.RaisedTotal != 0 {
		t.Fatalf("want 1 timed-out run and none raised, got %d and %d", m.TimedOutTotal, m.RaisedTotal)
	}
}

func TestShutdownLetsRunningJobsFinish(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	queue := newQueue(t, c, nil)
	started := make(chan string, 2)
	release := make(chan struct{})
	w := startWorker(t, c, qm.WorkerConfig{Concurrency: 2, Handlers: map[string]qm.Handler{
		queue: func(ctx context.Context, job *qm.Job) (any, error) {
			started <- job.ID
			<-release
			return "done", nil
		},
	}})
	first, second := add(t, c, queue, "a", nil, nil), add(t, c, queue, "b", nil, nil)
	receive(t, started, "the first run")
	receive(t, started, "the second run")
	stopped := make(chan error, 1)
	go func() { stopped <- w.Shutdown(testContext(t)) }()
	select {
	case err := <-stopped:
		t.Fatalf("Shutdown returned while jobs were running: %v", err)
	case <-time.After(100 * time.Millisecond): // Shutdown must still be waiting for the runs
	}
	close(release)
	if err := receive(t, stopped, "Shutdown"); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	for _, id := range []string{first.ID, second.ID} {
		job, err := c.GetJob(testContext(t), queue, id)
		if err != nil || job.State != qm.StateCompleted {
			t.Fatalf("job %s after Shutdown: %v %+v", id, err, job)
		}
	}
	later := add(t, c, queue, "after", nil, nil)
	if job, err := c.GetJob(testContext(t), queue, later.ID); err != nil || job.State != qm.StateWaiting {
		t.Fatalf("a stopped worker must take no job: %v %+v", err, job)
	}
}

func TestShutdownAbandonsRunsPastItsContext(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	queue := newQueue(t, c, nil)
	started := make(chan struct{}, 1)
	cause := make(chan error, 1)
	w := startWorker(t, c, qm.WorkerConfig{Concurrency: 1, Handlers: map[string]qm.Handler{
		queue: func(ctx context.Context, job *qm.Job) (any, error) {
			started <- struct{}{}
			<-ctx.Done()
			cause <- context.Cause(ctx)
			return "too late", nil
		},
	}})
	added := add(t, c, queue, "stuck", nil, nil)
	receive(t, started, "the run to start")
	grace, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := w.Shutdown(grace); err == nil || !strings.Contains(err.Error(), "1 job(s)") {
		t.Fatalf("Shutdown past its context must say what it abandoned, got %v", err)
	}
	if got := receive(t, cause, "the run's context to end"); !errors.Is(got, qm.ErrAbandoned) {
		t.Fatalf("the run's context ended with %v, want ErrAbandoned", got)
	}
	job, err := c.GetJob(testContext(t), queue, added.ID)
	if err != nil || job.State != qm.StateWaiting || job.StalledCount != 1 || len(job.Result) != 0 {
		t.Fatalf("an abandoned job goes back to waiting as a stall: %v %+v", err, job)
	}
}

func TestRateLimitedWaitsWithoutUsingAnAttempt(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	queue := newQueue(t, c, nil)
	var mu sync.Mutex
	runs := 0
	startWorker(t, c, qm.WorkerConfig{Concurrency: 1, Handlers: map[string]qm.Handler{
		queue: func(ctx context.Context, job *qm.Job) (any, error) {
			mu.Lock()
			defer mu.Unlock()
			runs++
			if runs == 1 {
				return nil, qm.RateLimited(200*time.Millisecond, "downstream said 429")
			}
			return "second time", nil
		},
	}})
	job := waitFinished(t, c, queue, add(t, c, queue, "polite", nil, &qm.JobOptions{Attempts: 1}).ID)
	if job.State != qm.StateCompleted || job.AttemptsMade != 1 {
		t.Fatalf("a rate-limited run must not use the only attempt: %s, %d (%s)", job.State, job.AttemptsMade, job.FailedReason)
	}
	if job.ProcessTime.Sub(job.CreateTime) < 200*time.Millisecond {
		t.Fatalf("the second run started %s after the add, before the retry-after", job.ProcessTime.Sub(job.CreateTime))
	}
}

func TestDelayedSleepsBetweenStepsWithItsCheckpoint(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	queue := newQueue(t, c, nil)
	var mu sync.Mutex
	var seen []string
	startWorker(t, c, qm.WorkerConfig{Concurrency: 1, Handlers: map[string]qm.Handler{
		queue: func(ctx context.Context, job *qm.Job) (any, error) {
			mu.Lock()
			defer mu.Unlock()
			seen = append(seen, fmt.Sprintf("%s %d", job.Data, job.AttemptsMade))
			switch len(seen) {
			case 1:
				return nil, qm.DelayedWithData(200*time.Millisecond, map[string]int{"step": 2})
			case 2:
				return nil, qm.Delayed(0) // data kept
			}
			return "done", nil
		},
	}})
	job := waitFinished(t, c, queue, add(t, c, queue, "steps", map[string]int{"step": 1}, &qm.JobOptions{Attempts: 1}).ID)
	if job.State != qm.StateCompleted || job.AttemptsMade != 1 {
		t.Fatalf("a delayed run must not use the only attempt: %s, %d (%s)", job.State, job.AttemptsMade, job.FailedReason)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{`{"step":1} 0`, `{"step":2} 0`, `{"step":2} 0`}
	if fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Fatalf("runs saw %q, want %q", seen, want)
	}
	if job.ProcessTime.Sub(job.CreateTime) < 200*time.Millisecond {
		t.Fatalf("the last run started %s after the add, before the delay", job.ProcessTime.Sub(job.CreateTime))
	}
}

func TestRunEndsWhenItsClientIsClosed(t *testing.T) {
	t.Parallel()
	c := dial(t, serverAddress(t))
	queue := newQueue(t, newClient(t), nil)
	w, err := c.NewWorker(qm.WorkerConfig{Concurrency: 1, Logger: quietLogger(), Handlers: map[string]qm.Handler{
		queue: func(ctx context.Context, job *qm.Job) (any, error) { return nil, nil },
	}})
	if err != nil {
		t.Fatal(err)
	}
	ran := make(chan error, 1)
	go func() { ran <- w.Run(context.Background()) }()
	if err := w.WaitConnected(testContext(t)); err != nil {
		t.Fatal(err)
	}
	_ = c.Close()
	if err := receive(t, ran, "Run to end"); err == nil || !strings.Contains(err.Error(), "client was closed") {
		t.Fatalf("Run must end with an error saying its client was closed, got %v", err)
	}
}

func TestUpdateDataSavesACheckpointForTheNextAttempt(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	queue := newQueue(t, c, nil)
	type progress struct {
		File string `json:"file"`
		Step int    `json:"step"`
	}
	seen := make(chan int, 2)
	startWorker(t, c, qm.WorkerConfig{Concurrency: 1, Handlers: map[string]qm.Handler{
		queue: func(ctx context.Context, job *qm.Job) (any, error) {
			var p progress
			if err := job.Decode(&p); err != nil {
				return nil, err
			}
			seen <- p.Step
			for p.Step < 3 {
				p.Step++
				if err := job.UpdateData(ctx, p); err != nil {
					return nil, fmt.Errorf("UpdateData: %w", err)
				}
				var saved progress
				if err := job.Decode(&saved); err != nil || saved != p {
					return nil, fmt.Errorf("job.Data after UpdateData: %+v %v", saved, err)
				}
				if job.AttemptsMade == 0 && p.Step == 2 {
					return nil, errors.New("crashed after step 2")
				}
			}
			if err := job.UpdateData(ctx, func() {}); err == nil || errors.Is(err, qm.ErrFailedPrecondition) {
				return nil, fmt.Errorf("data that is not JSON must be refused before the call, got %v", err)
			}
			return p.Step, nil
		},
	}})
	added := add(t, c, queue, "import", progress{"a.csv", 0}, &qm.JobOptions{Attempts: 2})
	job := waitFinished(t, c, queue, added.ID)
	var stored progress
	if job.State != qm.StateCompleted || job.Decode(&stored) != nil || stored != (progress{"a.csv", 3}) {
		t.Fatalf("the job after its checkpoints: %s %q %+v", job.State, job.FailedReason, stored)
	}
	if first, second := receive(t, seen, "the first run"), receive(t, seen, "the second run"); first != 0 || second != 2 {
		t.Fatalf("the runs started from steps %d and %d, want 0 and 2 (the checkpoint)", first, second)
	}
	if err := added.UpdateData(testContext(t), 1); err == nil {
		t.Fatal("UpdateData outside a handler must fail")
	}
}

func TestBatchHandsJobsToOneCallEachKeepingItsOutcome(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	queue := newQueue(t, c, nil)
	var mu sync.Mutex
	var sizes []int
	handler, err := qm.Batch(func(ctx context.Context, jobs []*qm.Job) ([]any, error) {
		mu.Lock()
		sizes = append(sizes, len(jobs))
		mu.Unlock()
		out := make([]any, len(jobs))
		for i, job := range jobs {
			var d struct{ I int }
			if err := job.Decode(&d); err != nil {
				return nil, err
			}
			if d.I == 4 {
				out[i] = errors.New("bad row 4")
			} else {
				out[i] = d.I * 10
			}
		}
		return out, nil
	}, qm.BatchOptions{Size: 3, Wait: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	startWorker(t, c, qm.WorkerConfig{Concurrency: 10, Handlers: map[string]qm.Handler{queue: handler}})
	jobs := make([]qm.NewJob, 6)
	for i := range jobs {
		jobs[i] = qm.NewJob{Name: "row", Data: map[string]int{"i": i}, Options: &qm.JobOptions{Attempts: 1}}
	}
	res, err := c.AddBulk(context.Background(), queue, jobs)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, id := range res.JobIDs {
		job := waitFinished(t, c, queue, id)
		got = append(got, fmt.Sprintf("%s %s %s", job.State, job.Result, job.FailedReason))
	}
	want := []string{"completed 0 ", "completed 10 ", "completed 20 ", "completed 30 ", "failed  bad row 4", "completed 50 "}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("outcomes %q, want %q", got, want)
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(sizes) != "[3 3]" { // Wait is 30 s: only full batches could have left by now
		t.Fatalf("batch sizes %v, want [3 3]", sizes)
	}
	if _, err := qm.Batch(handler2, qm.BatchOptions{Size: 0}); err == nil || err.Error() != "batch size must be 1 to 100000, got 0" {
		t.Fatalf("size 0: %v", err)
	}
}

func handler2(context.Context, []*qm.Job) ([]any, error) { return nil, nil }
