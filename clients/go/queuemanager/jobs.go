package queuemanager

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/queue-manager/queue-manager/clients/go/gen/queue_manager/v1"
)

// NewJob is a job to add in AddBulk.
type NewJob struct {
	// Name is the kind of work, 1 to 200 characters.
	Name string
	// Data is the job's data (see the payload conventions in payload.go); nil stores JSON null.
	Data any
	// Options are the job's settings; nil takes the queue's defaults.
	Options *JobOptions
}

func (n NewJob) proto() (*pb.NewJob, error) {
	data, err := encodePayload(n.Data)
	if err != nil {
		return nil, fmt.Errorf("job %q: data: %w", n.Name, err)
	}
	options, err := n.Options.proto()
	if err != nil {
		return nil, fmt.Errorf("job %q: %w", n.Name, err)
	}
	return &pb.NewJob{Name: n.Name, Data: data, Options: options}, nil
}

// AddJob adds one job to a registered queue and returns it as stored. With a JobID (or dedup key) that is
// taken, the answer is the existing job, with Created false. When tracing is on (WithTracerProvider), the
// add is a PRODUCER span "{queue} publish" whose W3C context goes into the job's Metadata.Attributes.
func (c *Client) AddJob(ctx context.Context, queue, name string, data any, opts *JobOptions) (*Job, error) {
	job, err := NewJob{Name: name, Data: data, Options: opts}.proto()
	if err != nil {
		return nil, err
	}
	req := &pb.AddJobRequest{QueueName: queue, Job: job}
	t := c.traced()
	if t == nil {
		return c.addJob(ctx, req)
	}
	ctx, span := t.publish(ctx, queue, -1)
	carryJob(job, t.traceContext(ctx))
	out, err := c.addJob(ctx, req)
	if err != nil {
		endPublish(span, err)
		return nil, err
	}
	endPublish(span, nil, attribute.String("messaging.message.id", out.ID))
	return out, nil
}

func (c *Client) addJob(ctx context.Context, req *pb.AddJobRequest) (*Job, error) {
	resp, err := c.queues.AddJob(ctx, req)
	if err != nil {
		return nil, fromRPC(err)
	}
	out := jobFromProto(resp.GetJob())
	out.Created = resp.GetCreated()
	out.Replaced = resp.GetDisposition() == pb.AddDisposition_ADD_DISPOSITION_REPLACED
	return out, nil
}

// BatchJob is one add of AddJobBatch: a job and its queue (the queues of one batch may differ).
type BatchJob struct {
	Queue string
	NewJob
}

// BatchOutcome is one add's outcome in AddJobBatch: the job as stored (Job.Created as in AddJob), or Err,
// the status AddJob would have ended with (an *Error: test it with errors.Is, e.g. ErrNotFound).
type BatchOutcome struct {
	Job *Job
	Err error
}

// maxBatchJobs is the most adds one AddJobBatch call carries (the server's limit).
const maxBatchJobs = 1000

// AddJobBatch adds up to 1,000 independent jobs in one call, as if each were its own AddJob: each is
// checked and added on its own, so one refused job leaves the others alone. It returns one outcome per
// job, in order; the error is for the call as a whole (nothing was added, or the call's fate is unknown).
func (c *Client) AddJobBatch(ctx context.Context, jobs []BatchJob) ([]BatchOutcome, error) {
	if len(jobs) > maxBatchJobs {
		return nil, fmt.Errorf("AddJobBatch takes at most %d jobs, got %d (use AddBulk)", maxBatchJobs, len(jobs))
	}
	req := &pb.AddJobBatchRequest{Items: make([]*pb.AddJobRequest, 0, len(jobs))}
	for i, job := range jobs {
		p, err := job.proto()
		if err != nil {
			return nil, fmt.Errorf("jobs[%d]: %w", i, err)
		}
		req.Items = append(req.Items, &pb.AddJobRequest{QueueName: job.Queue, Job: p})
	}
	var spans []trace.Span
	if t := c.traced(); t != nil {
		// As AddJob: a PRODUCER span per job, each job carrying its own span's context.
		spans = make([]trace.Span, len(req.Items))
		for i, item := range req.Items {
			var spanCtx context.Context
			spanCtx, spans[i] = t.publish(ctx, item.GetQueueName(), -1)
			carryJob(item.GetJob(), t.traceContext(spanCtx))
		}
	}
	out, err := c.addJobBatch(ctx, req)
	for i, span := range spans {
		switch {
		case err != nil:
			endPublish(span, err)
		case out[i].Err != nil:
			endPublish(span, out[i].Err)
		default:
			endPublish(span, nil, attribute.String("messaging.message.id", out[i].Job.ID))
		}
	}
	return out, err
}

func (c *Client) addJobBatch(ctx context.Context, req *pb.AddJobBatchRequest) ([]BatchOutcome, error) {
	jobs := req.GetItems()
	resp, err := c.queues.AddJobBatch(ctx, req)
	if err != nil {
		return nil, fromRPC(err)
	}
	if len(resp.GetOutcomes()) != len(jobs) {
		// A server bug: never guess which outcome is whose.
		message := fmt.Sprintf("the server answered %d outcomes for %d jobs", len(resp.GetOutcomes()), len(jobs))
		return nil, &Error{Code: codes.Internal, Message: message}
	}
	out := make([]BatchOutcome, len(jobs))
	for i, outcome := range resp.GetOutcomes() {
		switch kind := outcome.GetOutcome().(type) {
		case *pb.AddJobOutcome_Added:
			out[i].Job = jobFromProto(kind.Added.GetJob())
			out[i].Job.Created = kind.Added.GetCreated()
			out[i].Job.Replaced = kind.Added.GetDisposition() == pb.AddDisposition_ADD_DISPOSITION_REPLACED
		case *pb.AddJobOutcome_Error:
			out[i].Err = fromStatus(kind.Error.GetCode(), kind.Error.GetMessage())
		default:
			out[i].Err = &Error{Code: codes.Internal, Message: "the server answered an add with no outcome"}
		}
	}
	return out, nil
}

// BulkResult is AddBulk's answer.
type BulkResult struct {
	// JobIDs are the ids in the order the jobs were given (the existing id where a JobID was taken).
	JobIDs []string
	// Created counts the jobs newly created.
	Created int
	// Replaced counts the jobs that replaced the pending job holding their dedup key (DedupReplace); their
	// ids in JobIDs are the replaced jobs'.
	Replaced int
}

// bulkMessageJobs is how many jobs one message of the bulk stream carries at most.
const bulkMessageJobs = 1000

// bulkMessageBytes ends a message once its jobs' data reach about this many bytes, as the Python client
// splits them: the transport refuses a message over 16 MiB whole, and 1,000 jobs of up to 1 MiB each could
// make one.
const bulkMessageBytes = 4 << 20

// AddBulk adds many jobs to one queue on one stream: all or none (the server checks the whole stream
// before it writes, and a failure adds nothing). At most 100,000 jobs per call. When tracing is on, the
// call is one PRODUCER span "{queue} publish" and every job carries its context.
func (c *Client) AddBulk(ctx context.Context, queue string, jobs []NewJob) (*BulkResult, error) {
	var messages []*pb.AddBulkRequest
	message, size := &pb.AddBulkRequest{QueueName: queue}, 0
	for _, job := range jobs {
		p, err := job.proto()
		if err != nil {
			return nil, err
		}
		message.Jobs = append(message.Jobs, p)
		size += len(p.GetData().GetRaw()) + len(p.GetName()) + 32
		if len(message.Jobs) >= bulkMessageJobs || size >= bulkMessageBytes {
			messages = append(messages, message)
			message, size = &pb.AddBulkRequest{QueueName: queue}, 0
		}
	}
	if len(message.Jobs) > 0 {
		messages = append(messages, message)
	}
	t := c.traced()
	if t == nil {
		return c.addBulk(ctx, messages)
	}
	ctx, span := t.publish(ctx, queue, len(jobs))
	traceContext := t.traceContext(ctx)
	for _, message := range messages {
		for _, job := range message.Jobs {
			carryJob(job, traceContext)
		}
	}
	out, err := c.addBulk(ctx, messages)
	endPublish(span, err)
	return out, err
}

func (c *Client) addBulk(ctx context.Context, messages []*pb.AddBulkRequest) (*BulkResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the stream if a send fails
	stream, err := c.queues.AddBulk(ctx)
	if err != nil {
		return nil, fromRPC(err)
	}
	for _, message := range messages {
		if err := stream.Send(message); err != nil {
			if errors.Is(err, io.EOF) {
				break // the server ended the call: CloseAndRecv has its status
			}
			return nil, fromRPC(err)
		}
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return nil, fromRPC(err)
	}
	return &BulkResult{
		JobIDs: resp.GetJobIds(), Created: int(resp.GetCreatedCount()), Replaced: int(resp.GetReplacedCount()),
	}, nil
}

// GetJob returns one job, with the tail of its log.
func (c *Client) GetJob(ctx context.Context, queue, id string) (*Job, error) {
	resp, err := c.queues.GetJob(ctx, &pb.GetJobRequest{QueueName: queue, JobId: id})
	if err != nil {
		return nil, fromRPC(err)
	}
	return jobFromProto(resp.GetJob()), nil
}

// WaitForJob waits until the job is finished (completed, failed for good or cancelled) and returns it.
// Bound the wait with ctx: when it ends first, the error matches context.DeadlineExceeded (or Canceled).
func (c *Client) WaitForJob(ctx context.Context, queue, id string) (*Job, error) {
	stream, err := c.queues.WaitForJob(ctx, &pb.WaitForJobRequest{QueueName: queue, JobId: id})
	if err != nil {
		return nil, fromRPC(err)
	}
	var last *Job
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			if last == nil {
				return nil, &Error{Code: 2, Message: "the server ended WaitForJob without sending the job"}
			}
			return last, nil
		}
		if err != nil {
			return nil, fromRPC(err)
		}
		last = jobFromProto(resp.GetJob())
		if last.State.Finished() {
			return last, nil
		}
	}
}

// JobPage is one page of ListJobs.
type JobPage struct {
	Jobs []*Job
	// NextPageToken asks for the next page; "" on the last page.
	NextPageToken string
	// Total is the number of jobs in the state when the page was read.
	Total int
}

// ListJobs returns a page of a queue's jobs in one state. pageSize is 1 to 1,000 (0 means 100); pageToken
// is "" for the first page, then the previous page's NextPageToken. ListJobsMatching takes a filter.
func (c *Client) ListJobs(ctx context.Context, queue string, state JobState, pageSize int, pageToken string) (
	*JobPage, error,
) {
	return c.ListJobsMatching(ctx, queue, state, JobFilter{}, pageSize, pageToken)
}

// RemoveJob removes a job that is not active and returns the state it was in.
func (c *Client) RemoveJob(ctx context.Context, queue, id string) (JobState, error) {
	resp, err := c.queues.RemoveJob(ctx, &pb.RemoveJobRequest{QueueName: queue, JobId: id})
	if err != nil {
		return 0, fromRPC(err)
	}
	return JobState(resp.GetPreviousState()), nil
}

// CancelJob cancels a job: a waiting or delayed one ends cancelled at once; an active one's worker is
// told to stop it (its handler's context is cancelled), and it ends cancelled when the worker confirms.
func (c *Client) CancelJob(ctx context.Context, queue, id, reason string) (*Job, error) {
	resp, err := c.queues.CancelJob(ctx, &pb.CancelJobRequest{QueueName: queue, JobId: id, Reason: reason})
	if err != nil {
		return nil, fromRPC(err)
	}
	return jobFromProto(resp.GetJob()), nil
}

// LogPage is one page of GetJobLogs.
type LogPage struct {
	// Lines of this page, oldest first.
	Lines []LogLine
	// NextPageToken asks for the next page; "" on the last page.
	NextPageToken string
	// Total is the number of lines kept for the job (its last 1,000).
	Total int
}

// GetJobLogs returns a page of a job's log lines, oldest first. pageSize is 1 to 1,000 (0 means 100);
// pageToken is "" for the first page, then the previous page's NextPageToken.
func (c *Client) GetJobLogs(ctx context.Context, queue, id string, pageSize int, pageToken string) (
	*LogPage, error,
) {
	if pageSize < 0 || pageSize > math.MaxUint32 {
		return nil, fmt.Errorf("pageSize must be from 0 to 1000, got %d", pageSize)
	}
	resp, err := c.queues.GetJobLogs(ctx, &pb.GetJobLogsRequest{
		QueueName: queue, JobId: id, PageSize: uint32(pageSize), PageToken: pageToken,
	})
	if err != nil {
		return nil, fromRPC(err)
	}
	return &LogPage{
		Lines: logsOf(resp.GetLines()), NextPageToken: resp.GetNextPageToken(), Total: int(resp.GetTotalSize()),
	}, nil
}

// RetryJob runs a failed or cancelled job again, with its attempts counted afresh.
func (c *Client) RetryJob(ctx context.Context, queue, id string) (*Job, error) {
	resp, err := c.queues.RetryJob(ctx, &pb.RetryJobRequest{QueueName: queue, JobId: id})
	if err != nil {
		return nil, fromRPC(err)
	}
	return jobFromProto(resp.GetJob()), nil
}

// RetryFailedJobs runs every failed job of a queue again, their attempts counted afresh, and returns how
// many; with state StateCancelled, the cancelled jobs instead (0 means StateFailed; other states are
// ErrInvalidArgument). It does so in one call, however many there are; RetryJobs takes a filter and a
// bound.
func (c *Client) RetryFailedJobs(ctx context.Context, queue string, state JobState) (int, error) {
	req := &pb.RetryFailedJobsRequest{QueueName: queue, State: pb.JobState(state)}
	resp, err := c.queues.RetryFailedJobs(ctx, req)
	if err != nil {
		return 0, fromRPC(err)
	}
	return int(resp.GetCount()), nil
}

// PromoteJob makes a delayed job waiting now.
func (c *Client) PromoteJob(ctx context.Context, queue, id string) (*Job, error) {
	resp, err := c.queues.PromoteJob(ctx, &pb.PromoteJobRequest{QueueName: queue, JobId: id})
	if err != nil {
		return nil, fromRPC(err)
	}
	return jobFromProto(resp.GetJob()), nil
}

// UpdateJobData replaces the data of a job that has not finished (waiting, paused, delayed or active): a
// running attempt keeps the data it was given, the next attempt gets the new data. data is encoded as AddJob
// encodes it ([]byte as octet-stream, json.RawMessage as is, anything else as JSON; nil is JSON null). A
// finished job gives ErrFailedPrecondition, data over the server's payload limit ErrInvalidArgument.
func (c *Client) UpdateJobData(ctx context.Context, queue, id string, data any) (*Job, error) {
	payload, err := dataPayload(data)
	if err != nil {
		return nil, err
	}
	resp, err := c.queues.UpdateJobData(ctx, &pb.UpdateJobDataRequest{QueueName: queue, JobId: id, Data: payload})
	if err != nil {
		return nil, fromRPC(err)
	}
	return jobFromProto(resp.GetJob()), nil
}

// dataPayload is a job's new data (UpdateJobData, Job.UpdateData) as encodePayload makes it, nil as JSON null:
// the server requires data in the request.
func dataPayload(data any) (*pb.Payload, error) {
	payload, err := encodePayload(data)
	if err != nil {
		return nil, err
	}
	if payload == nil {
		payload = &pb.Payload{Body: &pb.Payload_Raw{Raw: []byte("null")}, ContentType: ContentTypeJSON}
	}
	return payload, nil
}

// RescheduleJob changes when a delayed job runs, to delay from now (the Redis server's clock); a waiting (or
// paused) job becomes delayed until then. A delay of 0 makes a delayed job waiting now, as PromoteJob does,
// and leaves a waiting one as it is. An active or finished job gives ErrFailedPrecondition (the message names
// its state), a negative delay ErrInvalidArgument.
func (c *Client) RescheduleJob(ctx context.Context, queue, id string, delay time.Duration) (*Job, error) {
	return c.reschedule(ctx, &pb.RescheduleJobRequest{
		QueueName: queue, JobId: id, When: &pb.RescheduleJobRequest_Delay{Delay: durationpb.New(delay)},
	})
}

// RescheduleJobAt is RescheduleJob to a time: one that has come (at or before now on the Redis server's
// clock) makes a delayed job waiting now and leaves a waiting one as it is.
func (c *Client) RescheduleJobAt(ctx context.Context, queue, id string, at time.Time) (*Job, error) {
	return c.reschedule(ctx, &pb.RescheduleJobRequest{
		QueueName: queue, JobId: id, When: &pb.RescheduleJobRequest_RunTime{RunTime: timestamppb.New(at)},
	})
}

func (c *Client) reschedule(ctx context.Context, req *pb.RescheduleJobRequest) (*Job, error) {
	resp, err := c.queues.RescheduleJob(ctx, req)
	if err != nil {
		return nil, fromRPC(err)
	}
	return jobFromProto(resp.GetJob()), nil
}

// ChangeJobPriority gives a waiting or delayed job a new priority.
func (c *Client) ChangeJobPriority(ctx context.Context, queue, id string, priority Priority) (*Job, error) {
	resp, err := c.queues.ChangeJobPriority(ctx, &pb.ChangeJobPriorityRequest{
		QueueName: queue, JobId: id, Priority: pb.JobPriority(priority),
	})
	if err != nil {
		return nil, fromRPC(err)
	}
	return jobFromProto(resp.GetJob()), nil
}
