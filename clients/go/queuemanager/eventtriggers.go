package queuemanager

import (
	"context"
	"fmt"
	"time"

	pb "github.com/queue-manager/queue-manager/clients/go/gen/queue_manager/v1"
)

// EventTrigger adds a job for every pushed external event (Client.PushEvent) whose key matches its pattern,
// with the event's data as the job's data.
type EventTrigger struct {
	// ID is unique on the server: 1 to 100 letters, digits, "-", "_" or ".".
	ID string
	// KeyPattern is an exact event key, or a prefix ending in "*" ("order:*"; "*" alone matches every key).
	KeyPattern string
	// Queue the jobs are added to; it must be registered.
	Queue string
	// JobName and JobOptions make each event's job (JobOptions.JobID is not allowed).
	JobName    string
	JobOptions *JobOptions

	// Set by the server, ignored on upsert.
	CreateTime time.Time
	UpdateTime time.Time
}

func (t *EventTrigger) proto() (*pb.EventTrigger, error) {
	if t == nil {
		return nil, fmt.Errorf("the event trigger is nil")
	}
	job, err := NewJob{Name: t.JobName, Options: t.JobOptions}.proto()
	if err != nil {
		return nil, err
	}
	return &pb.EventTrigger{Id: t.ID, KeyPattern: t.KeyPattern, QueueName: t.Queue, Job: job}, nil
}

func eventTriggerFromProto(p *pb.EventTrigger) *EventTrigger {
	if p == nil {
		return nil
	}
	return &EventTrigger{
		ID: p.GetId(), KeyPattern: p.GetKeyPattern(), Queue: p.GetQueueName(), JobName: p.GetJob().GetName(),
		JobOptions: jobOptionsFromProto(p.GetJob().GetOptions()),
		CreateTime: timeOf(p.GetCreateTime()), UpdateTime: timeOf(p.GetUpdateTime()),
	}
}

// UpsertEventTrigger creates an event trigger, or replaces the one of that id (keeping its create time),
// and returns it as stored; it reports whether the trigger is new. A queue that is not registered gives
// ErrNotFound, a bad field ErrInvalidArgument, the server's 1,000th trigger or a Redis Cluster
// ErrFailedPrecondition.
func (c *Client) UpsertEventTrigger(ctx context.Context, trigger *EventTrigger) (*EventTrigger, bool, error) {
	p, err := trigger.proto()
	if err != nil {
		return nil, false, err
	}
	resp, err := c.queues.UpsertEventTrigger(ctx, &pb.UpsertEventTriggerRequest{Trigger: p})
	if err != nil {
		return nil, false, fromRPC(err)
	}
	return eventTriggerFromProto(resp.GetTrigger()), resp.GetCreated(), nil
}

// ListEventTriggers returns the event triggers of a queue ("" for every queue), by id.
func (c *Client) ListEventTriggers(ctx context.Context, queue string) ([]*EventTrigger, error) {
	resp, err := c.queues.ListEventTriggers(ctx, &pb.ListEventTriggersRequest{QueueName: queue})
	if err != nil {
		return nil, fromRPC(err)
	}
	out := make([]*EventTrigger, 0, len(resp.GetTriggers()))
	for _, p := range resp.GetTriggers() {
		out = append(out, eventTriggerFromProto(p))
	}
	return out, nil
}

// DeleteEventTrigger deletes an event trigger (the jobs it added stay) and returns it as it was; ErrNotFound
// when there is none of that id.
func (c *Client) DeleteEventTrigger(ctx context.Context, id string) (*EventTrigger, error) {
	resp, err := c.queues.DeleteEventTrigger(ctx, &pb.DeleteEventTriggerRequest{TriggerId: id})
	if err != nil {
		return nil, fromRPC(err)
	}
	return eventTriggerFromProto(resp.GetTrigger()), nil
}
