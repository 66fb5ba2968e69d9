package queuemanager

import (
	"context"
	"fmt"
	"math"
	"time"

	pb "github.com/queue-manager/queue-manager/clients/go/gen/queue_manager/v1"
)

// RegisterQueue registers a queue (and its dead-letter queue), or replaces the settings of an existing
// one; a nil config takes the defaults. It reports whether the queue is new.
func (c *Client) RegisterQueue(ctx context.Context, name string, config *QueueConfig) (*Queue, bool, error) {
	p, err := config.proto()
	if err != nil {
		return nil, false, err
	}
	resp, err := c.queues.RegisterQueue(ctx, &pb.RegisterQueueRequest{Name: name, Config: p})
	if err != nil {
		return nil, false, fromRPC(err)
	}
	return queueFromProto(resp.GetQueue()), resp.GetCreated(), nil
}

// GetQueue returns one queue.
func (c *Client) GetQueue(ctx context.Context, name string) (*Queue, error) {
	resp, err := c.queues.GetQueue(ctx, &pb.GetQueueRequest{Name: name})
	if err != nil {
		return nil, fromRPC(err)
	}
	return queueFromProto(resp.GetQueue()), nil
}

// ListQueues returns every registered queue, sorted by name (dead-letter queues included).
func (c *Client) ListQueues(ctx context.Context) ([]*Queue, error) {
	resp, err := c.queues.ListQueues(ctx, &pb.ListQueuesRequest{})
	if err != nil {
		return nil, fromRPC(err)
	}
	out := make([]*Queue, 0, len(resp.GetQueues()))
	for _, q := range resp.GetQueues() {
		out = append(out, queueFromProto(q))
	}
	return out, nil
}

// PauseQueue stops job starts; jobs are still added and running jobs finish. With ResumeAfter or ResumeAt
// the queue resumes by itself then (once, whichever server gets there first, its workers getting its jobs at
// once); Queue.PausedUntil shows the time.
func (c *Client) PauseQueue(ctx context.Context, name string, opts ...PauseOption) (*Queue, error) {
	after, at, err := pauseTimeProto(opts)
	if err != nil {
		return nil, err
	}
	resp, err := c.queues.PauseQueue(ctx, &pb.PauseQueueRequest{Name: name, ResumeAfter: after, ResumeAt: at})
	if err != nil {
		return nil, fromRPC(err)
	}
	return queueFromProto(resp.GetQueue()), nil
}

// ResumeQueue resumes a paused queue.
func (c *Client) ResumeQueue(ctx context.Context, name string) (*Queue, error) {
	resp, err := c.queues.ResumeQueue(ctx, &pb.ResumeQueueRequest{Name: name})
	if err != nil {
		return nil, fromRPC(err)
	}
	return queueFromProto(resp.GetQueue()), nil
}

// CleanQueue removes jobs in one state (completed, failed, waiting, paused or delayed) older than grace,
// at most limit of them (0: no limit), and returns how many it removed.
func (c *Client) CleanQueue(ctx context.Context, name string, state JobState, grace time.Duration, limit int) (
	int, error,
) {
	if limit < 0 || limit > math.MaxUint32 {
		return 0, fmt.Errorf("limit must be from 0 to %d, got %d", uint32(math.MaxUint32), limit)
	}
	resp, err := c.queues.CleanQueue(ctx, &pb.CleanQueueRequest{
		Name: name, State: pb.JobState(state), Grace: duration(grace), Limit: uint32(limit),
	})
	if err != nil {
		return 0, fromRPC(err)
	}
	return int(resp.GetRemoved()), nil
}

// DrainQueue removes every waiting (or paused) job, and the delayed ones too with includeDelayed.
func (c *Client) DrainQueue(ctx context.Context, name string, includeDelayed bool) (int, error) {
	resp, err := c.queues.DrainQueue(ctx, &pb.DrainQueueRequest{Name: name, IncludeDelayed: includeDelayed})
	if err != nil {
		return 0, fromRPC(err)
	}
	return int(resp.GetRemoved()), nil
}

// ObliterateQueue deletes a queue and all its jobs; force is needed while jobs are active.
func (c *Client) ObliterateQueue(ctx context.Context, name string, force bool) (int, error) {
	resp, err := c.queues.ObliterateQueue(ctx, &pb.ObliterateQueueRequest{Name: name, Force: force})
	if err != nil {
		return 0, fromRPC(err)
	}
	return int(resp.GetRemoved()), nil
}

// GetQueueMetrics returns a queue's counts by state, throughput, processing times and workers.
func (c *Client) GetQueueMetrics(ctx context.Context, name string) (*QueueMetrics, error) {
	resp, err := c.queues.GetQueueMetrics(ctx, &pb.GetQueueMetricsRequest{Name: name})
	if err != nil {
		return nil, fromRPC(err)
	}
	return metricsFromProto(resp.GetMetrics()), nil
}
