package dev.queuemanager;

import queue_manager.v1.Metrics;

/** Whether a connected worker takes jobs ({@link WorkerInfo#state()}). */
public enum WorkerState {
  /** Takes jobs as its credits allow. */
  ACTIVE(Metrics.WorkerState.WORKER_STATE_ACTIVE),
  /** Quieted by an operator: runs what it holds, takes nothing new, stays connected. */
  QUIET(Metrics.WorkerState.WORKER_STATE_QUIET),
  /** Stopping: finishes or releases what it holds, then leaves. */
  STOPPING(Metrics.WorkerState.WORKER_STATE_STOPPING);

  private final Metrics.WorkerState wire;

  WorkerState(Metrics.WorkerState wire) {
    this.wire = wire;
  }

  /** The state of a wire value; null for an unset or unknown one (a server that predates worker control). */
  static WorkerState fromProto(Metrics.WorkerState wire) {
    for (WorkerState s : values()) {
      if (s.wire == wire) {
        return s;
      }
    }
    return null;
  }
}
