package queuemanager_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	qm "github.com/queue-manager/queue-manager/clients/go/queuemanager"
)

// holding are handlers that record each start and hold the run until a gate opens (or the run ends).
type holding struct {
	mu      sync.Mutex
	started []string
	running map[string]int
	gates   chan struct{}
	begun   chan struct{}
}

func newHolding() *holding {
	return &holding{running: map[string]int{}, gates: make(chan struct{}, 64), begun: make(chan struct{}, 64)}
}

func (h *holding) handler(queue string) qm.Handler {
	return func(ctx context.Context, job *qm.Job) (any, error) {
		h.mu.Lock()
		h.started = append(h.started, queue)
		h.running[queue]++
		h.mu.Unlock()
		h.begun <- struct{}{}
		select {
		case <-h.gates:
		case <-ctx.Done():
		}
		h.mu.Lock()
		h.running[queue]--
		h.mu.Unlock()
		return nil, nil
	}
}

func (h *holding) snapshot() ([]string, map[string]int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	running := map[string]int{}
	for q, n := range h.running {
		if n > 0 {
			running[q] = n
		}
	}
	return slices.Clone(h.started), running
}

func addMany(t *testing.T, c *qm.Client, queue string, n int) {
	t.Helper()
	jobs := make([]qm.NewJob, n)
	for i := range jobs {
		jobs[i] = qm.NewJob{Name: "x"}
	}
	if _, err := c.AddBulk(testContext(t), queue, jobs); err != nil {
		t.Fatalf("AddBulk(%s): %v", queue, err)
	}
}

// QueueOrder: a queue takes slots only while none before it has jobs ready.
func TestQueueOrderTakesAQueueOnlyWhileNoneBeforeItHasJobs(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	first, second := newQueue(t, c, nil), newQueue(t, c, nil)
	// hi sorts after lo: the hello's order without QueueOrder is the opposite of the priority.
	hi, lo := max(first, second), min(first, second)
	addMany(t, c, lo, 6)
	addMany(t, c, hi, 4)
	h := newHolding()
	startWorker(t, c, qm.WorkerConfig{
		Concurrency: 3, QueueOrder: []string{hi, lo},
		Handlers: map[string]qm.Handler{hi: h.handler(hi), lo: h.handler(lo)},
	})
	defer close(h.gates)
	for range 3 {
		receive(t, h.begun, "a run")
	}
	time.Sleep(300 * time.Millisecond) // to see that nothing more starts
	if started, _ := h.snapshot(); !slices.Equal(started, []string{hi, hi, hi}) {
		t.Fatalf("three slots, four hi jobs: started %q", started)
	}
	for range 3 {
		h.gates <- struct{}{}
	}
	for range 3 {
		receive(t, h.begun, "a run")
	}
	if started, _ := h.snapshot(); !slices.Equal(started, []string{hi, hi, hi, hi, lo, lo}) {
		t.Fatalf("the last hi job, then lo: started %q", started)
	}
}

// QueueWeights: busy queues share the worker's slots by weight.
func TestQueueWeightsShareTheSlots(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	a, b := newQueue(t, c, nil), newQueue(t, c, nil)
	addMany(t, c, a, 10)
	addMany(t, c, b, 10)
	h := newHolding()
	startWorker(t, c, qm.WorkerConfig{
		Concurrency: 4, QueueWeights: map[string]int{a: 1, b: 3},
		Handlers: map[string]qm.Handler{a: h.handler(a), b: h.handler(b)},
	})
	defer close(h.gates)
	for range 4 {
		receive(t, h.begun, "a run")
	}
	time.Sleep(300 * time.Millisecond) // to see that nothing more starts
	if _, running := h.snapshot(); running[a] != 1 || running[b] != 3 || len(running) != 2 {
		t.Fatalf("weights 1 and 3 of 4 slots: running %v", running)
	}
}

// Bad shares are refused by NewWorker, before connecting, with the Python worker's messages.
func TestBadQueueSharesAreRefusedBeforeConnecting(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	noop := func(context.Context, *qm.Job) (any, error) { return nil, nil }
	handlers := map[string]qm.Handler{"a": noop, "b": noop}
	for _, tc := range []struct {
		config qm.WorkerConfig
		want   string
	}{
		{qm.WorkerConfig{QueueWeights: map[string]int{"z": 1}}, `QueueWeights names "z", which has no handler on this worker`},
		{qm.WorkerConfig{QueueWeights: map[string]int{"a": 0}}, `QueueWeights["a"] must be 1 to 1,000, got 0`},
		{qm.WorkerConfig{QueueWeights: map[string]int{"b": 1001}}, `QueueWeights["b"] must be 1 to 1,000, got 1001`},
		{qm.WorkerConfig{QueueOrder: []string{"a"}}, `QueueOrder must name each of the worker's queues once: ["a" "b"], got ["a"]`},
		{qm.WorkerConfig{QueueOrder: []string{"a", "a"}}, "QueueOrder must name each of the worker's queues once"},
		{qm.WorkerConfig{QueueOrder: []string{"a", "z"}}, "QueueOrder must name each of the worker's queues once"},
		{qm.WorkerConfig{QueueOrder: []string{}}, "QueueOrder must name each of the worker's queues once"},
		{qm.WorkerConfig{QueueWeights: map[string]int{"a": 2}, QueueOrder: []string{"a", "b"}}, "give QueueWeights or QueueOrder, not both"},
	} {
		tc.config.Handlers = handlers
		if _, err := c.NewWorker(tc.config); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewWorker(%+v): want %q, got %v", tc.config, tc.want, err)
		}
	}
	if _, err := c.NewWorker(qm.WorkerConfig{Handlers: handlers, QueueOrder: []string{"b", "a"}}); err != nil {
		t.Fatalf("a full order: %v", err)
	}
}

// A handler's queue name the server would never take is refused by NewWorker, before connecting: the
// worker would only log the server's refusal every few seconds.
func TestBadHandlerQueueNameIsRefusedBeforeConnecting(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	noop := func(context.Context, *qm.Job) (any, error) { return nil, nil }
	for _, name := range []string{"emails:high", "", "a{b}", strings.Repeat("q", 101)} {
		_, err := c.NewWorker(qm.WorkerConfig{Handlers: map[string]qm.Handler{name: noop}})
		if err == nil || !strings.Contains(err.Error(), "must be 1 to 100 letters, digits") {
			t.Errorf("NewWorker with a handler of queue %q: want a refusal naming the form, got %v", name, err)
		}
	}
}

// Tier: jobs go to the lower tier while it has a free slot, then to the higher one, whichever connected
// first; ListWorkers shows each worker's tier; a tier out of range is refused before connecting.
func TestTierPrefersTheLowerTierUntilItIsFull(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	queue := newQueue(t, c, nil)
	home, burst := newHolding(), newHolding()
	// The tier-0 worker connects first, so that its credits (granted once it is welcomed) are in when the
	// jobs come; tests/test_worker_tiers.py shows that the tier, not the order of arrival, decides.
	startWorker(t, c, qm.WorkerConfig{
		Concurrency: 2, WorkerID: queue + "-home", Handlers: map[string]qm.Handler{queue: home.handler("home")},
	})
	startWorker(t, c, qm.WorkerConfig{
		Concurrency: 2, Tier: 1, WorkerID: queue + "-burst", Handlers: map[string]qm.Handler{queue: burst.handler("burst")},
	})
	defer close(burst.gates)
	defer close(home.gates)
	for range 2 {
		if _, err := c.AddJob(testContext(t), queue, "x", nil, nil); err != nil {
			t.Fatalf("AddJob: %v", err)
		}
		receive(t, home.begun, "a run on the tier-0 worker")
	}
	if _, err := c.AddJob(testContext(t), queue, "x", nil, nil); err != nil {
		t.Fatalf("AddJob: %v", err)
	}
	receive(t, burst.begun, "a run on the tier-1 worker once the tier-0 one is full")
	if started, _ := home.snapshot(); len(started) != 2 {
		t.Fatalf("the tier-0 worker ran %d jobs, want 2", len(started))
	}
	workers, err := c.ListWorkers(testContext(t), queue)
	if err != nil {
		t.Fatalf("ListWorkers: %v", err)
	}
	tiers := map[string]int{}
	for _, w := range workers {
		tiers[w.ID] = w.Tier
	}
	if tiers[queue+"-home"] != 0 || tiers[queue+"-burst"] != 1 || len(tiers) != 2 {
		t.Fatalf("ListWorkers tiers: %v", tiers)
	}
	noop := func(context.Context, *qm.Job) (any, error) { return nil, nil }
	_, err = c.NewWorker(qm.WorkerConfig{Tier: 101, Handlers: map[string]qm.Handler{queue: noop}})
	if err == nil || !strings.Contains(err.Error(), "the worker's Tier must be from 0 to 100, got 101") {
		t.Fatalf("NewWorker(Tier: 101): %v", err)
	}
}
