package queuemanager_test

import (
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	qm "github.com/queue-manager/queue-manager/clients/go/queuemanager"
)

func TestPriorityBoundsAreStoredAndReadBack(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	ctx := testContext(t)
	bounds := map[qm.Priority]time.Duration{
		qm.PriorityBackground: 5 * time.Minute, qm.PriorityHigh: 1500 * time.Millisecond, qm.PriorityLow: time.Minute,
	}
	queue := newQueue(t, c, &qm.QueueConfig{PriorityBounds: bounds})
	got, err := c.GetQueue(ctx, queue)
	if err != nil || !maps.Equal(got.PriorityBounds, bounds) {
		t.Fatalf("GetQueue must read the bounds back: %v %+v", err, got)
	}
	// RegisterQueue replaces the whole config: without bounds, the queue goes back to strict priority.
	again, created, err := c.RegisterQueue(ctx, queue, &qm.QueueConfig{DisableDeadLetter: true})
	if err != nil || created || again.PriorityBounds != nil {
		t.Fatalf("RegisterQueue without bounds must clear them: %v %v %+v", err, created, again)
	}
	edges := map[qm.Priority]time.Duration{
		qm.PriorityNormal: qm.MinPriorityBound, qm.PriorityLow: qm.MaxPriorityBound,
	}
	edged, _, err := c.RegisterQueue(ctx, queue, &qm.QueueConfig{PriorityBounds: edges, DisableDeadLetter: true})
	if err != nil || !maps.Equal(edged.PriorityBounds, edges) {
		t.Fatalf("the bounds' limits are allowed: %v %+v", err, edged)
	}
}

func TestBadPriorityBoundsAreRefusedBeforeTheCall(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	ctx := testContext(t)
	queue := newQueue(t, c, nil)
	for _, bad := range []struct {
		bounds map[qm.Priority]time.Duration
		words  string
	}{
		{map[qm.Priority]time.Duration{qm.PriorityCritical: time.Minute}, "CRITICAL jobs run first already"},
		{
			map[qm.Priority]time.Duration{qm.PriorityDefault: time.Minute},
			"PriorityHigh (2) to PriorityBackground (5), got 0",
		},
		{map[qm.Priority]time.Duration{9: time.Minute}, "got 9"},
		{
			map[qm.Priority]time.Duration{qm.PriorityLow: 999 * time.Millisecond},
			"[LOW] is 999ms: a bound is from 1 second to 30 days",
		},
		{map[qm.Priority]time.Duration{qm.PriorityHigh: 31 * 24 * time.Hour}, "[HIGH] is 744h0m0s"},
		{map[qm.Priority]time.Duration{qm.PriorityBackground: -time.Second}, "[BACKGROUND] is -1s"},
		// The first bad level in order is named, whatever the map's order.
		{map[qm.Priority]time.Duration{qm.PriorityBackground: 0, qm.PriorityNormal: 0}, "[NORMAL] is 0s"},
	} {
		_, _, err := c.RegisterQueue(ctx, queue, &qm.QueueConfig{PriorityBounds: bad.bounds, DisableDeadLetter: true})
		var rpc *qm.Error
		if err == nil || errors.As(err, &rpc) || !strings.Contains(err.Error(), bad.words) ||
			!strings.HasPrefix(err.Error(), "QueueConfig.PriorityBounds") {
			t.Fatalf("RegisterQueue(%v) must fail before the call with %q, got %v", bad.bounds, bad.words, err)
		}
	}
	if got, err := c.GetQueue(ctx, queue); err != nil || got.PriorityBounds != nil {
		t.Fatalf("a refused config must change nothing: %v %+v", err, got)
	}
}

func TestMetricsReportEachPriorityLevel(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	ctx := testContext(t)
	queue := newQueue(t, c, nil)
	first := add(t, c, queue, "low-1", nil, &qm.JobOptions{Priority: qm.PriorityLow})
	add(t, c, queue, "low-2", nil, &qm.JobOptions{Priority: qm.PriorityLow})
	add(t, c, queue, "high", nil, &qm.JobOptions{Priority: qm.PriorityHigh})
	want := []struct {
		priority qm.Priority
		waiting  uint64
	}{
		{qm.PriorityCritical, 0}, {qm.PriorityHigh, 1}, {qm.PriorityNormal, 0}, {qm.PriorityLow, 2},
		{qm.PriorityBackground, 0},
	}
	check := func(from string, m *qm.QueueMetrics) {
		t.Helper()
		if m == nil || len(m.Levels) != len(want) {
			t.Fatalf("%s: every level, CRITICAL first: %+v", from, m)
		}
		for i, level := range m.Levels {
			if level.Priority != want[i].priority || level.Waiting != want[i].waiting ||
				(level.Waiting == 0 && level.OldestWaitingAge != 0) {
				t.Fatalf("%s: level %d is %+v, want %+v", from, i, level, want[i])
			}
		}
		low := m.Levels[qm.PriorityLow-1]
		if age := time.Since(first.CreateTime); low.OldestWaitingAge < 0 || low.OldestWaitingAge > age+time.Second ||
			low.OldestWaitingAge != m.OldestWaitingAge {
			t.Fatalf("%s: LOW's oldest wait %s is the queue's oldest (%s), at most %s", from, low.OldestWaitingAge,
				m.OldestWaitingAge, age)
		}
	}
	one, err := c.GetQueueMetrics(ctx, queue)
	if err != nil {
		t.Fatalf("GetQueueMetrics: %v", err)
	}
	check("GetQueueMetrics", one)
	all, err := c.GetAllMetrics(ctx)
	if err != nil {
		t.Fatalf("GetAllMetrics: %v", err)
	}
	for _, m := range all {
		if m.Queue == queue {
			check("GetAllMetrics", m)
		}
	}
	for snapshot, err := range c.WatchMetrics(ctx, &qm.WatchOptions{Queues: []string{queue}}) {
		if err != nil || len(snapshot.Metrics) != 1 {
			t.Fatalf("WatchMetrics: %v %+v", err, snapshot)
		}
		check("WatchMetrics", snapshot.Metrics[0])
		break
	}
}
