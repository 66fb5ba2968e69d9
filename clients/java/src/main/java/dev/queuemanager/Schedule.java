package dev.queuemanager;

import java.lang.reflect.Type;
import java.time.Duration;
import java.time.Instant;
import queue_manager.v1.Jobs;
import queue_manager.v1.Schedules;
import queue_manager.v1.Types;

/**
 * Adds a job to its queue on a cron expression or a fixed interval. Each run's job has the id {@code
 * schedule:<id>:<occurrence ms>}, so an occurrence is added once however many servers run. Make one with
 * {@link #builder}; read back, it also has its next run time and counts.
 */
public final class Schedule {
  /** What happens to occurrences missed while no server ran. */
  public enum CatchUp {
    /** They are skipped: the next run is the next occurrence from now (the default). */
    SKIP(Schedules.ScheduleCatchUp.SCHEDULE_CATCH_UP_SKIP),
    /** One run for all of them together, then on schedule. */
    ONE(Schedules.ScheduleCatchUp.SCHEDULE_CATCH_UP_ONE),
    /** One run for each (at most 1,000), oldest first, then on schedule. */
    ALL(Schedules.ScheduleCatchUp.SCHEDULE_CATCH_UP_ALL);

    private final Schedules.ScheduleCatchUp wire;

    CatchUp(Schedules.ScheduleCatchUp wire) {
      this.wire = wire;
    }

    static CatchUp fromProto(Schedules.ScheduleCatchUp wire) {
      for (CatchUp c : values()) {
        if (c.wire == wire) {
          return c;
        }
      }
      return SKIP; // unset means SKIP
    }
  }

  private final Schedules.Schedule proto;
  private final boolean created;

  Schedule(Schedules.Schedule proto, boolean created) {
    this.proto = proto;
    this.created = created;
  }

  /**
   * A schedule; give it {@link Builder#cron} or {@link Builder#every}, and {@link Builder#job}.
   *
   * @param queue the queue its jobs are added to; it must be registered
   * @param id unique within its queue: 1 to 100 letters, digits, {@code - _ .}
   */
  public static Builder builder(String queue, String id) {
    return new Builder(queue, id);
  }

  public String id() {
    return proto.getId();
  }

  public String queue() {
    return proto.getQueueName();
  }

  /** The cron expression; "" for an interval schedule. */
  public String cron() {
    return proto.getCron();
  }

  /** The cron expression's IANA time zone ("UTC" unless one was given). */
  public String timezone() {
    return proto.getTimezone();
  }

  /** The interval between runs; zero for a cron schedule. */
  public Duration every() {
    return Protos.duration(proto.getEvery());
  }

  /** No run before this; null: from its creation. */
  public Instant start() {
    return Protos.instant(proto.getStartTime());
  }

  /** No run after this; null: no end. */
  public Instant end() {
    return Protos.instant(proto.getEndTime());
  }

  /** The most runs in all; 0 means no limit. */
  public int limit() {
    return proto.getLimit();
  }

  public CatchUp catchUp() {
    return CatchUp.fromProto(proto.getCatchUp());
  }

  /** The name of each run's job. */
  public String jobName() {
    return proto.getJob().getName();
  }

  /** The data's bytes of each run's job (JSON text for JSON data); null when it has none. */
  public byte[] jobData() {
    return proto.getJob().hasData() ? Payloads.body(proto.getJob().getData()) : null;
  }

  /** The data's content type; null when the job has none. */
  public String jobContentType() {
    return proto.getJob().hasData() ? Payloads.contentType(proto.getJob().getData()) : null;
  }

  /** The JSON data of each run's job decoded by Gson into {@code type}. */
  public <T> T jobData(Type type) {
    return Payloads.decode(jobData(), jobContentType(), type, "the schedule's job data");
  }

  /** The options of each run's job, as stored. */
  public JobOptions jobOptions() {
    Types.JobOptions o = proto.getJob().getOptions();
    return JobOptions.fromProto(o, o.getMetadata());
  }

  /** When the next job is due; null once the schedule is over. */
  public Instant nextRunTime() {
    return Protos.instant(proto.getNextRunTime());
  }

  /** When the last job was added; null before the first. */
  public Instant lastRunTime() {
    return Protos.instant(proto.getLastRunTime());
  }

  /** The id of the last job added; "" before the first. */
  public String lastJobId() {
    return proto.getLastJobId();
  }

  /** How many jobs it has added. */
  public long runCount() {
    return proto.getRunCount();
  }

  public Instant createTime() {
    return Protos.instant(proto.getCreateTime());
  }

  public Instant updateTime() {
    return Protos.instant(proto.getUpdateTime());
  }

  /** For an upsert: whether it created the schedule (false: it replaced one). For a read: false. */
  public boolean created() {
    return created;
  }

  Schedules.Schedule proto() {
    return proto;
  }

  /** Builds a {@link Schedule}; exactly one of {@link #cron} and {@link #every}. */
  public static final class Builder {
    private final Schedules.Schedule.Builder b = Schedules.Schedule.newBuilder();

    private Builder(String queue, String id) {
      b.setQueueName(queue == null ? "" : queue).setId(id == null ? "" : id);
    }

    /**
     * A cron expression in UTC: 5 fields (minute hour day-of-month month day-of-week), or 6 with seconds
     * first.
     */
    public Builder cron(String expression) {
      b.setCron(expression);
      return this;
    }

    /** A cron expression in an IANA time zone ({@code "Europe/Paris"}). */
    public Builder cron(String expression, String timezone) {
      b.setCron(expression).setTimezone(timezone);
      return this;
    }

    /** A fixed interval between runs, at least 1 s. */
    public Builder every(Duration interval) {
      if (interval == null || interval.isNegative() || interval.isZero()) {
        throw new IllegalArgumentException("the schedule's interval must be positive, got " + interval);
      }
      b.setEvery(Protos.duration(interval));
      return this;
    }

    /** No run before this time. */
    public Builder start(Instant start) {
      b.setStartTime(Protos.timestamp(start));
      return this;
    }

    /** No run after this time. */
    public Builder end(Instant end) {
      b.setEndTime(Protos.timestamp(end));
      return this;
    }

    /** The most runs in all; 0 means no limit. */
    public Builder limit(int limit) {
      if (limit < 0) {
        throw new IllegalArgumentException("the schedule's limit must not be negative, got " + limit);
      }
      b.setLimit(limit);
      return this;
    }

    /** Each run's job: its name and data (as {@link QueueManager#addJob} takes it), the queue's options. */
    public Builder job(String name, Object data) {
      return job(NewJob.of(name, data));
    }

    /** Each run's job; its options have no job id (each occurrence has its own). */
    public Builder job(NewJob job) {
      Jobs.NewJob p = job.proto();
      b.setJob(p);
      return this;
    }

    public Builder catchUp(CatchUp catchUp) {
      b.setCatchUp(catchUp.wire);
      return this;
    }

    /** The schedule. */
    public Schedule build() {
      return new Schedule(b.build(), false);
    }
  }
}
