package queuemanager_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	qm "github.com/queue-manager/queue-manager/clients/go/queuemanager"
)

func TestTimedPauseShowsItsTimeAndAResumeClearsIt(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	ctx := testContext(t)
	queue := newQueue(t, c, nil)
	before := time.Now()
	paused, err := c.PauseQueue(ctx, queue, qm.ResumeAfter(time.Hour))
	if err != nil || !paused.Paused {
		t.Fatalf("PauseQueue(ResumeAfter): %v %+v", err, paused)
	}
	if d := paused.PausedUntil.Sub(before); d < time.Hour-5*time.Second || d > time.Hour+time.Minute {
		t.Fatalf("PausedUntil %s is not an hour on from %s", paused.PausedUntil, before)
	}
	at := time.Now().Add(2 * time.Hour).Truncate(time.Second)
	paused, err = c.PauseQueue(ctx, queue, qm.ResumeAt(at))
	if err != nil || !paused.PausedUntil.Equal(at) {
		t.Fatalf("PauseQueue(ResumeAt): %v %+v", err, paused)
	}
	plain, err := c.PauseQueue(ctx, queue)
	if err != nil || !plain.Paused || !plain.PausedUntil.IsZero() {
		t.Fatalf("a plain pause clears the time: %v %+v", err, plain)
	}
	if _, err := c.PauseQueue(ctx, queue, qm.ResumeAfter(time.Hour)); err != nil {
		t.Fatal(err)
	}
	resumed, err := c.ResumeQueue(ctx, queue)
	if err != nil || resumed.Paused || !resumed.PausedUntil.IsZero() {
		t.Fatalf("ResumeQueue clears the time: %v %+v", err, resumed)
	}

	group, err := c.PauseGroup(ctx, queue, "acme", qm.ResumeAfter(time.Hour))
	if err != nil || !group.Paused || group.PausedUntil.IsZero() {
		t.Fatalf("PauseGroup(ResumeAfter): %v %+v", err, group)
	}
	group, err = c.ResumeGroup(ctx, queue, "acme")
	if err != nil || group.Paused || !group.PausedUntil.IsZero() {
		t.Fatalf("ResumeGroup clears the time: %v %+v", err, group)
	}
}

func TestMetricsShowATimedPauseAndAMaintenanceWindow(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	ctx := testContext(t)
	queue := newQueue(t, c, nil)
	paused, err := c.PauseQueue(ctx, queue, qm.ResumeAfter(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	m, err := c.GetQueueMetrics(ctx, queue)
	if err != nil || !m.IsPaused || !m.PausedUntil.Equal(paused.PausedUntil) || !m.MaintenanceUntil.IsZero() {
		t.Fatalf("a timed pause's metrics: %v %+v", err, m)
	}
	if _, err := c.ResumeQueue(ctx, queue); err != nil {
		t.Fatal(err)
	}
	if m, err = c.GetQueueMetrics(ctx, queue); err != nil || m.IsPaused || !m.PausedUntil.IsZero() {
		t.Fatalf("a resume clears the time: %v %+v", err, m)
	}

	now := time.Now().UTC()
	held := newQueue(t, c, &qm.QueueConfig{MaintenanceWindows: []qm.MaintenanceWindow{
		{Cron: fmt.Sprintf("%d %d * * *", now.Minute(), now.Hour()), Duration: time.Hour},
	}})
	q, err := c.GetQueue(ctx, held)
	if err != nil {
		t.Fatal(err)
	}
	all, err := c.GetAllMetrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range all {
		if m.Queue == held {
			if !m.IsPaused || !m.MaintenanceUntil.Equal(q.MaintenanceUntil) || !m.PausedUntil.IsZero() {
				t.Fatalf("inside a window, the metrics: %+v (the queue: %+v)", m, q)
			}
			return
		}
	}
	t.Fatalf("GetAllMetrics left %s out", held)
}

func TestTimedPauseRefusesBadTimes(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	ctx := testContext(t)
	queue := newQueue(t, c, nil)
	_, err := c.PauseQueue(ctx, queue, qm.ResumeAfter(time.Minute), qm.ResumeAt(time.Now().Add(time.Hour)))
	if err == nil || !strings.Contains(err.Error(), "not both") {
		t.Fatalf("both: got %v", err)
	}
	if _, err := c.PauseGroup(ctx, queue, "g", qm.ResumeAfter(0)); err == nil ||
		!strings.Contains(err.Error(), "more than 0") {
		t.Fatalf("zero: got %v", err)
	}
	_, err = c.PauseQueue(ctx, queue, qm.ResumeAt(time.Now().Add(-time.Hour)))
	if !errors.Is(err, qm.ErrInvalidArgument) || !strings.Contains(err.Error(), "not in the future") {
		t.Fatalf("past: want ErrInvalidArgument, got %v", err)
	}
	_, err = c.PauseQueue(ctx, queue, qm.ResumeAfter(367*24*time.Hour))
	if !errors.Is(err, qm.ErrInvalidArgument) || !strings.Contains(err.Error(), "366-day maximum") {
		t.Fatalf("too far: want ErrInvalidArgument, got %v", err)
	}
	if q, err := c.GetQueue(ctx, queue); err != nil || q.Paused {
		t.Fatalf("a refused pause writes nothing: %v %+v", err, q)
	}
}

func TestMaintenanceWindowsReadBackAndHoldTheQueue(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	ctx := testContext(t)
	windows := []qm.MaintenanceWindow{
		{Cron: "0 2 * * SUN", Duration: 2 * time.Hour, Timezone: "Europe/Paris"},
		{Cron: "30 3 1 * *", Duration: 15 * time.Minute},
	}
	queue := newQueue(t, c, &qm.QueueConfig{MaintenanceWindows: windows})
	q, err := c.GetQueue(ctx, queue)
	if err != nil || len(q.MaintenanceWindows) != 2 || q.MaintenanceWindows[0] != windows[0] ||
		q.MaintenanceWindows[1] != windows[1] {
		t.Fatalf("GetQueue: %v %+v", err, q)
	}
	if q.Paused || !q.MaintenanceUntil.IsZero() || !q.NextMaintenanceTime.After(time.Now()) {
		t.Fatalf("outside its windows: %+v", q)
	}

	now := time.Now().UTC()
	inside := newQueue(t, c, &qm.QueueConfig{MaintenanceWindows: []qm.MaintenanceWindow{
		{Cron: fmt.Sprintf("%d %d * * *", now.Minute(), now.Hour()), Duration: time.Hour},
	}})
	q, err = c.GetQueue(ctx, inside)
	if err != nil || !q.Paused || !q.MaintenanceUntil.After(time.Now()) {
		t.Fatalf("registered inside a window: %v %+v", err, q)
	}
	if q, err = c.ResumeQueue(ctx, inside); err != nil || !q.Paused {
		t.Fatalf("a resume ends only a hand pause: %v %+v", err, q)
	}

	_, _, err = c.RegisterQueue(ctx, queue, &qm.QueueConfig{MaintenanceWindows: []qm.MaintenanceWindow{
		{Cron: "0 25 * * *", Duration: time.Hour},
	}})
	if !errors.Is(err, qm.ErrInvalidArgument) || !strings.Contains(err.Error(), "maintenance_windows[0].cron") {
		t.Fatalf("bad cron: want ErrInvalidArgument, got %v", err)
	}
	_, _, err = c.RegisterQueue(ctx, queue, &qm.QueueConfig{MaintenanceWindows: []qm.MaintenanceWindow{{Cron: "0 2 * * *"}}})
	if err == nil || !strings.Contains(err.Error(), "Duration must be more than 0") {
		t.Fatalf("zero duration: got %v", err)
	}
}

func TestGroupMaintenanceWindowHoldsTheGroupAndShowsInListGroups(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	ctx := testContext(t)
	queue := newQueue(t, c, nil)
	now := time.Now().UTC()
	started := qm.MaintenanceWindow{Cron: fmt.Sprintf("%d %d * * *", now.Minute(), now.Hour()), Duration: time.Hour}
	g, err := c.SetGroupLimits(ctx, queue, "acme", qm.GroupLimits{Concurrency: 2}, started)
	if err != nil || !g.Paused || !g.MaintenanceUntil.After(time.Now()) || g.Limits.Concurrency != 2 {
		t.Fatalf("SetGroupLimits inside a window: %v %+v", err, g)
	}
	page, err := c.ListGroups(ctx, queue, 0, "")
	if err != nil || len(page.Groups) != 1 || !page.Groups[0].MaintenanceUntil.Equal(g.MaintenanceUntil) ||
		!page.Groups[0].NextMaintenanceTime.Equal(g.NextMaintenanceTime) {
		t.Fatalf("ListGroups: %v %+v", err, page)
	}
	if g, err = c.ResumeGroup(ctx, queue, "acme"); err != nil || !g.Paused {
		t.Fatalf("a resume ends only a hand pause: %v %+v", err, g)
	}
	if g, err = c.SetGroupLimits(ctx, queue, "acme", qm.GroupLimits{Concurrency: 2}); err != nil || g.Paused ||
		!g.MaintenanceUntil.IsZero() || !g.NextMaintenanceTime.IsZero() {
		t.Fatalf("limits without windows: %v %+v", err, g)
	}
	_, err = c.SetGroupLimits(ctx, queue, "acme", qm.GroupLimits{}, qm.MaintenanceWindow{Cron: "0 25 * * *", Duration: time.Hour})
	if !errors.Is(err, qm.ErrInvalidArgument) || !strings.Contains(err.Error(), "limits.maintenance_windows[0].cron") {
		t.Fatalf("bad cron: want ErrInvalidArgument, got %v", err)
	}
	_, err = c.SetGroupLimits(ctx, queue, "acme", qm.GroupLimits{}, qm.MaintenanceWindow{Cron: "0 2 * * *"})
	if err == nil || !strings.Contains(err.Error(), "windows[0].Duration must be more than 0") {
		t.Fatalf("zero duration: got %v", err)
	}
}

func TestGroupInfoListsItsMaintenanceWindowsAndStaysComparable(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	ctx := testContext(t)
	queue := newQueue(t, c, nil)
	// Windows that hold no group now: the first of a month at 01:30 UTC and Sundays at 03:00 in Paris.
	windows := []qm.MaintenanceWindow{
		{Cron: "30 1 1 * *", Duration: 90 * time.Minute},
		{Cron: "0 3 * * SUN", Duration: 2 * time.Hour, Timezone: "Europe/Paris"},
	}
	set, err := c.SetGroupLimits(ctx, queue, "acme", qm.GroupLimits{Concurrency: 3}, windows...)
	if err != nil || !slices.Equal(set.MaintenanceWindows(), windows) {
		t.Fatalf("SetGroupLimits must read its windows back: %v %+v", err, set.MaintenanceWindows())
	}
	// The returned slice is the caller's own.
	set.MaintenanceWindows()[0].Cron = "changed"
	if set.MaintenanceWindows()[0].Cron != windows[0].Cron {
		t.Fatalf("changing the returned windows changed the group: %+v", set.MaintenanceWindows())
	}
	page, err := c.ListGroups(ctx, queue, 0, "")
	if err != nil || len(page.Groups) != 1 || !slices.Equal(page.Groups[0].MaintenanceWindows(), windows) {
		t.Fatalf("ListGroups must show the group's windows: %v %+v", err, page)
	}
	// Two reads of the same group compare equal with ==, windows and all (a slice field would not compile).
	if *page.Groups[0] != *set {
		t.Fatalf("two reads of an unchanged group differ: %+v != %+v", page.Groups[0], set)
	}
	one, err := c.SetGroupLimits(ctx, queue, "acme", qm.GroupLimits{Concurrency: 3}, windows[1])
	if err != nil || !slices.Equal(one.MaintenanceWindows(), windows[1:]) || *one == *set {
		t.Fatalf("SetGroupLimits with one window: %v %+v", err, one.MaintenanceWindows())
	}
	cleared, err := c.ClearGroupLimits(ctx, queue, "acme")
	if err != nil || cleared.MaintenanceWindows() != nil {
		t.Fatalf("ClearGroupLimits must leave no windows: %v %+v", err, cleared.MaintenanceWindows())
	}
	if (*qm.GroupInfo)(nil).MaintenanceWindows() != nil || (&qm.GroupInfo{}).MaintenanceWindows() != nil {
		t.Fatal("a nil or zero GroupInfo has no windows")
	}
}
