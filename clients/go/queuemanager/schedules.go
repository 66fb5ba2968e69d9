package queuemanager

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/queue-manager/queue-manager/clients/go/gen/queue_manager/v1"
)

// CatchUp says what happens to a schedule's occurrences missed while no server ran.
type CatchUp int32

const (
	// CatchUpSkip (the default) skips them: the next run is the next occurrence from now.
	CatchUpSkip CatchUp = CatchUp(pb.ScheduleCatchUp_SCHEDULE_CATCH_UP_SKIP)
	// CatchUpOne adds one run for all of them together, then runs on schedule.
	CatchUpOne CatchUp = CatchUp(pb.ScheduleCatchUp_SCHEDULE_CATCH_UP_ONE)
	// CatchUpAll adds one run for each (at most 1,000), oldest first, then runs on schedule.
	CatchUpAll CatchUp = CatchUp(pb.ScheduleCatchUp_SCHEDULE_CATCH_UP_ALL)
)

// String is the policy's name, e.g. "SKIP".
func (c CatchUp) String() string {
	return strings.TrimPrefix(pb.ScheduleCatchUp(c).String(), "SCHEDULE_CATCH_UP_")
}

// Schedule adds a job to its queue on a cron expression or a fixed interval. Each run's job has the id
// "schedule:<id>:<occurrence ms>", so an occurrence is added once however many servers run.
type Schedule struct {
	// ID is unique within its queue: 1 to 100 letters, digits, "-", "_" or ".".
	ID string
	// Queue the jobs are added to; it must be registered.
	Queue string
	// Cron is 5 fields (minute hour day-of-month month day-of-week), or 6 with seconds first, in Timezone
	// (an IANA name; "" means UTC). Exactly one of Cron and Every is set.
	Cron     string
	Timezone string
	// Every is a fixed interval between runs, at least 1 s.
	Every time.Duration
	// Start: no run before it (zero: from now). End: no run after it (zero: no end).
	Start time.Time
	End   time.Time
	// Limit is the most runs in all; 0 means no limit.
	Limit int
	// JobName, Data and JobOptions make each run's job (JobOptions.JobID is not allowed). Read back, Data
	// is a json.RawMessage for JSON data (any application/json content type) and []byte for any other
	// content type, as the Python client reads it, so a schedule read can be upserted again (bytes then
	// go as application/octet-stream).
	JobName    string
	Data       any
	JobOptions *JobOptions
	CatchUp    CatchUp

	// Set by the server, ignored on upsert.

	// NextRunTime is when the next job is due; zero once the schedule is over.
	NextRunTime time.Time
	// LastRunTime is when the last job was added, LastJobID its id, RunCount the jobs added so far.
	LastRunTime time.Time
	LastJobID   string
	RunCount    uint64
	CreateTime  time.Time
	UpdateTime  time.Time
}

func (s *Schedule) proto() (*pb.Schedule, error) {
	if s == nil {
		return nil, fmt.Errorf("the schedule is nil")
	}
	if s.Limit < 0 || s.Limit > math.MaxUint32 {
		return nil, fmt.Errorf("Schedule.Limit must be from 0 to %d, got %d", uint32(math.MaxUint32), s.Limit)
	}
	if s.Every < 0 {
		return nil, fmt.Errorf("Schedule.Every must not be negative, got %s", s.Every)
	}
	job, err := NewJob{Name: s.JobName, Data: s.Data, Options: s.JobOptions}.proto()
	if err != nil {
		return nil, err
	}
	return &pb.Schedule{
		Id: s.ID, QueueName: s.Queue, Cron: s.Cron, Timezone: s.Timezone, Every: duration(s.Every),
		StartTime: timestamp(s.Start), EndTime: timestamp(s.End), Limit: uint32(s.Limit), Job: job,
		CatchUp: pb.ScheduleCatchUp(s.CatchUp),
	}, nil
}

func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func scheduleFromProto(p *pb.Schedule) *Schedule {
	if p == nil {
		return nil
	}
	return &Schedule{
		ID: p.GetId(), Queue: p.GetQueueName(), Cron: p.GetCron(), Timezone: p.GetTimezone(),
		Every: durationOf(p.GetEvery()), Start: timeOf(p.GetStartTime()), End: timeOf(p.GetEndTime()),
		Limit: int(p.GetLimit()), JobName: p.GetJob().GetName(), Data: payloadValue(p.GetJob().GetData()),
		JobOptions: jobOptionsFromProto(p.GetJob().GetOptions()), CatchUp: CatchUp(p.GetCatchUp()),
		NextRunTime: timeOf(p.GetNextRunTime()),
		LastRunTime: timeOf(p.GetLastRunTime()), LastJobID: p.GetLastJobId(), RunCount: p.GetRunCount(),
		CreateTime: timeOf(p.GetCreateTime()), UpdateTime: timeOf(p.GetUpdateTime()),
	}
}

// UpsertSchedule creates a schedule, or replaces the one of the same queue and id (its run count is
// kept), and returns it as stored, with its next run time; it reports whether the schedule is new.
func (c *Client) UpsertSchedule(ctx context.Context, schedule *Schedule) (*Schedule, bool, error) {
	p, err := schedule.proto()
	if err != nil {
		return nil, false, err
	}
	resp, err := c.queues.UpsertSchedule(ctx, &pb.UpsertScheduleRequest{Schedule: p})
	if err != nil {
		return nil, false, fromRPC(err)
	}
	return scheduleFromProto(resp.GetSchedule()), resp.GetCreated(), nil
}

// GetSchedule returns one schedule.
func (c *Client) GetSchedule(ctx context.Context, queue, id string) (*Schedule, error) {
	resp, err := c.queues.GetSchedule(ctx, &pb.GetScheduleRequest{QueueName: queue, ScheduleId: id})
	if err != nil {
		return nil, fromRPC(err)
	}
	return scheduleFromProto(resp.GetSchedule()), nil
}

// ListSchedules returns the schedules of a queue ("" for every queue), by queue then id.
func (c *Client) ListSchedules(ctx context.Context, queue string) ([]*Schedule, error) {
	resp, err := c.queues.ListSchedules(ctx, &pb.ListSchedulesRequest{QueueName: queue})
	if err != nil {
		return nil, fromRPC(err)
	}
	out := make([]*Schedule, 0, len(resp.GetSchedules()))
	for _, p := range resp.GetSchedules() {
		out = append(out, scheduleFromProto(p))
	}
	return out, nil
}

// DeleteSchedule deletes a schedule (jobs it already added stay) and returns it as it was.
func (c *Client) DeleteSchedule(ctx context.Context, queue, id string) (*Schedule, error) {
	resp, err := c.queues.DeleteSchedule(ctx, &pb.DeleteScheduleRequest{QueueName: queue, ScheduleId: id})
	if err != nil {
		return nil, fromRPC(err)
	}
	return scheduleFromProto(resp.GetSchedule()), nil
}
