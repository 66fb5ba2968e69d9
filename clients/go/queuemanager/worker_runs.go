package queuemanager

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/queue-manager/queue-manager/clients/go/gen/queue_manager/v1"
)

// What the server keeps of a job's log: its last lines, each cut to a length (sending more is waste).
const (
	logLinesKept = 1000
	logLineChars = 2000
)

// run is one handler call for one leased job. Its flags are guarded by the worker's mutex.
type run struct {
	w      *Worker
	job    *Job
	key    jobKey
	token  string
	ctx    context.Context
	cancel context.CancelCauseFunc
	span   trace.Span // the run's CONSUMER span; nil when tracing is off

	cancelled bool // CANCEL_JOB asked to stop it: report it in cancelled (not one with timed_out: see onCommand)
	lost      bool // its lease was recovered: report nothing
	abandoned bool // Shutdown gave up on it and reported it abandoned
	parked    bool // Job.WaitForChildren or WaitForEvent parked its job: the server ended the run, report nothing
	parking   int  // WaitForChildren or WaitForEvent calls in flight: the server may end the lease in one
}

func newRun(w *Worker, job *Job, token string) *run {
	r := &run{w: w, job: job, key: jobKey{job.Queue, job.ID}, token: token}
	base := context.Background()
	if w.tracing != nil {
		base, r.span = w.tracing.process(base, job)
	}
	r.ctx, r.cancel = context.WithCancelCause(base)
	if job.Timeout > 0 {
		// The timeout's cause is set when it fires; a cancel before it keeps its own cause.
		ctx, stop := context.WithTimeoutCause(r.ctx, job.Timeout, ErrJobTimeout)
		parentCancel := r.cancel
		r.ctx, r.cancel = ctx, func(cause error) { parentCancel(cause); stop() }
	}
	job.run = r
	return r
}

func (r *run) ref() *pb.LeaseRef {
	return &pb.LeaseRef{QueueName: r.key.queue, JobId: r.key.id, LeaseToken: r.token}
}

// park makes a call that parks the run's job (WaitForChildren, WaitForEvent). While it is out, the server
// may end the lease in it before a heartbeat of the run arrives, so a refusal of that heartbeat is expected
// (onAck); once it has answered, the run is parked (Worker.park): no longer extended, nothing reported, and
// named in the next report.
func park[T any](r *run, call func() (T, error)) (T, error) {
	w := r.w
	w.mu.Lock()
	r.parking++
	w.mu.Unlock()
	resp, err := call()
	w.mu.Lock()
	defer w.mu.Unlock()
	r.parking--
	if err == nil {
		w.park(r)
		w.expected.addParked(leaseKey{r.key.queue, r.key.id, r.token})
	}
	return resp, err
}

// lose marks a run whose lease was recovered: it is stopped and nothing is reported for it. Called with
// the worker's mutex held.
func (r *run) lose() {
	r.lost = true
	r.cancel(ErrLeaseLost)
}

// execute calls the handler and records the outcome.
func (r *run) execute(handler Handler) {
	started := time.Now()
	result, err, stack := call(handler, r.ctx, r.job)
	elapsed := time.Since(started)
	timedOut := errors.Is(context.Cause(r.ctx), ErrJobTimeout)
	r.cancel(nil)
	r.w.finish(r, result, err, stack, elapsed, timedOut)
	if r.span != nil {
		r.span.End()
	}
}

// call runs the handler, turning a panic into an error with its stack.
func call(handler Handler, ctx context.Context, job *Job) (result any, err error, stack string) {
	defer func() {
		if p := recover(); p != nil {
			result, err, stack = nil, fmt.Errorf("panic: %v", p), string(debug.Stack())
		}
	}()
	result, err = handler(ctx, job)
	return result, err, ""
}

// finish records a run's outcome in the outbox and gives its credit back.
func (w *Worker) finish(r *run, result any, err error, stack string, elapsed time.Duration, timedOut bool) {
	w.mu.Lock()
	defer func() {
		w.mu.Unlock()
		w.signal()
		select {
		case w.runEnded <- struct{}{}:
		default:
		}
	}()
	if r.abandoned {
		return // reported abandoned at shutdown; its slot is gone already
	}
	if w.running[r.key] == r {
		delete(w.running, r.key)
	}
	if w.debt > 0 {
		w.debt-- // a lowered concurrency (SET_CONCURRENCY): this slot is given up
	} else if !w.stopping && !w.draining {
		w.credits++
	}
	switch {
	case r.parked:
		// The server ended the run when it parked the job: a report would be refused as a lost lease.
	case r.lost:
		w.log.Info("discarding the result of a run whose lease was lost", "queue", r.key.queue, "job_id", r.key.id)
	case r.cancelled:
		w.outbox.Cancelled = append(w.outbox.Cancelled, r.ref())
		w.unsent++
		w.expected.add(leaseKey{r.key.queue, r.key.id, r.token})
	case timedOut:
		// Reported as timed out (recorded so, not as an error the handler returned), in the words of the
		// server's own timeout and the other clients' ("job timed out after 0.3s"), whichever side noticed.
		w.fail(r, fmt.Errorf("job timed out after %gs", r.job.Timeout.Seconds()), "", elapsed).TimedOut = true
		w.expected.add(leaseKey{r.key.queue, r.key.id, r.token}) // the server may have timed it out first
	case err != nil && w.delay(r, err, elapsed):
	case err != nil:
		w.fail(r, err, stack, elapsed)
	default:
		payload, encodeErr := w.encodePayload(result)
		if encodeErr != nil {
			w.fail(r, fmt.Errorf("the result: %w", encodeErr), "", elapsed)
			return
		}
		w.outbox.Completions = append(w.outbox.Completions, &pb.JobCompletion{
			QueueName: r.key.queue, JobId: r.key.id, LeaseToken: r.token, Result: payload,
			Duration: durationpb.New(elapsed),
		})
		w.unsent++
	}
}

// park marks a run whose call parked its job (WaitForChildren, WaitForEvent): the server ended the run, so
// nothing more is reported or extended for it, and the next report names it in parked. The call may have
// reached another server than the stream's (several behind one address), which cannot tell the stream's
// server that the lease is over; without the item that server counts it against the worker's credits
// until the stream ends. No signal: the item goes with the report that the run's end sends with its credit.
// Called with w.mu held.
func (w *Worker) park(r *run) {
	r.parked = true
	w.outbox.Parked = append(w.outbox.Parked, r.ref())
}

// delay puts a run that asked to run again later (a DelayedError) into the outbox; false for any other error.
// Called with w.mu held.
func (w *Worker) delay(r *run, err error, elapsed time.Duration) bool {
	var delayed *DelayedError
	if !errors.As(err, &delayed) {
		return false
	}
	item := &pb.JobDelay{Lease: r.ref(), Delay: durationpb.New(delayed.Delay)}
	if delayed.HasData {
		payload, encodeErr := w.encodePayload(delayed.Data)
		if encodeErr != nil {
			w.fail(r, fmt.Errorf("the delay's data: %w", encodeErr), "", elapsed)
			return true
		}
		item.Data = payload
	}
	w.outbox.Delays = append(w.outbox.Delays, item)
	w.unsent++
	return true
}

// encodePayload is a result or data the worker reports, through the client's codecs.
func (w *Worker) encodePayload(value any) (*pb.Payload, error) {
	payload, err := encodePayload(value)
	if err == nil && w.client.codecs != nil {
		err = w.client.codecs.encode(payload)
	}
	return payload, err
}

// fail puts a failure into the outbox and returns it. Called with w.mu held.
func (w *Worker) fail(r *run, err error, stack string, elapsed time.Duration) *pb.JobFailure {
	failure := &pb.JobFailure{
		QueueName: r.key.queue, JobId: r.key.id, LeaseToken: r.token,
		Message: err.Error(), Stacktrace: stack, Duration: durationpb.New(elapsed),
	}
	var unrecoverable *UnrecoverableError
	var limited *RateLimitedError
	switch {
	case errors.As(err, &limited):
		failure.RetryAfter = durationpb.New(limited.RetryAfter)
	case errors.As(err, &unrecoverable):
		failure.DoNotRetry = true
	}
	if failure.Message == "" {
		failure.Message = fmt.Sprintf("%T", err)
	}
	if r.span != nil {
		recordFailure(r.span, err, failure.Message, stack)
	}
	attempt := r.job.AttemptsMade + 1
	w.log.Warn("job failed", "queue", r.key.queue, "job_id", r.key.id, "attempt", attempt,
		"max_attempts", r.job.MaxAttempts, "error", failure.Message)
	w.outbox.Failures = append(w.outbox.Failures, failure)
	w.unsent++
	return failure
}

// abandonAll gives up on every running handler at shutdown: its context ends with ErrAbandoned and its
// job goes back to waiting as a stall. Returns how many runs were abandoned.
func (w *Worker) abandonAll() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	count := 0
	for key, r := range w.running {
		r.abandoned = true
		r.cancel(ErrAbandoned)
		if !r.lost {
			w.outbox.Abandoned = append(w.outbox.Abandoned, r.ref())
			w.unsent++
			count++
		}
		delete(w.running, key)
	}
	if count > 0 {
		w.log.Warn("jobs still running at the end of the shutdown grace are abandoned", "count", count)
	}
	return count
}

// errNotRunning is returned by ReportProgress, UpdateData, WaitForChildren and WaitForEvent outside a
// worker's run of the job.
var errNotRunning = errors.New("the job is not running in a worker's handler (or its run has ended)")

// active reports whether the run is still this worker's to report on. Called with w.mu held.
func (r *run) active() bool {
	return r.w.running[r.key] == r && !r.lost && !r.abandoned && !r.parked
}

// ReportProgress records the run's progress (a number 0-100 or any JSON value); it is sent with the next
// report. Only within a worker's handler of this job.
func (j *Job) ReportProgress(value any) error {
	r := j.run
	if r == nil {
		return errNotRunning
	}
	progress, err := jsonValue(value)
	if err != nil {
		return fmt.Errorf("progress: %w", err)
	}
	w := r.w
	w.mu.Lock()
	if !r.active() {
		w.mu.Unlock()
		return errNotRunning
	}
	w.outbox.Progress = append(w.outbox.Progress, &pb.JobProgress{Lease: r.ref(), Progress: progress})
	w.unsent++
	w.mu.Unlock()
	w.signal()
	return nil
}

// UpdateData replaces the job's data on the server, so that its next attempt (a retry after a failure, or
// a redelivery after a lost worker) starts from it: a checkpoint of the step a long handler has reached.
// Only within a worker's handler of this job. The change is fenced by the run's lease: once the lease is lost
// (the job was recovered and may run elsewhere) the server refuses it with ErrFailedPrecondition and nothing
// changes, so a stale run never overwrites the data of the job's next attempt. On success j.Data and
// j.ContentType hold the new data. data is encoded as AddJob encodes it (nil is JSON null); data over the
// server's payload limit gives ErrInvalidArgument. ctx bounds the call (the handler's own ctx is cancelled
// once the run must stop).
func (j *Job) UpdateData(ctx context.Context, data any) error {
	r := j.run
	if r == nil {
		return errNotRunning
	}
	payload, err := dataPayload(data)
	if err != nil {
		return err
	}
	_, err = r.w.client.queues.UpdateJobData(ctx, &pb.UpdateJobDataRequest{
		QueueName: r.key.queue, JobId: r.key.id, Data: payload, LeaseToken: r.token,
	})
	if err != nil {
		return fromRPC(err)
	}
	j.Data, j.ContentType = decodePayload(payload)
	return nil
}

// Log adds a line to the job's log (kept by the server, shown by GetJob and the dashboard). Only within a
// worker's handler of this job; elsewhere it does nothing. Lines are cut to 2,000 characters.
func (j *Job) Log(message string) {
	r := j.run
	if r == nil {
		return
	}
	if runes := []rune(message); len(runes) > logLineChars {
		message = string(runes[:logLineChars])
	}
	w := r.w
	w.mu.Lock()
	if !r.active() {
		w.mu.Unlock()
		return
	}
	// Consecutive lines of one run share a JobLogs entry of the pending report.
	logs := w.outbox.Logs
	var entry *pb.JobLogs
	if n := len(logs); n > 0 && proto3Equal(logs[n-1].GetLease(), r) {
		entry = logs[n-1]
	} else {
		entry = &pb.JobLogs{Lease: r.ref()}
		w.outbox.Logs = append(w.outbox.Logs, entry)
	}
	if len(entry.Lines) >= logLinesKept {
		// The server keeps a job's last lines only: while the stream is down, hold no more than that.
		entry.Lines = entry.Lines[1:]
		w.unsent--
	}
	entry.Lines = append(entry.Lines, &pb.JobLogLine{Time: timestamppb.Now(), Message: message})
	w.unsent++
	w.mu.Unlock()
	w.signal()
}

func proto3Equal(lease *pb.LeaseRef, r *run) bool {
	return lease.GetQueueName() == r.key.queue && lease.GetJobId() == r.key.id && lease.GetLeaseToken() == r.token
}
