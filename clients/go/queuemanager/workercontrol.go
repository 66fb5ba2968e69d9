package queuemanager

// Operators' control of connected workers (ControlWorker): quiet, resume, stop, or change the concurrency
// of one worker, on whichever server holds its stream (as the Python client's client_workers.py).

import (
	"context"
	"errors"
	"fmt"

	pb "github.com/queue-manager/queue-manager/clients/go/gen/queue_manager/v1"
)

// WorkerState says whether a connected worker takes jobs (WorkerInfo.State, WorkerControlResult.State).
type WorkerState string

const (
	// WorkerActive: it takes jobs as its credits allow.
	WorkerActive WorkerState = "active"
	// WorkerQuiet: quieted by an operator (QuietWorker); it runs what it holds, takes nothing new, stays
	// connected.
	WorkerQuiet WorkerState = "quiet"
	// WorkerStopping: stopping (StopWorker, or its own shutdown); it finishes or releases what it holds,
	// then leaves.
	WorkerStopping WorkerState = "stopping"
)

// workerStateOf names a wire WorkerState (active for a server that predates worker control).
func workerStateOf(state pb.WorkerState) WorkerState {
	switch state {
	case pb.WorkerState_WORKER_STATE_QUIET:
		return WorkerQuiet
	case pb.WorkerState_WORKER_STATE_STOPPING:
		return WorkerStopping
	default:
		return WorkerActive
	}
}

// WorkerControlResult is what a worker control call did.
type WorkerControlResult struct {
	// ServerID is the server holding the worker's stream, which told it.
	ServerID string
	// State is the worker's state after the call.
	State WorkerState
	// Concurrency is the worker's concurrency after the call.
	Concurrency int
	// Changed is false when the worker was already so (nothing was sent to it).
	Changed bool
}

// QuietWorker delivers nothing more to the worker until ResumeWorker; it runs what it holds and stays
// connected. Each control call gives ErrNotFound when no live server holds a stream of the worker, and
// ErrFailedPrecondition when the worker does not take the command (an older client) or is stopping.
func (c *Client) QuietWorker(ctx context.Context, workerID string) (*WorkerControlResult, error) {
	return c.controlWorker(ctx, workerID, pb.WorkerControlAction_WORKER_CONTROL_ACTION_QUIET, 0)
}

// ResumeWorker delivers to a quiet worker again.
func (c *Client) ResumeWorker(ctx context.Context, workerID string) (*WorkerControlResult, error) {
	return c.controlWorker(ctx, workerID, pb.WorkerControlAction_WORKER_CONTROL_ACTION_RESUME, 0)
}

// StopWorker stops the worker: it finishes (within its shutdown timeout) or releases what it holds, then
// ends its run without reconnecting.
func (c *Client) StopWorker(ctx context.Context, workerID string) (*WorkerControlResult, error) {
	return c.controlWorker(ctx, workerID, pb.WorkerControlAction_WORKER_CONTROL_ACTION_STOP, 0)
}

// SetWorkerConcurrency makes the worker run at most concurrency jobs at once from now on (1 to
// MaxConcurrency); a lower value takes effect as its running jobs finish. Out of range is refused before
// the call.
func (c *Client) SetWorkerConcurrency(ctx context.Context, workerID string, concurrency int) (
	*WorkerControlResult, error,
) {
	if concurrency < 1 || concurrency > MaxConcurrency {
		return nil, fmt.Errorf("concurrency must be from 1 to %d, got %d", MaxConcurrency, concurrency)
	}
	return c.controlWorker(ctx, workerID, pb.WorkerControlAction_WORKER_CONTROL_ACTION_SET_CONCURRENCY,
		uint32(concurrency))
}

func (c *Client) controlWorker(
	ctx context.Context, workerID string, action pb.WorkerControlAction, concurrency uint32,
) (*WorkerControlResult, error) {
	if workerID == "" {
		return nil, errors.New("the worker id is empty (ListWorkers gives the ids)")
	}
	resp, err := c.queues.ControlWorker(ctx, &pb.ControlWorkerRequest{
		WorkerId: workerID, Action: action, Concurrency: concurrency,
	})
	if err != nil {
		return nil, fromRPC(err)
	}
	return &WorkerControlResult{
		ServerID:    resp.GetServerId(),
		State:       workerStateOf(resp.GetState()),
		Concurrency: int(resp.GetConcurrency()),
		Changed:     resp.GetChanged(),
	}, nil
}
