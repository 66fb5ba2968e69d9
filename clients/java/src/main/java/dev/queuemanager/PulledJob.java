package dev.queuemanager;

import java.time.Duration;
import java.time.Instant;
import queue_manager.v1.Pull;
import queue_manager.v1.Types;
import queue_manager.v1.WorkerServiceOuterClass.LeasedJob;

/**
 * A job leased by {@link QueueManager#fetchJobs} to a pull worker (no stream), until {@link
 * #leaseExpires()}. Each call presents the lease's token; once the lease is lost (it ran out and the job was
 * recovered) each throws {@link FailedPreconditionException}. A job its holder drops goes back to waiting
 * when its lease runs out.
 */
public final class PulledJob {
  private final QueueManager client;
  private final Job job;
  private final String leaseToken;
  private final boolean redelivery;
  // System.nanoTime() at the fetch; NO_FETCH for a job taken up by reference (QueueManager.pulledJob).
  private final long fetchedAt;
  private final boolean byReference;
  private volatile Instant leaseExpires;
  private volatile boolean cancelRequested;

  PulledJob(QueueManager client, LeasedJob leased, long fetchedAt) {
    this.client = client;
    this.job = new Job(leased.getJob(), false);
    this.leaseToken = leased.getLeaseToken();
    this.redelivery = leased.getRedelivery();
    this.leaseExpires = Protos.instant(leased.getLeaseExpireTime());
    this.fetchedAt = fetchedAt;
    this.byReference = false;
  }

  /** A job taken up by its lease ({@link QueueManager#pulledJob}): its id and queue only. */
  PulledJob(QueueManager client, String queue, String id, String leaseToken) {
    this.client = client;
    this.job = new Job(Types.Job.newBuilder().setQueueName(queue).setId(id).build(), false);
    this.leaseToken = leaseToken;
    this.redelivery = false;
    this.leaseExpires = null;
    this.fetchedAt = 0;
    this.byReference = true;
  }

  /** The job as leased (its id, name, data…); only its id and queue when taken up by reference. */
  public Job job() {
    return job;
  }

  public String id() {
    return job.id();
  }

  public String queue() {
    return job.queue();
  }

  /** The lease's token, which each call presents. */
  public String leaseToken() {
    return leaseToken;
  }

  /** When the lease runs out unless extended; null for a job taken up by reference, until extended. */
  public Instant leaseExpires() {
    return leaseExpires;
  }

  /** Whether an earlier run of this attempt was lost (a crash, a lease run out). */
  public boolean isRedelivery() {
    return redelivery;
  }

  /** Set by {@link #extendLease} when the job was cancelled while it ran: stop the run. */
  public boolean cancelRequested() {
    return cancelRequested;
  }

  /** Records the run's success with its result (as {@link QueueManager#addJob} takes data; null for none). */
  public void complete(Object result) {
    var req =
        Pull.CompleteJobRequest.newBuilder()
            .setQueueName(queue())
            .setJobId(id())
            .setLeaseToken(leaseToken);
    if (!byReference) {
      req.setDuration(elapsed());
    }
    Types.Payload payload = Payloads.encode(result);
    if (payload != null) {
      req.setResult(payload);
    }
    QueueManager.call(() -> client.stub().completeJob(req.build()));
  }

  /** Records a failed run: retried per the job's attempts and backoff, or failed for good. */
  public FailOutcome fail(String message) {
    return fail(message, false, Duration.ZERO);
  }

  /**
   * Records a failed run.
   *
   * @param message the error, shown with the job
   * @param noRetry fail for good now, skipping any attempts left
   * @param retryAfter when positive, the job waits this long without using an attempt (the queue starts no
   *     job meanwhile), as when told to slow down
   */
  public FailOutcome fail(String message, boolean noRetry, Duration retryAfter) {
    Protos.notNegative(retryAfter, "retryAfter");
    var req =
        Pull.FailJobRequest.newBuilder()
            .setQueueName(queue())
            .setJobId(id())
            .setLeaseToken(leaseToken)
            .setMessage(message == null ? "" : message)
            .setDoNotRetry(noRetry);
    if (!byReference) {
      req.setDuration(elapsed());
    }
    if (!retryAfter.isZero()) {
      req.setRetryAfter(Protos.duration(retryAfter));
    }
    var resp = QueueManager.call(() -> client.stub().failJob(req.build()));
    Instant retryAt = resp.hasRetryTime() ? Protos.instant(resp.getRetryTime()) : null;
    return new FailOutcome(resp.getWillRetry(), retryAt);
  }

  /**
   * Extends the lease to {@code lease} from now (1 s to 1 h; zero takes the server's lease duration) and
   * returns its new expiry; {@link #cancelRequested()} then says whether the job was cancelled meanwhile.
   */
  public Instant extendLease(Duration lease) {
    Protos.notNegative(lease, "the lease");
    var req =
        Pull.ExtendJobLeaseRequest.newBuilder()
            .setQueueName(queue())
            .setJobId(id())
            .setLeaseToken(leaseToken);
    if (!lease.isZero()) {
      req.setLeaseDuration(Protos.duration(lease));
    }
    var resp = QueueManager.call(() -> client.stub().extendJobLease(req.build()));
    leaseExpires = Protos.instant(resp.getLeaseExpireTime());
    cancelRequested = resp.getCancelRequested();
    return leaseExpires;
  }

  /**
   * Records the run's progress (a number 0-100 or any JSON value; null leaves it) and appends log lines to
   * the job's log.
   */
  public void reportProgress(Object progress, String... logs) {
    var req =
        Pull.ReportJobProgressRequest.newBuilder()
            .setQueueName(queue())
            .setJobId(id())
            .setLeaseToken(leaseToken);
    if (progress != null) {
      req.setProgress(Payloads.jsonValue(progress));
    }
    for (String line : logs) {
      req.addLogs(Types.JobLogLine.newBuilder().setMessage(line));
    }
    QueueManager.call(() -> client.stub().reportJobProgress(req.build()));
  }

  /**
   * The run's duration so far, reported with its outcome for the queue's processing-time figures; a job taken
   * up by reference reports none (the server measures its run from the fetch).
   */
  private com.google.protobuf.Duration elapsed() {
    return Protos.duration(Duration.ofNanos(System.nanoTime() - fetchedAt));
  }

  @Override
  public String toString() {
    return "PulledJob{" + queue() + "/" + id() + "}";
  }
}
