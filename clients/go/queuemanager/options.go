package queuemanager

import (
	"fmt"
	"math"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/queue-manager/queue-manager/clients/go/gen/queue_manager/v1"
)

// JobOptions are per-job settings; zero fields take the queue's defaults (docs/api.md "Job options").
type JobOptions struct {
	// Priority level; 0 means the queue's default (NORMAL unless the queue says otherwise).
	Priority Priority
	// Delay runs the job no earlier than this long after the add (exclusive with ScheduleTime).
	Delay time.Duration
	// ScheduleTime runs the job no earlier than this time (exclusive with Delay).
	ScheduleTime time.Time
	// Attempts is the most runs including the first; 0 means the queue's default.
	Attempts int
	// Backoff is the delay policy between attempts; nil means the queue's default, or none.
	Backoff *Backoff
	// JobID is an idempotency key: adding an id that exists returns the existing job. Letters, digits,
	// "-", "_", ".", "@", ":"; at most 200 characters. Empty means a random id.
	JobID string
	// Metadata is a correlation id, tags and attributes.
	Metadata *Metadata
	// RemoveOnComplete is the retention once completed; nil means the queue's default.
	RemoveOnComplete *KeepJobs
	// RemoveOnFail is the retention once failed for good; nil means the queue's default.
	RemoveOnFail *KeepJobs
	// Timeout is the longest a run may take; the worker then cancels its context and fails the attempt.
	// 0 means no limit.
	Timeout time.Duration
	// MaxStalled is how many times the job may be recovered from a lost worker before it fails; 0 means
	// the queue's default.
	MaxStalled int
	// ChainTo lists jobs to run one after another once this one completes (docs/flows.md).
	ChainTo []ChainLink
	// Dedup holds a deduplication key: while it is held, adding a job with the same key returns the job
	// that holds it.
	Dedup *Dedup
	// ExpireAfter is the job's expiry: not started within this long of being ready (its add, or its run
	// time when delayed or scheduled), it is not run but ends cancelled, its CancelReason starting
	// "expired: ". Whole milliseconds up to 365 days; 0 means the queue's default (none unless set).
	ExpireAfter time.Duration
	// Group is the job's fairness group (a tenant, a customer, a destination): the ready jobs of different
	// groups take turns, one job of each group in rotation, so one group's flood does not hold back the
	// others; within a group jobs run by priority, then in the order they became ready, and jobs without a
	// group run before grouped ones. A group may have limits (QueueConfig.GroupLimits, SetGroupLimits).
	// 1 to MaxGroupLength characters of UTF-8, no control characters, not starting with RoutePrefix; ""
	// means no group. Not allowed in QueueConfig.DefaultJobOptions.
	Group string
	// LIFO puts the job at the head of its priority level (its group's, with a Group) instead of the back:
	// of the jobs of a level the last added runs first. A delayed job goes to the head when due; a retry goes
	// to the back. Not allowed in QueueConfig.DefaultJobOptions.
	LIFO bool
	// ErrorHistory is how many failed runs the job keeps in Job.Errors (the last ones): nil means the
	// queue's default, else 10; 0 keeps none beyond FailedReason and Stacktrace. At most 100.
	ErrorHistory *int
	// WorkerLabels are labels a worker must have to run the job (hard routing): it goes only to a worker
	// whose labels (WorkerOptions.Labels) hold every one of these pairs, and waits until such a worker
	// connects to any server. At most 16 pairs; a key 1 to 64 characters without '=' or ','; a value up to
	// 128 characters without ','. The job's group is then the routing group RoutePrefix + "k=v,..." (keys
	// in order), which ListGroups shows. Not with Group, nor in QueueConfig.DefaultJobOptions.
	WorkerLabels map[string]string
}

// BackoffType chooses how the delay between attempts grows.
type BackoffType int32

const (
	// BackoffFixed waits the same delay before every retry.
	BackoffFixed BackoffType = BackoffType(pb.BackoffType_BACKOFF_TYPE_FIXED)
	// BackoffExponential waits delay · 2^(attempt-1).
	BackoffExponential BackoffType = BackoffType(pb.BackoffType_BACKOFF_TYPE_EXPONENTIAL)
)

// Backoff is the delay policy between attempts.
type Backoff struct {
	// Type is BackoffFixed or BackoffExponential (required with a delay, jitter or maximum).
	Type BackoffType
	// Delay is the base delay before the first retry.
	Delay time.Duration
	// Jitter adds a random extra delay, a fraction 0 to 1 of the computed one.
	Jitter float64
	// MaxDelay bounds the computed delay; 0 means no bound.
	MaxDelay time.Duration
}

// KeepJobs says which finished jobs to keep.
type KeepJobs struct {
	// Remove removes the job at once when it finishes.
	Remove bool
	// Age keeps finished jobs at most this long; 0 means the queue's default.
	Age time.Duration
	// Count keeps at most this many finished jobs of the state; 0 means the queue's default.
	Count int
}

// Metadata is information about a job that is not its data.
type Metadata struct {
	// CorrelationID follows a request across systems.
	CorrelationID string
	// Tags are free tags for filtering and display.
	Tags []string
	// Attributes is a free string map (trace context, tenant…).
	Attributes map[string]string
}

// ChainLink is one job of a chain (JobOptions.ChainTo).
type ChainLink struct {
	// Queue of the link's job; it must be registered when the link is added.
	Queue string
	// Name of the link's job.
	Name string
	// Data of the link's job (see the payload conventions in payload.go).
	Data any
	// Options of the link's job (no ChainTo, no Dedup).
	Options *JobOptions
}

// Dedup holds a deduplication key for a window.
type Dedup struct {
	// Key is 1 to 200 characters, scoped to the queue.
	Key string
	// TTL is how long the key is held from the first add; 0 means until that job finishes. DedupExtend and
	// DedupReplace restart it at each duplicate.
	TTL time.Duration
	// Mode is what an add does while the key is held; the zero value keeps the first job.
	Mode DedupMode
}

// DedupMode is what an add does when its dedup key is held (the wire's DedupMode numbers).
type DedupMode int32

const (
	// DedupKeepFirst ignores the add and answers with the job holding the key (the default).
	DedupKeepFirst DedupMode = 1
	// DedupExtend ignores the add and restarts the key's TTL (a sliding window); it needs a TTL.
	DedupExtend DedupMode = 2
	// DedupReplace gives the job holding the key, while it is waiting or delayed and has not started, the
	// add's name and data, restarts the TTL and re-delays a delayed job (debounce); once that job started or
	// finished, the add creates a new job, which takes the key.
	DedupReplace DedupMode = 3
)

// RateLimit allows at most Max job starts per Duration, shared by all workers: a token bucket.
type RateLimit struct {
	Max      int
	Duration time.Duration
	// Burst is the bucket's capacity: how many jobs may start at once after the queue was idle, then Max
	// per Duration. 0 means a tenth of Max (at least 1); up to 1,000,000, and only with a Max.
	Burst int
}

// QueueConfig is a queue's settings; zero fields take the server's defaults.
type QueueConfig struct {
	// RateLimit limits job starts; nil means unlimited.
	RateLimit *RateLimit
	// DefaultJobOptions apply to jobs added without their own (no JobID, Delay or ScheduleTime).
	DefaultJobOptions *JobOptions
	// DeadLetterQueue receives jobs that failed for good; "" means "dead-letter-queue".
	DeadLetterQueue string
	// CompletedRetention: nil means keep 1 day and at most 10,000.
	CompletedRetention *KeepJobs
	// FailedRetention: nil means keep 7 days and at most 100,000.
	FailedRetention *KeepJobs
	// DisableDeadLetter keeps failed jobs only in failed.
	DisableDeadLetter bool
	// Concurrency is the most jobs of the queue active at once across all workers; 0 means no limit.
	Concurrency int
	// PriorityBounds (anti-starvation aging) maps a level, PriorityHigh to PriorityBackground, to the
	// longest a job of that level waits behind the levels above it (MinPriorityBound to MaxPriorityBound,
	// 1 s to 30 days) before the server moves it ahead of every level (docs/jobs.md, "Priorities and their
	// bounds"). Empty means strict priority. RegisterQueue replaces the whole config: give the bounds again
	// when changing other settings.
	PriorityBounds map[Priority]time.Duration
	// GroupLimits limit each fairness group of the queue (JobOptions.Group) on its own: at most
	// Concurrency of a group's jobs active at once, its starts within RateLimit; a group's own limits
	// (SetGroupLimits) replace them for that group. nil means no per-group limit.
	GroupLimits *GroupLimits
	// MaxSize (producer backpressure) is the most jobs the queue holds waiting (or paused) and delayed, up to
	// 2^48. An add beyond it fails with ErrResourceExhausted and writes nothing; an AddBulk is checked whole.
	// Jobs the server adds itself (chain links, workflow steps, schedules, retries) are never refused. 0
	// means no limit.
	MaxSize uint64
	// MaintenanceWindows are recurring windows in which the queue starts no job (as if paused: running jobs
	// finish), at most 16. A window never lifts a pause given by hand, and ResumeQueue inside one ends only
	// that pause.
	MaintenanceWindows []MaintenanceWindow
}

func duration(d time.Duration) *durationpb.Duration {
	if d == 0 {
		return nil
	}
	return durationpb.New(d)
}

// counts turns the whole-number fields of an option struct into wire values, keeping the first that is
// out of range: a negative count would otherwise read as "the default" on the wire.
type counts struct{ err error }

func (c *counts) of(field string, n int) uint32 {
	if (n < 0 || n > math.MaxUint32) && c.err == nil {
		c.err = fmt.Errorf("%s must be from 0 to %d, got %d", field, uint32(math.MaxUint32), n)
	}
	if c.err != nil {
		return 0
	}
	return uint32(n)
}

func (o *JobOptions) proto() (*pb.JobOptions, error) {
	if o == nil {
		return nil, nil
	}
	var c counts
	out := &pb.JobOptions{
		Priority:         pb.JobPriority(o.Priority),
		Delay:            duration(o.Delay),
		Attempts:         c.of("JobOptions.Attempts", o.Attempts),
		JobId:            o.JobID,
		Metadata:         o.Metadata.proto(),
		RemoveOnComplete: o.RemoveOnComplete.proto(&c, "JobOptions.RemoveOnComplete"),
		RemoveOnFail:     o.RemoveOnFail.proto(&c, "JobOptions.RemoveOnFail"),
		Timeout:          duration(o.Timeout),
		MaxStalled:       c.of("JobOptions.MaxStalled", o.MaxStalled),
		ExpireAfter:      duration(o.ExpireAfter),
		Group:            o.Group,
		Lifo:             o.LIFO,
		WorkerLabels:     o.WorkerLabels,
	}
	if o.ErrorHistory != nil {
		n := c.of("JobOptions.ErrorHistory", *o.ErrorHistory)
		out.ErrorHistory = &n
	}
	if c.err != nil {
		return nil, c.err
	}
	if o.Group != "" {
		if err := checkGroup("JobOptions.Group", o.Group); err != nil {
			return nil, err
		}
		if strings.HasPrefix(o.Group, RoutePrefix) {
			return nil, fmt.Errorf("JobOptions.Group %q must not start with %q: WorkerLabels' groups have it", o.Group, RoutePrefix)
		}
		if len(o.WorkerLabels) > 0 {
			return nil, fmt.Errorf("JobOptions.Group and JobOptions.WorkerLabels cannot be given together yet")
		}
	}
	if !o.ScheduleTime.IsZero() {
		out.ScheduleTime = timestamppb.New(o.ScheduleTime)
	}
	if b := o.Backoff; b != nil {
		out.Backoff = &pb.Backoff{
			Type: pb.BackoffType(b.Type), Delay: duration(b.Delay), Jitter: b.Jitter, MaxDelay: duration(b.MaxDelay),
		}
	}
	if d := o.Dedup; d != nil {
		out.Dedup = &pb.Dedup{Key: d.Key, Ttl: duration(d.TTL), Mode: pb.DedupMode(d.Mode)}
	}
	for _, link := range o.ChainTo {
		data, err := encodePayload(link.Data)
		if err != nil {
			return nil, err
		}
		options, err := link.Options.proto()
		if err != nil {
			return nil, err
		}
		out.ChainTo = append(out.ChainTo, &pb.ChainLink{
			QueueName: link.Queue, JobName: link.Name, Data: data, Options: options,
		})
	}
	return out, nil
}

func (m *Metadata) proto() *pb.JobMetadata {
	if m == nil {
		return nil
	}
	return &pb.JobMetadata{CorrelationId: m.CorrelationID, Tags: m.Tags, Attributes: m.Attributes}
}

func (k *KeepJobs) proto(c *counts, field string) *pb.KeepJobs {
	if k == nil {
		return nil
	}
	return &pb.KeepJobs{Remove: k.Remove, Age: duration(k.Age), Count: c.of(field+".Count", k.Count)}
}

func (c *QueueConfig) proto() (*pb.QueueConfig, error) {
	if c == nil {
		return nil, nil
	}
	defaults, err := c.DefaultJobOptions.proto()
	if err != nil {
		return nil, err
	}
	var n counts
	out := &pb.QueueConfig{
		DefaultJobOptions:  defaults,
		DeadLetterQueue:    c.DeadLetterQueue,
		CompletedRetention: c.CompletedRetention.proto(&n, "QueueConfig.CompletedRetention"),
		FailedRetention:    c.FailedRetention.proto(&n, "QueueConfig.FailedRetention"),
		DisableDeadLetter:  c.DisableDeadLetter,
		Concurrency:        n.of("QueueConfig.Concurrency", c.Concurrency),
		RateLimit:          c.RateLimit.proto(&n, "QueueConfig.RateLimit"),
		GroupLimits:        c.GroupLimits.proto(&n, "QueueConfig.GroupLimits"),
		MaxSize:            c.MaxSize,
	}
	if n.err != nil {
		return nil, n.err
	}
	if out.PriorityBounds, err = priorityBoundsProto(c.PriorityBounds); err != nil {
		return nil, err
	}
	if out.MaintenanceWindows, err = maintenanceWindowsProto("QueueConfig.MaintenanceWindows", c.MaintenanceWindows); err != nil {
		return nil, err
	}
	return out, nil
}

// jobOptionsFromProto is the reverse of JobOptions.proto, for options the server returns (a schedule's job
// template); nil stays nil.
func jobOptionsFromProto(p *pb.JobOptions) *JobOptions {
	if p == nil {
		return nil
	}
	o := &JobOptions{
		Priority:         Priority(p.GetPriority()),
		Delay:            durationOf(p.GetDelay()),
		ScheduleTime:     timeOf(p.GetScheduleTime()),
		Attempts:         int(p.GetAttempts()),
		JobID:            p.GetJobId(),
		Timeout:          durationOf(p.GetTimeout()),
		MaxStalled:       int(p.GetMaxStalled()),
		ExpireAfter:      durationOf(p.GetExpireAfter()),
		Group:            p.GetGroup(),
		LIFO:             p.GetLifo(),
		WorkerLabels:     p.GetWorkerLabels(),
		RemoveOnComplete: keepJobsFromProto(p.GetRemoveOnComplete()),
		RemoveOnFail:     keepJobsFromProto(p.GetRemoveOnFail()),
	}
	if p.ErrorHistory != nil {
		n := int(p.GetErrorHistory())
		o.ErrorHistory = &n
	}
	if b := p.GetBackoff(); b != nil {
		o.Backoff = &Backoff{
			Type: BackoffType(b.GetType()), Delay: durationOf(b.GetDelay()), Jitter: b.GetJitter(),
			MaxDelay: durationOf(b.GetMaxDelay()),
		}
	}
	if m := p.GetMetadata(); m != nil {
		o.Metadata = &Metadata{CorrelationID: m.GetCorrelationId(), Tags: m.GetTags(), Attributes: m.GetAttributes()}
	}
	if d := p.GetDedup(); d != nil {
		o.Dedup = &Dedup{Key: d.GetKey(), TTL: durationOf(d.GetTtl()), Mode: DedupMode(d.GetMode())}
	}
	for _, link := range p.GetChainTo() {
		o.ChainTo = append(o.ChainTo, ChainLink{
			Queue: link.GetQueueName(), Name: link.GetJobName(), Data: payloadValue(link.GetData()),
			Options: jobOptionsFromProto(link.GetOptions()),
		})
	}
	return o
}

func keepJobsFromProto(p *pb.KeepJobs) *KeepJobs {
	if p == nil {
		return nil
	}
	return &KeepJobs{Remove: p.GetRemove(), Age: durationOf(p.GetAge()), Count: int(p.GetCount())}
}
