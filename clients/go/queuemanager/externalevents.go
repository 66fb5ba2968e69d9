package queuemanager

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/queue-manager/queue-manager/clients/go/gen/queue_manager/v1"
)

// EventWait is a job's wait for an external event (Job.WaitForEvent): an event of any one of its keys ends it.
type EventWait struct {
	Keys []string
	// Until is when the wait times out; zero for a wait with no timeout.
	Until time.Time
}

// ExternalEvent is an external event (Client.PushEvent) as the job it woke sees it.
type ExternalEvent struct {
	Key string
	// Data is the event's data (JSON text when DataType is ContentTypeJSON); empty when the push had none.
	Data     []byte
	DataType string
	// EventID is the id the push gave; "" when none.
	EventID string
	// PushedAt is when the server recorded the push.
	PushedAt time.Time
}

// Decode reads the event's JSON data into v (as json.Unmarshal).
func (e *ExternalEvent) Decode(v any) error {
	return decodeJSON(e.Data, e.DataType, "event data", v)
}

// PushedEvent is what Client.PushEvent did.
type PushedEvent struct {
	// Woken are the jobs the event woke (they waited for its key), now waiting to run.
	Woken []JobRef
	// Duplicate is set when the event id had been pushed in the last 24 hours: nothing changed, and Woken
	// and PushedAt are the first push's.
	Duplicate bool
	PushedAt  time.Time
	// Added are the jobs its event triggers added (one per trigger whose pattern matches its key).
	Added []JobRef
	// WokenCount is how many jobs the event woke: Woken lists them all up to the server's bound (1,000),
	// the first ones past it.
	WokenCount int
	// WokenTruncated is set when Woken lists fewer jobs than WokenCount.
	WokenTruncated bool
}

// PushEvent pushes an external event: every job waiting for key (Job.WaitForEvent) goes back to waiting at
// once, and its next run sees the event in Job.Event. A job that starts waiting after the push does not see
// it. data is encoded as AddJob encodes it (nil: no data). eventID, when not "", makes the push safe to
// repeat within 24 hours (a webhook's retries). A bad key or oversized data gives ErrInvalidArgument; a
// server on a Redis Cluster ErrFailedPrecondition.
func (c *Client) PushEvent(ctx context.Context, key string, data any, eventID string) (*PushedEvent, error) {
	payload, err := encodePayload(data)
	if err != nil {
		return nil, err
	}
	resp, err := c.queues.PushEvent(ctx, &pb.PushEventRequest{Key: key, Data: payload, EventId: eventID})
	if err != nil {
		return nil, fromRPC(err)
	}
	return &PushedEvent{
		Woken: refsOf(resp.GetWoken()), Duplicate: resp.GetDuplicate(), PushedAt: timeOf(resp.GetPushedAt()),
		Added: refsOf(resp.GetAdded()), WokenCount: int(resp.GetWokenCount()), WokenTruncated: resp.GetWokenTruncated(),
	}, nil
}

// WaitForEventOptions are what Job.WaitForEvent takes besides the keys.
type WaitForEventOptions struct {
	// Timeout is how long to wait at most (the job then runs again with no event); 0 waits with no end.
	Timeout time.Duration
	// Data replaces the job's data for its next run (a checkpoint) in the same step when HasData is set
	// ([]byte as raw bytes, anything else as JSON); without HasData the data is kept.
	Data    any
	HasData bool
}

// WaitForEvent ends this run until an external event of one of keys is pushed (Client.PushEvent, the HTTP
// POST /api/v1/events): an approval, a payment's webhook, a reply. Only within a worker's handler of this job.
//
// The server parks this job in delayed, using no attempt and holding no worker slot. A push of one of the
// keys made after this call moves it back to waiting at once; its next run sees the event in Job.Event.
// Events pushed before the call are not seen. With a Timeout, the job runs again when it passes with no
// event (Job.EventTimedOut). The call is fenced by the run's lease and is one atomic step on the server.
//
// Once the server has answered it returns a *WaitingForEventError: the run is over, and the handler returns
// it (nothing the handler returns afterwards is reported). 1 to 16 keys, each 1 to 256 characters without
// control characters. A refusal returns the server's error and the run goes on: ErrInvalidArgument, or
// ErrFailedPrecondition (the run's lease was lost, or a Redis Cluster). opts may be nil. ctx bounds the call.
func (j *Job) WaitForEvent(ctx context.Context, keys []string, opts *WaitForEventOptions) error {
	r := j.run
	if r == nil {
		return errNotRunning
	}
	req := &pb.WaitForEventRequest{QueueName: r.key.queue, JobId: r.key.id, LeaseToken: r.token, Keys: keys}
	if opts != nil {
		if opts.Timeout < 0 {
			return fmt.Errorf("timeout must not be negative, got %s", opts.Timeout)
		}
		if opts.Timeout > 0 {
			req.Timeout = durationpb.New(opts.Timeout)
		}
		if opts.HasData {
			payload, err := dataPayload(opts.Data)
			if err != nil {
				return fmt.Errorf("the job's new data: %w", err)
			}
			req.Data = payload
		}
	}
	resp, err := r.w.client.queues.WaitForEvent(ctx, req)
	if err != nil {
		return fromRPC(err)
	}
	w := r.w
	w.mu.Lock()
	w.park(r)
	w.mu.Unlock()
	w.log.Info("job waits for an event", "queue", r.key.queue, "job_id", r.key.id, "keys", keys)
	return &WaitingForEventError{Keys: keys, Until: timeOf(resp.GetUntil())}
}

// EventTimedOut reports whether this run follows a WaitForEvent that ended with no event: it timed out (or
// an operator promoted the job).
func (j *Job) EventTimedOut() bool {
	return j.EventWait != nil && j.Event == nil
}

func eventWaitOf(p *pb.Job) *EventWait {
	w := p.GetEventWait()
	if w == nil {
		return nil
	}
	return &EventWait{Keys: w.GetKeys(), Until: timeOf(w.GetUntil())}
}

func eventOf(p *pb.Job) *ExternalEvent {
	e := p.GetEvent()
	if e == nil {
		return nil
	}
	event := &ExternalEvent{Key: e.GetKey(), EventID: e.GetEventId(), PushedAt: timeOf(e.GetPushedAt())}
	if e.GetData() != nil {
		event.Data, event.DataType = decodePayload(e.GetData())
	}
	return event
}
