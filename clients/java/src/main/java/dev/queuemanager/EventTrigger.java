package dev.queuemanager;

import java.time.Instant;
import queue_manager.v1.ExternalEvents;
import queue_manager.v1.Jobs;

/**
 * Adds a job for every pushed external event ({@link QueueManager#pushEvent}) whose key matches its
 * pattern, with the event's data as the job's data. Make one with {@link #builder}; read back, it also has
 * its times and, from {@link QueueManager#upsertEventTrigger}, whether it is new.
 */
public final class EventTrigger {
  private final ExternalEvents.EventTrigger proto;
  private final boolean created;

  EventTrigger(ExternalEvents.EventTrigger proto, boolean created) {
    this.proto = proto;
    this.created = created;
  }

  /**
   * A trigger.
   *
   * @param id unique on the server: 1 to 100 letters, digits, {@code - _ .}
   * @param keyPattern an exact event key, or a prefix ending in {@code *} ({@code "order:*"}; {@code "*"}
   *     alone matches every key)
   * @param queue the queue the jobs are added to; it must be registered
   * @param jobName the name of each event's job
   */
  public static Builder builder(String id, String keyPattern, String queue, String jobName) {
    return new Builder(id, keyPattern, queue, jobName);
  }

  public String id() {
    return proto.getId();
  }

  public String keyPattern() {
    return proto.getKeyPattern();
  }

  public String queue() {
    return proto.getQueueName();
  }

  public String jobName() {
    return proto.getJob().getName();
  }

  /** The options of each event's job, as stored. */
  public JobOptions jobOptions() {
    return JobOptions.fromProto(proto.getJob().getOptions(), proto.getJob().getOptions().getMetadata());
  }

  public Instant createTime() {
    return Protos.instant(proto.getCreateTime());
  }

  /** When the trigger was last replaced. */
  public Instant updateTime() {
    return Protos.instant(proto.getUpdateTime());
  }

  /** For an upsert: whether it created the trigger (false: it replaced one). For a read: false. */
  public boolean created() {
    return created;
  }

  ExternalEvents.EventTrigger proto() {
    return proto;
  }

  /** Builds an {@link EventTrigger}. */
  public static final class Builder {
    private final ExternalEvents.EventTrigger.Builder b = ExternalEvents.EventTrigger.newBuilder();
    private final Jobs.NewJob.Builder job = Jobs.NewJob.newBuilder();

    private Builder(String id, String keyPattern, String queue, String jobName) {
      b.setId(nonNull(id)).setKeyPattern(nonNull(keyPattern)).setQueueName(nonNull(queue));
      job.setName(nonNull(jobName));
    }

    /** The options of each event's job (no job id: each event's job has its own). */
    public Builder jobOptions(JobOptions options) {
      job.setOptions(options.proto());
      return this;
    }

    /** The trigger. */
    public EventTrigger build() {
      return new EventTrigger(b.setJob(job).build(), false);
    }

    private static String nonNull(String s) {
      return s == null ? "" : s;
    }
  }
}
