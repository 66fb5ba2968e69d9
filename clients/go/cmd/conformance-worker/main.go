// Command conformance-worker is the Go conformance worker: the kit's processor contract
// (conformance/README.md) on this client.
//
// The harness builds and runs it with QM_CONFORMANCE_ADDRESS, QM_CONFORMANCE_QUEUE and
// QM_CONFORMANCE_CONCURRENCY set; it stops gracefully on SIGTERM.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	qm "github.com/queue-manager/queue-manager/clients/go/queuemanager"
)

type data struct {
	Message *string `json:"message"`
	Times   *int    `json:"times"`
	Ms      int     `json:"ms"`
	Steps   []any   `json:"steps"`
	Step    int     `json:"step"`
}

// process does what the job's name says, with its data (a JSON object).
func process(ctx context.Context, job *qm.Job) (any, error) {
	var in data
	if err := job.Decode(&in); err != nil {
		return nil, qm.Unrecoverable(err)
	}
	switch job.Name {
	case "echo":
		return json.RawMessage(job.Data), nil // the JSON text, sent back as it came
	case "fail":
		// Fails the first `times` attempts (every attempt without it), then succeeds.
		if in.Times == nil || job.AttemptsMade < *in.Times {
			message := "failed"
			if in.Message != nil {
				message = *in.Message
			}
			return nil, errors.New(message)
		}
		return map[string]int{"attempts": job.AttemptsMade + 1}, nil
	case "sleep":
		select {
		case <-time.After(time.Duration(in.Ms) * time.Millisecond):
			return map[string]int{"slept": in.Ms}, nil
		case <-ctx.Done(): // a cancel ends the handler's context
			return nil, ctx.Err()
		}
	case "progress":
		for _, step := range in.Steps {
			if err := job.ReportProgress(step); err != nil {
				return nil, err
			}
		}
		return map[string]int{"steps": len(in.Steps)}, nil
	case "checkpoint":
		if in.Step == 0 {
			if err := job.UpdateData(ctx, map[string]int{"step": 1}); err != nil {
				return nil, err
			}
			return nil, errors.New("checkpointed at step 1")
		}
		return map[string]int{"resumed_at": in.Step}, nil
	}
	return nil, qm.Unrecoverable(fmt.Errorf("unknown job name %q", job.Name))
}

func main() {
	concurrency, err := strconv.Atoi(os.Getenv("QM_CONFORMANCE_CONCURRENCY"))
	if err != nil {
		concurrency = 2
	}
	client, err := qm.New(os.Getenv("QM_CONFORMANCE_ADDRESS"))
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	worker, err := client.NewWorker(qm.WorkerConfig{
		Handlers:        map[string]qm.Handler{os.Getenv("QM_CONFORMANCE_QUEUE"): process},
		Concurrency:     concurrency,
		ShutdownTimeout: 10 * time.Second,
	})
	if err != nil {
		log.Fatal(err)
	}
	// Run returns once SIGTERM (or SIGINT) has ended its context and the running jobs are done.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := worker.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		log.Fatal(err)
	}
}
