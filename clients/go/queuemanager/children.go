package queuemanager

import (
	"context"
	"fmt"

	pb "github.com/queue-manager/queue-manager/clients/go/gen/queue_manager/v1"
)

// ChildSpec is a child job for a running job to add (Job.WaitForChildren), as AddJob takes one.
type ChildSpec struct {
	// Queue is the child's queue: any registered queue.
	Queue string
	// Name is the kind of work, 1 to 200 characters.
	Name string
	// Data is the child's data (see the payload conventions in payload.go); nil stores JSON null.
	Data any
	// Options are the child's settings; nil takes the child queue's defaults. Without JobID or Dedup the
	// child's id is derived from its parent's (a repeated call adds it once). With JobID the child is that
	// job of its queue: added if none exists, else the existing one (already finished, it counts at once).
	// With Dedup it is the job the key resolves to (this one, or the key's holder).
	Options *JobOptions
}

// WaitForChildrenOptions are what Job.WaitForChildren takes besides the children.
type WaitForChildrenOptions struct {
	// Data replaces the job's data for its next run (a checkpoint) in the same step when HasData is set
	// ([]byte as raw bytes, anything else as JSON); without HasData the data is kept.
	Data    any
	HasData bool
}

// WaitForChildren adds child jobs and ends this run until they have all finished: a map-reduce whose width
// is known only at run time (split a file into chunks, process each, combine the results). Only within a
// worker's handler of this job.
//
// The server adds the children (in any registered queues) and parks this job in delayed with no due time,
// using no attempt and holding no worker slot. Once every child has completed, failed for good or been
// cancelled, the job runs again, its ChildJobs holding their outcomes. The call is fenced by the run's lease
// and safe to repeat: each child's id is derived from this job, its wait and the child's place in the list,
// so a run lost after the call and run again adds no child twice.
//
// Once the server has answered it returns a *WaitingForChildrenError: the run is over, and the handler
// returns it (nothing the handler returns afterwards is reported). 1 to 1,000 children a call, 1,000 over a
// job's life. A refusal returns the server's error and the run goes on: ErrInvalidArgument (a malformed
// child, a queue that is not registered, too many children: nothing was added) or ErrFailedPrecondition
// (the run's lease was lost). A child or data that cannot be encoded is an error before anything is sent.
// opts may be nil. ctx bounds the call.
func (j *Job) WaitForChildren(ctx context.Context, children []ChildSpec, opts *WaitForChildrenOptions) error {
	r := j.run
	if r == nil {
		return errNotRunning
	}
	req, err := waitForChildrenRequest(r, children, opts)
	if err != nil {
		return err
	}
	resp, err := r.w.client.queues.WaitForChildren(ctx, req)
	if err != nil {
		return fromRPC(err)
	}
	w := r.w
	w.mu.Lock()
	w.park(r)
	w.mu.Unlock()
	w.log.Info("job waits for its children", "queue", r.key.queue, "job_id", r.key.id,
		"pending", resp.GetChildrenPending())
	return &WaitingForChildrenError{Children: refsOf(resp.GetChildren()), Pending: int(resp.GetChildrenPending())}
}

// waitForChildrenRequest builds a WaitForChildrenRequest for run r (the server checks the rest: that the
// queues are registered, the limits, the sizes).
func waitForChildrenRequest(r *run, children []ChildSpec, opts *WaitForChildrenOptions) (*pb.WaitForChildrenRequest, error) {
	req := &pb.WaitForChildrenRequest{QueueName: r.key.queue, JobId: r.key.id, LeaseToken: r.token}
	for i, child := range children {
		data, err := dataPayload(child.Data)
		if err != nil {
			return nil, fmt.Errorf("child %d (%q): data: %w", i, child.Name, err)
		}
		options, err := child.Options.proto()
		if err != nil {
			return nil, fmt.Errorf("child %d (%q): %w", i, child.Name, err)
		}
		req.Children = append(req.Children, &pb.ChildJobSpec{
			QueueName: child.Queue, Name: child.Name, Data: data, Options: options,
		})
	}
	if opts != nil && opts.HasData {
		payload, err := dataPayload(opts.Data)
		if err != nil {
			return nil, fmt.Errorf("the job's new data: %w", err)
		}
		req.Data = payload
	}
	return req, nil
}
