package queuemanager

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/queue-manager/queue-manager/clients/go/gen/queue_manager/v1"
)

// The range of a priority bound, as the server has it (it checks too; these give the message before the
// call): a bound under a second would be checked no sooner than the server's next sweep, and one over 30
// days is no bound a person means.
const (
	MinPriorityBound = time.Second
	MaxPriorityBound = 30 * 24 * time.Hour
)

// priorityBoundsProto checks the bounds of QueueConfig.PriorityBounds and returns them by level: HIGH to
// BACKGROUND only (CRITICAL runs first already), each from MinPriorityBound to MaxPriorityBound.
func priorityBoundsProto(bounds map[Priority]time.Duration) ([]*pb.PriorityBound, error) {
	levels := slices.Sorted(maps.Keys(bounds)) // in order, so that the first bad level is always the one named
	out := make([]*pb.PriorityBound, 0, len(levels))
	for _, level := range levels {
		wait := bounds[level]
		switch {
		case level == PriorityCritical:
			return nil, errors.New("QueueConfig.PriorityBounds: CRITICAL jobs run first already; bound HIGH to " +
				"BACKGROUND (PriorityHigh to PriorityBackground)")
		case !level.known():
			return nil, fmt.Errorf("QueueConfig.PriorityBounds: a level must be PriorityHigh (2) to "+
				"PriorityBackground (5), got %d", int32(level))
		case wait < MinPriorityBound || wait > MaxPriorityBound:
			return nil, fmt.Errorf("QueueConfig.PriorityBounds[%s] is %s: a bound is from 1 second to 30 days "+
				"(MinPriorityBound to MaxPriorityBound)", level, wait)
		}
		out = append(out, &pb.PriorityBound{Priority: pb.JobPriority(level), MaxWait: durationpb.New(wait)})
	}
	return out, nil
}

// priorityBoundsFromProto is a queue's bounds by level, nil when it has none (levels this client does not
// know are left out).
func priorityBoundsFromProto(ps []*pb.PriorityBound) map[Priority]time.Duration {
	var out map[Priority]time.Duration
	for _, p := range ps {
		level := Priority(p.GetPriority())
		if !level.known() {
			continue
		}
		if out == nil {
			out = make(map[Priority]time.Duration, len(ps))
		}
		out[level] = durationOf(p.GetMaxWait())
	}
	return out
}
