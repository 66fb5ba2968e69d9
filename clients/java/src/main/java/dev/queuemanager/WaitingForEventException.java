package dev.queuemanager;

import java.time.Instant;
import java.util.List;

/**
 * Thrown by {@link JobContext#waitForEvent} once the server has parked the job and ended the run: the
 * handler stops there, and the job runs again when an event of one of the keys is pushed or the wait times
 * out. Let it pass: a handler that catches it changes nothing (the run is over and what it returns is
 * discarded).
 */
public class WaitingForEventException extends RuntimeException {
  private static final long serialVersionUID = 1L;

  private final transient List<String> keys;
  private final transient Instant until;

  WaitingForEventException(List<String> keys, Instant until) {
    super("waiting for event " + String.join(", ", keys) + (until == null ? "" : " until " + until));
    this.keys = List.copyOf(keys);
    this.until = until;
  }

  /** The event keys the job waits for. */
  public List<String> keys() {
    return keys;
  }

  /** When the wait times out; null for a wait with no end. */
  public Instant until() {
    return until;
  }
}
