package queuemanager

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/queue-manager/queue-manager/clients/go/gen/queue_manager/v1"
)

// PauseOption makes a pause (PauseQueue, PauseGroup) lift by itself: ResumeAfter or ResumeAt, at most one.
// Pausing again replaces the time (a pause without one clears it); ResumeQueue or ResumeGroup before then
// resumes at once and clears it. The server refuses a time not in the future by its clock, or more than 366
// days ahead (ErrInvalidArgument).
type PauseOption func(*pauseTime)

type pauseTime struct {
	after    time.Duration
	afterSet bool
	at       time.Time
	atSet    bool
}

// ResumeAfter resumes the queue (or group) by itself this long from now: more than 0, at most 366 days.
func ResumeAfter(d time.Duration) PauseOption {
	return func(p *pauseTime) { p.after, p.afterSet = d, true }
}

// ResumeAt resumes the queue (or group) by itself at this time.
func ResumeAt(t time.Time) PauseOption {
	return func(p *pauseTime) { p.at, p.atSet = t, true }
}

// pauseTimeProto is the request's resume_after or resume_at (nil, nil: a pause until resumed).
func pauseTimeProto(opts []PauseOption) (*durationpb.Duration, *timestamppb.Timestamp, error) {
	var p pauseTime
	for _, o := range opts {
		o(&p)
	}
	switch {
	case p.afterSet && p.atSet:
		return nil, nil, errors.New("give ResumeAfter or ResumeAt, not both")
	case p.afterSet:
		if p.after <= 0 {
			return nil, nil, fmt.Errorf("ResumeAfter must be more than 0, got %s", p.after)
		}
		return durationpb.New(p.after), nil, nil
	case p.atSet:
		return nil, timestamppb.New(p.at), nil
	}
	return nil, nil, nil
}

// MaintenanceWindow is a recurring window in which its queue starts no job (QueueConfig.MaintenanceWindows),
// or its fairness group none of the group's jobs (SetGroupLimits).
type MaintenanceWindow struct {
	// Cron is when each window starts: a cron expression, 5 fields (or 6, seconds first), as schedules take it.
	Cron string
	// Duration is how long each window lasts: 1 s to 31 days.
	Duration time.Duration
	// Timezone is the IANA time zone Cron is read in, such as "Europe/Paris"; "" means UTC.
	Timezone string
}

// maintenanceWindowsProto checks the windows' form (the server checks the cron and the zone); errors name
// field (QueueConfig.MaintenanceWindows) and the window.
func maintenanceWindowsProto(field string, windows []MaintenanceWindow) ([]*pb.MaintenanceWindow, error) {
	out := make([]*pb.MaintenanceWindow, 0, len(windows))
	for i, w := range windows {
		if strings.TrimSpace(w.Cron) == "" {
			return nil, fmt.Errorf("%s[%d].Cron is required, such as \"0 2 * * SUN\"", field, i)
		}
		if w.Duration <= 0 {
			return nil, fmt.Errorf("%s[%d].Duration must be more than 0, got %s", field, i, w.Duration)
		}
		out = append(out, &pb.MaintenanceWindow{Cron: w.Cron, Duration: durationpb.New(w.Duration), Timezone: w.Timezone})
	}
	return out, nil
}

func maintenanceWindowsFromProto(windows []*pb.MaintenanceWindow) []MaintenanceWindow {
	if len(windows) == 0 {
		return nil
	}
	out := make([]MaintenanceWindow, 0, len(windows))
	for _, w := range windows {
		out = append(out, MaintenanceWindow{Cron: w.GetCron(), Duration: durationOf(w.GetDuration()), Timezone: w.GetTimezone()})
	}
	return out
}
