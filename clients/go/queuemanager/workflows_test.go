package queuemanager_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
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

func TestListWorkflowsPagesNewestFirst(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	queue := newQueue(t, c, nil)
	var mine []string
	for i := range 3 {
		// Ids in creation order: runs created in the same millisecond are listed by id, newest-first still.
		runID := fmt.Sprintf("listed-%s-%d", queue[len(queue)-8:], i)
		_, _, err := c.ExecuteWorkflow(testContext(t), qm.Workflow{
			Name: "listed", Steps: []qm.WorkflowStep{{Key: "only", Queue: queue, Name: "only"}},
		}, runID)
		if err != nil {
			t.Fatalf("ExecuteWorkflow: %v", err)
		}
		mine = append(mine, runID)
	}
	var seen []string // this test's runs, in the order listed
	token := ""
	for pages := 0; ; pages++ {
		page, err := c.ListWorkflows(testContext(t), 2, token)
		if err != nil || len(page.Runs) > 2 || page.Total < 3 || pages > 1000 {
			t.Fatalf("ListWorkflows page %d: %v %+v", pages, err, page)
		}
		for _, run := range page.Runs {
			if slices.Contains(mine, run.RunID) {
				if run.State != "running" || len(run.Steps) != 0 || run.CreateTime.IsZero() {
					t.Fatalf("a listed run, without its steps: %+v", run)
				}
				seen = append(seen, run.RunID)
			}
		}
		if token = page.NextPageToken; token == "" {
			break
		}
	}
	if want := []string{mine[2], mine[1], mine[0]}; !slices.Equal(seen, want) {
		t.Fatalf("runs listed %q, want newest first %q", seen, want)
	}
	if _, err := c.ListWorkflows(testContext(t), 0, "not-a-token"); !errors.Is(err, qm.ErrInvalidArgument) {
		t.Fatalf("ListWorkflows with a bad page token: want ErrInvalidArgument, got %v", err)
	}
}

func TestRetryWorkflowResumesAFailedRun(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	queue := newQueue(t, c, nil)
	ran := make(chan string, 4)
	var failed atomic.Bool
	startWorker(t, c, qm.WorkerConfig{Concurrency: 1, Handlers: map[string]qm.Handler{
		queue: func(ctx context.Context, job *qm.Job) (any, error) {
			ran <- job.Name
			if job.Name == "charge" && failed.CompareAndSwap(false, true) {
				return nil, qm.Unrecoverable(errors.New("card declined"))
			}
			return job.Name + " done", nil
		},
	}})
	runID, _, err := c.ExecuteWorkflow(testContext(t), qm.Workflow{Name: "order", Steps: []qm.WorkflowStep{{
		Key: "charge", Queue: queue, Name: "charge",
		OnSuccess: []qm.WorkflowStep{{Key: "ship", Queue: queue, Name: "ship"}},
	}}}, "")
	if err != nil {
		t.Fatalf("ExecuteWorkflow: %v", err)
	}
	if run := settledRun(t, c, runID); run.State != "failed" {
		t.Fatalf("run %s, want failed", run.State)
	}
	// Running again (or, with a fast worker, completed already by the time the answer reads the run).
	run, err := c.RetryWorkflow(testContext(t), runID)
	if err != nil || run.State == "failed" {
		t.Fatalf("RetryWorkflow: %v %+v", err, run)
	}
	if run := settledRun(t, c, runID); run.State != "completed" {
		t.Fatalf("run %s after the retry, want completed", run.State)
	}
	for _, want := range []string{"charge", "charge", "ship"} {
		if got := receive(t, ran, "the next step"); got != want {
			t.Fatalf("step %q ran, want %q", got, want)
		}
	}
	if _, err := c.RetryWorkflow(testContext(t), runID); !errors.Is(err, qm.ErrFailedPrecondition) {
		t.Fatalf("RetryWorkflow of a completed run: want ErrFailedPrecondition, got %v", err)
	}
	if _, err := c.RetryWorkflow(testContext(t), "no-such-run"); !errors.Is(err, qm.ErrNotFound) {
		t.Fatalf("RetryWorkflow of an unknown run: want ErrNotFound, got %v", err)
	}
}

// settledRun waits for a run to leave the running state and returns it.
func settledRun(t *testing.T, c *qm.Client, runID string) *qm.WorkflowRun {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		run, err := c.GetWorkflow(testContext(t), runID)
		if err != nil {
			t.Fatal(err)
		}
		if run.State != "running" {
			return run
		}
		if time.Now().After(deadline) {
			t.Fatalf("the run is still running after %s", wait)
		}
		time.Sleep(20 * time.Millisecond) // the step's outcome reaches the run after its job finished
	}
}

func TestRunIfSkipsAStepWhoseConditionFails(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	queue := newQueue(t, c, nil)
	ran := make(chan string, 4)
	startWorker(t, c, qm.WorkerConfig{Concurrency: 2, Handlers: map[string]qm.Handler{
		queue: func(ctx context.Context, job *qm.Job) (any, error) {
			ran <- job.Name
			if job.Name == "validate" {
				return map[string]any{"total": 42}, nil
			}
			if job.Name == "charge" {
				return nil, errors.New("card declined")
			}
			return nil, nil
		},
	}})
	runID, _, err := c.ExecuteWorkflow(testContext(t), qm.Workflow{Name: "order", Steps: []qm.WorkflowStep{{
		Key: "validate", Queue: queue, Name: "validate",
		OnSuccess: []qm.WorkflowStep{
			{Key: "ship", Queue: queue, Name: "ship", RunIf: []qm.StepCondition{qm.When("validate", "total", ">", 100)}},
			{Key: "hold", Queue: queue, Name: "hold", RunIf: []qm.StepCondition{{Path: "total", Operator: "in", Value: []int{42, 43}}}},
		},
	}}}, "")
	if err != nil {
		t.Fatalf("ExecuteWorkflow: %v", err)
	}
	run := settledRun(t, c, runID)
	steps := map[string]qm.WorkflowStepRun{}
	for _, step := range run.Steps {
		steps[step.Key] = step
	}
	if run.State != "completed" || steps["ship"].State != "skipped" || steps["hold"].State != "completed" {
		t.Fatalf("run %s, steps %+v", run.State, steps)
	}
	if want := "run_if: validate.total > 100 is false (42)"; steps["ship"].Error != want {
		t.Fatalf("ship's error %q, want %q", steps["ship"].Error, want)
	}
	for _, want := range []string{"validate", "hold"} {
		if got := receive(t, ran, "the next step"); got != want {
			t.Fatalf("step %q ran, want %q", got, want)
		}
	}
	bad := qm.Workflow{Steps: []qm.WorkflowStep{{Queue: queue, Name: "a", OnSuccess: []qm.WorkflowStep{
		{Queue: queue, Name: "b", RunIf: []qm.StepCondition{qm.When("nope", "total", ">", 1)}},
	}}}}
	if _, _, err := c.ExecuteWorkflow(testContext(t), bad, ""); !errors.Is(err, qm.ErrInvalidArgument) {
		t.Fatalf("a condition on a step that is not a predecessor: want ErrInvalidArgument, got %v", err)
	}
	bad.Steps[0].OnSuccess[0].RunIf = []qm.StepCondition{qm.When("", "total", "=>", 1)}
	if _, _, err := c.ExecuteWorkflow(testContext(t), bad, ""); err == nil {
		t.Fatal("an unknown operator was sent")
	}
	onError := qm.WhenError("", "contains", "x")
	onError.Path = "code"
	bad.Steps[0].OnSuccess[0].RunIf = []qm.StepCondition{onError}
	if _, _, err := c.ExecuteWorkflow(testContext(t), bad, ""); err == nil {
		t.Fatal("an error condition with a path was sent")
	}

	// A failure branch that looks at the error its parent failed with.
	runID, _, err = c.ExecuteWorkflow(testContext(t), qm.Workflow{Name: "charge", Steps: []qm.WorkflowStep{{
		Key: "charge", Queue: queue, Name: "charge",
		OnFailure: []qm.WorkflowStep{
			{Key: "tell", Queue: queue, Name: "tell", RunIf: []qm.StepCondition{qm.WhenError("", "contains", "declined")}},
			{Key: "page", Queue: queue, Name: "page", RunIf: []qm.StepCondition{qm.WhenError("charge", "contains", "timeout")}},
		},
	}}}, "")
	if err != nil {
		t.Fatalf("ExecuteWorkflow: %v", err)
	}
	run = settledRun(t, c, runID)
	steps = map[string]qm.WorkflowStepRun{}
	for _, step := range run.Steps {
		steps[step.Key] = step
	}
	if steps["tell"].State != "completed" || steps["page"].State != "skipped" {
		t.Fatalf("run %s, steps %+v", run.State, steps)
	}
	if !strings.HasPrefix(steps["page"].Error, `run_if: the error of charge contains "timeout" is false (`) {
		t.Fatalf("page's error %q", steps["page"].Error)
	}
	for _, want := range []string{"charge", "tell"} {
		if got := receive(t, ran, "the next step"); got != want {
			t.Fatalf("step %q ran, want %q", got, want)
		}
	}
}
