package dev.queuemanager;

import queue_manager.v1.Types;

/** A job's priority level: a lower level runs first, FIFO within a level. */
public enum JobPriority {
  /** Runs before everything else. */
  CRITICAL(Types.JobPriority.JOB_PRIORITY_CRITICAL),
  /** Runs before NORMAL. */
  HIGH(Types.JobPriority.JOB_PRIORITY_HIGH),
  /** The default level. */
  NORMAL(Types.JobPriority.JOB_PRIORITY_NORMAL),
  /** Runs after NORMAL. */
  LOW(Types.JobPriority.JOB_PRIORITY_LOW),
  /** Runs last. */
  BACKGROUND(Types.JobPriority.JOB_PRIORITY_BACKGROUND);

  private final Types.JobPriority wire;

  JobPriority(Types.JobPriority wire) {
    this.wire = wire;
  }

  Types.JobPriority proto() {
    return wire;
  }

  /** The level of a wire value; null for an unset or unknown one. */
  static JobPriority fromProto(Types.JobPriority wire) {
    for (JobPriority p : values()) {
      if (p.wire == wire) {
        return p;
      }
    }
    return null;
  }
}
