package queuemanager_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	qm "github.com/queue-manager/queue-manager/clients/go/queuemanager"
)

// refusedFull checks that err is a full queue's or group's refusal: ErrResourceExhausted, with the server's
// message starting with prefix.
func refusedFull(t *testing.T, err error, prefix string) {
	t.Helper()
	var own *qm.Error
	if !errors.Is(err, qm.ErrResourceExhausted) || !errors.As(err, &own) {
		t.Fatalf("got %v, want ErrResourceExhausted", err)
	}
	// A single add's message says "the job was not added"; a bulk add's "none was added", with the figures.
	notAdded := strings.Contains(own.Message, "the job was not added") || strings.Contains(own.Message, "none was added")
	if !strings.HasPrefix(own.Message, prefix) || !notAdded {
		t.Fatalf("message %q, want it to start %q", own.Message, prefix)
	}
}

func TestAFullQueueRefusesAddsWithResourceExhausted(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	ctx := testContext(t)
	queue := newQueue(t, c, &qm.QueueConfig{MaxSize: 2})
	got, err := c.GetQueue(ctx, queue)
	if err != nil || got.MaxSize != 2 {
		t.Fatalf("GetQueue: %+v, %v; want MaxSize 2", got, err)
	}
	first := add(t, c, queue, "first", nil, &qm.JobOptions{JobID: "first"})
	add(t, c, queue, "later", nil, &qm.JobOptions{Delay: time.Minute}) // a delayed job counts too
	_, err = c.AddJob(ctx, queue, "more", nil, nil)
	refusedFull(t, err, "queue '"+queue+"' is full: ")
	_, err = c.AddBulk(ctx, queue, []qm.NewJob{{Name: "bulk"}})
	refusedFull(t, err, "queue '"+queue+"' is full: ")
	// In a batch each add is refused on its own; an add that finds its job there is answered with it.
	outcomes, err := c.AddJobBatch(ctx, []qm.BatchJob{
		{Queue: queue, NewJob: qm.NewJob{Name: "again", Options: &qm.JobOptions{JobID: "first"}}},
		{Queue: queue, NewJob: qm.NewJob{Name: "new"}},
	})
	if err != nil {
		t.Fatalf("AddJobBatch: %v", err)
	}
	if outcomes[0].Err != nil || outcomes[0].Job.ID != first.ID {
		t.Fatalf("the existing job's add: %+v, want job %s", outcomes[0], first.ID)
	}
	refusedFull(t, outcomes[1].Err, "queue '"+queue+"' is full: ")
	metrics, err := c.GetQueueMetrics(ctx, queue)
	if err != nil || metrics.Waiting != 1 || metrics.Delayed != 1 {
		t.Fatalf("metrics %+v, %v; want 1 waiting, 1 delayed", metrics, err)
	}
}

func TestAGroupsMaxSizeRefusesItsAddsOnly(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	ctx := testContext(t)
	queue := newQueue(t, c, &qm.QueueConfig{GroupLimits: &qm.GroupLimits{MaxSize: 1}})
	got, err := c.GetQueue(ctx, queue)
	if err != nil || got.GroupLimits == nil || *got.GroupLimits != (qm.GroupLimits{MaxSize: 1}) {
		t.Fatalf("GetQueue: %+v, %v; want GroupLimits{MaxSize: 1}", got, err)
	}
	add(t, c, queue, "a1", nil, &qm.JobOptions{Group: "a"})
	_, err = c.AddJob(ctx, queue, "a2", nil, &qm.JobOptions{Group: "a"})
	refusedFull(t, err, "group 'a' of queue '"+queue+"' is full: ")
	add(t, c, queue, "b1", nil, &qm.JobOptions{Group: "b"}) // another group has room
	own, err := c.SetGroupLimits(ctx, queue, "a", qm.GroupLimits{MaxSize: 2})
	if err != nil || own.Limits.MaxSize != 2 || !own.CustomLimits {
		t.Fatalf("SetGroupLimits: %+v, %v; want its own MaxSize 2", own, err)
	}
	add(t, c, queue, "a2", nil, &qm.JobOptions{Group: "a"})
	_, err = c.AddJob(ctx, queue, "a3", nil, &qm.JobOptions{Group: "a"})
	refusedFull(t, err, "group 'a' of queue '"+queue+"' is full: ")
	page, err := c.ListGroups(ctx, queue, 0, "")
	if err != nil || len(page.Groups) != 2 {
		t.Fatalf("ListGroups: %+v, %v", page, err)
	}
	for _, g := range page.Groups {
		want := map[string][2]uint64{"a": {2, 2}, "b": {1, 1}}[g.Group]
		if [2]uint64{g.Waiting, g.Limits.MaxSize} != want {
			t.Fatalf("group %s: waiting %d, MaxSize %d; want %v", g.Group, g.Waiting, g.Limits.MaxSize, want)
		}
	}
}
