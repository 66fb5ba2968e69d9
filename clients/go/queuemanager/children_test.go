package queuemanager_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"

	qm "github.com/queue-manager/queue-manager/clients/go/queuemanager"
)

// TestWaitForChildrenParksTheJobAndSumsTheirResults: a handler adds three children with Job.WaitForChildren;
// its job is parked (delayed with no due time, its checkpoint written, ChildrenPending and ChildJobs shown by
// GetJob, no failure reported for the run), and once they have completed it runs again, as the same attempt,
// and sums their results from job.ChildJobs.
func TestWaitForChildrenParksTheJobAndSumsTheirResults(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	ctx := testContext(t)
	files := newQueue(t, c, nil)
	chunks := newQueue(t, c, nil)
	logs := recordedLogs{messages: make(chan string, 1000)}
	var mu sync.Mutex
	var runs []string
	waited := make(chan *qm.WaitingForChildrenError, 1)
	childStarted := make(chan struct{}, 3)
	release := make(chan struct{})
	// One slot: the children can run only if the parked parent holds none.
	startWorker(t, c, qm.WorkerConfig{Concurrency: 1, Logger: slog.New(logs), Handlers: map[string]qm.Handler{
		files: func(ctx context.Context, job *qm.Job) (any, error) {
			mu.Lock()
			runs = append(runs, string(job.Data))
			mu.Unlock()
			if len(job.ChildJobs) == 0 {
				children := make([]qm.ChildSpec, 3)
				for i := range children {
					children[i] = qm.ChildSpec{Queue: chunks, Name: "square", Data: map[string]int{"n": i + 1}}
				}
				err := job.WaitForChildren(ctx, children, &qm.WaitForChildrenOptions{
					Data: map[string]string{"step": "combine"}, HasData: true,
				})
				var waiting *qm.WaitingForChildrenError
				if errors.As(err, &waiting) {
					waited <- waiting
				}
				return nil, err
			}
			sum := 0
			for _, child := range job.ChildJobs {
				var n int
				if err := child.DecodeResult(&n); err != nil || child.State != qm.StateCompleted {
					return nil, fmt.Errorf("child %s: %s %v", child.ID, child.State, err)
				}
				sum += n
			}
			return sum, nil
		},
		chunks: func(ctx context.Context, job *qm.Job) (any, error) {
			childStarted <- struct{}{}
			<-release
			var in struct{ N int }
			if err := job.Decode(&in); err != nil {
				return nil, err
			}
			return in.N * in.N, nil
		},
	}})
	parent := add(t, c, files, "split", map[string]string{"step": "split"}, &qm.JobOptions{Attempts: 1})
	waiting := receive(t, waited, "the parent's wait")
	receive(t, childStarted, "a child's run")

	if waiting.Pending != 3 || len(waiting.Children) != 3 {
		t.Fatalf("want 3 children pending, got %+v", waiting)
	}
	parked, err := c.GetJob(ctx, files, parent.ID)
	if err != nil {
		t.Fatalf("GetJob: %v", err)
	}
	if parked.State != qm.StateDelayed || !parked.RunTime.IsZero() || parked.AttemptsMade != 0 ||
		string(parked.Data) != `{"step":"combine"}` || parked.ChildrenPending != 3 || len(parked.ChildJobs) != 3 {
		t.Fatalf("want parked in delayed with no due time, its checkpoint and 3 pending children: %s %v %d %s %d %d",
			parked.State, parked.RunTime, parked.AttemptsMade, parked.Data, parked.ChildrenPending, len(parked.ChildJobs))
	}
	// Each child's state now, from the same GetJob: the one slot runs the first, the others wait.
	wantNow := []qm.JobState{qm.StateActive, qm.StateWaiting, qm.StateWaiting}
	for i, child := range parked.ChildJobs {
		if child.Queue != chunks || child.ID != waiting.Children[i].ID || child.State != 0 ||
			child.CurrentState != wantNow[i] {
			t.Fatalf("child %d: want %s/%s not finished and %s now, got %+v", i, chunks, waiting.Children[i].ID,
				wantNow[i], child)
		}
	}

	close(release)
	done := waitFinished(t, c, files, parent.ID)
	if done.State != qm.StateCompleted || string(done.Result) != "14" || done.AttemptsMade != 1 || done.ChildrenPending != 0 {
		t.Fatalf("want completed with 1+4+9 on its one attempt: %s %s %d %d (%s)",
			done.State, done.Result, done.AttemptsMade, done.ChildrenPending, done.FailedReason)
	}
	for i, child := range done.ChildJobs {
		if child.State != qm.StateCompleted || string(child.Result) != fmt.Sprint((i+1)*(i+1)) || child.Truncated {
			t.Fatalf("child %d: %+v", i, child)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(runs, []string{`{"step":"split"}`, `{"step":"combine"}`}) {
		t.Fatalf("want a split run then a combine run, got %q", runs)
	}
	// The parked run reported nothing: a failure would have been logged (and refused as a lost lease).
	for len(logs.messages) > 0 {
		if message := <-logs.messages; message == "job failed" {
			t.Fatalf("the parked run must report nothing, but the worker logged %q", message)
		}
	}
}

// TestWaitForChildrenWaitsForAnExistingJobByItsID: a child named by the JobID of a job that exists is that
// job (its data as it was), not a new one.
func TestWaitForChildrenWaitsForAnExistingJobByItsID(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	parents := newQueue(t, c, nil)
	kids := newQueue(t, c, nil)
	add(t, c, kids, "existing", map[string]int{"n": 4}, &qm.JobOptions{JobID: "report-1"})
	startWorker(t, c, qm.WorkerConfig{Concurrency: 2, Handlers: map[string]qm.Handler{
		parents: func(ctx context.Context, job *qm.Job) (any, error) {
			if len(job.ChildJobs) == 0 {
				return nil, job.WaitForChildren(ctx, []qm.ChildSpec{{
					Queue: kids, Name: "ignored", Data: map[string]int{"n": 100}, Options: &qm.JobOptions{JobID: "report-1"},
				}}, nil)
			}
			return job.ChildJobs[0].ID + "=" + string(job.ChildJobs[0].Result), nil
		},
		kids: func(ctx context.Context, job *qm.Job) (any, error) {
			var in struct{ N int }
			if err := job.Decode(&in); err != nil {
				return nil, err
			}
			return in.N * 10, nil
		},
	}})
	parent := add(t, c, parents, "parent", nil, &qm.JobOptions{Attempts: 1})
	done := waitFinished(t, c, parents, parent.ID)
	if done.State != qm.StateCompleted || string(done.Result) != `"report-1=40"` {
		t.Fatalf("want the existing job's outcome: %s %s (%s)", done.State, done.Result, done.FailedReason)
	}
}

// TestWaitForChildrenSeesAChildRemovedBeforeItFinished: a child no handler runs is removed (RemoveJob) while
// its parent waits: the parent runs again, and its ChildJobs show the child Removed, with no State and how it
// was removed as its FailedReason.
func TestWaitForChildrenSeesAChildRemovedBeforeItFinished(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	parents := newQueue(t, c, nil)
	kids := newQueue(t, c, nil)
	parked := make(chan struct{}, 1)
	startWorker(t, c, qm.WorkerConfig{Concurrency: 1, Handlers: map[string]qm.Handler{
		parents: func(ctx context.Context, job *qm.Job) (any, error) {
			if len(job.ChildJobs) == 0 {
				err := job.WaitForChildren(ctx, []qm.ChildSpec{{Queue: kids, Name: "gone", Options: &qm.JobOptions{JobID: "gone"}}}, nil)
				parked <- struct{}{}
				return nil, err
			}
			child := job.ChildJobs[0]
			return fmt.Sprintf("%s %v %d %s", child.ID, child.Removed, child.State, child.FailedReason), nil
		},
	}})
	parent := add(t, c, parents, "parent", nil, &qm.JobOptions{Attempts: 1})
	receive(t, parked, "the parent parked")
	if _, err := c.RemoveJob(testContext(t), kids, "gone"); err != nil {
		t.Fatal(err)
	}
	done := waitFinished(t, c, parents, parent.ID)
	if done.State != qm.StateCompleted || string(done.Result) != `"gone true 0 removed by RemoveJob"` {
		t.Fatalf("want the child seen removed: %s %s (%s)", done.State, done.Result, done.FailedReason)
	}
}

// TestWaitForChildrenRefusalGoesBackToTheHandler: a child in a queue that is not registered is refused with
// ErrInvalidArgument before anything is added, and the handler, which gets the error, completes its run.
func TestWaitForChildrenRefusalGoesBackToTheHandler(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	queue := newQueue(t, c, nil)
	startWorker(t, c, qm.WorkerConfig{Concurrency: 1, Handlers: map[string]qm.Handler{
		queue: func(ctx context.Context, job *qm.Job) (any, error) {
			err := job.WaitForChildren(ctx, []qm.ChildSpec{{Queue: queue + "-unregistered", Name: "child"}}, nil)
			var e *qm.Error
			if !errors.Is(err, qm.ErrInvalidArgument) || !errors.As(err, &e) || e.Code != codes.InvalidArgument {
				return nil, qm.Unrecoverable(fmt.Errorf("want ErrInvalidArgument, got %w", err))
			}
			return "refused", nil
		},
	}})
	done := waitFinished(t, c, queue, add(t, c, queue, "parent", nil, &qm.JobOptions{Attempts: 1}).ID)
	if done.State != qm.StateCompleted || string(done.Result) != `"refused"` || len(done.ChildJobs) != 0 {
		t.Fatalf("want completed after the refusal: %s %s %v (%s)", done.State, done.Result, done.ChildJobs, done.FailedReason)
	}
}
