package dev.queuemanager;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import queue_manager.v1.Types;

/**
 * Bounds on the jobs of one fairness group, on top of the queue's own limits: a queue's {@link
 * QueueConfig#groupLimits()} apply to each of its groups on its own; {@link QueueManager#setGroupLimits}
 * gives one group limits of its own instead. {@link #NONE} limits nothing.
 */
public final class GroupLimits {
  /** No limit at all. */
  public static final GroupLimits NONE = builder().build();

  private final int concurrency;
  private final RateLimit rateLimit;
  private final long maxSize;
  private final List<MaintenanceWindow> maintenanceWindows;

  private GroupLimits(int concurrency, RateLimit rateLimit, long maxSize, List<MaintenanceWindow> windows) {
    this.concurrency = concurrency;
    this.rateLimit = rateLimit;
    this.maxSize = maxSize;
    this.maintenanceWindows = Collections.unmodifiableList(new ArrayList<>(windows));
  }

  public static Builder builder() {
    return new Builder();
  }

  /** The most jobs of the group active at once across all workers; 0 for no limit. */
  public int concurrency() {
    return concurrency;
  }

  /** The limit on the group's job starts; null for none. */
  public RateLimit rateLimit() {
    return rateLimit;
  }

  /**
   * The most jobs of the group waiting (producer backpressure: an add beyond it is refused with {@link
   * ResourceExhaustedException}); 0 for no limit.
   */
  public long maxSize() {
    return maxSize;
  }

  /** The group's own maintenance windows, as read back from a group; empty for a queue's limits. */
  public List<MaintenanceWindow> maintenanceWindows() {
    return maintenanceWindows;
  }

  Types.GroupLimits proto(List<MaintenanceWindow> windows) {
    Types.GroupLimits.Builder b =
        Types.GroupLimits.newBuilder().setConcurrency(concurrency).setMaxSize(maxSize);
    if (rateLimit != null) {
      b.setRateLimit(rateLimit.proto());
    }
    for (MaintenanceWindow w : windows) {
      b.addMaintenanceWindows(w.proto());
    }
    return b.build();
  }

  static GroupLimits fromProto(Types.GroupLimits p) {
    List<MaintenanceWindow> windows = new ArrayList<>();
    for (Types.MaintenanceWindow w : p.getMaintenanceWindowsList()) {
      windows.add(MaintenanceWindow.fromProto(w));
    }
    RateLimit rate = p.hasRateLimit() ? RateLimit.fromProto(p.getRateLimit()) : null;
    return new GroupLimits(p.getConcurrency(), rate, p.getMaxSize(), windows);
  }

  @Override
  public String toString() {
    return "GroupLimits{concurrency " + concurrency + ", " + rateLimit + ", maxSize " + maxSize + "}";
  }

  /** Builds {@link GroupLimits}; a limit left unset is no limit. */
  public static final class Builder {
    private int concurrency;
    private RateLimit rateLimit;
    private long maxSize;

    private Builder() {}

    /** At most this many of the group's jobs active at once; 0 for no limit. */
    public Builder concurrency(int concurrency) {
      if (concurrency < 0) {
        throw new IllegalArgumentException("the group concurrency must not be negative, got " + concurrency);
      }
      this.concurrency = concurrency;
      return this;
    }

    /** A limit on the group's job starts; null for none. */
    public Builder rateLimit(RateLimit rateLimit) {
      this.rateLimit = rateLimit;
      return this;
    }

    /** At most this many of the group's jobs waiting; 0 for no limit. */
    public Builder maxSize(long maxSize) {
      if (maxSize < 0) {
        throw new IllegalArgumentException("the group maxSize must not be negative, got " + maxSize);
      }
      this.maxSize = maxSize;
      return this;
    }

    public GroupLimits build() {
      return new GroupLimits(concurrency, rateLimit, maxSize, List.of());
    }
  }
}
