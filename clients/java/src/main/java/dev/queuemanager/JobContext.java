package dev.queuemanager;

import java.lang.reflect.Type;
import java.time.Instant;
import java.util.concurrent.ScheduledFuture;
import queue_manager.v1.Types;
import queue_manager.v1.WorkerServiceOuterClass;

/**
 * One run of a job in a {@link Worker}: the job as delivered, and what the run can tell the server
 * (progress, log lines, a checkpoint of its data). Its methods act only while the run is the worker's
 * (not after the handler returned, nor once the run was stopped). The worker's lock guards its flags.
 */
public final class JobContext {
  // What the server keeps of a job's log: its last lines, each cut to a length (sending more is waste).
  static final int LOG_LINES_KEPT = 1000;
  static final int LOG_LINE_CHARS = 2000;

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

  WorkerServiceOuterClass.LeaseRef lease() {
    return WorkerServiceOuterClass.LeaseRef.newBuilder()
        .setQueueName(queue())
        .setJobId(id())
        .setLeaseToken(token)
        .build();
  }

  /** Whether the run is still the worker's to report on. Called with the worker's lock held. */
  boolean active() {
    return worker.running.get(key) == this && stop != StopReason.LEASE_LOST && !abandoned;
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
