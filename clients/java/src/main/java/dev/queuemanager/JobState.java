package dev.queuemanager;

import queue_manager.v1.Types;

/** Where a job is in its lifecycle (docs/api.md, "The job lifecycle"). */
public enum JobState {
  /** Ready to run, in priority order. */
  WAITING(Types.JobState.JOB_STATE_WAITING),
  /** Leased to a worker and running. */
  ACTIVE(Types.JobState.JOB_STATE_ACTIVE),
  /** Waiting for its run time: a delay, a retry's backoff or a schedule. */
  DELAYED(Types.JobState.JOB_STATE_DELAYED),
  /** Finished with a result. */
  COMPLETED(Types.JobState.JOB_STATE_COMPLETED),
  /** Failed for good. */
  FAILED(Types.JobState.JOB_STATE_FAILED),
  /** Waiting in a paused queue. */
  PAUSED(Types.JobState.JOB_STATE_PAUSED),
  /** Cancelled before it finished. */
  CANCELLED(Types.JobState.JOB_STATE_CANCELLED);

  private final Types.JobState wire;

  JobState(Types.JobState wire) {
    this.wire = wire;
  }

  Types.JobState proto() {
    return wire;
  }

  /** Whether a job in this state will not run again by itself. */
  public boolean isFinished() {
    return this == COMPLETED || this == FAILED || this == CANCELLED;
  }

  /** The state of a wire value; null for an unset or unknown one. */
  static JobState fromProto(Types.JobState wire) {
    for (JobState s : values()) {
      if (s.wire == wire) {
        return s;
      }
    }
    return null;
  }
}
