package dev.queuemanager;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.EnumMap;
import java.util.List;
import java.util.Map;
import queue_manager.v1.Types;

/**
 * A queue's settings: as the server holds them, defaults filled in ({@link QueueInfo#config()}), or built
 * with {@link #builder()} for {@link QueueManager#registerQueue(String, QueueConfig)}.
 */
public final class QueueConfig {
  private final Types.QueueConfig proto;

  QueueConfig(Types.QueueConfig proto) {
    this.proto = proto;
  }

  /** A builder with nothing set: every setting takes the server's default. */
  public static Builder builder() {
    return new Builder(Types.QueueConfig.newBuilder());
  }

  /**
   * A builder holding these settings. Registering a queue replaces its whole config, so change one setting
   * of a registered queue with {@code qm.getQueue(name).config().toBuilder()}.
   */
  public Builder toBuilder() {
    return new Builder(proto.toBuilder());
  }

  Types.QueueConfig proto() {
    return proto;
  }

  /** The limit on the queue's job starts; null for none. */
  public RateLimit rateLimit() {
    return proto.hasRateLimit() ? RateLimit.fromProto(proto.getRateLimit()) : null;
  }

  /** The options of jobs added without their own. */
  public JobOptions defaultJobOptions() {
    return JobOptions.fromProto(proto.getDefaultJobOptions(), Types.JobMetadata.getDefaultInstance());
  }

  /** Where its jobs go when they fail for good; "" when dead-lettering is off. */
  public String deadLetterQueue() {
    return proto.getDeadLetterQueue();
  }

  /** Whether dead-lettering is off (failed jobs stay only in failed). */
  public boolean disableDeadLetter() {
    return proto.getDisableDeadLetter();
  }

  /** How its completed jobs are kept. */
  public Retention completedRetention() {
    return new Retention(proto.getCompletedRetention());
  }

  /** How its failed jobs are kept. */
  public Retention failedRetention() {
    return new Retention(proto.getFailedRetention());
  }

  /** The most of its jobs active at once across all workers; 0 for no limit. */
  public int concurrency() {
    return proto.getConcurrency();
  }

  /** The longest wait of each priority level behind the levels above it; empty for strict priority. */
  public Map<JobPriority, Duration> priorityBounds() {
    Map<JobPriority, Duration> out = new EnumMap<>(JobPriority.class);
    for (Types.PriorityBound b : proto.getPriorityBoundsList()) {
      JobPriority level = JobPriority.fromProto(b.getPriority());
      if (level != null) {
        out.put(level, Protos.duration(b.getMaxWait()));
      }
    }
    return Collections.unmodifiableMap(out);
  }

  /** The limits of each of its fairness groups on its own; null when it has none. */
  public GroupLimits groupLimits() {
    return proto.hasGroupLimits() ? GroupLimits.fromProto(proto.getGroupLimits()) : null;
  }

  /** The most jobs it holds waiting and delayed (producer backpressure); 0 for no limit. */
  public long maxSize() {
    return proto.getMaxSize();
  }

  /** Its recurring maintenance windows. */
  public List<MaintenanceWindow> maintenanceWindows() {
    List<MaintenanceWindow> out = new ArrayList<>();
    for (Types.MaintenanceWindow w : proto.getMaintenanceWindowsList()) {
      out.add(MaintenanceWindow.fromProto(w));
    }
    return Collections.unmodifiableList(out);
  }

  /** Builds a {@link QueueConfig}; each setter refuses a value the wire cannot carry. */
  public static final class Builder {
    private final Types.QueueConfig.Builder b;

    private Builder(Types.QueueConfig.Builder b) {
      this.b = b;
    }

    /** A limit on the queue's job starts, shared by all workers; null for none. */
    public Builder rateLimit(RateLimit rateLimit) {
      if (rateLimit == null) {
        b.clearRateLimit();
      } else {
        b.setRateLimit(rateLimit.proto());
      }
      return this;
    }

    /**
     * The options of jobs added without their own (not a job id, delay, schedule time, group, LIFO or worker
     * labels: the server refuses them here); null for none.
     */
    public Builder defaultJobOptions(JobOptions options) {
      if (options == null) {
        b.clearDefaultJobOptions();
      } else {
        b.setDefaultJobOptions(options.proto());
      }
      return this;
    }

    /** The queue that receives its jobs which failed for good; "" or null: "dead-letter-queue". */
    public Builder deadLetterQueue(String queue) {
      b.setDeadLetterQueue(queue == null ? "" : queue);
      return this;
    }

    /** Keeps failed jobs only in failed, copying none to a dead-letter queue. */
    public Builder disableDeadLetter(boolean disable) {
      b.setDisableDeadLetter(disable);
      return this;
    }

    /** How its completed jobs are kept; null: 1 day and at most 10,000. */
    public Builder completedRetention(Retention retention) {
      if (retention == null) {
        b.clearCompletedRetention();
      } else {
        b.setCompletedRetention(retention.proto());
      }
      return this;
    }

    /** How its failed jobs are kept; null: 7 days and at most 100,000. */
    public Builder failedRetention(Retention retention) {
      if (retention == null) {
        b.clearFailedRetention();
      } else {
        b.setFailedRetention(retention.proto());
      }
      return this;
    }

    /** The most of its jobs active at once across all workers and servers; 0 for no limit. */
    public Builder concurrency(int concurrency) {
      if (concurrency < 0) {
        throw new IllegalArgumentException("the queue concurrency must not be negative, got " + concurrency);
      }
      b.setConcurrency(concurrency);
      return this;
    }

    /**
     * Anti-starvation aging: a job of {@code level} (HIGH to BACKGROUND) that has waited {@code maxWait}
     * (1 s to 30 days; the server checks both) behind the levels above it runs next. A second bound for a
     * level replaces the first.
     */
    public Builder priorityBound(JobPriority level, Duration maxWait) {
      if (level == null) {
        throw new IllegalArgumentException("a priority bound needs its level");
      }
      Protos.notNegative(maxWait, "the priority bound's maxWait");
      for (int i = 0; i < b.getPriorityBoundsCount(); i++) {
        if (b.getPriorityBounds(i).getPriority() == level.proto()) {
          b.removePriorityBounds(i);
          break;
        }
      }
      b.addPriorityBounds(
          Types.PriorityBound.newBuilder()
              .setPriority(level.proto())
              .setMaxWait(Protos.duration(maxWait)));
      return this;
    }

    /** Removes every priority bound: strict priority. */
    public Builder clearPriorityBounds() {
      b.clearPriorityBounds();
      return this;
    }

    /** The limits of each of its fairness groups on its own (no maintenance windows here); null for none. */
    public Builder groupLimits(GroupLimits limits) {
      if (limits == null) {
        b.clearGroupLimits();
      } else {
        b.setGroupLimits(limits.proto(List.of()));
      }
      return this;
    }

    /**
     * Producer backpressure: the most jobs it holds waiting and delayed; an add beyond it throws {@link
     * ResourceExhaustedException} and writes nothing. 0 for no limit.
     */
    public Builder maxSize(long maxSize) {
      if (maxSize < 0) {
        throw new IllegalArgumentException("the queue maxSize must not be negative, got " + maxSize);
      }
      b.setMaxSize(maxSize);
      return this;
    }

    /**
     * Its recurring maintenance windows, at most 16 (none: none), replacing any given before: inside one the
     * queue starts no job, as if paused.
     */
    public Builder maintenanceWindows(MaintenanceWindow... windows) {
      b.clearMaintenanceWindows();
      for (MaintenanceWindow w : windows) {
        if (w == null) {
          throw new IllegalArgumentException("a maintenance window is null");
        }
        b.addMaintenanceWindows(w.proto());
      }
      return this;
    }

    /** The config. */
    public QueueConfig build() {
      return new QueueConfig(b.build());
    }
  }
}
