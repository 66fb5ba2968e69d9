package queuemanager_test

import (
	"context"
	"errors"
	"testing"
	"time"

	qm "github.com/queue-manager/queue-manager/clients/go/queuemanager"
)

func TestWorkflowRunsItsStepsInOrder(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	queue := newQueue(t, c, nil)
	ran := make(chan string, 3)
	startWorker(t, c, qm.WorkerConfig{Concurrency: 2, Handlers: map[string]qm.Handler{
		queue: func(ctx context.Context, job *qm.Job) (any, error) {
			ran <- job.Name
			if job.Name == "charge" {
				return nil, qm.Unrecoverable(errors.New("card declined"))
			}
			return job.Name + " done", nil
		},
	}})
	runID, created, err := c.ExecuteWorkflow(testContext(t), qm.Workflow{Name: "order", Steps: []qm.WorkflowStep{{
		Key: "reserve", Queue: queue, Name: "reserve",
		OnSuccess: []qm.WorkflowStep{{Key: "charge", Queue: queue, Name: "charge",
			OnSuccess: []qm.WorkflowStep{{Key: "ship", Queue: queue, Name: "ship"}},
			OnFailure: []qm.WorkflowStep{{Key: "release", Queue: queue, Name: "release"}},
		}},
	}}}, "")
	if err != nil || !created || runID == "" {
		t.Fatalf("ExecuteWorkflow: %q %v %v", runID, created, err)
	}
	for _, want := range []string{"reserve", "charge", "release"} {
		if got := receive(t, ran, "the next step"); got != want {
			t.Fatalf("step %q ran, want %q", got, want)
		}
	}
	deadline := time.Now().Add(wait)
	for {
		run, err := c.GetWorkflow(testContext(t), runID)
		if err != nil {
			t.Fatal(err)
		}
		if run.State != "running" {
			states := map[string]string{}
			for _, step := range run.Steps {
				states[step.Key] = step.State
			}
			if run.State != "failed" || states["reserve"] != "completed" || states["charge"] != "failed" ||
				states["ship"] != "skipped" || states["release"] != "completed" {
				t.Fatalf("run %s, steps %v", run.State, states)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the run is still running after %s", wait)
		}
		time.Sleep(20 * time.Millisecond) // the last step's outcome reaches the run after its job completed
	}
	if _, err := c.GetWorkflow(testContext(t), "no-such-run"); !errors.Is(err, qm.ErrNotFound) {
		t.Fatalf("GetWorkflow of an unknown run: want ErrNotFound, got %v", err)
	}
}
