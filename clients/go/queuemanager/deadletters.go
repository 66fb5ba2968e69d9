package queuemanager

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"time"

	pb "github.com/queue-manager/queue-manager/clients/go/gen/queue_manager/v1"
)

// DeadLetterQueue is the dead-letter queue of every queue registered without one of its own.
const DeadLetterQueue = "dead-letter-queue"

// RetryJobWithData runs a failed or cancelled job again, its attempts counted afresh, with new data (edit and
// requeue): the data changes in the same atomic step as the retry, so a job in another state
// (ErrFailedPrecondition) keeps its data. data is encoded as AddJob encodes it, nil as JSON null (as AddJob
// stores nil); RetryJob keeps the job's data. Data over the server's payload limit gives ErrInvalidArgument.
func (c *Client) RetryJobWithData(ctx context.Context, queue, id string, data any) (*Job, error) {
	if data == nil {
		data = json.RawMessage("null") // given, so new data: encodePayload leaves nil unset (none)
	}
	payload, err := encodePayload(data)
	if err != nil {
		return nil, err
	}
	resp, err := c.queues.RetryJob(ctx, &pb.RetryJobRequest{QueueName: queue, JobId: id, Data: payload})
	if err != nil {
		return nil, fromRPC(err)
	}
	return jobFromProto(resp.GetJob()), nil
}

// RedriveOptions picks the dead-letter copies RedriveDeadLetters sends back; the zero value takes every
// waiting copy.
type RedriveOptions struct {
	// OriginalQueue takes only copies of this queue's jobs ("" every queue's).
	OriginalQueue string
	// Limit takes at most this many copies (0 every one); not with JobIDs.
	Limit uint32
	// JobIDs takes only these copies ("<original queue>:<job id>"), at most 1,000.
	JobIDs []string
	// ReplaceData runs a failed original with the copy's original_data rather than the data it failed with.
	ReplaceData bool
	// Data, with exactly one of JobIDs, is the data the original runs with instead (a failed one run again, a
	// gone one added anew), encoded as AddJob encodes it (json.RawMessage("null") for JSON null); nil: none.
	// The server records it as it takes the copy, in one step: a copy skipped or a call refused
	// (ErrInvalidArgument: several JobIDs or none, data over the payload limit) keeps its data.
	Data any
}

// RedrivenQueue counts the copies sent back to one original queue.
type RedrivenQueue struct {
	// Count is Retried + Added + Unchanged.
	Count int
	// Retried originals were failed and run again.
	Retried int
	// Added originals were gone (retention, a removal) and were added anew.
	Added int
	// Unchanged originals were no longer failed and were left as they are.
	Unchanged int
}

// RedriveResult is what a redrive did.
type RedriveResult struct {
	// Count is the number of copies sent back.
	Count int
	// Queues holds the counts per original queue name.
	Queues map[string]RedrivenQueue
	// Skipped maps each named copy that stays in the dead-letter queue to why.
	Skipped map[string]string
	// MissingQueues are original queues no longer registered; their copies stay.
	MissingQueues []string
}

// RedriveDeadLetters sends copies in the dead-letter queue dlq back to their original queues: a failed
// original runs again, one that retention removed is added anew, one run again meanwhile is left as it is;
// each copy leaves the dead-letter queue. An unknown queue gives ErrNotFound, a queue that is no queue's
// dead-letter queue or bad options ErrInvalidArgument.
func (c *Client) RedriveDeadLetters(ctx context.Context, dlq string, opts RedriveOptions) (*RedriveResult, error) {
	data, err := encodePayload(opts.Data)
	if err != nil {
		return nil, err
	}
	resp, err := c.queues.RedriveDeadLetters(ctx, &pb.RedriveDeadLettersRequest{
		QueueName:     dlq,
		OriginalQueue: opts.OriginalQueue,
		Limit:         opts.Limit,
		JobIds:        opts.JobIDs,
		ReplaceData:   opts.ReplaceData,
		Data:          data,
	})
	if err != nil {
		return nil, fromRPC(err)
	}
	out := &RedriveResult{
		Count:         int(resp.GetCount()),
		Queues:        map[string]RedrivenQueue{},
		Skipped:       map[string]string{},
		MissingQueues: resp.GetMissingQueues(),
	}
	for _, q := range resp.GetQueues() {
		out.Queues[q.GetQueueName()] = RedrivenQueue{
			Count: int(q.GetCount()), Retried: int(q.GetRetried()), Added: int(q.GetAdded()),
			Unchanged: int(q.GetUnchanged()),
		}
	}
	for _, s := range resp.GetSkipped() {
		out.Skipped[s.GetJobId()] = s.GetReason()
	}
	return out, nil
}

// DeadLetter is a dead-letter copy (ListDeadLetters), read as what it says about the job that failed.
type DeadLetter struct {
	// ID is the copy's id in the dead-letter queue ("<original queue>:<job id>"), as RedriveOptions.JobIDs
	// takes it.
	ID string
	// State is the copy's state in the dead-letter queue (waiting until something consumes or redrives it).
	State JobState
	// OriginalQueue is the queue the job failed in; OriginalJobID its id there; OriginalName its name.
	OriginalQueue string
	OriginalJobID string
	OriginalName  string
	// OriginalData is the job's data: JSON text when OriginalContentType is JSON, else the bytes.
	OriginalData        []byte
	OriginalContentType string
	// FailureReason is the error of the job's last run: why it is dead.
	FailureReason string
	// AttemptsMade counts the runs it had.
	AttemptsMade int
	// DeadTime is when the copy was written (the job failed for good just before).
	DeadTime time.Time
}

// DeadLetterPage is one page of ListDeadLetters.
type DeadLetterPage struct {
	DeadLetters []*DeadLetter
	// NextPageToken asks for the next page; "" on the last page.
	NextPageToken string
	// Total is the number of jobs in the state (copies or not) when the page was read.
	Total int
}

// ListDeadLetters returns a page of the copies in dead-letter queue dlq in one state (0: StateWaiting), each
// read as its original's queue, id, name, data and why it failed. Jobs of the queue that are not copies are
// left out, so a page may hold fewer than pageSize: follow NextPageToken until it is "". pageSize is 1 to
// 1,000 (0 means 100). An unknown queue gives ErrNotFound.
func (c *Client) ListDeadLetters(ctx context.Context, dlq string, state JobState, pageSize int, pageToken string) (
	*DeadLetterPage, error,
) {
	if state == 0 {
		state = StateWaiting
	}
	page, err := c.ListJobs(ctx, dlq, state, pageSize, pageToken)
	if err != nil {
		return nil, err
	}
	out := &DeadLetterPage{NextPageToken: page.NextPageToken, Total: page.Total}
	for _, job := range page.Jobs {
		if d, ok := DeadLetterFromJob(job); ok {
			if err := c.decodeDeadLetter(d); err != nil {
				return nil, err
			}
			out.DeadLetters = append(out.DeadLetters, d)
		}
	}
	return out, nil
}

// deadLetterBody is the data of a dead-letter copy, as the server writes it.
type deadLetterBody struct {
	OriginalQueue       *string         `json:"original_queue"`
	OriginalJobID       *string         `json:"original_job_id"`
	OriginalName        *string         `json:"original_name"`
	OriginalData        json.RawMessage `json:"original_data"`
	OriginalContentType *string         `json:"original_content_type"`
	FailureReason       string          `json:"failure_reason"`
	AttemptsMade        float64         `json:"attempts_made"`
}

// decodeDeadLetter decodes a copy's original data with the client's codecs: the server copies an encoded
// original (codecs.go) as it is. Without codecs it stays encoded (EncodedPayloadInfo reads its content type).
func (c *Client) decodeDeadLetter(d *DeadLetter) error {
	if c.codecs == nil || !isEncoded(d.OriginalContentType) {
		return nil
	}
	p := &pb.Payload{Body: &pb.Payload_Raw{Raw: d.OriginalData}, ContentType: d.OriginalContentType}
	if err := c.codecs.decode(p); err != nil {
		return err
	}
	d.OriginalData, d.OriginalContentType = p.GetRaw(), p.GetContentType()
	return nil
}

// DeadLetterFromJob reads job (a job of a dead-letter queue) as the copy it is, as the Python client reads
// it; false for a job that is not a copy (added to the queue directly, or its data edited out of shape).
func DeadLetterFromJob(job *Job) (*DeadLetter, bool) {
	var body deadLetterBody
	if job == nil || !isJSON(job.ContentType) || json.Unmarshal(job.Data, &body) != nil {
		return nil, false
	}
	if body.OriginalQueue == nil || body.OriginalJobID == nil || body.OriginalName == nil ||
		body.OriginalContentType == nil || body.OriginalData == nil {
		return nil, false
	}
	data := []byte(body.OriginalData)
	if !strings.EqualFold(strings.TrimSpace(strings.SplitN(*body.OriginalContentType, ";", 2)[0]), ContentTypeJSON) {
		var text string // bytes travel as base64 in the copy's JSON
		if json.Unmarshal(body.OriginalData, &text) != nil {
			return nil, false
		}
		decoded, err := base64.StdEncoding.DecodeString(text)
		if err != nil {
			return nil, false
		}
		data = decoded
	}
	return &DeadLetter{
		ID: job.ID, State: job.State, OriginalQueue: *body.OriginalQueue, OriginalJobID: *body.OriginalJobID,
		OriginalName: *body.OriginalName, OriginalData: data, OriginalContentType: *body.OriginalContentType,
		FailureReason: body.FailureReason, AttemptsMade: int(body.AttemptsMade), DeadTime: job.CreateTime,
	}, true
}
