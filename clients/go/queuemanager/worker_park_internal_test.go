package queuemanager

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	pb "github.com/queue-manager/queue-manager/clients/go/gen/queue_manager/v1"
)

// A heartbeat refused because the call parking its run (WaitForEvent, WaitForChildren) ended the lease is
// expected: no warning and no lost lease, whether the refusal comes while the call is out or after the run
// ended. A run no call parks still loses its lease, with a warning.
func TestAHeartbeatCrossingTheCallThatParksTheRunIsNoWarning(t *testing.T) {
	var logs bytes.Buffer
	w := &Worker{
		running: map[jobKey]*run{},
		outbox:  &pb.WorkerReport{},
		log:     slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	refusal := func(r *run) *pb.ReportAck {
		return &pb.ReportAck{Results: []*pb.ReportItemResult{
			{Lease: r.ref(), Code: int32(codes.FailedPrecondition), Message: "the lease is not held"},
		}}
	}
	r := newRun(w, &Job{Queue: "q", ID: "parks"}, "t1")
	w.running[r.key] = r
	_, err := park(r, func() (struct{}, error) {
		w.onAck(refusal(r)) // refused while the call is out
		return struct{}{}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	delete(w.running, r.key) // the run ends
	w.onAck(refusal(r))      // refused after the run ended
	if r.lost || strings.Contains(logs.String(), "level=WARN") {
		t.Fatalf("a refusal crossing the park must be expected (lost=%v):\n%s", r.lost, logs.String())
	}
	if len(w.outbox.GetParked()) != 1 || w.outbox.GetParked()[0].GetJobId() != "parks" {
		t.Fatalf("the parked run must be named in the next report: %v", w.outbox.GetParked())
	}
	if n := strings.Count(logs.String(), "crossed the call that parked the job"); n != 2 {
		t.Fatalf("want 2 debug lines, got %d:\n%s", n, logs.String())
	}

	other := newRun(w, &Job{Queue: "q", ID: "held"}, "t2")
	w.running[other.key] = other
	w.onAck(refusal(other))
	if !other.lost || !strings.Contains(logs.String(), "level=WARN msg=\"job lost its lease") {
		t.Fatalf("a lease really lost must be lost and warned (lost=%v):\n%s", other.lost, logs.String())
	}
}
