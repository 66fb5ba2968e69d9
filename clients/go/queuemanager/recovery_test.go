package queuemanager_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"

	qm "github.com/queue-manager/queue-manager/clients/go/queuemanager"
)

// helperQueueEnv makes TestHelperWorker the worker process of TestKilledWorkersJobIsRecovered: the test
// binary runs itself again with it set.
const helperQueueEnv = "QM_TEST_HELPER_QUEUE"

// TestHelperWorker is not a test of its own: in a child process it runs a worker whose handler says
// "STARTED <job id>" on stdout and then blocks until the process is killed.
func TestHelperWorker(t *testing.T) {
	queue := os.Getenv(helperQueueEnv)
	if queue == "" {
		t.Skip("the worker process of TestKilledWorkersJobIsRecovered (runs only as its child)")
	}
	c := newClient(t)
	w, err := c.NewWorker(qm.WorkerConfig{Concurrency: 1, Logger: quietLogger(), Handlers: map[string]qm.Handler{
		queue: func(ctx context.Context, job *qm.Job) (any, error) {
			_, _ = os.Stdout.WriteString("STARTED " + job.ID + "\n")
			select {}
		},
	}})
	if err != nil {
		t.Fatal(err)
	}
	_ = w.Run(context.Background())
}

func TestKilledWorkersJobIsRecovered(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	queue := newQueue(t, c, nil)
	added := add(t, c, queue, "survives", nil, nil)

	child := exec.Command(os.Args[0], "-test.run=^TestHelperWorker$", "-test.count=1")
	child.Env = append(os.Environ(), helperQueueEnv+"="+queue)
	stdout, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = child.Process.Kill(); _ = child.Wait() })
	lines := make(chan string, 1)
	go func() {
		scanner := bufio.NewScanner(stdout)
		for scanner.Scan() {
			if line := scanner.Text(); strings.HasPrefix(line, "STARTED ") {
				lines <- strings.TrimPrefix(line, "STARTED ")
			}
		}
		close(lines)
	}()
	if id := receive(t, lines, "the child worker to start the job"); id != added.ID {
		t.Fatalf("the child started %q, want %q", id, added.ID)
	}
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	redelivered := make(chan bool, 1)
	startWorker(t, c, qm.WorkerConfig{Concurrency: 1, Handlers: map[string]qm.Handler{
		queue: func(ctx context.Context, job *qm.Job) (any, error) {
			redelivered <- job.Redelivery
			return "recovered", nil
		},
	}})
	if !receive(t, redelivered, "the job to run again") {
		t.Error("the second run must be marked a redelivery")
	}
	job := waitFinished(t, c, queue, added.ID)
	if job.State != qm.StateCompleted || job.StalledCount != 1 || string(job.Result) != `"recovered"` {
		t.Fatalf("want completed by the second worker after one stall, got %s, stalled %d, result %s",
			job.State, job.StalledCount, job.Result)
	}
}

// proxy forwards TCP connections to the server until cut: Cut closes every open connection (the
// worker's stream breaks as if the network failed) while the listener stays up for reconnects.
type proxy struct {
	listener net.Listener
	target   string
	mu       sync.Mutex
	conns    []net.Conn
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{listener: listener, target: target}
	go p.serve()
	t.Cleanup(func() { _ = listener.Close(); p.Cut() })
	return p
}

func (p *proxy) Address() string { return p.listener.Addr().String() }

func (p *proxy) serve() {
	for {
		client, err := p.listener.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = client.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, client, server)
		p.mu.Unlock()
		go func() { _, _ = io.Copy(server, client); _ = server.Close() }()
		go func() { _, _ = io.Copy(client, server); _ = client.Close() }()
	}
}

// Cut closes every connection made so far.
func (p *proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, conn := range p.conns {
		_ = conn.Close()
	}
	p.conns = nil
}

func TestWorkerReconnectsWhenTheConnectionBreaks(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	queue := newQueue(t, c, nil)
	p := startProxy(t, serverAddress(t))
	throughProxy := dial(t, p.Address())
	ran := make(chan string, 2)
	w := startWorker(t, throughProxy, qm.WorkerConfig{Concurrency: 1, Handlers: map[string]qm.Handler{
		queue: func(ctx context.Context, job *qm.Job) (any, error) {
			ran <- job.Name
			return nil, nil
		},
	}})
	before := add(t, c, queue, "before", nil, nil)
	receive(t, ran, "the job before the cut")
	// Its completion recorded first: cut earlier, it would be recovered and run again (at least once).
	waitFinished(t, c, queue, before.ID)
	p.Cut()
	after := add(t, c, queue, "after", nil, nil)
	if name := receive(t, ran, "the job after the cut"); name != "after" {
		t.Fatalf("ran %q after the cut", name)
	}
	if err := w.WaitConnected(testContext(t)); err != nil {
		t.Fatal(err)
	}
	if job := waitFinished(t, c, queue, after.ID); job.State != qm.StateCompleted {
		t.Fatalf("the job after the cut: %s", job.State)
	}
}

func TestUpdateDataOfALostRunIsRefused(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	queue := newQueue(t, c, nil)
	p := startProxy(t, serverAddress(t))
	throughProxy := dial(t, p.Address())
	started := make(chan struct{}, 1)
	stale := make(chan error, 1)
	startWorker(t, throughProxy, qm.WorkerConfig{Concurrency: 1, Handlers: map[string]qm.Handler{
		queue: func(ctx context.Context, job *qm.Job) (any, error) {
			if job.StalledCount > 0 {
				return json.RawMessage(job.Data), nil // the next run: the data the lost run left
			}
			if err := job.UpdateData(ctx, map[string]int{"step": 1}); err != nil {
				return nil, err
			}
			started <- struct{}{}
			<-ctx.Done() // the connection is cut: the job is recovered, and this run's lease is lost
			if cause := context.Cause(ctx); !errors.Is(cause, qm.ErrLeaseLost) {
				stale <- cause
				return nil, nil
			}
			stale <- job.UpdateData(context.Background(), map[string]int{"step": 99})
			return "first run", nil
		},
	}})
	added := add(t, c, queue, "slow", map[string]int{"step": 0}, nil)
	receive(t, started, "the run's first checkpoint")
	// Paused, the recovered job waits: its data can be read as the lost run left it.
	if _, err := c.PauseQueue(testContext(t), queue); err != nil {
		t.Fatal(err)
	}
	p.Cut()
	if err := receive(t, stale, "the lost run's checkpoint"); !errors.Is(err, qm.ErrFailedPrecondition) {
		t.Fatalf("the checkpoint of a run whose lease was lost: want ErrFailedPrecondition, got %v", err)
	}
	step := func(raw []byte) int {
		var data map[string]int
		if err := json.Unmarshal(raw, &data); err != nil {
			t.Fatalf("%s: %v", raw, err)
		}
		return data["step"]
	}
	job, err := c.GetJob(testContext(t), queue, added.ID)
	if err != nil || step(job.Data) != 1 {
		t.Fatalf("the job's data after the lost run: %v %s", err, job.Data)
	}
	if _, err := c.ResumeQueue(testContext(t), queue); err != nil {
		t.Fatal(err)
	}
	if job := waitFinished(t, c, queue, added.ID); job.State != qm.StateCompleted || step(job.Result) != 1 {
		t.Fatalf("the job's next run: %s %s", job.State, job.Result)
	}
}
