package queuemanager

// Pull workers (no stream): FetchJobs leases ready jobs with one unary call (a long poll when asked to
// wait), and each PulledJob completes, fails or extends itself with one more, presenting its lease token —
// BullMQ's getNextJob and moveToCompleted, Faktory's FETCH and ACK/FAIL. A job its holder drops goes back to
// waiting only when its lease runs out (docs/api.md, "Pull workers (no stream)"). With tracing on,
// PulledJob.Span gives a run the CONSUMER span a stream worker's run has (docs/observability.md).

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/queue-manager/queue-manager/clients/go/gen/queue_manager/v1"
)

// MaxFetch and MaxFetchWait are the server's bounds of a fetch, checked before the call.
const (
	MaxFetch     = 1000
	MaxFetchWait = 30 * time.Second
)

// FetchOptions are the options of FetchJobs; the zero value fetches one job without waiting.
type FetchOptions struct {
	// MaxJobs is the most jobs to lease, 1 to MaxFetch; 0 means 1.
	MaxJobs int
	// Wait is how long to wait for a first job when none is ready (at most MaxFetchWait); 0 answers at once.
	Wait time.Duration
	// Lease is each lease's duration (1 s to 1 h); 0 takes the server's lease duration.
	Lease time.Duration
	// WorkerName lists the caller in ListWorkers (language "pull") for a lease after each fetch.
	WorkerName string
}

// PulledJob is a job fetched by FetchJobs, leased to the caller until LeaseExpires. A lost lease (it ran
// out and the job was recovered) makes each call return ErrFailedPrecondition.
type PulledJob struct {
	// Job is the job (ID, Name, Data…); decode its data with Job.Decode.
	*Job
	// LeaseToken is the lease's token, which each call presents.
	LeaseToken string
	// LeaseExpires is when the lease runs out unless extended.
	LeaseExpires time.Time
	// Redelivery is true when an earlier run of this attempt was lost (a crash, a lease run out).
	Redelivery bool
	// CancelRequested is set by ExtendLease when the job was cancelled while it ran: stop the run.
	CancelRequested bool

	client    *Client
	fetchedAt time.Time
	// span is the run's span while Span runs: Fail marks it failed.
	span trace.Span
}

// FailOptions are the options of PulledJob.Fail.
type FailOptions struct {
	// NoRetry fails the job for good now, skipping any attempts left.
	NoRetry bool
	// RetryAfter, when set, sends the job back to wait this long without using an attempt, and the queue
	// starts no job meanwhile.
	RetryAfter time.Duration
	// Stacktrace is shown with the failure.
	Stacktrace string
}

// FailOutcome is what a failure did to the job.
type FailOutcome struct {
	// WillRetry is true when the job runs again; false when it failed for good.
	WillRetry bool
	// RetryAt is when the next run is due (zero when it failed for good).
	RetryAt time.Time
}

// FetchJobs leases up to opts.MaxJobs ready jobs of a queue, as a stream worker's claim does (pause,
// priorities, rate limits, group limits and caps apply; jobs routed by worker labels are never fetched),
// waiting up to opts.Wait for a first one. It returns no job and no error when none came. ErrNotFound for an
// unknown queue; options out of range are refused before the call.
func (c *Client) FetchJobs(ctx context.Context, queue string, opts FetchOptions) ([]*PulledJob, error) {
	if opts.MaxJobs == 0 {
		opts.MaxJobs = 1
	}
	if opts.MaxJobs < 1 || opts.MaxJobs > MaxFetch {
		return nil, fmt.Errorf("MaxJobs must be from 1 to %d, got %d", MaxFetch, opts.MaxJobs)
	}
	if opts.Wait < 0 || opts.Wait > MaxFetchWait {
		return nil, fmt.Errorf("Wait must be from 0 to %s, got %s", MaxFetchWait, opts.Wait)
	}
	if opts.Lease < 0 {
		return nil, errors.New("Lease must not be negative")
	}
	req := &pb.FetchJobsRequest{
		QueueName: queue, MaxJobs: uint32(opts.MaxJobs), Wait: durationpb.New(opts.Wait), WorkerName: opts.WorkerName,
	}
	if opts.Lease > 0 {
		req.LeaseDuration = durationpb.New(opts.Lease)
	}
	resp, err := c.queues.FetchJobs(ctx, req)
	if err != nil {
		return nil, fromRPC(err)
	}
	now := time.Now()
	jobs := make([]*PulledJob, 0, len(resp.GetJobs()))
	for _, leased := range resp.GetJobs() {
		jobs = append(jobs, &PulledJob{
			Job:          jobFromProto(leased.GetJob()),
			LeaseToken:   leased.GetLeaseToken(),
			LeaseExpires: leased.GetLeaseExpireTime().AsTime(),
			Redelivery:   leased.GetRedelivery(),
			client:       c,
			fetchedAt:    now,
		})
	}
	return jobs, nil
}

// Span runs run inside the run's OpenTelemetry CONSUMER span ("{queue} process"), as a stream worker's run
// has one: put the run's code and its Complete or Fail inside. The context run gets holds the span, whose
// parent is the trace context the job was added with (its add's PRODUCER span), so spans started from it
// nest under the run's. Fail, an error run returns (returned by Span) or a panic (recorded with its stack,
// then panicking on) ends it with ERROR status. With tracing off (WithTracerProvider unset and no global
// provider, or a no-op one) run just runs, with ctx.
func (j *PulledJob) Span(ctx context.Context, run func(ctx context.Context) error) (err error) {
	t := j.client.traced()
	if t == nil {
		return run(ctx)
	}
	ctx, span := t.process(ctx, j.Job)
	j.span = span
	defer func() {
		j.span = nil
		if p := recover(); p != nil {
			recordFailure(span, fmt.Errorf("panic: %v", p), fmt.Sprintf("panic: %v", p), string(debug.Stack()))
			span.End()
			panic(p)
		}
		if err != nil {
			recordFailure(span, err, err.Error(), "")
		}
		span.End()
	}()
	return run(ctx)
}

// Complete records the run's success with its result (any JSON value, []byte or json.RawMessage; nil for
// none).
func (j *PulledJob) Complete(ctx context.Context, result any) error {
	payload, err := encodePayload(result)
	if err != nil {
		return fmt.Errorf("result: %w", err)
	}
	_, err = j.client.queues.CompleteJob(ctx, &pb.CompleteJobRequest{
		QueueName: j.Queue, JobId: j.ID, LeaseToken: j.LeaseToken, Result: payload, Duration: j.elapsed(),
	})
	return fromRPC(err)
}

// Fail records a failed run: retried per the job's attempts and backoff, or failed for good.
func (j *PulledJob) Fail(ctx context.Context, message string, opts *FailOptions) (*FailOutcome, error) {
	if opts == nil {
		opts = &FailOptions{}
	}
	req := &pb.FailJobRequest{
		QueueName: j.Queue, JobId: j.ID, LeaseToken: j.LeaseToken, Message: message,
		Stacktrace: opts.Stacktrace, DoNotRetry: opts.NoRetry, Duration: j.elapsed(),
	}
	if opts.RetryAfter < 0 {
		return nil, errors.New("RetryAfter must not be negative")
	}
	if opts.RetryAfter > 0 {
		req.RetryAfter = durationpb.New(opts.RetryAfter)
	}
	if j.span != nil { // no error is at hand: the failure's message is the span's status
		j.span.SetStatus(otelcodes.Error, message)
	}
	resp, err := j.client.queues.FailJob(ctx, req)
	if err != nil {
		return nil, fromRPC(err)
	}
	out := &FailOutcome{WillRetry: resp.GetWillRetry()}
	if resp.GetRetryTime() != nil {
		out.RetryAt = resp.GetRetryTime().AsTime()
	}
	return out, nil
}

// ExtendLease extends the lease to lease from now (1 s to 1 h; 0 takes the server's lease duration) and
// returns its new expiry; it sets CancelRequested when the job was cancelled meanwhile.
func (j *PulledJob) ExtendLease(ctx context.Context, lease time.Duration) (time.Time, error) {
	req := &pb.ExtendJobLeaseRequest{QueueName: j.Queue, JobId: j.ID, LeaseToken: j.LeaseToken}
	if lease < 0 {
		return time.Time{}, errors.New("lease must not be negative")
	}
	if lease > 0 {
		req.LeaseDuration = durationpb.New(lease)
	}
	resp, err := j.client.queues.ExtendJobLease(ctx, req)
	if err != nil {
		return time.Time{}, fromRPC(err)
	}
	j.LeaseExpires = resp.GetLeaseExpireTime().AsTime()
	j.CancelRequested = resp.GetCancelRequested()
	return j.LeaseExpires, nil
}

// ReportProgress records the run's progress (a number 0-100 or any JSON value; nil leaves it) and appends
// log lines to the job's log.
func (j *PulledJob) ReportProgress(ctx context.Context, progress any, logs ...string) error {
	req := &pb.ReportJobProgressRequest{QueueName: j.Queue, JobId: j.ID, LeaseToken: j.LeaseToken}
	if progress != nil {
		value, err := jsonValue(progress)
		if err != nil {
			return fmt.Errorf("progress: %w", err)
		}
		req.Progress = value
	}
	for _, line := range logs {
		req.Logs = append(req.Logs, &pb.JobLogLine{Message: line})
	}
	_, err := j.client.queues.ReportJobProgress(ctx, req)
	return fromRPC(err)
}

// elapsed is the run's duration so far, reported with its outcome for the queue's processing-time figures.
func (j *PulledJob) elapsed() *durationpb.Duration {
	return durationpb.New(time.Since(j.fetchedAt))
}
