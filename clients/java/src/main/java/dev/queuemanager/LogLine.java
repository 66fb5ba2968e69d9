package dev.queuemanager;

import java.time.Instant;
import queue_manager.v1.Types;

/** One line a job's run logged ({@link QueueManager#getJobLogs}). */
public final class LogLine {
  private final Instant time;
  private final String message;

  LogLine(Types.JobLogLine proto) {
    this.time = Protos.instant(proto.getTime());
    this.message = proto.getMessage();
  }

  /** When the worker logged it. */
  public Instant time() {
    return time;
  }

  /** The text, at most 2,000 characters. */
  public String message() {
    return message;
  }

  @Override
  public String toString() {
    return time + " " + message;
  }
}
