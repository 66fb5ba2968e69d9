package dev.queuemanager;

import static java.lang.System.Logger.Level.DEBUG;
import static java.lang.System.Logger.Level.INFO;
import static java.lang.System.Logger.Level.WARNING;

import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.stub.ClientCallStreamObserver;
import io.grpc.stub.ClientResponseObserver;
import java.time.Duration;
import java.util.List;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import queue_manager.v1.WorkerServiceOuterClass.ConnectRequest;
import queue_manager.v1.WorkerServiceOuterClass.ConnectResponse;
import queue_manager.v1.WorkerServiceOuterClass.ReportAck;
import queue_manager.v1.WorkerServiceOuterClass.ReportItemResult;
import queue_manager.v1.WorkerServiceOuterClass.ServerCommand;
import queue_manager.v1.WorkerServiceOuterClass.ServerCommandType;
import queue_manager.v1.WorkerServiceOuterClass.ServerWelcome;
import queue_manager.v1.WorkerServiceOuterClass.WorkerHello;
import queue_manager.v1.WorkerServiceOuterClass.WorkerReport;

/**
 * One worker stream, from the hello until the server ends it: gRPC's threads deliver the server's
 * messages to {@link #onNext}, and the thread that calls {@link #run()} is the only writer (reports,
 * heartbeats, the half-close). See the protocol in {@link Worker}.
 */
final class WorkerSession implements ClientResponseObserver<ConnectRequest, ConnectResponse> {
  private static final System.Logger LOG = System.getLogger(Worker.class.getName());

  // Used when the welcome names no heartbeat interval.
  private static final Duration DEFAULT_HEARTBEAT = Duration.ofSeconds(10);

  // Refusals that retrying soon will not fix (an unknown queue, a bad hello, a token without the right).
  private static final Set<Status.Code> CONFIG_ERRORS =
      Set.of(
          Status.Code.NOT_FOUND,
          Status.Code.INVALID_ARGUMENT,
          Status.Code.FAILED_PRECONDITION,
          Status.Code.PERMISSION_DENIED,
          Status.Code.UNAUTHENTICATED,
          Status.Code.UNIMPLEMENTED);

  // The operators' commands this worker obeys (its hello lists them; the server sends no other).
  private static final List<ServerCommandType> CONTROL_COMMANDS =
      List.of(
          ServerCommandType.SERVER_COMMAND_TYPE_QUIET,
          ServerCommandType.SERVER_COMMAND_TYPE_RESUME,
          ServerCommandType.SERVER_COMMAND_TYPE_STOP,
          ServerCommandType.SERVER_COMMAND_TYPE_SET_CONCURRENCY);

  private final Worker w;
  private ClientCallStreamObserver<ConnectRequest> requests;

  // Guarded by the worker's lock.
  private boolean welcomed;
  private boolean ended;
  private Duration heartbeat = DEFAULT_HEARTBEAT;

  /** How the stream ended; null for a clean end. */
  volatile QueueManagerException error;

  WorkerSession(Worker w) {
    this.w = w;
  }

  static boolean isConfigError(QueueManagerException e) {
    return CONFIG_ERRORS.contains(e.code());
  }

  /** Runs the stream until it ends; returns whether the server welcomed it. */
  boolean run() throws InterruptedException {
    WorkerHello hello;
    synchronized (w.mu) {
      hello =
          WorkerHello.newBuilder()
              .setWorkerId(w.id)
              .addAllQueues(w.options.handlers.keySet())
              .setConcurrency(w.concurrency)
              .putAllLabels(w.labels)
              .setLanguage("java")
              .setVersion(QueueManager.VERSION)
              .addAllCommands(CONTROL_COMMANDS)
              .setQuiet(w.quiet)
              .build();
    }
    try {
      w.client.workers.connect(this);
    } catch (StatusRuntimeException e) {
      error = Errors.fromRpc(e);
      return false;
    }
    requests.onNext(ConnectRequest.newBuilder().setHello(hello).build());
    synchronized (w.mu) {
      while (!welcomed && !ended) {
        w.mu.wait();
      }
      if (!welcomed) {
        return false;
      }
    }
    write();
    return true;
  }

  /** Sends the outbox whenever woken, heartbeats on time, and half-closes once there is nothing left. */
  private void write() throws InterruptedException {
    long nextBeat = System.nanoTime() + heartbeat.toNanos();
    while (true) {
      WorkerReport report = null;
      boolean halfClose;
      synchronized (w.mu) {
        while (!w.woken && !ended && System.nanoTime() < nextBeat) {
          TimeUnit.NANOSECONDS.timedWait(w.mu, Math.max(1, nextBeat - System.nanoTime()));
        }
        if (ended) {
          return;
        }
        w.woken = false;
        if (System.nanoTime() >= nextBeat) {
          extendRunning();
          nextBeat = System.nanoTime() + heartbeat.toNanos();
        }
        WorkerReport.Builder out = w.outbox;
        if (w.unsent > 0
            || w.credits > 0
            || out.getExtensionsCount() > 0
            || out.getParkedCount() > 0
            || out.getStop()) {
          report = out.setCredits(w.credits).build();
          w.outbox = WorkerReport.newBuilder();
          w.credits = 0;
          w.unsent = 0;
        }
        halfClose = (w.closing || w.draining) && w.deliveryStopped && w.running.isEmpty() && w.unsent == 0;
      }
      if (report != null) {
        requests.onNext(ConnectRequest.newBuilder().setReport(report).build());
      }
      if (halfClose) {
        requests.onCompleted();
        awaitEnd();
        return;
      }
    }
  }

  /** After the half-close: the server ends the stream once it has read everything. */
  private void awaitEnd() throws InterruptedException {
    long end = System.nanoTime() + Worker.CLOSE_TIMEOUT.toNanos();
    synchronized (w.mu) {
      while (!ended) {
        long left = end - System.nanoTime();
        if (left <= 0) {
          abort("the server did not end the stream after the worker half-closed it");
          return;
        }
        TimeUnit.NANOSECONDS.timedWait(w.mu, left);
      }
    }
  }

  /** Cancels the stream (the server then recovers what it still held for it). */
  void abort(String why) {
    if (requests != null) {
      requests.cancel(why, null);
    }
  }

  /** Extensions of every running job's lease (but the lost and parked ones'). Called with the lock held. */
  private void extendRunning() {
    for (JobContext run : w.running.values()) {
      if (run.stop != StopReason.LEASE_LOST && !run.parked) {
        w.outbox.addExtensions(run.lease());
      }
    }
  }

  @Override
  public void beforeStart(ClientCallStreamObserver<ConnectRequest> requestStream) {
    this.requests = requestStream;
  }

  @Override
  public void onNext(ConnectResponse message) {
    synchronized (w.mu) {
      switch (message.getKindCase()) {
        case WELCOME:
          onWelcome(message.getWelcome());
          break;
        case DELIVERY:
          w.onDelivery(message.getDelivery().getJobsList());
          break;
        case ACK:
          onAck(message.getAck());
          break;
        case COMMAND:
          onCommand(message.getCommand());
          break;
        default:
          break;
      }
    }
  }

  @Override
  public void onError(Throwable t) {
    synchronized (w.mu) {
      error =
          t instanceof StatusRuntimeException
              ? Errors.fromRpc((StatusRuntimeException) t)
              : new QueueManagerException(Status.Code.UNKNOWN, String.valueOf(t.getMessage()), t);
      ended = true;
      w.signal();
    }
  }

  @Override
  public void onCompleted() {
    synchronized (w.mu) {
      ended = true;
      w.signal();
    }
  }

  private void onWelcome(ServerWelcome welcome) {
    Duration interval = Protos.duration(welcome.getHeartbeatInterval());
    Duration lease = Protos.duration(welcome.getLeaseDuration());
    if (interval.isZero() || interval.isNegative()) {
      interval = lease.isZero() ? DEFAULT_HEARTBEAT : lease.dividedBy(3);
    }
    heartbeat = interval;
    w.draining = false;
    w.deliveryStopped = false;
    if (w.stopping) {
      w.outbox.setStop(true);
      w.credits = 0;
    } else {
      w.credits = Math.max(0, w.concurrency - w.running.size());
    }
    w.debt = Math.max(0, w.running.size() - w.concurrency); // runs beyond a lowered concurrency
    // Extensions queued for an old stream are stale. Fresh ones for every run still going go in the
    // first report: this server takes their leases over (one lost meanwhile is refused: that run stops).
    w.outbox.clearExtensions();
    w.outbox.clearParked(); // leases of the old stream, which its server let go when it ended
    extendRunning();
    welcomed = true;
    w.connected = true;
    w.signal();
    LOG.log(INFO, "worker {0} connected to server {1}", w.id, welcome.getServerId());
  }

  private void onAck(ReportAck ack) {
    if (ack.getDeliveryStopped()) {
      w.deliveryStopped = true;
      w.signal();
    }
    for (ReportItemResult item : ack.getResultsList()) {
      if (item.getCode() == 0) {
        continue;
      }
      var lease = item.getLease();
      String key = Worker.key(lease.getQueueName(), lease.getJobId());
      JobContext run = w.running.get(key);
      if (run != null && !run.token.equals(lease.getLeaseToken())) {
        run = null; // a verdict on an earlier run of the job, not on the one running now
      }
      String code = Status.fromCodeValue(item.getCode()).getCode().name();
      if (run != null && (run.parking > 0 || run.parked)
          || w.parkedRejection(key, lease.getLeaseToken())) {
        // A heartbeat that crossed the call parking the run: the server ended the lease in that call, as the
        // run asked.
        LOG.log(DEBUG, "a lease extension of job {0} crossed the call that parked it: {1}",
            lease.getJobId(), item.getMessage());
      } else if (run != null && (run.stop == StopReason.TIMEOUT || run.stop == StopReason.CANCELLED)) {
        // The server ends the lease of a run it told to stop (its timeout, a cancel) once the grace is over:
        // expected, and the run keeps the reason its handler is told. Its report is refused as expected.
        LOG.log(INFO, "job {0} had already ended on the server ({1}) when its lease was extended: {2}",
            lease.getJobId(), run.stop, item.getMessage());
      } else if (run != null && run.stop != StopReason.LEASE_LOST) {
        run.stop(StopReason.LEASE_LOST);
        LOG.log(WARNING, "job {0} lost its lease ({1}: {2}); its run is stopped, its outcome discarded",
            lease.getJobId(), code, item.getMessage());
      } else if (w.expectedRejection(key, lease.getLeaseToken())) {
        LOG.log(INFO, "job {0} had already ended on the server when reported: {1}",
            lease.getJobId(), item.getMessage());
      } else if (run == null) {
        LOG.log(WARNING, "the server rejected a report on job {0} ({1}: {2})",
            lease.getJobId(), code, item.getMessage());
      }
    }
  }

  private void onCommand(ServerCommand command) {
    switch (command.getType()) {
      case SERVER_COMMAND_TYPE_DRAIN:
        LOG.log(INFO, "the server asks to drain: {0}", command.getReason());
        w.draining = true;
        w.deliveryStopped = true; // no delivery follows this command
        w.credits = 0;
        w.signal();
        break;
      case SERVER_COMMAND_TYPE_CANCEL_JOB:
        onCancel(command);
        break;
      case SERVER_COMMAND_TYPE_QUIET:
      case SERVER_COMMAND_TYPE_RESUME:
        // The server holds deliveries back itself; the flag only makes a new stream's hello say quiet.
        w.quiet = command.getType() == ServerCommandType.SERVER_COMMAND_TYPE_QUIET;
        LOG.log(INFO, "the server quiets or resumes the worker (quiet: {0})", w.quiet);
        break;
      case SERVER_COMMAND_TYPE_STOP:
        w.stopAsked(command.getReason());
        break;
      case SERVER_COMMAND_TYPE_SET_CONCURRENCY:
        w.resize(command.getConcurrency(), command.getRevokedCredits());
        break;
      default:
        break;
    }
  }

  private void onCancel(ServerCommand command) {
    var ref = command.getJob();
    JobContext run = w.running.get(Worker.key(ref.getQueueName(), ref.getJobId()));
    if (run == null || !run.token.equals(ref.getLeaseToken()) || run.stop != null || run.parked) {
      return; // finished or parked meanwhile (its outcome is recorded as usual), another run, or told already
    }
    // With timed_out the server has failed the attempt already: the run ends as for its own timeout.
    run.stop(command.getTimedOut() ? StopReason.TIMEOUT : StopReason.CANCELLED);
  }
}
