package queuemanager_test

import (
	"context"
	"errors"
	"maps"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	qm "github.com/queue-manager/queue-manager/clients/go/queuemanager"
)

// TestWorkerLabelsRouteTheJobToAMatchingWorker: JobOptions.WorkerLabels reach the server (the job reads them
// back, ListGroups shows the routing group), and the job runs on the worker whose labels hold them while a
// worker without them, connected first, takes the plain job.
func TestWorkerLabelsRouteTheJobToAMatchingWorker(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	ctx := testContext(t)
	queue := newQueue(t, c, nil)
	want := map[string]string{"gpu": "a100", "region": "eu"}
	routed := add(t, c, queue, "render", nil, &qm.JobOptions{WorkerLabels: want})
	if !maps.Equal(routed.WorkerLabels, want) || routed.Group != "" {
		t.Fatalf("the add must answer the labels, not a group: %v %q", routed.WorkerLabels, routed.Group)
	}
	got, err := c.GetJob(ctx, queue, routed.ID)
	if err != nil || !maps.Equal(got.WorkerLabels, want) {
		t.Fatalf("GetJob: %v, labels %v", err, got.WorkerLabels)
	}
	page, err := c.ListGroups(ctx, queue, 0, "")
	if err != nil || len(page.Groups) != 1 || page.Groups[0].Group != "labels:gpu=a100,region=eu" {
		t.Fatalf("ListGroups: %v, %+v", err, page)
	}
	ranOn := make(chan string, 2)
	handler := func(who string) qm.Handler {
		return func(ctx context.Context, job *qm.Job) (any, error) {
			ranOn <- job.Name + "@" + who
			return nil, nil
		}
	}
	startWorker(t, c, qm.WorkerConfig{Concurrency: 4, Handlers: map[string]qm.Handler{queue: handler("plain")}})
	add(t, c, queue, "plain-job", nil, nil)
	startWorker(t, c, qm.WorkerConfig{
		Concurrency: 4, Labels: map[string]string{"gpu": "a100", "region": "eu", "zone": "b"},
		Handlers: map[string]qm.Handler{queue: handler("gpu")},
	})
	runs := []string{receive(t, ranOn, "a run"), receive(t, ranOn, "a run")}
	joined := strings.Join(runs, " ")
	if !strings.Contains(joined, "render@gpu") || !strings.Contains(joined, "plain-job@plain") {
		t.Fatalf("runs %v: the routed job must run on the gpu worker, the plain one on the other", runs)
	}
	_, err = c.AddJob(ctx, queue, "both", nil, &qm.JobOptions{WorkerLabels: want, Group: "tenant"})
	if err == nil || !strings.Contains(err.Error(), "cannot be given together") {
		t.Fatalf("a group with worker labels must be refused: %v", err)
	}
	// The server checks the labels themselves (INVALID_ARGUMENT naming the option).
	_, err = c.AddJob(ctx, queue, "bad", nil, &qm.JobOptions{WorkerLabels: map[string]string{"a=b": "x"}})
	var e *qm.Error
	if !errors.As(err, &e) || e.Code != codes.InvalidArgument || !strings.Contains(e.Message, "worker_labels") {
		t.Fatalf("a key with '=' must be refused with INVALID_ARGUMENT naming worker_labels: %v", err)
	}
}
