package queuemanager

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/queue-manager/queue-manager/clients/go/gen/queue_manager/v1"
)

// Priority orders waiting jobs: a lower number runs first, FIFO within a level.
type Priority int32

const (
	// PriorityDefault (0) takes the queue's default.
	PriorityDefault Priority = 0
	// PriorityCritical runs before everything else.
	PriorityCritical Priority = 1
	// PriorityHigh runs before PriorityNormal.
	PriorityHigh Priority = 2
	// PriorityNormal is the default level.
	PriorityNormal Priority = 3
	// PriorityLow runs after PriorityNormal.
	PriorityLow Priority = 4
	// PriorityBackground runs when nothing else waits.
	PriorityBackground Priority = 5
)

// String is the level's name, e.g. "HIGH".
func (p Priority) String() string {
	return strings.TrimPrefix(pb.JobPriority(p).String(), "JOB_PRIORITY_")
}

// known reports whether p is one of the five levels (PriorityCritical to PriorityBackground).
func (p Priority) known() bool {
	return p >= PriorityCritical && p <= PriorityBackground
}

// JobState is where a job is in its lifecycle.
type JobState int32

const (
	StateWaiting   JobState = JobState(pb.JobState_JOB_STATE_WAITING)
	StateActive    JobState = JobState(pb.JobState_JOB_STATE_ACTIVE)
	StateDelayed   JobState = JobState(pb.JobState_JOB_STATE_DELAYED)
	StateCompleted JobState = JobState(pb.JobState_JOB_STATE_COMPLETED)
	StateFailed    JobState = JobState(pb.JobState_JOB_STATE_FAILED)
	StatePaused    JobState = JobState(pb.JobState_JOB_STATE_PAUSED)
	StateCancelled JobState = JobState(pb.JobState_JOB_STATE_CANCELLED)
)

// String is the state's name in lower case, e.g. "waiting".
func (s JobState) String() string {
	return strings.ToLower(strings.TrimPrefix(pb.JobState(s).String(), "JOB_STATE_"))
}

// Finished reports whether the job will not run again unless asked (completed, failed or cancelled).
func (s JobState) Finished() bool {
	return s == StateCompleted || s == StateFailed || s == StateCancelled
}

// LogLine is one line a handler logged.
type LogLine struct {
	Time    time.Time
	Message string
}

// JobRef names a job.
type JobRef struct {
	Queue string
	ID    string
}

// Job is a job as stored by the server, or as delivered to a worker's handler.
type Job struct {
	ID    string
	Queue string
	Name  string
	// Data is the job's data: JSON text when ContentType is ContentTypeJSON (read it with Decode).
	Data        []byte
	ContentType string
	State       JobState
	Priority    Priority
	// AttemptsMade counts the finished runs (a redelivery after a lost worker does not count).
	AttemptsMade int
	MaxAttempts  int
	// StalledCount counts recoveries from a lost worker or an expired lease.
	StalledCount int
	// Result is what the successful run returned (JSON text when ResultType is ContentTypeJSON).
	Result       []byte
	ResultType   string
	FailedReason string
	Stacktrace   string
	// Progress is the last progress the handler reported, as JSON text.
	Progress    []byte
	CreateTime  time.Time
	ProcessTime time.Time
	FinishTime  time.Time
	// RunTime is when a delayed job becomes due.
	RunTime  time.Time
	Metadata Metadata
	// Timeout is the job's run time limit (0: none).
	Timeout time.Duration
	// ExpireAfter is the job's expiry (0: none), and ExpireTime when it expires if not started by then.
	ExpireAfter time.Duration
	ExpireTime  time.Time
	// Group is the job's fairness group (JobOptions.Group); "" when it has none.
	Group string
	// LIFO: the job was added to the head of its level (JobOptions.LIFO).
	LIFO bool
	// WorkerLabels are the labels a worker must have to run the job (JobOptions.WorkerLabels); nil when
	// none.
	WorkerLabels map[string]string
	WorkerID     string
	Parents      []JobRef
	// Children are the jobs this one started when it finished (next chain link, following workflow steps);
	// the children it added at run time are ChildJobs.
	Children []JobRef
	// ChildJobs are the children it added at run time (Job.WaitForChildren), in the order added over all its
	// waits, each with its outcome once finished: what a handler's run after the wait combines.
	ChildJobs []ChildJob
	// ChildrenPending is how many of ChildJobs have not finished yet: while above zero after a wait, the job
	// waits in delayed with no RunTime and runs again once the last one finishes.
	ChildrenPending int
	// EventWait is its wait for an external event (Job.WaitForEvent): the keys and the timeout, while it is
	// parked and on the run after it; nil when it never waited for one.
	EventWait *EventWait
	// Event is the external event that ended that wait; nil while it waits and when it timed out.
	Event *ExternalEvent
	// Logs holds the last lines the handler logged (GetJob, WaitForJob); LogCount is how many are kept.
	Logs     []LogLine
	LogCount int
	// Errors holds its last failed runs, oldest first (JobOptions.ErrorHistory of them, default 10); kept
	// through RetryJob.
	Errors          []JobError
	CancelRequested bool
	CancelReason    string
	// Created is set in AddJob's answer: false when the job id or dedup key was taken, and the job is the
	// one that held it.
	Created bool
	// Replaced is set in AddJob's answer when the add replaced the name and data of the waiting or delayed
	// job holding its dedup key (DedupReplace); the job is that one as it is now.
	Replaced bool
	// Redelivery is set for a worker's handler when an earlier run of this attempt was lost.
	Redelivery bool

	run *run // the worker's run of this job (nil outside a handler)
}

// Decode reads the job's JSON data into v (as json.Unmarshal). Data that is not JSON is an error.
func (j *Job) Decode(v any) error {
	return decodeJSON(j.Data, j.ContentType, "data", v)
}

// DecodeResult reads the job's JSON result into v (as json.Unmarshal).
func (j *Job) DecodeResult(v any) error {
	return decodeJSON(j.Result, j.ResultType, "result", v)
}

func decodeJSON(body []byte, contentType, what string, v any) error {
	if contentType != "" && !isJSON(contentType) {
		return fmt.Errorf("the job's %s is %s, not JSON", what, contentType)
	}
	if len(body) == 0 {
		return errors.New("the job has no " + what)
	}
	return json.Unmarshal(body, v)
}

func timeOf(t *timestamppb.Timestamp) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.AsTime()
}

func durationOf(d *durationpb.Duration) time.Duration {
	if d == nil {
		return 0
	}
	return d.AsDuration()
}

func logsOf(lines []*pb.JobLogLine) []LogLine {
	var out []LogLine
	for _, line := range lines {
		out = append(out, LogLine{Time: timeOf(line.GetTime()), Message: line.GetMessage()})
	}
	return out
}

func refsOf(refs []*pb.JobRef) []JobRef {
	out := make([]JobRef, 0, len(refs))
	for _, r := range refs {
		out = append(out, JobRef{Queue: r.GetQueueName(), ID: r.GetJobId()})
	}
	return out
}

func jobFromProto(p *pb.Job) *Job {
	if p == nil {
		return nil
	}
	j := &Job{
		ID:              p.GetId(),
		Queue:           p.GetQueueName(),
		Name:            p.GetName(),
		State:           JobState(p.GetState()),
		Priority:        Priority(p.GetPriority()),
		AttemptsMade:    int(p.GetAttemptsMade()),
		MaxAttempts:     int(p.GetMaxAttempts()),
		StalledCount:    int(p.GetStalledCount()),
		FailedReason:    p.GetFailedReason(),
		Stacktrace:      p.GetStacktrace(),
		Progress:        valueJSON(p.GetProgress()),
		CreateTime:      timeOf(p.GetCreateTime()),
		ProcessTime:     timeOf(p.GetProcessTime()),
		FinishTime:      timeOf(p.GetFinishTime()),
		RunTime:         timeOf(p.GetRunTime()),
		Timeout:         durationOf(p.GetOptions().GetTimeout()),
		ExpireAfter:     durationOf(p.GetOptions().GetExpireAfter()),
		ExpireTime:      timeOf(p.GetExpireTime()),
		Group:           p.GetOptions().GetGroup(),
		LIFO:            p.GetOptions().GetLifo(),
		WorkerLabels:    p.GetOptions().GetWorkerLabels(),
		WorkerID:        p.GetWorkerId(),
		Children:        refsOf(p.GetChildren()),
		ChildrenPending: int(p.GetChildrenPending()),
		LogCount:        int(p.GetLogCount()),
		CancelRequested: p.GetCancelRequested(),
		CancelReason:    p.GetCancelReason(),
	}
	j.Data, j.ContentType = decodePayload(p.GetData())
	j.Result, j.ResultType = decodePayload(p.GetResult())
	if m := p.GetMetadata(); m != nil {
		j.Metadata = Metadata{CorrelationID: m.GetCorrelationId(), Tags: m.GetTags(), Attributes: m.GetAttributes()}
	}
	for _, parent := range p.GetParents() {
		j.Parents = append(j.Parents, JobRef{Queue: parent.GetJob().GetQueueName(), ID: parent.GetJob().GetJobId()})
	}
	j.Logs = logsOf(p.GetLogs())
	j.ChildJobs = childJobsOf(p.GetChildJobs())
	j.EventWait, j.Event = eventWaitOf(p), eventOf(p)
	for _, e := range p.GetErrors() {
		j.Errors = append(j.Errors, JobError{
			Attempt: int(e.GetAttempt()), Kind: JobErrorKind(e.GetKind()), Message: e.GetMessage(),
			Stacktrace: e.GetStacktrace(), WorkerID: e.GetWorkerId(), Time: timeOf(e.GetTime()),
		})
	}
	return j
}

// ChildJob is a job that a running job added as its child (Job.WaitForChildren), with its outcome.
type ChildJob struct {
	Queue string
	ID    string
	// State is its state when it finished (completed, failed or cancelled); 0 while it has not.
	State JobState
	// Result is what it returned when it completed (JSON text when ResultType is ContentTypeJSON); empty
	// when Truncated.
	Result     []byte
	ResultType string
	// FailedReason is its failure or cancel reason, when it failed for good or was cancelled.
	FailedReason string
	// Truncated is set when its result was over 1 KiB and left out: read it with GetJob on the child.
	Truncated bool
	// CurrentState is its state now, in GetJob (the server reads every child's in one batched read):
	// waiting, active, delayed, completed, failed or cancelled; 0 once it was removed, and in Job.ChildJobs
	// of a run.
	CurrentState JobState
	// Removed is set when it was removed before it finished (RemoveJob, a clean or drain of its queue, a
	// redrive of a dead-letter copy): the parent no longer waits for it; State is 0 and FailedReason says how.
	Removed bool
}

// DecodeResult reads the child's JSON result into v (as json.Unmarshal).
func (c *ChildJob) DecodeResult(v any) error {
	return decodeJSON(c.Result, c.ResultType, "result", v)
}

func childJobsOf(children []*pb.ChildJob) []ChildJob {
	var out []ChildJob
	for _, c := range children {
		child := ChildJob{
			Queue: c.GetJob().GetQueueName(), ID: c.GetJob().GetJobId(), State: JobState(c.GetState()),
			FailedReason: c.GetFailedReason(), Truncated: c.GetTruncated(), CurrentState: JobState(c.GetCurrentState()),
			Removed: c.GetRemoved(),
		}
		child.Result, child.ResultType = decodePayload(c.GetResult())
		out = append(out, child)
	}
	return out
}

// JobErrorKind says how a failed run ended (JobError.Kind).
type JobErrorKind int

const (
	// JobErrorRaised: the handler returned an error (or its result could not be stored).
	JobErrorRaised JobErrorKind = 1
	// JobErrorTimeout: the run passed the job's timeout and the server ended it.
	JobErrorTimeout JobErrorKind = 2
	// JobErrorStalled: the run was lost (its worker went away or its lease expired).
	JobErrorStalled JobErrorKind = 3
	// JobErrorCancelled: a cancel stopped the run.
	JobErrorCancelled JobErrorKind = 4
)

// JobError is one failed run of a job (Job.Errors).
type JobError struct {
	// Attempt is the run's attempt, 1 for the first; a lost run uses none, so it shares its number with the
	// run after it.
	Attempt int
	Kind    JobErrorKind
	// Message is the handler's error, or the server's for a timeout, a lost run or a cancel.
	Message string
	// Stacktrace is what the worker sent; "" when the server ended the run.
	Stacktrace string
	WorkerID   string
	// Time is when the run ended.
	Time time.Time
}

// Queue is a registered queue.
type Queue struct {
	Name   string
	Paused bool
	// PausedUntil is when its timed pause lifts by itself (PauseQueue with ResumeAfter or ResumeAt); the zero
	// time for a pause until ResumeQueue, and when not paused.
	PausedUntil time.Time
	CreateTime  time.Time
	// DeadLetterQueue is where its jobs go when they fail for good ("" when disabled).
	DeadLetterQueue string
	// Concurrency is the most jobs of the queue active at once (0: no limit).
	Concurrency int
	// PriorityBounds are the queue's priority bounds (QueueConfig.PriorityBounds); nil when it has none.
	PriorityBounds map[Priority]time.Duration
	// GroupLimits are the limits of each of its fairness groups (QueueConfig.GroupLimits); nil when it has
	// none.
	GroupLimits *GroupLimits
	// MaxSize is the most jobs it holds waiting and delayed (QueueConfig.MaxSize); 0 when it has no limit.
	MaxSize uint64
	// MaintenanceWindows are its maintenance windows (QueueConfig.MaintenanceWindows; Timezone "" for UTC).
	MaintenanceWindows []MaintenanceWindow
	// MaintenanceUntil is, while a maintenance window holds the queue (Paused is then true), when the window
	// ends; the zero time outside the windows.
	MaintenanceUntil time.Time
	// NextMaintenanceTime is when its next maintenance window starts; the zero time without windows.
	NextMaintenanceTime time.Time
}

func queueFromProto(p *pb.Queue) *Queue {
	if p == nil {
		return nil
	}
	q := &Queue{
		Name:        p.GetName(),
		Paused:      p.GetPaused(),
		PausedUntil: timeOf(p.GetPausedUntil()),
		CreateTime:  timeOf(p.GetCreateTime()),
		Concurrency: int(p.GetConfig().GetConcurrency()),
		MaxSize:     p.GetConfig().GetMaxSize(),
	}
	q.PriorityBounds = priorityBoundsFromProto(p.GetConfig().GetPriorityBounds())
	if limits := groupLimitsFromProto(p.GetConfig().GetGroupLimits()); limits != (GroupLimits{}) {
		q.GroupLimits = &limits
	}
	if !p.GetConfig().GetDisableDeadLetter() {
		q.DeadLetterQueue = p.GetConfig().GetDeadLetterQueue()
	}
	q.MaintenanceWindows = maintenanceWindowsFromProto(p.GetConfig().GetMaintenanceWindows())
	q.MaintenanceUntil = timeOf(p.GetMaintenanceUntil())
	q.NextMaintenanceTime = timeOf(p.GetNextMaintenanceTime())
	return q
}

// QueueMetrics are a queue's counts by state and its recent throughput.
type QueueMetrics struct {
	Queue        string
	Waiting      uint64
	Active       uint64
	Delayed      uint64
	Completed    uint64
	Failed       uint64
	Paused       uint64
	Cancelled    uint64
	Stalled      uint64
	StalledTotal uint64
	// TimedOutTotal: failed runs (attempts, retried or not) ended by a timeout since the queue was
	// registered, the server's or the worker's own; RaisedTotal: those whose handler returned an error.
	TimedOutTotal uint64
	RaisedTotal   uint64
	// MemoryBytes: estimated bytes of the store the queue's keys hold (its jobs sampled per state),
	// refreshed every 30 s by default.
	MemoryBytes           uint64
	AddedTotal            uint64
	CompletedTotal        uint64
	FailedTotal           uint64
	CompletedPerSecond    float64
	FailedPerSecond       float64
	AverageProcessingTime time.Duration
	P95ProcessingTime     time.Duration
	ErrorRate             float64
	OldestWaitingAge      time.Duration
	Workers               int
	FreeCapacity          int
	IsPaused              bool
	// PausedUntil is when its timed pause lifts by itself (PauseQueue with ResumeAfter or ResumeAt); the zero
	// time for a pause until ResumeQueue, and when the queue is not paused.
	PausedUntil time.Time
	// MaintenanceUntil is, while a maintenance window holds the queue (IsPaused is then true), when the window
	// ends; the zero time outside the windows.
	MaintenanceUntil time.Time
	SampleTime       time.Time
	// Levels are the jobs ready to run (waiting or paused) of each priority level, CRITICAL first (all
	// five; a level a newer server knows and this client does not is left out).
	Levels []LevelMetrics
	// Groups counts the queue's fairness groups: those with jobs waiting or active, those with limits of
	// their own, and the paused ones (ListGroups lists them).
	Groups uint64
	// GroupsPaused counts the queue's paused fairness groups (PauseGroup): their jobs are added, none starts.
	GroupsPaused uint64
}

// LevelMetrics are the ready jobs of one priority level of a queue.
type LevelMetrics struct {
	Priority Priority
	// Waiting counts the jobs of this level ready to run (waiting or paused), those a priority bound moved
	// ahead among them.
	Waiting uint64
	// OldestWaitingAge is how long the oldest of them has waited; 0 when there is none.
	OldestWaitingAge time.Duration
}

func levelsFromProto(ps []*pb.PriorityLevelMetrics) []LevelMetrics {
	out := make([]LevelMetrics, 0, len(ps))
	for _, p := range ps {
		if level := Priority(p.GetPriority()); level.known() {
			out = append(out, LevelMetrics{
				Priority: level, Waiting: p.GetWaiting(), OldestWaitingAge: durationOf(p.GetOldestWaitingAge()),
			})
		}
	}
	return out
}

func metricsFromProto(p *pb.QueueMetrics) *QueueMetrics {
	if p == nil {
		return nil
	}
	return &QueueMetrics{
		Queue:                 p.GetQueueName(),
		Waiting:               p.GetWaiting(),
		Active:                p.GetActive(),
		Delayed:               p.GetDelayed(),
		Completed:             p.GetCompleted(),
		Failed:                p.GetFailed(),
		Paused:                p.GetPaused(),
		Cancelled:             p.GetCancelled(),
		Stalled:               p.GetStalled(),
		StalledTotal:          p.GetStalledTotal(),
		TimedOutTotal:         p.GetTimedOutTotal(),
		RaisedTotal:           p.GetRaisedTotal(),
		MemoryBytes:           p.GetMemoryBytes(),
		AddedTotal:            p.GetAddedTotal(),
		CompletedTotal:        p.GetCompletedTotal(),
		FailedTotal:           p.GetFailedTotal(),
		CompletedPerSecond:    p.GetCompletedPerSecond(),
		FailedPerSecond:       p.GetFailedPerSecond(),
		AverageProcessingTime: durationOf(p.GetAverageProcessingTime()),
		P95ProcessingTime:     durationOf(p.GetP95ProcessingTime()),
		ErrorRate:             p.GetErrorRate(),
		OldestWaitingAge:      durationOf(p.GetOldestWaitingAge()),
		Workers:               int(p.GetWorkers()),
		FreeCapacity:          int(p.GetFreeCapacity()),
		IsPaused:              p.GetIsPaused(),
		PausedUntil:           timeOf(p.GetPausedUntil()),
		MaintenanceUntil:      timeOf(p.GetMaintenanceUntil()),
		SampleTime:            timeOf(p.GetSampleTime()),
		Levels:                levelsFromProto(p.GetLevels()),
		Groups:                p.GetGroups(),
		GroupsPaused:          p.GetGroupsPaused(),
	}
}
