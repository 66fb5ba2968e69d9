package dev.queuemanager;

import queue_manager.v1.Metrics;

/**
 * What a worker control call ({@link QueueManager#quietWorker} and the others) did.
 *
 * @param serverId the server holding the worker's stream, which told it
 * @param state the worker's state after the call
 * @param concurrency the worker's concurrency after the call
 * @param changed false when the worker was already so (nothing was sent to it)
 */
public record WorkerControlResult(String serverId, State state, int concurrency, boolean changed) {
  /** Whether a connected worker takes jobs. */
  public enum State {
    /** It takes jobs as its credits allow. */
    ACTIVE,
    /** Quieted by an operator: it runs what it holds, takes nothing new, stays connected. */
    QUIET,
    /** Stopping: it finishes or releases what it holds, then leaves. */
    STOPPING;

    /** The state of a wire value (active for a server that predates worker control). */
    static State fromProto(Metrics.WorkerState wire) {
      switch (wire) {
        case WORKER_STATE_QUIET:
          return QUIET;
        case WORKER_STATE_STOPPING:
          return STOPPING;
        default:
          return ACTIVE;
      }
    }
  }
}
