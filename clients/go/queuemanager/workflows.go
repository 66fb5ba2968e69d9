package queuemanager

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"

	pb "github.com/queue-manager/queue-manager/clients/go/gen/queue_manager/v1"
)

// Workflow is a graph of steps; each execution of it is a run (docs/flows.md).
type Workflow struct {
	// ID names the workflow definition (free text, for grouping runs).
	ID string
	// Name is for display.
	Name string
	// Steps are the root steps: they start at once unless they name DependsOn.
	Steps []WorkflowStep
	// CorrelationID follows a request across systems; it is also set on every step's job.
	CorrelationID string
	// CreatedBy says who started the run.
	CreatedBy string
	// Tags are free tags.
	Tags []string
	// Attributes is a free string map, copied into every step's job under the step's own attributes
	// (trace context, tenant…).
	Attributes map[string]string
}

// WorkflowStep is one job of a workflow and the steps that follow it.
type WorkflowStep struct {
	// Key is unique within the workflow (1 to 64 letters, digits, "-" or "_"); "" means its position.
	Key string
	// Queue of the step's job; it must be registered.
	Queue string
	// Name of the step's job.
	Name string
	// Data of the step's job.
	Data any
	// Options of the step's job (no JobID, ChainTo or Dedup).
	Options *JobOptions
	// OnSuccess steps start when this one completes; OnFailure steps when it fails for good.
	OnSuccess []WorkflowStep
	OnFailure []WorkflowStep
	// DependsOn names steps that must all complete before this one starts (fan-in).
	DependsOn []string
	// RunIf holds conditions on its predecessors' results (at most 16, see When): once due, the step runs
	// only if every one holds; otherwise it is skipped (its Error says which failed), and so is everything
	// that would only run after it.
	RunIf []StepCondition
}

// StepCondition is one condition of a step's RunIf: a predecessor's result, at a path, compared with a
// value. Numbers compare as numbers, strings as strings; values of different types, or a path that leads
// nowhere, make it false (but "not_exists").
type StepCondition struct {
	// Step is the key of a predecessor (the step whose OnSuccess / OnFailure holds this one, or one it
	// depends on); "" for the only one.
	Step string
	// Path is a dotted path into its JSON result ("order.total", "items.0.sku"); "" for the whole result.
	Path string
	// Operator is "==", "!=", ">", ">=", "<", "<=", "exists", "not_exists", "in" or "contains".
	Operator string
	// Value is what to compare with (any JSON-encodable value, nil for null; a slice for "in"); it must
	// be nil for "exists" and "not_exists".
	Value any
	// OnError compares the predecessor's error message (a string, missing unless it failed for good: for
	// a step on its OnFailure branch) instead of its result; Path must be "".
	OnError bool
}

// When builds a StepCondition: When("validate", "total", ">", 100).
func When(step, path, operator string, value any) StepCondition {
	return StepCondition{Step: step, Path: path, Operator: operator, Value: value}
}

// WhenError builds a StepCondition on a predecessor's error message: WhenError("charge", "contains",
// "card declined").
func WhenError(step, operator string, value any) StepCondition {
	return StepCondition{Step: step, Operator: operator, Value: value, OnError: true}
}

var conditionOperators = map[string]pb.ConditionOperator{
	"==":         pb.ConditionOperator_CONDITION_OPERATOR_EQUAL,
	"!=":         pb.ConditionOperator_CONDITION_OPERATOR_NOT_EQUAL,
	">":          pb.ConditionOperator_CONDITION_OPERATOR_GREATER_THAN,
	">=":         pb.ConditionOperator_CONDITION_OPERATOR_GREATER_OR_EQUAL,
	"<":          pb.ConditionOperator_CONDITION_OPERATOR_LESS_THAN,
	"<=":         pb.ConditionOperator_CONDITION_OPERATOR_LESS_OR_EQUAL,
	"exists":     pb.ConditionOperator_CONDITION_OPERATOR_EXISTS,
	"not_exists": pb.ConditionOperator_CONDITION_OPERATOR_NOT_EXISTS,
	"in":         pb.ConditionOperator_CONDITION_OPERATOR_IN,
	"contains":   pb.ConditionOperator_CONDITION_OPERATOR_CONTAINS,
}

func (c StepCondition) proto() (*pb.StepCondition, error) {
	op, ok := conditionOperators[c.Operator]
	if !ok {
		return nil, fmt.Errorf(
			"run_if: unknown operator %q; use ==, !=, >, >=, <, <=, exists, not_exists, in or contains", c.Operator)
	}
	out := &pb.StepCondition{Step: c.Step, Path: c.Path, Operator: op}
	if c.OnError {
		if c.Path != "" {
			return nil, fmt.Errorf("run_if: an error message has no fields; leave Path empty with OnError")
		}
		out.Source = pb.ConditionSource_CONDITION_SOURCE_ERROR
	}
	noValue := op == pb.ConditionOperator_CONDITION_OPERATOR_EXISTS ||
		op == pb.ConditionOperator_CONDITION_OPERATOR_NOT_EXISTS
	if noValue {
		if c.Value != nil {
			return nil, fmt.Errorf("run_if: %q takes no value", c.Operator)
		}
		return out, nil
	}
	value, err := jsonValue(c.Value)
	if err != nil {
		return nil, fmt.Errorf("run_if: %w", err)
	}
	out.Value = value
	return out, nil
}

func (s WorkflowStep) proto() (*pb.WorkflowStep, error) {
	data, err := encodePayload(s.Data)
	if err != nil {
		return nil, err
	}
	options, err := s.Options.proto()
	if err != nil {
		return nil, err
	}
	out := &pb.WorkflowStep{
		Key: s.Key, QueueName: s.Queue, JobName: s.Name, Data: data, Options: options, DependsOn: s.DependsOn,
	}
	for _, c := range s.RunIf {
		condition, err := c.proto()
		if err != nil {
			return nil, err
		}
		out.RunIf = append(out.RunIf, condition)
	}
	if out.OnSuccess, err = stepsProto(s.OnSuccess); err != nil {
		return nil, err
	}
	out.OnFailure, err = stepsProto(s.OnFailure)
	return out, err
}

func stepsProto(steps []WorkflowStep) ([]*pb.WorkflowStep, error) {
	out := make([]*pb.WorkflowStep, 0, len(steps))
	for _, step := range steps {
		p, err := step.proto()
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// WorkflowRun is one execution of a workflow.
type WorkflowRun struct {
	RunID      string
	WorkflowID string
	Name       string
	// State is "running", "completed", "failed" or "cancelled".
	State        string
	Steps        []WorkflowStepRun
	CreateTime   time.Time
	FinishTime   time.Time
	CancelReason string
}

// WorkflowStepRun is one step of a run.
type WorkflowStepRun struct {
	Key   string
	Queue string
	Name  string
	// JobID is the step's job, once started.
	JobID string
	// State is "pending", "started", "completed", "failed", "skipped" or "cancelled".
	State string
	// Result is the step's result once completed (JSON text when ResultType is ContentTypeJSON).
	Result     []byte
	ResultType string
	// Error is why it failed, or was skipped or cancelled.
	Error string
}

func runFromProto(p *pb.WorkflowRun) *WorkflowRun {
	run := &WorkflowRun{
		RunID:        p.GetRunId(),
		WorkflowID:   p.GetWorkflowId(),
		Name:         p.GetName(),
		State:        strings.ToLower(strings.TrimPrefix(p.GetState().String(), "WORKFLOW_STATE_")),
		CreateTime:   timeOf(p.GetCreateTime()),
		FinishTime:   timeOf(p.GetFinishTime()),
		CancelReason: p.GetCancelReason(),
	}
	for _, s := range p.GetSteps() {
		step := WorkflowStepRun{
			Key: s.GetKey(), Queue: s.GetQueueName(), Name: s.GetJobName(), JobID: s.GetJobId(), Error: s.GetError(),
			State: strings.ToLower(strings.TrimPrefix(s.GetState().String(), "WORKFLOW_STEP_STATE_")),
		}
		step.Result, step.ResultType = decodePayload(s.GetResult())
		run.Steps = append(run.Steps, step)
	}
	return run
}

// ExecuteWorkflow starts a run and returns its id at once. With a runID that exists, it starts nothing
// and reports created false; "" means a new random id.
func (c *Client) ExecuteWorkflow(ctx context.Context, workflow Workflow, runID string) (string, bool, error) {
	steps, err := stepsProto(workflow.Steps)
	if err != nil {
		return "", false, err
	}
	req := &pb.ExecuteWorkflowRequest{
		RunId: runID,
		Workflow: &pb.Workflow{
			Id: workflow.ID, Name: workflow.Name, Steps: steps,
			Metadata: &pb.WorkflowMetadata{
				CreatedBy: workflow.CreatedBy, CorrelationId: workflow.CorrelationID, Tags: workflow.Tags,
				Attributes: workflow.Attributes,
			},
		},
	}
	t := c.traced()
	if t == nil {
		return c.executeWorkflow(ctx, req)
	}
	ctx, span := t.publishWorkflow(ctx, req.Workflow)
	metadata := req.Workflow.Metadata
	metadata.Attributes = carry(metadata.Attributes, t.traceContext(ctx))
	id, created, err := c.executeWorkflow(ctx, req)
	endPublish(span, err, attribute.String("queue_manager.workflow.run_id", id))
	return id, created, err
}

func (c *Client) executeWorkflow(ctx context.Context, req *pb.ExecuteWorkflowRequest) (string, bool, error) {
	resp, err := c.queues.ExecuteWorkflow(ctx, req)
	if err != nil {
		return "", false, fromRPC(err)
	}
	return resp.GetRunId(), resp.GetCreated(), nil
}

// GetWorkflow returns a run with every step.
func (c *Client) GetWorkflow(ctx context.Context, runID string) (*WorkflowRun, error) {
	resp, err := c.queues.GetWorkflow(ctx, &pb.GetWorkflowRequest{RunId: runID})
	if err != nil {
		return nil, fromRPC(err)
	}
	return runFromProto(resp.GetRun()), nil
}

// WorkflowPage is one page of ListWorkflows.
type WorkflowPage struct {
	// Runs of this page, newest first, without their steps (GetWorkflow has them).
	Runs []*WorkflowRun
	// NextPageToken asks for the next page; "" on the last page.
	NextPageToken string
	// Total is the number of runs kept.
	Total int
}

// ListWorkflows returns a page of runs, newest first, without their steps. pageSize is 1 to 1,000 (0 means
// 100); pageToken is "" for the first page, then the previous page's NextPageToken.
func (c *Client) ListWorkflows(ctx context.Context, pageSize int, pageToken string) (*WorkflowPage, error) {
	if pageSize < 0 || pageSize > math.MaxUint32 {
		return nil, fmt.Errorf("pageSize must be from 0 to 1000, got %d", pageSize)
	}
	resp, err := c.queues.ListWorkflows(ctx, &pb.ListWorkflowsRequest{PageSize: uint32(pageSize), PageToken: pageToken})
	if err != nil {
		return nil, fromRPC(err)
	}
	page := &WorkflowPage{NextPageToken: resp.GetNextPageToken(), Total: int(resp.GetTotalSize())}
	for _, run := range resp.GetRuns() {
		page.Runs = append(page.Runs, runFromProto(run))
	}
	return page, nil
}

// CancelWorkflow cancels a run: no further step starts, and its waiting and active step jobs are
// cancelled.
func (c *Client) CancelWorkflow(ctx context.Context, runID, reason string) (*WorkflowRun, error) {
	resp, err := c.queues.CancelWorkflow(ctx, &pb.CancelWorkflowRequest{RunId: runID, Reason: reason})
	if err != nil {
		return nil, fromRPC(err)
	}
	return runFromProto(resp.GetRun()), nil
}

// RetryWorkflow runs the job of every failed (or cancelled) step of a failed run again, in one call. The
// steps start again, the steps skipped because of them are pending again, and the run is running until
// they finish: a retried step that completes goes on as if it had never failed. ErrNotFound for an unknown
// run; ErrFailedPrecondition for a run that is running, completed or cancelled with CancelWorkflow, or
// whose failed step's job no longer exists (the message names it).
func (c *Client) RetryWorkflow(ctx context.Context, runID string) (*WorkflowRun, error) {
	resp, err := c.queues.RetryWorkflow(ctx, &pb.RetryWorkflowRequest{RunId: runID})
	if err != nil {
		return nil, fromRPC(err)
	}
	return runFromProto(resp.GetRun()), nil
}
