package dev.queuemanager;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.EnumMap;
import java.util.List;
import java.util.Map;
import queue_manager.v1.Types;

/** A queue's settings as the server holds them, defaults filled in ({@link QueueInfo#config()}). */
public final class QueueConfig {
  private final Types.QueueConfig proto;

  QueueConfig(Types.QueueConfig proto) {
    this.proto = proto;
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
}
