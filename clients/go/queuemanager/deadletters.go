package queuemanager

import (
	"context"
	"errors"

	pb "github.com/queue-manager/queue-manager/clients/go/gen/queue_manager/v1"
)

// DeadLetterQueue is the dead-letter queue of every queue registered without one of its own.
const DeadLetterQueue = "dead-letter-queue"

// RetryJobWithData runs a failed or cancelled job again, its attempts counted afresh, with new data (edit and
// requeue): the data changes in the same atomic step as the retry, so a job in another state
// (ErrFailedPrecondition) keeps its data. data is encoded as AddJob encodes it; nil is refused (use RetryJob
// to keep the data). Data over the server's payload limit gives ErrInvalidArgument.
func (c *Client) RetryJobWithData(ctx context.Context, queue, id string, data any) (*Job, error) {
	payload, err := encodePayload(data)
	if err != nil {
		return nil, err
	}
	if payload == nil {
		return nil, errors.New("queuemanager: RetryJobWithData needs data; RetryJob keeps the job's data")
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
	resp, err := c.queues.RedriveDeadLetters(ctx, &pb.RedriveDeadLettersRequest{
		QueueName:     dlq,
		OriginalQueue: opts.OriginalQueue,
		Limit:         opts.Limit,
		JobIds:        opts.JobIDs,
		ReplaceData:   opts.ReplaceData,
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
