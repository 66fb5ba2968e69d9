package dev.queuemanager;

import java.time.Instant;
import queue_manager.v1.Jobs;

/** One thing that happened to one job, as {@link QueueManager#watchJobEvents} sends it. */
public final class JobEvent {
  /** What happened (docs/events.md says when each is sent). */
  public enum Type {
    /** The job was added (waiting, or delayed until {@link #runAt()}). */
    ADDED(Jobs.JobEventType.JOB_EVENT_TYPE_ADDED),
    /** The job became waiting again (a delay ended, a retry, a run handed back). */
    WAITING(Jobs.JobEventType.JOB_EVENT_TYPE_WAITING),
    /** A worker started a run ({@link #attempt()} says which). */
    ACTIVE(Jobs.JobEventType.JOB_EVENT_TYPE_ACTIVE),
    /** The running job reported progress. */
    PROGRESS(Jobs.JobEventType.JOB_EVENT_TYPE_PROGRESS),
    /** The job completed. */
    COMPLETED(Jobs.JobEventType.JOB_EVENT_TYPE_COMPLETED),
    /** The job failed for good. */
    FAILED(Jobs.JobEventType.JOB_EVENT_TYPE_FAILED),
    /** A run failed with attempts left: the job runs again at {@link #runAt()}. */
    RETRYING(Jobs.JobEventType.JOB_EVENT_TYPE_RETRYING),
    /** The running job asked to run again later: it is delayed until {@link #runAt()}. */
    DELAYED(Jobs.JobEventType.JOB_EVENT_TYPE_DELAYED),
    /** The job's run was lost (its worker or lease gone) and it went back to waiting. */
    STALLED(Jobs.JobEventType.JOB_EVENT_TYPE_STALLED),
    /** The job was cancelled. */
    CANCELLED(Jobs.JobEventType.JOB_EVENT_TYPE_CANCELLED),
    /** The job was removed. */
    REMOVED(Jobs.JobEventType.JOB_EVENT_TYPE_REMOVED),
    /** The job expired before a run started: it ended cancelled. */
    EXPIRED(Jobs.JobEventType.JOB_EVENT_TYPE_EXPIRED);

    private final Jobs.JobEventType wire;

    Type(Jobs.JobEventType wire) {
      this.wire = wire;
    }

    Jobs.JobEventType proto() {
      return wire;
    }

    static Type fromProto(Jobs.JobEventType wire) {
      for (Type t : values()) {
        if (t.wire == wire) {
          return t;
        }
      }
      return null;
    }
  }

  private final Jobs.JobEvent proto;

  JobEvent(Jobs.JobEvent proto) {
    this.proto = proto;
  }

  public String queue() {
    return proto.getQueueName();
  }

  public String jobId() {
    return proto.getJobId();
  }

  /** The job's name; "" when the job was gone before the event could read it. */
  public String jobName() {
    return proto.getJobName();
  }

  /** What happened; null for a type a newer server sends and this client does not know. */
  public Type type() {
    return Type.fromProto(proto.getType());
  }

  /** When it happened (the Redis server's clock). */
  public Instant time() {
    return Protos.instant(proto.getTime());
  }

  /** ACTIVE: the attempt this run is (1 the first); COMPLETED, FAILED, RETRYING: the attempts made. */
  public int attempt() {
    return proto.getAttempt();
  }

  /** FAILED and RETRYING: the failure's reason, at most its first 200 bytes. */
  public String failedReason() {
    return proto.getFailedReason();
  }

  /** PROGRESS: the progress reported, as JSON text; "" when it was over 1,000 bytes. */
  public String progressJson() {
    return proto.getProgress();
  }

  /** ADDED (a delayed job), RETRYING and DELAYED: when the job runs; null otherwise. */
  public Instant runAt() {
    return Protos.instant(proto.getRunAt());
  }

  @Override
  public String toString() {
    return "JobEvent{" + type() + " " + queue() + "/" + jobId() + "}";
  }
}
