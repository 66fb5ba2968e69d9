package dev.queuemanager;

import static java.lang.System.Logger.Level.DEBUG;

import java.lang.reflect.Type;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ScheduledFuture;
import java.util.function.Supplier;
import queue_manager.v1.ExternalEvents;
import queue_manager.v1.Jobs;
import queue_manager.v1.Types;
import queue_manager.v1.WorkerServiceOuterClass;

/**
 * One run of a job in a {@link Worker}: the job as delivered, and what the run can tell the server
 * (progress, log lines, a checkpoint of its data) or ask of it (wait for an event, for child jobs). Its
 * methods act only while the run is the worker's (not after the handler returned, nor once the run was
 * stopped). The worker's lock guards its flags.
 */
public final class JobContext {
  private static final System.Logger LOG = System.getLogger(Worker.class.getName());

  // What the server keeps of a job's log: its last lines, each cut to a length (sending more is waste).
  static final int LOG_LINES_KEPT = 1000;
  static final int LOG_LINE_CHARS = 2000;
  // The server's bounds on a wait for events (services/external_events.py), checked before the call.
  static final int MAX_EVENT_KEYS = 16;
  static final int MAX_EVENT_KEY = 256;

  final Worker worker;
  final String key;
  final String token;
  final boolean redelivery;
  private volatile Job job;

  // Guarded by the worker's lock.
  Thread thread;
  StopReason stop;
  boolean abandoned;
  ScheduledFuture<?> timer;
  // waitForEvent or waitForChildren calls in flight: the server may end the run's lease in one, so a
  // heartbeat refused meanwhile is no lost lease.
  int parking;
  // Such a call parked the job: the server ended the run, so nothing more is reported or extended for it.
  boolean parked;

  JobContext(Worker worker, Types.Job job, String token, boolean redelivery) {
    this.worker = worker;
    this.job = new Job(job, false);
    this.key = Worker.key(job.getQueueName(), job.getId());
    this.token = token;
    this.redelivery = redelivery;
  }

  /** The job as delivered (its data as updated by {@link #updateData}). */
  public Job job() {
    return job;
  }

  public String id() {
    return job.id();
  }

  public String queue() {
    return job.queue();
  }

  public String name() {
    return job.name();
  }

  /** Runs that ended before this one: 0 on the first attempt. */
  public int attemptsMade() {
    return job.attemptsMade();
  }

  /** Whether an earlier run of this attempt was lost (a worker crash or an expired lease). */
  public boolean isRedelivery() {
    return redelivery;
  }

  /** The job's JSON data decoded by Gson into a class. */
  public <T> T data(Class<T> type) {
    return job.data(type);
  }

  /** The job's JSON data decoded by Gson into {@code type} (a {@code TypeToken}'s type). */
  public <T> T data(Type type) {
    return job.data(type);
  }

  /** The job's data as JSON text; null when it has none. */
  public String dataJson() {
    return job.dataJson();
  }

  /** Why the run was told to stop; null while it may go on. */
  public StopReason stopReason() {
    synchronized (worker.mu) {
      return stop;
    }
  }

  /** Whether the run was told to stop (its thread was interrupted then). */
  public boolean isStopped() {
    return stopReason() != null;
  }

  /**
   * Reports progress (a number 0-100 or any JSON value), sent with the worker's next report.
   *
   * @return false when the run is no longer the worker's (nothing was sent)
   */
  public boolean reportProgress(Object value) {
    WorkerServiceOuterClass.JobProgress progress =
        WorkerServiceOuterClass.JobProgress.newBuilder()
            .setLease(lease())
            .setProgress(Payloads.jsonValue(value))
            .build();
    synchronized (worker.mu) {
      if (!active()) {
        return false;
      }
      worker.outbox.addProgress(progress);
      worker.unsent++;
      worker.signal();
    }
    return true;
  }

  /** Adds a line to the job's log (cut to 2,000 characters); nothing once the run is not the worker's. */
  public void log(String message) {
    if (message.length() > LOG_LINE_CHARS) {
      message = message.substring(0, LOG_LINE_CHARS);
    }
    Types.JobLogLine line =
        Types.JobLogLine.newBuilder().setTime(Protos.timestamp(Instant.now())).setMessage(message).build();
    synchronized (worker.mu) {
      if (!active()) {
        return;
      }
      // Consecutive lines of one run share an entry of the pending report.
      var logs = worker.outbox.getLogsBuilderList();
      WorkerServiceOuterClass.JobLogs.Builder entry = null;
      if (!logs.isEmpty() && logs.get(logs.size() - 1).getLease().equals(lease())) {
        entry = logs.get(logs.size() - 1);
      } else {
        entry = worker.outbox.addLogsBuilder().setLease(lease());
      }
      if (entry.getLinesCount() >= LOG_LINES_KEPT) {
        // The server keeps a job's last lines only: while the stream is down, hold no more than that.
        entry.removeLines(0);
        worker.unsent--;
      }
      entry.addLines(line);
      worker.unsent++;
      worker.signal();
    }
  }

  /**
   * Saves a checkpoint: replaces the job's data on the server so that its next attempt (a retry, or a
   * redelivery after a lost worker) starts from it. Fenced by the run's lease: once the lease is lost the
   * server refuses it with {@link FailedPreconditionException} and nothing changes.
   *
   * @param data the new data, encoded as {@link QueueManager#addJob} encodes data
   */
  public void updateData(Object data) {
    Types.Job updated = worker.client.updateJobData(queue(), id(), token, data);
    if (updated.hasData()) {
      job = new Job(job.protoWithData(updated.getData()), false);
    }
  }

  /** The children the job added at run time, with their outcomes: what a run after a wait for them reads. */
  public List<ChildJob> children() {
    return job.children();
  }

  /** The event that ended the job's last {@link #waitForEvent}; null when none did. */
  public ExternalEvent event() {
    return job.event();
  }

  /** Whether this run follows a {@link #waitForEvent} that ended with no event (it timed out). */
  public boolean eventTimedOut() {
    return job.eventTimedOut();
  }

  /** {@link #waitForEvent(List, Duration)} for one key, with no timeout. */
  public void waitForEvent(String key) {
    waitForEvent(List.of(key), null);
  }

  /**
   * Ends this run until an external event of one of {@code keys} is pushed ({@link QueueManager#pushEvent},
   * the HTTP {@code POST /v1/events}): an approval, a payment's webhook, a reply. The server parks the job in
   * delayed, using no attempt and holding no worker slot. A push of one of the keys made after this call
   * moves it back to waiting at once; its next run sees the event in {@link #event()}. With a timeout, the
   * job runs again when it passes with no event ({@link #eventTimedOut()}). The job's data is kept.
   *
   * <p>It never returns normally: once the server has answered it throws {@link WaitingForEventException},
   * which ends the run (let it pass; nothing the handler does afterwards is reported).
   *
   * @param keys 1 to 16 event keys (an event of any one ends the wait), each 1 to 256 characters without
   *     control characters
   * @param timeout the longest wait; null or zero waits with no end
   * @throws WaitingForEventException the job waits; the run is over
   * @throws InvalidArgumentException the server refused the wait: the run goes on
   * @throws FailedPreconditionException the run's lease was lost (or the server runs on a Redis Cluster)
   * @throws IllegalArgumentException bad keys or a negative timeout (before anything is sent)
   */
  public void waitForEvent(List<String> keys, Duration timeout) {
    waitForEvent(keys, timeout, null, false);
  }

  /**
   * {@link #waitForEvent(List, Duration)} that also replaces the job's data for its next run (a
   * checkpoint) in the same step; the data is encoded as {@link QueueManager#addJob} encodes data.
   */
  public void waitForEvent(List<String> keys, Duration timeout, Object data) {
    waitForEvent(keys, timeout, data, true);
  }

  private void waitForEvent(List<String> keys, Duration timeout, Object data, boolean hasData) {
    var req =
        ExternalEvents.WaitForEventRequest.newBuilder()
            .setQueueName(queue())
            .setJobId(id())
            .setLeaseToken(token)
            .addAllKeys(eventKeys(keys));
    if (timeout != null && !Protos.notNegative(timeout, "the timeout").isZero()) {
      req.setTimeout(Protos.duration(timeout));
    }
    if (hasData) {
      req.setData(Payloads.encodeData(data));
    }
    var answer = park(() -> worker.client.stub().waitForEvent(req.build()));
    LOG.log(DEBUG, "job {0} of {1} waits for event {2}", id(), queue(), String.join(", ", keys));
    throw new WaitingForEventException(keys, Protos.instant(answer.getUntil()));
  }

  /**
   * Adds child jobs and ends this run until they have all finished: a map-reduce whose width is known only at
   * run time (split a file into chunks, process each, combine the results). The server adds the children (in
   * any registered queues) and parks this job in delayed, using no attempt and holding no worker slot. Once
   * every child has completed, failed for good or been cancelled, the job runs again, {@link #children()}
   * holding their outcomes. The call is fenced by the run's lease and safe to repeat: a run lost after it
   * and run again adds no child twice. The job's data is kept.
   *
   * <p>It never returns normally: once the server has answered it throws {@link
   * WaitingForChildrenException}, which ends the run (let it pass; nothing the handler does afterwards is
   * reported).
   *
   * @param children 1 to 1,000 children (a job adds at most 1,000 over its life)
   * @throws WaitingForChildrenException the children were added; the run is over
   * @throws InvalidArgumentException a malformed child, one in a queue that is not registered, or too many:
   *     nothing was added and the run goes on
   * @throws FailedPreconditionException the run's lease was lost
   */
  public void waitForChildren(List<ChildSpec> children) {
    waitForChildren(children, null, false);
  }

  /**
   * {@link #waitForChildren(List)} that also replaces the job's data for its next run (a checkpoint) in the
   * same step; the data is encoded as {@link QueueManager#addJob} encodes data.
   */
  public void waitForChildren(List<ChildSpec> children, Object data) {
    waitForChildren(children, data, true);
  }

  private void waitForChildren(List<ChildSpec> children, Object data, boolean hasData) {
    var req =
        Jobs.WaitForChildrenRequest.newBuilder().setQueueName(queue()).setJobId(id()).setLeaseToken(token);
    for (ChildSpec child : children) {
      req.addChildren(child.proto());
    }
    if (hasData) {
      req.setData(Payloads.encodeData(data));
    }
    var answer = park(() -> worker.client.stub().waitForChildren(req.build()));
    LOG.log(DEBUG, "job {0} of {1} waits for {2} children", id(), queue(), answer.getChildrenPending());
    throw new WaitingForChildrenException(JobRef.of(answer.getChildrenList()), answer.getChildrenPending());
  }

  /**
   * Makes a call that parks the run's job. While it is out, the server may end the lease in it before a
   * heartbeat of the run arrives, so a refusal of that heartbeat is expected; once it has answered, the run
   * is parked ({@link Worker#park}). A refused call leaves the run as it was.
   */
  private <T> T park(Supplier<T> call) {
    synchronized (worker.mu) {
      parking++;
    }
    T answer = null;
    try {
      answer = QueueManager.call(call);
      return answer;
    } finally {
      synchronized (worker.mu) {
        parking--;
        if (answer != null) {
          worker.park(this);
        }
      }
    }
  }

  private static List<String> eventKeys(List<String> keys) {
    if (keys == null || keys.isEmpty() || keys.size() > MAX_EVENT_KEYS) {
      throw new IllegalArgumentException(
          "wait for 1 to " + MAX_EVENT_KEYS + " event keys, got " + (keys == null ? 0 : keys.size()));
    }
    List<String> out = new ArrayList<>();
    for (String key : keys) {
      if (key == null || key.isEmpty() || key.length() > MAX_EVENT_KEY) {
        String got = key == null ? "null" : Integer.toString(key.length());
        throw new IllegalArgumentException(
            "an event key must be 1 to " + MAX_EVENT_KEY + " characters, got " + got);
      }
      if (key.chars().anyMatch(Character::isISOControl)) {
        throw new IllegalArgumentException("the event key " + key + " must not contain control characters");
      }
      out.add(key);
    }
    return out;
  }

  WorkerServiceOuterClass.LeaseRef lease() {
    return WorkerServiceOuterClass.LeaseRef.newBuilder()
        .setQueueName(queue())
        .setJobId(id())
        .setLeaseToken(token)
        .build();
  }

  /** Whether the run is still the worker's to report on. Called with the worker's lock held. */
  boolean active() {
    return worker.running.get(key) == this && stop != StopReason.LEASE_LOST && !abandoned && !parked;
  }

  /** Tells the run to stop (the first reason stays) and interrupts its thread. Called with the lock held. */
  void stop(StopReason reason) {
    if (stop == null) {
      stop = reason;
    }
    if (reason == StopReason.LEASE_LOST) {
      stop = reason; // a lost lease overrides: nothing may be reported any more
    }
    if (thread != null) {
      thread.interrupt();
    }
  }
}
