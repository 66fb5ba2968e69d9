package queuemanager_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	qm "github.com/queue-manager/queue-manager/clients/go/queuemanager"
)

// The server these tests run against: tests/test_client_go.py starts one and sets QM_TEST_ADDRESS (and,
// for the token tests, QM_TEST_AUTH_ADDRESS with QM_TEST_TOKEN, a server that requires it). Run by hand:
//
//	QM_TEST_ADDRESS=127.0.0.1:50051 go test ./...
const (
	addressEnv     = "QM_TEST_ADDRESS"
	authAddressEnv = "QM_TEST_AUTH_ADDRESS"
	tokenEnv       = "QM_TEST_TOKEN"
	// A server alone on its key prefix that leaves job timeouts to the workers (its own timeouts stopped).
	noTimeoutsAddressEnv = "QM_TEST_NO_TIMEOUTS_ADDRESS"
	// A server alone on its key prefix that times each run with a timeout out as soon as it is claimed.
	serverTimeoutsAddressEnv = "QM_TEST_SERVER_TIMEOUTS_ADDRESS"
)

// wait bounds every wait of a test: generous, for a busy 2-core machine.
const wait = 30 * time.Second

func serverAddress(t *testing.T) string {
	t.Helper()
	address := os.Getenv(addressEnv)
	if address == "" {
		t.Skipf("%s is not set: run these tests through tests/test_client_go.py (or point it at a server)", addressEnv)
	}
	return address
}

func newClient(t *testing.T, opts ...qm.Option) *qm.Client {
	t.Helper()
	return dial(t, serverAddress(t), opts...)
}

func dial(t *testing.T, address string, opts ...qm.Option) *qm.Client {
	t.Helper()
	c, err := qm.New(address, opts...)
	if err != nil {
		t.Fatalf("New(%q): %v", address, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return ctx
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// newQueue registers a queue of the test's own (no dead-letter queue) and obliterates it afterwards.
func newQueue(t *testing.T, c *qm.Client, config *qm.QueueConfig) string {
	t.Helper()
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	name := "go-" + strings.ToLower(unsafeName.ReplaceAllString(t.Name(), "-"))
	name = name[:min(len(name), 80)] + "-" + hex.EncodeToString(suffix)
	if config == nil {
		config = &qm.QueueConfig{}
	}
	config.DisableDeadLetter = true
	if _, _, err := c.RegisterQueue(testContext(t), name, config); err != nil {
		t.Fatalf("RegisterQueue(%q): %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		_, _ = c.ObliterateQueue(ctx, name, true)
	})
	return name
}

// quietLogger keeps the worker's expected warnings (failures, lost streams) out of the test output.
func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startWorker runs a worker until the test ends (or until the test shuts it down itself) and waits
// until the server has welcomed it.
func startWorker(t *testing.T, c *qm.Client, config qm.WorkerConfig) *qm.Worker {
	t.Helper()
	if config.Logger == nil {
		config.Logger = quietLogger()
	}
	w, err := c.NewWorker(config)
	if err != nil {
		t.Fatalf("NewWorker: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-ran:
		case <-time.After(wait):
			t.Errorf("the worker did not stop within %s", wait)
		}
	})
	if err := w.WaitConnected(testContext(t)); err != nil {
		t.Fatalf("the worker did not connect: %v", err)
	}
	return w
}

// waitFinished waits for the job to finish and returns it.
func waitFinished(t *testing.T, c *qm.Client, queue, id string) *qm.Job {
	t.Helper()
	job, err := c.WaitForJob(testContext(t), queue, id)
	if err != nil {
		t.Fatalf("WaitForJob(%s/%s): %v", queue, id, err)
	}
	return job
}

// receive waits for a value on ch.
func receive[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(wait):
		t.Fatalf("timed out after %s waiting for %s", wait, what)
		panic("unreachable")
	}
}

func add(t *testing.T, c *qm.Client, queue, name string, data any, opts *qm.JobOptions) *qm.Job {
	t.Helper()
	job, err := c.AddJob(testContext(t), queue, name, data, opts)
	if err != nil {
		t.Fatalf("AddJob(%s, %s): %v", queue, name, err)
	}
	return job
}
