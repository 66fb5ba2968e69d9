package queuemanager_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	qm "github.com/queue-manager/queue-manager/clients/go/queuemanager"
)

func TestSchedulesUpsertGetListDelete(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	ctx := testContext(t)
	queue := newQueue(t, c, nil)
	ran := make(chan *qm.Job, 10)
	startWorker(t, c, qm.WorkerConfig{Handlers: map[string]qm.Handler{
		queue: func(_ context.Context, job *qm.Job) (any, error) { ran <- job; return nil, nil },
	}})
	every := &qm.Schedule{
		ID: "tick", Queue: queue, Every: time.Second, Limit: 1, JobName: "tick", Data: map[string]int{"n": 1},
		JobOptions: &qm.JobOptions{Priority: qm.PriorityHigh, Attempts: 2}, CatchUp: qm.CatchUpOne,
	}
	stored, created, err := c.UpsertSchedule(ctx, every)
	if err != nil || !created || stored.ID != "tick" || stored.Every != time.Second || stored.NextRunTime.IsZero() ||
		stored.CatchUp != qm.CatchUpOne || stored.JobOptions == nil || stored.JobOptions.Attempts != 2 ||
		stored.JobOptions.Priority != qm.PriorityHigh || string(stored.Data.(json.RawMessage)) != `{"n":1}` {
		t.Fatalf("UpsertSchedule: %v %v %+v", err, created, stored)
	}
	job := receive(t, ran, "the schedule's run")
	if job.Name != "tick" || !strings.HasPrefix(job.ID, "schedule:tick:") || string(job.Data) != `{"n":1}` ||
		job.Priority != qm.PriorityHigh {
		t.Fatalf("the schedule's job: %+v", job)
	}
	got, err := c.GetSchedule(ctx, queue, "tick")
	if err != nil || got.RunCount != 1 || got.LastJobID != job.ID || got.LastRunTime.IsZero() {
		t.Fatalf("GetSchedule after a run: %v %+v", err, got)
	}

	// A schedule read back is upserted again as it is: a replacement, not a new one.
	got.Limit = 0
	cron := &qm.Schedule{ID: "nightly", Queue: queue, Cron: "0 3 * * *", Timezone: "Europe/Paris", JobName: "report"}
	for _, s := range []*qm.Schedule{got, cron} {
		if _, _, err := c.UpsertSchedule(ctx, s); err != nil {
			t.Fatalf("UpsertSchedule(%s): %v", s.ID, err)
		}
	}
	if _, created, err := c.UpsertSchedule(ctx, got); err != nil || created {
		t.Fatalf("upserting an existing schedule replaces it: %v created=%v", err, created)
	}
	list, err := c.ListSchedules(ctx, queue)
	if err != nil || len(list) != 2 || list[0].ID != "nightly" || list[1].ID != "tick" ||
		list[0].Timezone != "Europe/Paris" || list[1].RunCount < 1 {
		t.Fatalf("ListSchedules must list both, by id: %v %+v", err, list)
	}
	for _, id := range []string{"tick", "nightly"} {
		if deleted, err := c.DeleteSchedule(ctx, queue, id); err != nil || deleted.ID != id {
			t.Fatalf("DeleteSchedule(%s): %v %+v", id, err, deleted)
		}
	}
	if _, err := c.GetSchedule(ctx, queue, "tick"); !errors.Is(err, qm.ErrNotFound) {
		t.Fatalf("GetSchedule of a deleted schedule must be ErrNotFound, got %v", err)
	}
	if list, err := c.ListSchedules(ctx, queue); err != nil || len(list) != 0 {
		t.Fatalf("ListSchedules after the deletes: %v %+v", err, list)
	}

	// Bad schedules fail precisely, on this side or the server's.
	for _, bad := range []*qm.Schedule{
		{ID: "x", Queue: queue, Cron: "not a cron", JobName: "x"},
		{ID: "x", Queue: queue, Cron: "0 3 * * *", Every: time.Second, JobName: "x"},
		{ID: "no spaces", Queue: queue, Every: time.Second, JobName: "x"},
	} {
		if _, _, err := c.UpsertSchedule(ctx, bad); !errors.Is(err, qm.ErrInvalidArgument) {
			t.Fatalf("UpsertSchedule(%+v) must be ErrInvalidArgument, got %v", bad, err)
		}
	}
	if _, _, err := c.UpsertSchedule(ctx, &qm.Schedule{ID: "x", Queue: queue, Every: time.Second, Limit: -1,
		JobName: "x"}); err == nil || !strings.Contains(err.Error(), "Limit") {
		t.Fatalf("a negative Limit must be refused by name, got %v", err)
	}
	if _, err := c.DeleteSchedule(ctx, queue, "gone"); !errors.Is(err, qm.ErrNotFound) {
		t.Fatalf("DeleteSchedule of an unknown schedule must be ErrNotFound, got %v", err)
	}
}
