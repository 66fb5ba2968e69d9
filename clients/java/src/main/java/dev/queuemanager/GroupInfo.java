package dev.queuemanager;

import java.time.Instant;
import queue_manager.v1.Types;

/**
 * One fairness group of a queue ({@link QueueManager#listGroups}, {@link QueueManager#setGroupLimits},
 * {@link QueueManager#pauseGroup}, {@link QueueManager#resumeGroup}).
 */
public final class GroupInfo {
  private final Types.GroupInfo proto;
  private final GroupLimits limits;

  GroupInfo(Types.GroupInfo proto) {
    this.proto = proto;
    this.limits = GroupLimits.fromProto(proto.getLimits());
  }

  /** The group's name (the jobs' group option). */
  public String group() {
    return proto.getGroup();
  }

  /** Its jobs ready to run. */
  public long waiting() {
    return proto.getWaiting();
  }

  /** Its jobs leased to workers. */
  public long active() {
    return proto.getActive();
  }

  /**
   * The limits that apply to it: its own ({@link #customLimits()}), else the queue's group limits; {@link
   * GroupLimits#NONE}'s values when neither limits it.
   */
  public GroupLimits limits() {
    return limits;
  }

  /** Whether {@link #limits()} are the group's own ({@link QueueManager#setGroupLimits}). */
  public boolean customLimits() {
    return proto.getCustomLimits();
  }

  /**
   * Whether the group is paused: by {@link QueueManager#pauseGroup} (none of its jobs starts until {@link
   * QueueManager#resumeGroup}), or by one of its maintenance windows, or both.
   */
  public boolean paused() {
    return proto.getPaused();
  }

  /** When its timed pause lifts by itself; null for a pause until resumed, and when not paused. */
  public Instant pausedUntil() {
    return Protos.instant(proto.getPausedUntil());
  }

  /** While one of its maintenance windows holds it, when the window ends; null outside its windows. */
  public Instant maintenanceUntil() {
    return Protos.instant(proto.getMaintenanceUntil());
  }

  /** When its next maintenance window starts; null without windows. */
  public Instant nextMaintenanceTime() {
    return Protos.instant(proto.getNextMaintenanceTime());
  }

  @Override
  public String toString() {
    String pause = paused() ? " paused" : "";
    return "GroupInfo{" + group() + " waiting " + waiting() + " active " + active() + pause + "}";
  }
}
