package queuemanager_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	qm "github.com/queue-manager/queue-manager/clients/go/queuemanager"
)

func TestAddJobStoresOptionsAndIsIdempotent(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	queue := newQueue(t, c, nil)
	opts := &qm.JobOptions{
		Priority: qm.PriorityHigh, Attempts: 4, JobID: "order-1", Timeout: 5 * time.Second,
		Backoff:  &qm.Backoff{Type: qm.BackoffExponential, Delay: time.Second},
		Metadata: &qm.Metadata{CorrelationID: "req-9", Tags: []string{"eu"}, Attributes: map[string]string{"k": "v"}},
	}
	job := add(t, c, queue, "charge", map[string]any{"amount": 12}, opts)
	if !job.Created || job.ID != "order-1" || job.State != qm.StateWaiting || job.Priority != qm.PriorityHigh ||
		job.MaxAttempts != 4 || job.Timeout != 5*time.Second || job.Metadata.CorrelationID != "req-9" {
		t.Fatalf("unexpected job as stored: %+v", job)
	}
	var data struct{ Amount int }
	if err := job.Decode(&data); err != nil || data.Amount != 12 {
		t.Fatalf("Decode: %v, %+v", err, data)
	}
	again := add(t, c, queue, "charge", map[string]any{"amount": 99}, &qm.JobOptions{JobID: "order-1"})
	if again.Created || again.ID != "order-1" {
		t.Fatalf("a taken job id must answer the existing job with Created false: %+v", again)
	}
	got, err := c.GetJob(testContext(t), queue, "order-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := got.Decode(&data); err != nil || data.Amount != 12 {
		t.Fatalf("the second add changed the job: %v, %+v", err, data)
	}
	raw := add(t, c, queue, "blob", []byte{0, 1, 2}, nil)
	if raw.ContentType != qm.ContentTypeBytes || string(raw.Data) != "\x00\x01\x02" {
		t.Fatalf("bytes must travel as they are: %q %q", raw.ContentType, raw.Data)
	}
}

func TestErrorsMapToTypedErrors(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	ctx := testContext(t)
	_, err := c.GetJob(ctx, "go-no-such-queue", "x")
	if !errors.Is(err, qm.ErrNotFound) {
		t.Fatalf("GetJob of an unknown queue: want ErrNotFound, got %v", err)
	}
	var e *qm.Error
	if !errors.As(err, &e) || e.Code != codes.NotFound || !strings.Contains(e.Message, "go-no-such-queue") {
		t.Fatalf("the error must carry NOT_FOUND and a message naming the queue: %#v", err)
	}
	if status.Code(err) != codes.NotFound || !strings.HasPrefix(err.Error(), "NOT_FOUND: ") {
		t.Fatalf("status.Code and Error() must read the status: %v", err)
	}
	queue := newQueue(t, c, nil)
	_, err = c.AddJob(ctx, queue, "x", nil, &qm.JobOptions{JobID: "a b"})
	if !errors.Is(err, qm.ErrInvalidArgument) || errors.Is(err, qm.ErrNotFound) {
		t.Fatalf("a bad job id: want ErrInvalidArgument, got %v", err)
	}
	if !errors.As(err, &e) || !strings.HasPrefix(e.Message, "job.options.job_id:") {
		t.Fatalf("the server's message must name the field: %q", e.Message)
	}
	if _, err := c.AddJob(ctx, queue, "x", nil, &qm.JobOptions{Attempts: -1}); err == nil ||
		!strings.Contains(err.Error(), "JobOptions.Attempts") {
		t.Fatalf("a negative attempts must be refused before the call, naming the field: %v", err)
	}
	added := add(t, c, queue, "waits", nil, nil)
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	_, err = c.WaitForJob(short, queue, added.ID)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitForJob past its context's deadline: want DeadlineExceeded, got %v", err)
	}
	if _, err := c.RetryJob(ctx, queue, added.ID); !errors.Is(err, qm.ErrFailedPrecondition) {
		t.Fatalf("RetryJob of a waiting job: want ErrFailedPrecondition, got %v", err)
	}
}

func TestQueueAdmin(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	ctx := testContext(t)
	queue := newQueue(t, c, nil)
	paused, err := c.PauseQueue(ctx, queue)
	if err != nil || !paused.Paused {
		t.Fatalf("PauseQueue: %v %+v", err, paused)
	}
	job := add(t, c, queue, "held", nil, nil)
	if job.State != qm.StatePaused {
		t.Fatalf("a job added to a paused queue is paused, got %s", job.State)
	}
	page, err := c.ListJobs(ctx, queue, qm.StatePaused, 10, "")
	if err != nil || page.Total != 1 || len(page.Jobs) != 1 || page.Jobs[0].ID != job.ID {
		t.Fatalf("ListJobs(paused): %v %+v", err, page)
	}
	metrics, err := c.GetQueueMetrics(ctx, queue)
	if err != nil || metrics.Paused != 1 || !metrics.IsPaused || metrics.MemoryBytes == 0 {
		t.Fatalf("GetQueueMetrics: %v %+v", err, metrics)
	}
	if resumed, err := c.ResumeQueue(ctx, queue); err != nil || resumed.Paused {
		t.Fatalf("ResumeQueue: %v %+v", err, resumed)
	}
	cancelled, err := c.CancelJob(ctx, queue, job.ID, "not needed")
	if err != nil || cancelled.State != qm.StateCancelled || cancelled.CancelReason != "not needed" {
		t.Fatalf("CancelJob of a waiting job: %v %+v", err, cancelled)
	}
	retried, err := c.RetryJob(ctx, queue, job.ID)
	if err != nil || retried.State != qm.StateWaiting {
		t.Fatalf("RetryJob of a cancelled job: %v %+v", err, retried)
	}
	delayed := add(t, c, queue, "later", nil, &qm.JobOptions{Delay: time.Hour})
	if promoted, err := c.PromoteJob(ctx, queue, delayed.ID); err != nil || promoted.State != qm.StateWaiting {
		t.Fatalf("PromoteJob: %v %+v", err, promoted)
	}
	if changed, err := c.ChangeJobPriority(ctx, queue, delayed.ID, qm.PriorityLow); err != nil ||
		changed.Priority != qm.PriorityLow {
		t.Fatalf("ChangeJobPriority: %v %+v", err, changed)
	}
	if state, err := c.RemoveJob(ctx, queue, delayed.ID); err != nil || state != qm.StateWaiting {
		t.Fatalf("RemoveJob: %v %s", err, state)
	}
	if removed, err := c.DrainQueue(ctx, queue, false); err != nil || removed != 1 {
		t.Fatalf("DrainQueue: %v %d", err, removed)
	}
	queues, err := c.ListQueues(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, q := range queues {
		found = found || q.Name == queue
	}
	if !found {
		t.Fatalf("ListQueues does not list %s", queue)
	}
}

func TestUpdateJobDataChangesAnUnfinishedJob(t *testing.T) {
	c := newClient(t)
	ctx := testContext(t)
	queue := newQueue(t, c, nil)
	job := add(t, c, queue, "fix-me", map[string]string{"to": "old"}, &qm.JobOptions{Delay: time.Hour})
	changed, err := c.UpdateJobData(ctx, queue, job.ID, map[string]string{"to": "new"})
	if err != nil || changed.State != qm.StateDelayed {
		t.Fatalf("UpdateJobData: %v %+v", err, changed)
	}
	var data map[string]string
	if err := changed.Decode(&data); err != nil || data["to"] != "new" {
		t.Fatalf("the job's data after UpdateJobData: %v %v", err, data)
	}
	if _, err := c.CancelJob(ctx, queue, job.ID, ""); err != nil {
		t.Fatalf("CancelJob: %v", err)
	}
	if _, err := c.UpdateJobData(ctx, queue, job.ID, 1); !errors.Is(err, qm.ErrFailedPrecondition) {
		t.Fatalf("UpdateJobData of a cancelled job: want ErrFailedPrecondition, got %v", err)
	}
}

func TestTokenIsSentOnEveryCall(t *testing.T) {
	address, token := os.Getenv(authAddressEnv), os.Getenv(tokenEnv)
	if address == "" || token == "" {
		t.Skipf("%s and %s are not set: run through tests/test_client_go.py", authAddressEnv, tokenEnv)
	}
	t.Setenv("QM_TOKEN", "") // the tokens here are the test's own
	anonymous := dial(t, address)
	if _, err := anonymous.ListQueues(testContext(t)); !errors.Is(err, qm.ErrUnauthenticated) {
		t.Fatalf("a call without a token: want ErrUnauthenticated, got %v", err)
	}
	wrong := dial(t, address, qm.WithToken("not-the-token"))
	if _, err := wrong.ListQueues(testContext(t)); !errors.Is(err, qm.ErrUnauthenticated) {
		t.Fatalf("a call with an unknown token: want ErrUnauthenticated, got %v", err)
	}
	c := dial(t, address, qm.WithToken(token))
	queue := newQueue(t, c, nil)
	startWorker(t, c, qm.WorkerConfig{Concurrency: 1, Handlers: map[string]qm.Handler{
		queue: func(ctx context.Context, job *qm.Job) (any, error) { return "ok", nil },
	}})
	job := waitFinished(t, c, queue, add(t, c, queue, "secured", nil, nil).ID)
	if job.State != qm.StateCompleted {
		t.Fatalf("a job on the token's stream: %s (%s)", job.State, job.FailedReason)
	}
	t.Setenv("QM_TOKEN", token)
	fromEnv := dial(t, address)
	if _, err := fromEnv.GetJob(testContext(t), queue, job.ID); err != nil {
		t.Fatalf("QM_TOKEN must be used when no token is given: %v", err)
	}
}

func TestNewRefusesABadAddressOrToken(t *testing.T) {
	t.Parallel()
	for _, address := range []string{"", "localhost", "localhost:0", "localhost:99999", ":50051"} {
		if _, err := qm.New(address); err == nil || !strings.Contains(err.Error(), "address") {
			t.Errorf("New(%q): want an error about the address, got %v", address, err)
		}
	}
	if _, err := qm.New("localhost:50051", qm.WithToken("two words")); err == nil {
		t.Error("a token with a space must be refused")
	}
	if _, err := qm.New("localhost:50051", qm.WithTLSFiles("/no/such/ca.pem", "", "")); err == nil ||
		!strings.Contains(err.Error(), "/no/such/ca.pem") {
		t.Errorf("a missing CA file must be named: %v", err)
	}
}

func TestRescheduleJobMovesARunTime(t *testing.T) {
	c := newClient(t)
	ctx := testContext(t)
	queue := newQueue(t, c, nil)
	job := add(t, c, queue, "later", nil, &qm.JobOptions{Delay: time.Hour, Group: "tenant-r"})
	before := time.Now()
	later, err := c.RescheduleJob(ctx, queue, job.ID, 2*time.Hour)
	if err != nil || later.State != qm.StateDelayed || later.RunTime.Before(before.Add(2*time.Hour-5*time.Second)) {
		t.Fatalf("RescheduleJob of a delayed job: %v %+v", err, later)
	}
	at := time.Now().Add(3 * time.Hour).Truncate(time.Millisecond)
	if fixed, err := c.RescheduleJobAt(ctx, queue, job.ID, at); err != nil || !fixed.RunTime.Equal(at) {
		t.Fatalf("RescheduleJobAt: %v %+v", err, fixed)
	}
	if due, err := c.RescheduleJob(ctx, queue, job.ID, 0); err != nil || due.State != qm.StateWaiting {
		t.Fatalf("a delay of 0 makes it waiting now: %v %+v", err, due)
	}
	again, err := c.RescheduleJob(ctx, queue, job.ID, time.Minute)
	if err != nil || again.State != qm.StateDelayed || again.Group != "tenant-r" {
		t.Fatalf("a waiting job is delayed, in its group: %v %+v", err, again)
	}
	if _, err := c.RescheduleJob(ctx, queue, job.ID, -time.Second); !errors.Is(err, qm.ErrInvalidArgument) {
		t.Fatalf("a negative delay: want ErrInvalidArgument, got %v", err)
	}
	if _, err := c.RescheduleJob(ctx, queue, "no-such-job", time.Second); !errors.Is(err, qm.ErrNotFound) {
		t.Fatalf("a missing job: want ErrNotFound, got %v", err)
	}
	if _, err := c.CancelJob(ctx, queue, job.ID, ""); err != nil {
		t.Fatalf("CancelJob: %v", err)
	}
	_, err = c.RescheduleJob(ctx, queue, job.ID, time.Second)
	if !errors.Is(err, qm.ErrFailedPrecondition) || !strings.Contains(err.Error(), "is cancelled") {
		t.Fatalf("a cancelled job: want ErrFailedPrecondition naming its state, got %v", err)
	}
}
