package queuemanager_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	qm "github.com/queue-manager/queue-manager/clients/go/queuemanager"
)

func TestListWorkersShowsConnectedWorkers(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	queue := newQueue(t, c, nil)
	noop := func(context.Context, *qm.Job) (any, error) { return nil, nil }
	w := startWorker(t, c, qm.WorkerConfig{Concurrency: 3, Handlers: map[string]qm.Handler{queue: noop}})
	workers, err := c.ListWorkers(testContext(t), queue)
	if err != nil || len(workers) != 1 {
		t.Fatalf("ListWorkers(%s) must list the one worker of the queue: %v %+v", queue, err, workers)
	}
	got := workers[0]
	if got.ID != w.ID() || got.Language != "go" || got.Version != qm.Version || got.Concurrency != 3 ||
		!slices.Equal(got.Queues, []string{queue}) || got.ConnectTime.IsZero() || got.ServerID == "" {
		t.Fatalf("ListWorkers: %+v", got)
	}
	all, err := c.ListWorkers(testContext(t), "")
	if err != nil || !slices.ContainsFunc(all, func(i *qm.WorkerInfo) bool { return i.ID == w.ID() }) {
		t.Fatalf("ListWorkers(\"\") must list every worker, this one included: %v %+v", err, all)
	}
	for snapshot, err := range c.WatchMetrics(testContext(t), &qm.WatchOptions{
		Queues: []string{queue}, IncludeWorkers: true,
	}) {
		if err != nil || !slices.ContainsFunc(snapshot.Workers, func(i *qm.WorkerInfo) bool { return i.ID == w.ID() }) {
			t.Fatalf("WatchMetrics with IncludeWorkers must list the worker: %v %+v", err, snapshot)
		}
		break
	}
}

func TestWatchMetricsStreamsSnapshots(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	queue := newQueue(t, c, nil)
	add(t, c, queue, "counted", nil, nil)
	ctx := testContext(t)
	snapshots := 0
	var last time.Time
	opts := &qm.WatchOptions{Queues: []string{queue}, Interval: 100 * time.Millisecond}
	for snapshot, err := range c.WatchMetrics(ctx, opts) {
		if err != nil {
			t.Fatalf("WatchMetrics: %v", err)
		}
		if len(snapshot.Metrics) != 1 || snapshot.Metrics[0].Queue != queue || snapshot.Metrics[0].Waiting != 1 ||
			snapshot.Time.IsZero() || snapshot.Time.Before(last) {
			t.Fatalf("snapshot %d: %+v", snapshots, snapshot)
		}
		last = snapshot.Time
		if snapshots++; snapshots == 3 {
			break // ends the stream
		}
	}
	if snapshots != 3 {
		t.Fatalf("the stream ended after %d snapshots", snapshots)
	}

	// A failure is the last element; a bad request fails precisely.
	for _, bad := range []struct {
		opts *qm.WatchOptions
		want error
	}{
		{&qm.WatchOptions{Queues: []string{queue + "-missing"}}, qm.ErrNotFound},
		{&qm.WatchOptions{Queues: []string{queue}, Interval: time.Millisecond}, qm.ErrInvalidArgument},
	} {
		var errs []error
		for snapshot, err := range c.WatchMetrics(ctx, bad.opts) {
			if snapshot != nil {
				t.Fatalf("WatchMetrics(%+v) must fail, got %+v", bad.opts, snapshot)
			}
			errs = append(errs, err)
		}
		if len(errs) != 1 || !errors.Is(errs[0], bad.want) {
			t.Fatalf("WatchMetrics(%+v) must end with %v, got %v", bad.opts, bad.want, errs)
		}
	}

	// The loop ends quietly when its context ends.
	short, cancel := context.WithCancel(ctx)
	defer cancel()
	n := 0
	for _, err := range c.WatchMetrics(short, &qm.WatchOptions{Queues: []string{queue}}) {
		if err != nil {
			t.Fatalf("a cancelled watch must end without an error, got %v", err)
		}
		n++
		cancel()
	}
	if n != 1 {
		t.Fatalf("the cancelled watch gave %d snapshots", n)
	}
}

func TestGetAllMetricsCoversEveryQueue(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	busy, idle := newQueue(t, c, nil), newQueue(t, c, nil)
	add(t, c, busy, "one", nil, nil)
	add(t, c, busy, "two", nil, nil)
	all, err := c.GetAllMetrics(testContext(t))
	if err != nil {
		t.Fatalf("GetAllMetrics: %v", err)
	}
	byQueue := map[string]*qm.QueueMetrics{}
	for _, m := range all {
		byQueue[m.Queue] = m
	}
	if m := byQueue[busy]; m == nil || m.Waiting != 2 || m.AddedTotal != 2 {
		t.Fatalf("the busy queue's metrics: %+v", m)
	}
	if m := byQueue[idle]; m == nil || m.Waiting != 0 {
		t.Fatalf("the idle queue's metrics: %+v", m)
	}
}
