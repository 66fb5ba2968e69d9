package queuemanager

import (
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
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
