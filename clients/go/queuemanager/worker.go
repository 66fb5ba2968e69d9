package queuemanager

// The stream worker: one WorkerService.Connect stream runs the handlers of several queues.
//
// Protocol, as this side speaks it (the server's side is in the docstring of
// server/queue_manager_server/services/workers.py; docs/api.md section 3 summarises both):
//
//  1. Send hello (worker id, queues, concurrency, labels, language "go", version, the commands it obeys,
//     its queues' weights or strict order); the server answers welcome (lease duration, heartbeat
//     interval) or ends the call (NOT_FOUND for an unknown queue).
//  2. Credits: the first report grants concurrency minus the runs going on; each delivered job uses one
//     and each finished run gives one back, in the same report as its outcome. So at most Concurrency
//     handlers run at once.
//  3. Deliveries carry several leased jobs; each starts at once in its own goroutine. A run is known by
//     its queue and job id (jobs claimed together share one lease token); every report item carries all
//     three, and the server fences on the token.
//  4. Outcomes, credits, progress, log lines, releases and extensions wait in one outbox; a single writer
//     goroutine sends everything ready as ONE report whenever it wakes, so a lone completion goes out at
//     once and a burst shares a message.
//  5. Every heartbeat interval the leases of running jobs are extended (with the process's CPU and memory
//     in stats). The server acks each extension and every rejected item; a rejected lease means the run
//     is lost: its context is cancelled (cause ErrLeaseLost) and nothing is reported for it.
//  6. DRAIN command (no delivery follows it): grant nothing more, let running handlers finish, send their
//     outcomes, release jobs that had not started, half-close, read until the server ends the stream,
//     reconnect with backoff.
//     Operators' commands (ControlWorker; the hello lists them in commands, so the server sends no
//     other): QUIET, the server delivers nothing until RESUME; runs in hand finish and report as usual,
//     credits included, and a stream opened meanwhile says quiet in its hello. STOP, Shutdown as if
//     called (bounded by ShutdownTimeout), without reconnecting: Run returns, and StoppedByServer is
//     true. SET_CONCURRENCY, the command's concurrency from now on (Concurrency reads it): a higher
//     one sends the extra credits at once; for a lower one the server dropped revoked_credits of those
//     it held, and the rest of the decrease comes from credits not yet sent, then from runs as they
//     finish (their credits are not given back until it is paid).
//  7. CANCEL_JOB command: the run's context is cancelled (cause ErrJobCancelled); however the handler then
//     returns, the run is reported in cancelled. A job's own timeout (JobOptions.Timeout) ends its
//     context with ErrJobTimeout and fails the attempt (a failure with timed_out), whichever side noticed
//     first: the run's timer, or the server (a CANCEL_JOB with timed_out: the server counts from the claim,
//     a few ms before the delivery, has recorded the timeout already and rejects the late report).
//  8. A broken stream is reopened with jittered exponential backoff (0.1 s doubling to 5 s). Running
//     handlers keep running; the first report on the new stream extends their leases, and outcomes not
//     yet sent go out on it.
//  9. Job.WaitForChildren and Job.WaitForEvent are unary calls that park the job and end the run: the run is
//     no longer extended, and the next report (the one giving its credit back) names it in parked, so the
//     stream's server forgets the lease even when the call reached another server.
//  10. Shutdown: send stop (the server answers delivery_stopped: no more jobs come), release jobs delivered
//     meanwhile, wait for running handlers until the caller's context ends, abandon the rest (their
//     contexts are cancelled with ErrAbandoned and the jobs go back to waiting as a stall), flush the
//     outbox, half-close, wait (bounded) for the server to end the stream.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/connectivity"

	pb "github.com/queue-manager/queue-manager/clients/go/gen/queue_manager/v1"
)

// Handler runs one job. Its result (nil for none) is stored as the job's result (see the payload
// conventions in payload.go); a non-nil error fails the attempt (retried per the job's attempts and
// backoff; wrap it with Unrecoverable to fail for good, or return RateLimited to wait without using an
// attempt). ctx is cancelled when the run must stop: context.Cause(ctx) is ErrJobCancelled,
// ErrJobTimeout, ErrLeaseLost or ErrAbandoned. A handler should return soon after; Go cannot stop it.
type Handler func(ctx context.Context, job *Job) (any, error)

// Why a run's context was cancelled (context.Cause).
var (
	// ErrJobCancelled: the job was cancelled (CancelJob) while it ran; the run is reported cancelled.
	ErrJobCancelled = errors.New("the job was cancelled")
	// ErrJobTimeout: the run passed the job's timeout, noticed by the worker or first by the server; the
	// attempt fails as timed out. ctx.Err() is context.DeadlineExceeded only when the worker's timer fired
	// first (context.Canceled when the server did): test the cause.
	ErrJobTimeout = errors.New("the job timed out")
	// ErrLeaseLost: the server recovered the job (its lease ran out); the run's outcome is discarded.
	ErrLeaseLost = errors.New("the job's lease was lost")
	// ErrAbandoned: the worker shut down before the run finished; the job goes back to waiting.
	ErrAbandoned = errors.New("the worker shut down before the run finished")
)

// MaxConcurrency is the most runs one worker may have at once.
const MaxConcurrency = 100_000

// MaxQueueWeight is the largest weight of a queue (WorkerConfig.QueueWeights), as the server allows.
const MaxQueueWeight = 1_000

// MaxTier is the highest tier of a worker (WorkerConfig.Tier), as the server allows.
const MaxTier = 100

const (
	backoffFirst     = 100 * time.Millisecond
	backoffMax       = 5 * time.Second
	defaultHeartbeat = 10 * time.Second
	// closeTimeout bounds the wait for the server to end the stream once this side half-closed, and the
	// flush of the last outcomes at Shutdown.
	closeTimeout = 10 * time.Second
)

// WorkerConfig configures NewWorker.
type WorkerConfig struct {
	// Handlers maps each queue to take jobs from to its handler (at least one).
	Handlers map[string]Handler
	// Concurrency is the most handlers running at once, 1 to MaxConcurrency; 0 means WORKER_CONCURRENCY
	// from the environment, else 10.
	Concurrency int
	// WorkerID names this worker process; "" means "{hostname}-{pid}-{6 random hex digits}".
	WorkerID string
	// Labels are free labels sent in the hello ("host" and "pid" are added unless given).
	Labels map[string]string
	// QueueWeights shares the worker's slots among its queues: when several have jobs ready, each gets at
	// most its share of Concurrency by weight (1 to MaxQueueWeight; a queue left out weighs 1), and an
	// idle, paused or rate-held queue's share goes to the others. Not with QueueOrder.
	QueueWeights map[string]int
	// QueueOrder is strict priority instead: every handler's queue once, highest first; a queue gets slots
	// only while none before it has a job ready. Not with QueueWeights.
	QueueOrder []string
	// Tier is the worker's preference among the workers of its queues, 0 (the first) to MaxTier: a queue's
	// jobs go to workers of a lower tier first, and to this one only while those connected to the same
	// server have no free slot (e.g. 0 for on-premises workers, 1 for cloud workers taking the bursts).
	Tier int
	// Logger receives the worker's log lines; nil means slog.Default().
	Logger *slog.Logger
	// ShutdownTimeout is how long Run lets running handlers finish once its context ends; 0 means 30 s.
	ShutdownTimeout time.Duration
	// TracerProvider traces each run as a CONSUMER span "{queue} process", a child of the trace context
	// the job carries, and current in the handler's ctx (docs/observability.md). nil means the client's
	// (WithTracerProvider), else the global one, read at Run; tracing is off while that is unset or a
	// no-op provider.
	TracerProvider trace.TracerProvider
}

// Worker runs handlers for jobs pushed over one worker stream. Make one with Client.NewWorker, start it
// with Run, stop it with Shutdown (or by ending Run's context).
type Worker struct {
	client          *Client
	id              string
	queues          []string
	handlers        map[string]Handler
	labels          map[string]string
	queueWeights    map[string]uint32 // sent in the hello; nil for none
	strictOrder     bool              // queues is a strict priority order (QueueOrder)
	tier            uint32            // WorkerConfig.Tier, sent in the hello
	log             *slog.Logger
	shutdownTimeout time.Duration
	stats           statsSampler
	tracerProvider  trace.TracerProvider
	tracing         *tracing // set by Run; nil when tracing is off

	mu              sync.Mutex
	running         map[jobKey]*run
	outbox          *pb.WorkerReport
	unsent          int // outcomes, progress, logs and releases in the outbox (credits and extensions aside)
	credits         int // credits not yet granted on the current stream
	concurrency     int // the most runs at once: Concurrency until a SET_CONCURRENCY command changes it
	debt            int // slots given up by a lowered concurrency: that many finished runs give no credit
	heartbeat       time.Duration
	started         bool
	stopping        bool // no more credits: shutting down
	closing         bool // runs are done or abandoned: flush, half-close, stop
	draining        bool // the server asked this stream to drain
	deliveryStopped bool // the server confirmed no more jobs come on this stream
	quiet           bool // an operator quieted this worker: the server delivers nothing until RESUME
	stoppedByServer bool // an operator stopped this worker (STOP)
	connected       chan struct{}
	expected        expectedRejections

	wake      chan struct{} // the writer has something to send
	runEnded  chan struct{} // a run ended (Shutdown waits on it)
	closingCh chan struct{} // closed when closing is set
	done      chan struct{} // closed when the worker has stopped
	doneOnce  sync.Once
	abort     context.CancelFunc // ends the stream loop at once
	loopErr   error              // why the stream loop ended on its own, if it did
	loopCtx   context.Context
}

type jobKey struct{ queue, id string }

// queueName is the form the server takes a queue name in. A worker checks its handlers' queues before
// connecting: the server refuses a hello naming another, and the worker would only log that refusal every
// few seconds until its Run ended.
var queueName = regexp.MustCompile(`^[A-Za-z0-9._-]{1,100}$`)

// NewWorker makes a worker on the client's connection (its token and TLS). It does not connect yet.
func (c *Client) NewWorker(config WorkerConfig) (*Worker, error) {
	if len(config.Handlers) == 0 {
		return nil, errors.New("a worker needs at least one handler")
	}
	concurrency, err := workerConcurrency(config.Concurrency)
	if err != nil {
		return nil, err
	}
	w := &Worker{
		client:          c,
		id:              config.WorkerID,
		handlers:        make(map[string]Handler, len(config.Handlers)),
		concurrency:     concurrency,
		labels:          map[string]string{},
		log:             config.Logger,
		shutdownTimeout: config.ShutdownTimeout,
		tracerProvider:  config.TracerProvider,
		running:         map[jobKey]*run{},
		outbox:          &pb.WorkerReport{},
		heartbeat:       defaultHeartbeat,
		connected:       make(chan struct{}),
		wake:            make(chan struct{}, 1),
		runEnded:        make(chan struct{}, 1),
		closingCh:       make(chan struct{}),
		done:            make(chan struct{}),
	}
	for queue, handler := range config.Handlers {
		if handler == nil {
			return nil, fmt.Errorf("the handler of queue %q is nil", queue)
		}
		if !queueName.MatchString(queue) {
			return nil, fmt.Errorf("the handler's queue name %q must be 1 to 100 letters, digits, '-', '_' or '.'", queue)
		}
		w.handlers[queue] = handler
		w.queues = append(w.queues, queue)
	}
	sort.Strings(w.queues)
	if err := w.setShares(config.QueueWeights, config.QueueOrder); err != nil {
		return nil, err
	}
	if config.Tier < 0 || config.Tier > MaxTier {
		return nil, fmt.Errorf("the worker's Tier must be from 0 to %d, got %d", MaxTier, config.Tier)
	}
	w.tier = uint32(config.Tier)
	if w.id == "" {
		w.id = makeWorkerID()
	}
	if w.log == nil {
		w.log = slog.Default()
	}
	w.log = w.log.With("worker_id", w.id)
	if w.shutdownTimeout <= 0 {
		w.shutdownTimeout = 30 * time.Second
	}
	if w.tracerProvider == nil {
		w.tracerProvider = c.tracerProvider
	}
	host, _ := os.Hostname()
	w.labels["host"], w.labels["pid"] = host, strconv.Itoa(os.Getpid())
	for k, v := range config.Labels {
		w.labels[k] = v
	}
	w.loopCtx, w.abort = context.WithCancel(context.Background())
	return w, nil
}

func workerConcurrency(n int) (int, error) {
	if n == 0 {
		text := os.Getenv("WORKER_CONCURRENCY")
		if text == "" {
			return 10, nil
		}
		value, err := strconv.Atoi(text)
		if err != nil {
			return 0, fmt.Errorf("WORKER_CONCURRENCY must be a whole number of at least 1, not %q", text)
		}
		n = value
	}
	if n < 1 || n > MaxConcurrency {
		return 0, fmt.Errorf("the worker's concurrency must be from 1 to %d, got %d", MaxConcurrency, n)
	}
	return n, nil
}

// setShares checks the queues' weights or strict order as the Python worker does, before connecting.
func (w *Worker) setShares(weights map[string]int, order []string) error {
	if len(weights) > 0 && order != nil {
		return errors.New("give QueueWeights or QueueOrder, not both")
	}
	names := make([]string, 0, len(weights))
	for name := range weights {
		names = append(names, name)
	}
	sort.Strings(names) // the first bad one named is always the same
	for _, name := range names {
		if _, ok := w.handlers[name]; !ok {
			return fmt.Errorf("QueueWeights names %q, which has no handler on this worker", name)
		}
		if weight := weights[name]; weight < 1 || weight > MaxQueueWeight {
			return fmt.Errorf("QueueWeights[%q] must be 1 to 1,000, got %d", name, weight)
		}
		if w.queueWeights == nil {
			w.queueWeights = map[string]uint32{}
		}
		w.queueWeights[name] = uint32(weights[name])
	}
	if order == nil {
		return nil
	}
	seen := map[string]bool{}
	for _, name := range order {
		if seen[name] || w.handlers[name] == nil {
			break
		}
		seen[name] = true
	}
	if len(seen) != len(order) || len(order) != len(w.queues) {
		return fmt.Errorf("QueueOrder must name each of the worker's queues once: %q, got %q", w.queues, order)
	}
	w.queues, w.strictOrder = slices.Clone(order), true
	return nil
}

func makeWorkerID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "worker"
	}
	if len(host) > 150 {
		host = host[:150]
	}
	suffix := make([]byte, 3)
	_, _ = rand.Read(suffix)
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(suffix))
}

// ID is the worker id sent in the hello.
func (w *Worker) ID() string { return w.id }

// Concurrency is the most runs at once: WorkerConfig.Concurrency until an operator changes it
// (SetWorkerConcurrency).
func (w *Worker) Concurrency() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.concurrency
}

// StoppedByServer reports whether an operator stopped the worker (qm workers stop, ControlWorker STOP):
// its Run then returns nil once the stop is done.
func (w *Worker) StoppedByServer() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stoppedByServer
}

// Run connects and runs jobs until ctx ends or Shutdown is called. When ctx ends, Run shuts the worker
// down gracefully, letting running handlers finish for up to ShutdownTimeout. It returns nil after a
// clean stop, an error naming the runs it had to abandon, or an error when the client was closed under
// it. A server that refuses the worker (an unknown queue, a token without the right) does not end Run:
// the refusal is logged and the worker tries again at its longest backoff.
func (w *Worker) Run(ctx context.Context) error {
	w.mu.Lock()
	if w.started {
		w.mu.Unlock()
		return errors.New("Run was called already on this worker")
	}
	w.started = true
	stopping := w.stopping
	w.mu.Unlock()
	if stopping {
		return nil
	}
	w.tracing = newTracing(w.tracerProvider) // before the loop: its runs read it
	go w.loop()
	select {
	case <-w.done:
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.loopErr
	case <-ctx.Done():
		grace, cancel := context.WithTimeout(context.Background(), w.shutdownTimeout)
		defer cancel()
		return w.Shutdown(grace)
	}
}

// WaitConnected waits until the server has welcomed the worker's current stream.
func (w *Worker) WaitConnected(ctx context.Context) error {
	w.mu.Lock()
	connected := w.connected
	w.mu.Unlock()
	select {
	case <-connected:
		return nil
	case <-w.done:
		return errors.New("the worker has stopped")
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Shutdown stops taking jobs, lets running handlers finish until ctx ends, abandons the rest (their
// contexts end with ErrAbandoned; the jobs go back to waiting as a stall), sends the last outcomes and
// closes the stream. It returns once the worker has stopped: nil, or an error naming how many runs were
// abandoned. Calling it again waits for the same stop.
func (w *Worker) Shutdown(ctx context.Context) error {
	w.mu.Lock()
	if w.stopping {
		w.mu.Unlock()
		select {
		case <-w.done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	w.stopping, w.credits, w.outbox.Stop = true, 0, true
	started := w.started
	w.mu.Unlock()
	if !started {
		w.doneOnce.Do(func() { close(w.done) })
		return nil
	}
	w.signal()
	abandoned := w.waitRuns(ctx)
	w.mu.Lock()
	w.closing = true
	close(w.closingCh)
	w.mu.Unlock()
	w.signal()
	timer := time.NewTimer(closeTimeout)
	defer timer.Stop()
	select {
	case <-w.done:
	case <-timer.C:
		w.log.Warn("the stream did not close in time; closing it", "timeout", closeTimeout)
		w.abort()
		<-w.done
	}
	if abandoned > 0 {
		return fmt.Errorf("%d job(s) still running were abandoned: %w", abandoned, ctx.Err())
	}
	return nil
}

// waitRuns waits for the running handlers until ctx ends, then abandons those left; returns how many.
func (w *Worker) waitRuns(ctx context.Context) int {
	for {
		w.mu.Lock()
		left := len(w.running)
		w.mu.Unlock()
		if left == 0 {
			return 0
		}
		select {
		case <-w.runEnded:
		case <-ctx.Done():
			return w.abandonAll()
		}
	}
}

// signal wakes the writer.
func (w *Worker) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// loop runs streams one after another until the worker has stopped.
func (w *Worker) loop() {
	defer w.doneOnce.Do(func() { close(w.done) })
	delay := backoffFirst
	for !w.finished() {
		welcomed, err := w.session(w.loopCtx)
		w.disconnected()
		if w.client.conn.GetState() == connectivity.Shutdown {
			w.log.Error("the worker's client was closed; the worker stops (close the client after Shutdown)")
			w.mu.Lock()
			w.loopErr = errors.New("the worker's client was closed while the worker ran")
			w.mu.Unlock()
			return
		}
		if err != nil && w.loopCtx.Err() == nil {
			if configError(err) {
				w.log.Error("the server refused the worker", "error", err)
				delay = backoffMax
			} else {
				w.log.Warn("worker stream lost", "error", err)
			}
		}
		if w.finished() || w.loopCtx.Err() != nil {
			return
		}
		if welcomed {
			delay = backoffFirst
		}
		pause := time.Duration(float64(delay) * (0.5 + randomFraction()/2))
		w.mu.Lock()
		closing := w.closing
		w.mu.Unlock()
		timer := time.NewTimer(pause)
		if closing {
			// Outcomes left to send while shutting down: keep trying until Shutdown gives up.
			select {
			case <-timer.C:
			case <-w.loopCtx.Done():
			}
		} else {
			select {
			case <-timer.C:
			case <-w.closingCh:
			case <-w.loopCtx.Done():
			}
		}
		timer.Stop()
		delay = min(delay*2, backoffMax)
	}
}

// finished reports whether the worker is closing with nothing left to send.
func (w *Worker) finished() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.closing && w.unsent == 0
}

func (w *Worker) disconnected() {
	w.mu.Lock()
	defer w.mu.Unlock()
	select {
	case <-w.connected:
		w.connected = make(chan struct{})
	default:
	}
}

// expectedRejections remembers runs reported stopped or timed out, whose rejection is no surprise (the
// server may have ended the run itself), and runs parked by a call of their own (the server ended the
// lease in that call, so a heartbeat that crossed it is refused). Bounded: the oldest are forgotten.
type expectedRejections struct {
	set   map[leaseKey]bool // true for a parked run: kept, since a slow call can be crossed by more than one
	order []leaseKey
}

type leaseKey struct{ queue, id, token string }

const expectedKept = 1000

func (e *expectedRejections) add(k leaseKey) { e.put(k, false) }

// addParked remembers a run its own call parked (WaitForChildren, WaitForEvent).
func (e *expectedRejections) addParked(k leaseKey) { e.put(k, true) }

func (e *expectedRejections) put(k leaseKey, parked bool) {
	if e.set == nil {
		e.set = map[leaseKey]bool{}
	}
	e.set[k] = parked
	e.order = append(e.order, k)
	if len(e.order) > expectedKept {
		delete(e.set, e.order[0])
		e.order = e.order[1:]
	}
}

func (e *expectedRejections) take(k leaseKey) bool {
	_, ok := e.set[k]
	delete(e.set, k)
	return ok
}

// parked reports whether k is the lease of a run its own call parked.
func (e *expectedRejections) parked(k leaseKey) bool { return e.set[k] }
