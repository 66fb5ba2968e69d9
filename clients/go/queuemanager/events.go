package queuemanager

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	pb "github.com/queue-manager/queue-manager/clients/go/gen/queue_manager/v1"
)

// JobEventType is what happened to a job (WatchJobEvents; docs/events.md has when each is sent).
type JobEventType int32

const (
	// EventAdded: a job was added, waiting or delayed (JobEvent.RunAt for a delayed one).
	EventAdded = JobEventType(pb.JobEventType_JOB_EVENT_TYPE_ADDED)
	// EventWaiting: a job became waiting again (a delayed job fell due or was promoted, a retry, a worker
	// handed its run back unfinished).
	EventWaiting = JobEventType(pb.JobEventType_JOB_EVENT_TYPE_WAITING)
	// EventActive: a worker started a run (JobEvent.Attempt is which run).
	EventActive = JobEventType(pb.JobEventType_JOB_EVENT_TYPE_ACTIVE)
	// EventProgress: the running job reported progress (JobEvent.Progress).
	EventProgress = JobEventType(pb.JobEventType_JOB_EVENT_TYPE_PROGRESS)
	// EventCompleted: the job completed.
	EventCompleted = JobEventType(pb.JobEventType_JOB_EVENT_TYPE_COMPLETED)
	// EventFailed: the job failed for good (JobEvent.FailedReason).
	EventFailed = JobEventType(pb.JobEventType_JOB_EVENT_TYPE_FAILED)
	// EventRetrying: a run failed with attempts left (JobEvent.FailedReason, JobEvent.RunAt).
	EventRetrying = JobEventType(pb.JobEventType_JOB_EVENT_TYPE_RETRYING)
	// EventDelayed: the running job asked to run later (JobEvent.RunAt).
	EventDelayed = JobEventType(pb.JobEventType_JOB_EVENT_TYPE_DELAYED)
	// EventStalled: a run was lost (its worker or lease gone) and the job went back to waiting.
	EventStalled = JobEventType(pb.JobEventType_JOB_EVENT_TYPE_STALLED)
	// EventCancelled: the job was cancelled.
	EventCancelled = JobEventType(pb.JobEventType_JOB_EVENT_TYPE_CANCELLED)
	// EventRemoved: the job was removed (RemoveJob, RemoveJobs).
	EventRemoved = JobEventType(pb.JobEventType_JOB_EVENT_TYPE_REMOVED)
	// EventExpired: the job's expiry passed before a run started.
	EventExpired = JobEventType(pb.JobEventType_JOB_EVENT_TYPE_EXPIRED)
)

// String is the type's name in lower case, e.g. "completed" (the number, for a type a newer server sends
// and this client does not know).
func (t JobEventType) String() string {
	return strings.ToLower(strings.TrimPrefix(pb.JobEventType(t).String(), "JOB_EVENT_TYPE_"))
}

// known reports whether t is one of the types above (EventAdded to EventExpired).
func (t JobEventType) known() bool {
	return t >= EventAdded && t <= EventExpired
}

// JobEvent is one thing that happened to one job.
type JobEvent struct {
	Queue string
	JobID string
	// JobName is the job's name; "" when the job was gone before the event could read it.
	JobName string
	Type    JobEventType
	// Time is when it happened (the job store's clock), the same for every event of one moment.
	Time time.Time
	// Attempt: EventActive, which run this is (1 = the first; stalls count); EventCompleted, EventFailed,
	// EventRetrying, the attempts made, this one included; 0 when not known.
	Attempt int
	// FailedReason: EventFailed and EventRetrying, the first 200 bytes of the reason (GetJob has all of it).
	FailedReason string
	// Progress: EventProgress, the progress reported as JSON text; nil when it was over 1,000 bytes (GetJob
	// has it).
	Progress []byte
	// RunAt: EventAdded (a delayed job), EventRetrying and EventDelayed, when the job runs; zero otherwise.
	RunAt time.Time
}

func eventFromProto(p *pb.JobEvent) *JobEvent {
	e := &JobEvent{
		Queue:        p.GetQueueName(),
		JobID:        p.GetJobId(),
		JobName:      p.GetJobName(),
		Type:         JobEventType(p.GetType()),
		Time:         timeOf(p.GetTime()),
		Attempt:      int(p.GetAttempt()),
		FailedReason: p.GetFailedReason(),
		RunAt:        timeOf(p.GetRunAt()),
	}
	if progress := p.GetProgress(); progress != "" {
		e.Progress = []byte(progress)
	}
	return e
}

// EventFilter picks the events WatchJobEvents sends; the zero value sends every event of the queue.
type EventFilter struct {
	// Types sends only events of these types (empty: every type).
	Types []JobEventType
	// JobNames sends only events of jobs with these names (empty: every job; at most 100 names).
	JobNames []string
}

func (f EventFilter) proto(queue string) (*pb.WatchJobEventsRequest, error) {
	req := &pb.WatchJobEventsRequest{QueueName: queue, JobNames: f.JobNames}
	for _, t := range f.Types {
		if !t.known() {
			return nil, fmt.Errorf("EventFilter.Types: unknown job event type %d: use EventAdded to EventExpired", t)
		}
		req.Types = append(req.Types, pb.JobEventType(t))
	}
	for i, name := range f.JobNames {
		if name == "" {
			return nil, fmt.Errorf("EventFilter.JobNames[%d] is empty: a job name is 1 to 200 characters", i)
		}
		if !utf8.ValidString(name) {
			return nil, fmt.Errorf("EventFilter.JobNames[%d] %q is not valid UTF-8", i, name)
		}
	}
	return req, nil
}

// JobEventStream is a live WatchJobEvents call. Read it with Events (a range loop) or Recv, from one
// goroutine; Close it (or end the context WatchJobEvents was given) when done.
type JobEventStream struct {
	ctx     context.Context // the call's: done once Close or the caller's context ended it
	cancel  context.CancelFunc
	stream  grpc.ServerStreamingClient[pb.WatchJobEventsResponse]
	pending []*pb.JobEvent // the rest of the last message (one message holds the events of one moment)
}

// WatchJobEvents follows a queue's job events live (added, active, progress, completed, failed, retrying…),
// as BullMQ's QueueEvents does. It returns once the server watches the queue: every event from then on is
// in the stream, so an add made after it returns is seen. The feed is at most once and never replayed (Redis
// pub/sub): GetJob and WaitForJob give a job's durable state (docs/events.md).
//
//	events, err := client.WatchJobEvents(ctx, "emails", qm.EventFilter{Types: []qm.JobEventType{qm.EventFailed}})
//	if err != nil {
//		return err
//	}
//	defer events.Close()
//	for ev, err := range events.Events() {
//		if err != nil {
//			return err // e.g. ErrResourceExhausted: the watcher fell behind the server's buffer
//		}
//		log.Printf("%s %s %s: %s", ev.Type, ev.JobID, ev.JobName, ev.FailedReason)
//	}
//
// An unknown queue gives ErrNotFound here; a bad filter (an unknown type, an empty job name) is refused
// before the call. The call lasts until Close, the end of ctx, or the server ending it: ErrNotFound once the
// queue is deleted, ErrResourceExhausted ("events dropped: …") when this watcher read too slowly; watch
// again then, and read what was missed with GetJob or ListJobs.
func (c *Client) WatchJobEvents(ctx context.Context, queue string, filter EventFilter) (*JobEventStream, error) {
	req, err := filter.proto(queue)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	stream, err := c.queues.WatchJobEvents(ctx, req)
	if err != nil {
		cancel()
		return nil, fromRPC(err)
	}
	// The server sends the response headers once it watches the queue; a call it refused (an unknown queue)
	// ends without them, and Recv then has its status.
	if header, _ := stream.Header(); header == nil {
		_, err := stream.Recv()
		cancel()
		if err == nil || errors.Is(err, io.EOF) {
			return nil, &Error{Code: codes.Unknown, Message: "the server ended WatchJobEvents before it watched the queue"}
		}
		return nil, fromRPC(err)
	}
	return &JobEventStream{ctx: ctx, cancel: cancel, stream: stream}, nil
}

// Recv waits for the next event. Once the call has ended it returns its error: the server's (an *Error,
// such as ErrNotFound or ErrResourceExhausted), one matching context.Canceled after Close or when the
// caller's context was cancelled (context.DeadlineExceeded at its deadline), or io.EOF when the server
// ended the call without an error.
func (s *JobEventStream) Recv() (*JobEvent, error) {
	for len(s.pending) == 0 {
		resp, err := s.stream.Recv()
		if err != nil {
			return nil, fromRPC(err)
		}
		s.pending = resp.GetEvents()
	}
	event := eventFromProto(s.pending[0])
	s.pending = s.pending[1:]
	return event, nil
}

// Events ranges over the events, in the order they happened, until the call ends. A failure of the call
// (ErrNotFound, ErrResourceExhausted, ErrUnavailable…) comes as the last element; after Close, the end of
// the context or the server ending the call without an error, the loop just ends. Breaking out of the loop
// leaves the call open: Close ends it.
func (s *JobEventStream) Events() iter.Seq2[*JobEvent, error] {
	return func(yield func(*JobEvent, error) bool) {
		for {
			event, err := s.Recv()
			if err != nil {
				if !errors.Is(err, io.EOF) && s.ctx.Err() == nil {
					yield(nil, err)
				}
				return
			}
			if !yield(event, nil) {
				return
			}
		}
	}
}

// Close ends the call; a Recv waiting meanwhile returns an error matching context.Canceled. Closing twice
// is harmless.
func (s *JobEventStream) Close() {
	s.cancel()
}
