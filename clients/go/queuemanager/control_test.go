package queuemanager_test

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "github.com/queue-manager/queue-manager/clients/go/gen/queue_manager/v1"
	qm "github.com/queue-manager/queue-manager/clients/go/queuemanager"
)

// Operators' commands (ControlWorker, sent here through the generated client): the worker obeys QUIET
// (nothing delivered, its run in hand finishes), RESUME and STOP (Run returns by itself), and the server
// refuses SET_CONCURRENCY, which its hello does not list.
func TestWorkerObeysQuietResumeAndStop(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	queue := newQueue(t, c, nil)
	conn, err := grpc.NewClient(serverAddress(t), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	service := pb.NewQueueServiceClient(conn)
	started := make(chan string, 4)
	release := make(chan struct{})
	w, err := c.NewWorker(qm.WorkerConfig{Concurrency: 2, Logger: quietLogger(), Handlers: map[string]qm.Handler{
		queue: func(ctx context.Context, job *qm.Job) (any, error) {
			started <- job.Name
			if job.Name == "held" {
				<-release
			}
			return job.Name, nil
		},
	}})
	if err != nil {
		t.Fatalf("NewWorker: %v", err)
	}
	ran := make(chan error, 1)
	go func() { ran <- w.Run(context.Background()) }()
	t.Cleanup(func() { _ = w.Shutdown(testContext(t)) })
	if err := w.WaitConnected(testContext(t)); err != nil {
		t.Fatalf("WaitConnected: %v", err)
	}
	control := func(action pb.WorkerControlAction, concurrency uint32) (*pb.ControlWorkerResponse, error) {
		return service.ControlWorker(testContext(t), &pb.ControlWorkerRequest{
			WorkerId: w.ID(), Action: action, Concurrency: concurrency,
		})
	}
	held := add(t, c, queue, "held", nil, nil)
	receive(t, started, "the held run")
	quiet, err := control(pb.WorkerControlAction_WORKER_CONTROL_ACTION_QUIET, 0)
	if err != nil || quiet.GetState() != pb.WorkerState_WORKER_STATE_QUIET {
		t.Fatalf("QUIET: %v %v", err, quiet)
	}
	close(release) // the run in hand finishes while quiet
	if job := waitFinished(t, c, queue, held.ID); job.State != qm.StateCompleted {
		t.Fatalf("the held job: %+v", job)
	}
	// A job added while it is quiet goes to another worker, although this one has free slots.
	other := startWorker(t, c, qm.WorkerConfig{Handlers: map[string]qm.Handler{
		queue: func(ctx context.Context, job *qm.Job) (any, error) { return "other", nil },
	}})
	meanwhile := add(t, c, queue, "while-quiet", nil, nil)
	if job := waitFinished(t, c, queue, meanwhile.ID); job.State != qm.StateCompleted {
		t.Fatalf("the job added while quiet: %+v", job)
	}
	if err := other.Shutdown(testContext(t)); err != nil {
		t.Fatalf("the other worker's Shutdown: %v", err)
	}
	if len(started) != 0 {
		t.Fatalf("the quiet worker ran %q", <-started)
	}
	if _, err := control(pb.WorkerControlAction_WORKER_CONTROL_ACTION_RESUME, 0); err != nil {
		t.Fatalf("RESUME: %v", err)
	}
	add(t, c, queue, "after-resume", nil, nil)
	if name := receive(t, started, "a run after RESUME"); name != "after-resume" {
		t.Fatalf("ran %q after RESUME", name)
	}
	_, err = control(pb.WorkerControlAction_WORKER_CONTROL_ACTION_SET_CONCURRENCY, 3)
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "does not take set concurrency") {
		t.Fatalf("SET_CONCURRENCY: want FAILED_PRECONDITION, got %v", err)
	}
	if _, err := control(pb.WorkerControlAction_WORKER_CONTROL_ACTION_STOP, 0); err != nil {
		t.Fatalf("STOP: %v", err)
	}
	if err := receive(t, ran, "Run to return after STOP"); err != nil {
		t.Fatalf("Run after STOP: %v", err)
	}
	if !w.StoppedByServer() {
		t.Fatal("StoppedByServer is false after STOP")
	}
}
