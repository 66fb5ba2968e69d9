package queuemanager

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/queue-manager/queue-manager/clients/go/gen/queue_manager/v1"
)

type connectStream = pb.WorkerService_ConnectClient

// configErrors are refusals that retrying soon will not fix (unknown queue, bad hello, a token that
// does not cover the queues): the worker logs them and waits the longest backoff.
var configErrors = map[codes.Code]bool{
	codes.NotFound:           true,
	codes.InvalidArgument:    true,
	codes.FailedPrecondition: true,
	codes.PermissionDenied:   true,
	codes.Unauthenticated:    true,
	codes.Unimplemented:      true,
}

func configError(err error) bool {
	return configErrors[status.Code(err)]
}

func randomFraction() float64 { return rand.Float64() }

// session runs one stream until it ends; it reports whether the server welcomed it.
func (w *Worker) session(ctx context.Context) (bool, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := w.client.workers.Connect(ctx)
	if err != nil {
		return false, fromRPC(err)
	}
	w.mu.Lock()
	quiet, concurrency := w.quiet, w.concurrency
	w.mu.Unlock()
	hello := &pb.WorkerHello{
		WorkerId:     w.id,
		Queues:       w.queues,
		Concurrency:  uint32(concurrency),
		Labels:       w.labels,
		Language:     "go",
		Version:      Version,
		Commands:     controlCommands,
		Quiet:        quiet,
		QueueWeights: w.queueWeights,
		StrictOrder:  w.strictOrder,
		Tier:         w.tier,
	}
	if err := stream.Send(&pb.ConnectRequest{Kind: &pb.ConnectRequest_Hello{Hello: hello}}); err != nil {
		return false, recvError(stream, err)
	}
	first, err := stream.Recv()
	if errors.Is(err, io.EOF) {
		return false, nil // the server ended the stream cleanly before welcoming us
	}
	if err != nil {
		return false, fromRPC(err)
	}
	welcome := first.GetWelcome()
	if welcome == nil {
		return false, errors.New("the server's first message is not a welcome")
	}
	w.onWelcome(welcome)
	return true, w.serve(ctx, cancel, stream)
}

// recvError is the status of a stream whose Send failed (Send says only io.EOF; Recv has the status).
func recvError(stream connectStream, sendErr error) error {
	if !errors.Is(sendErr, io.EOF) {
		return fromRPC(sendErr)
	}
	for {
		if _, err := stream.Recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fromRPC(err)
		}
	}
}

// serve reads and writes until the server ends the stream (or, after our half-close, a timeout passes).
func (w *Worker) serve(ctx context.Context, cancel context.CancelFunc, stream connectStream) error {
	read := make(chan error, 1)
	written := make(chan error, 1)
	go func() { read <- w.readLoop(stream) }()
	go func() { written <- w.writeLoop(ctx, stream) }()
	go w.heartbeatLoop(ctx)
	select {
	case err := <-read:
		cancel()
		<-written
		return err
	case err := <-written:
		if err != nil {
			// A broken stream: its reader has the status.
			timer := time.NewTimer(closeTimeout)
			defer timer.Stop()
			select {
			case readErr := <-read:
				if readErr != nil {
					return readErr
				}
			case <-timer.C:
				cancel()
				<-read
			}
			return err
		}
		// We half-closed: the server ends the stream once it has read everything.
		timer := time.NewTimer(closeTimeout)
		defer timer.Stop()
		select {
		case err := <-read:
			return err
		case <-timer.C:
			cancel()
			<-read
			return errors.New("the server did not end the stream after the worker half-closed it")
		}
	}
}

func (w *Worker) onWelcome(welcome *pb.ServerWelcome) {
	w.mu.Lock()
	lease := durationOf(welcome.GetLeaseDuration())
	interval := durationOf(welcome.GetHeartbeatInterval())
	if interval <= 0 {
		interval = defaultHeartbeat
		if lease > 0 {
			interval = lease / 3
		}
	}
	w.heartbeat = interval
	w.draining, w.deliveryStopped = false, false
	if w.stopping {
		w.outbox.Stop = true
		w.credits = 0
	} else {
		w.credits = max(0, w.concurrency-len(w.running))
	}
	w.debt = max(0, len(w.running)-w.concurrency) // runs beyond a lowered concurrency
	// Extensions queued for the old stream are stale. Fresh ones for every run still going go in the
	// first report: a server that ended the old stream at its shutdown left their leases held, and this
	// server takes them over when they are extended here (a lease lost meanwhile is refused: that run
	// is stopped).
	w.outbox.Extensions = nil
	w.outbox.Parked = nil // leases of the old stream, which its server let go when it ended
	w.extendRunning()
	w.attachStats()
	close(w.connected)
	w.mu.Unlock()
	w.signal()
	w.log.Info("worker connected", "server_id", welcome.GetServerId(), "queues", w.queues)
}

func (w *Worker) readLoop(stream connectStream) error {
	for {
		message, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fromRPC(err)
		}
		switch kind := message.GetKind().(type) {
		case *pb.ConnectResponse_Delivery:
			w.onDelivery(kind.Delivery)
		case *pb.ConnectResponse_Ack:
			w.onAck(kind.Ack)
		case *pb.ConnectResponse_Command:
			w.onCommand(kind.Command)
		}
	}
}

// writeLoop sends the outbox whenever it is woken, and half-closes once the worker is closing or the
// stream draining, the server has stopped delivering, no run is left and everything is sent.
func (w *Worker) writeLoop(ctx context.Context, stream connectStream) error {
	for {
		select {
		case <-w.wake:
		case <-ctx.Done():
			return nil
		}
		w.mu.Lock()
		report := w.outbox
		send := w.unsent > 0 || w.credits > 0 || len(report.Extensions) > 0 || len(report.Parked) > 0 ||
			report.Stop || report.Stats != nil
		unsent := 0
		if send {
			report.Credits = uint32(w.credits)
			w.outbox, w.credits, unsent, w.unsent = &pb.WorkerReport{}, 0, w.unsent, 0
		}
		halfClose := (w.closing || w.draining) && w.deliveryStopped && len(w.running) == 0 && w.unsent == 0
		w.mu.Unlock()
		if send {
			err := stream.Send(&pb.ConnectRequest{Kind: &pb.ConnectRequest_Report{Report: report}})
			if err != nil {
				w.restore(report, unsent)
				return err
			}
		}
		if halfClose {
			return stream.CloseSend()
		}
	}
}

// restore puts an unwritten report back at the head of the outbox (minus credits, extensions and stats,
// which the next stream makes afresh, and parked runs, whose leases the old stream's server let go when it
// ended).
func (w *Worker) restore(report *pb.WorkerReport, unsent int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	report.Credits, report.Extensions, report.Parked, report.Stats = 0, nil, nil, nil
	proto.Merge(report, w.outbox)
	w.outbox = report
	w.unsent += unsent
}

func (w *Worker) heartbeatLoop(ctx context.Context) {
	w.mu.Lock()
	interval := w.heartbeat
	w.mu.Unlock()
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		w.mu.Lock()
		w.attachStats()
		w.extendRunning()
		w.mu.Unlock()
		w.signal()
	}
}

// extendRunning puts an extension of every running job's lease (but the lost and parked ones') into the
// outbox. Called with w.mu held.
func (w *Worker) extendRunning() {
	for _, r := range w.running {
		if !r.lost && !r.parked {
			w.outbox.Extensions = append(w.outbox.Extensions, r.ref())
		}
	}
}

// attachStats puts this process's CPU and memory into the outbox. Called with w.mu held.
func (w *Worker) attachStats() {
	if cpu, memory, ok := w.stats.sample(); ok {
		w.outbox.Stats = &pb.WorkerStats{CpuPercent: cpu, MemoryBytes: memory}
	}
}

func (w *Worker) onDelivery(delivery *pb.JobDelivery) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, leased := range delivery.GetJobs() {
		undecodable := w.decode(leased.GetJob())
		job := jobFromProto(leased.GetJob())
		ref := &pb.LeaseRef{QueueName: job.Queue, JobId: job.ID, LeaseToken: leased.GetLeaseToken()}
		handler, ok := w.handlers[job.Queue]
		if !ok || w.stopping || w.draining {
			if !ok {
				w.log.Error("received a job of a queue that has no handler", "queue", job.Queue, "job_id", job.ID)
			}
			w.outbox.Releases = append(w.outbox.Releases, ref)
			w.unsent++
			continue
		}
		job.Redelivery = leased.GetRedelivery()
		key := jobKey{job.Queue, job.ID}
		if earlier := w.running[key]; earlier != nil {
			// The server leased the job again (its earlier lease here was recovered): that run is lost.
			earlier.lose()
		}
		r := newRun(w, job, leased.GetLeaseToken())
		w.running[key] = r
		if undecodable != nil {
			// Fails for good, where an operator sees it: no attempt could read it.
			handler = func(context.Context, *Job) (any, error) { return nil, Unrecoverable(undecodable) }
		}
		go r.execute(handler)
	}
	w.signal()
}

// decode decodes a delivered job's payloads (data, parents' and children's results) in place; the error
// when one cannot be.
func (w *Worker) decode(job *pb.Job) error {
	if w.client.codecs == nil {
		return nil
	}
	if err := w.client.codecs.decodeMessage(job); err != nil {
		var own *Error
		if errors.As(err, &own) {
			return fmt.Errorf("cannot decode the job's payload: %s", own.Message)
		}
		return fmt.Errorf("cannot decode the job's payload: %w", err)
	}
	return nil
}

func (w *Worker) onAck(ack *pb.ReportAck) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if ack.GetDeliveryStopped() {
		w.deliveryStopped = true
		w.signal()
	}
	for _, item := range ack.GetResults() {
		if item.GetCode() == 0 {
			continue
		}
		lease := item.GetLease()
		r := w.running[jobKey{lease.GetQueueName(), lease.GetJobId()}]
		if r != nil && r.token != lease.GetLeaseToken() {
			r = nil // a verdict on an earlier run of the job, not on the one running now
		}
		code := codeName(codes.Code(item.GetCode()))
		key := leaseKey{lease.GetQueueName(), lease.GetJobId(), lease.GetLeaseToken()}
		switch {
		case r != nil && (r.parking > 0 || r.parked) || w.expected.parked(key):
			// A heartbeat that crossed the call parking the run: the server ended the lease in that call, as
			// the run asked.
			w.log.Debug("a lease extension crossed the call that parked the job",
				"queue", lease.GetQueueName(), "job_id", lease.GetJobId(), "reason", item.GetMessage())
		case r != nil && !r.lost:
			r.lose()
			w.log.Warn("job lost its lease; its run is stopped and its result discarded",
				"queue", lease.GetQueueName(), "job_id", lease.GetJobId(), "code", code, "reason", item.GetMessage())
		case w.expected.take(key):
			w.log.Info("job had already ended on the server when reported",
				"queue", lease.GetQueueName(), "job_id", lease.GetJobId(), "reason", item.GetMessage())
		case r == nil:
			w.log.Warn("the server rejected a report",
				"queue", lease.GetQueueName(), "job_id", lease.GetJobId(), "code", code, "reason", item.GetMessage())
		}
	}
}

func (w *Worker) onCommand(command *pb.ServerCommand) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch command.GetType() {
	case pb.ServerCommandType_SERVER_COMMAND_TYPE_DRAIN:
		w.log.Info("the server asks to drain", "reason", command.GetReason())
		w.draining, w.deliveryStopped, w.credits = true, true, 0 // no delivery follows this command
		w.signal()
	case pb.ServerCommandType_SERVER_COMMAND_TYPE_CANCEL_JOB:
		ref := command.GetJob()
		r := w.running[jobKey{ref.GetQueueName(), ref.GetJobId()}]
		if r == nil || r.token != ref.GetLeaseToken() || r.cancelled {
			return // finished meanwhile (its outcome is recorded as usual), another run, or told already
		}
		if command.GetTimedOut() {
			// The server timed the run out (it counts from the claim, the run's timer from the delivery a
			// little later): the run ends as when its own timer fires, with the cause ErrJobTimeout, and is
			// reported as a failure that timed out (finish). A run already timed out here keeps its cause.
			w.log.Debug("the server timed out a run", "queue", ref.GetQueueName(), "job_id", ref.GetJobId(),
				"reason", command.GetReason())
			r.cancel(ErrJobTimeout)
			return
		}
		w.log.Info("the server asks to stop a run", "queue", ref.GetQueueName(), "job_id", ref.GetJobId(),
			"reason", command.GetReason())
		r.cancelled = true
		r.cancel(ErrJobCancelled)
	case pb.ServerCommandType_SERVER_COMMAND_TYPE_QUIET, pb.ServerCommandType_SERVER_COMMAND_TYPE_RESUME:
		w.quiet = command.GetType() == pb.ServerCommandType_SERVER_COMMAND_TYPE_QUIET
		w.log.Info("the server quiets or resumes the worker", "quiet", w.quiet)
	case pb.ServerCommandType_SERVER_COMMAND_TYPE_STOP:
		w.log.Info("the server asks the worker to stop", "reason", command.GetReason())
		if !w.stopping {
			w.stoppedByServer = true
			go func() { // Shutdown takes the lock held here
				ctx, cancel := context.WithTimeout(context.Background(), w.shutdownTimeout)
				defer cancel()
				if err := w.Shutdown(ctx); err != nil {
					w.log.Warn("stop asked by the server", "error", err)
				}
			}()
		}
	case pb.ServerCommandType_SERVER_COMMAND_TYPE_SET_CONCURRENCY:
		w.resize(int(command.GetConcurrency()), int(command.GetRevokedCredits()))
	}
}

// resize obeys SET_CONCURRENCY: at most concurrency runs from now on. The server took back revoked of the
// credits it held; the rest of a decrease comes from credits not yet sent, then from runs as they finish
// (the debt). Called with w.mu held.
func (w *Worker) resize(concurrency, revoked int) {
	if concurrency < 1 {
		return
	}
	change := concurrency - w.concurrency
	w.concurrency = concurrency
	w.log.Info("concurrency set by the server", "concurrency", concurrency)
	if change > 0 {
		paid := min(change, w.debt)
		w.debt -= paid
		if !w.stopping && !w.draining {
			w.credits += change - paid
			w.signal()
		}
		return
	}
	owed := max(0, -change-revoked)
	taken := min(owed, w.credits)
	w.credits -= taken
	w.debt += owed - taken
}

// controlCommands are the operators' commands this worker obeys (its hello lists them).
var controlCommands = []pb.ServerCommandType{
	pb.ServerCommandType_SERVER_COMMAND_TYPE_QUIET,
	pb.ServerCommandType_SERVER_COMMAND_TYPE_RESUME,
	pb.ServerCommandType_SERVER_COMMAND_TYPE_STOP,
	pb.ServerCommandType_SERVER_COMMAND_TYPE_SET_CONCURRENCY,
}
