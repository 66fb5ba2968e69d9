package dev.queuemanager;

import java.util.List;

/**
 * Thrown by {@link JobContext#waitForChildren} once the server has added the children and ended the run: the
 * handler stops there, and the job runs again when its children have all finished. Let it pass: a handler
 * that catches it changes nothing (the run is over and what it returns is discarded).
 */
public class WaitingForChildrenException extends RuntimeException {
  private static final long serialVersionUID = 1L;

  private final transient List<JobRef> children;
  private final int pending;

  WaitingForChildrenException(List<JobRef> children, int pending) {
    super("waiting for " + pending + " of " + children.size() + " children");
    this.children = List.copyOf(children);
    this.pending = pending;
  }

  /** The children added, in the order given. */
  public List<JobRef> children() {
    return children;
  }

  /** How many of the job's children had not finished when the run ended (over all its waits). */
  public int pending() {
    return pending;
  }
}
