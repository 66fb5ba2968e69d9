package dev.queuemanager;

import java.time.Instant;
import queue_manager.v1.Types;

/** A registered queue: its name, whether it is paused and until when. */
public final class QueueInfo {
  private final Types.Queue proto;
  private final boolean created;

  QueueInfo(Types.Queue proto, boolean created) {
    this.proto = proto;
    this.created = created;
  }

  public String name() {
    return proto.getName();
  }

  /** Whether the queue starts no job now (paused by hand, for a time, or by a maintenance window). */
  public boolean paused() {
    return proto.getPaused();
  }

  /** When a timed pause lifts by itself; null for a pause until resumed, and when not paused. */
  public Instant pausedUntil() {
    return Protos.instant(proto.getPausedUntil());
  }

  public Instant createTime() {
    return Protos.instant(proto.getCreateTime());
  }

  /** Where its jobs go when they fail for good; "" when dead-lettering is off. */
  public String deadLetterQueue() {
    return proto.getConfig().getDeadLetterQueue();
  }

  /** Its settings, defaults filled in. */
  public QueueConfig config() {
    return new QueueConfig(proto.getConfig());
  }

  /** While a maintenance window holds the queue, when the window ends; null outside its windows. */
  public Instant maintenanceUntil() {
    return Protos.instant(proto.getMaintenanceUntil());
  }

  /** When its next maintenance window starts; null without windows. */
  public Instant nextMaintenanceTime() {
    return Protos.instant(proto.getNextMaintenanceTime());
  }

  /** For {@link QueueManager#registerQueue}: whether this call created it (false: it existed). */
  public boolean created() {
    return created;
  }

  @Override
  public String toString() {
    return "QueueInfo{" + name() + (paused() ? " paused" : "") + "}";
  }
}
