package dev.queuemanager;

import java.time.Duration;

/**
 * Thrown by a {@link JobHandler} to run its job again later without using an attempt: a durable sleep
 * between the steps of a long job (BullMQ's {@code moveToDelayed} with {@code DelayedError}, as the Python,
 * TypeScript and Go workers offer it). The run ends, the job waits the delay in delayed (by the server's
 * clock; the worker's slot and its group's are free meanwhile) and then runs again with no attempt used and
 * not as a redelivery. {@link #withData} also replaces the job's data in the same step (a checkpoint the next
 * run resumes from); data the server cannot store fails the attempt with the reason instead. A cancel asked
 * meanwhile ends the job cancelled.
 */
public class DelayedException extends RuntimeException {
  private static final long serialVersionUID = 1L;

  /** The longest delay the server takes: 10 years. */
  public static final Duration MAX_DELAY = Duration.ofDays(3650);

  private final Duration delay;
  // Not serialisable in general; an exception sent across a stream of objects has no data to write anyway.
  private final transient Object data;
  private final boolean hasData;

  /**
   * Runs the job again after {@code delay}, keeping its data.
   *
   * @param delay 0 to 10 years (0: again as soon as a worker is free)
   * @throws IllegalArgumentException for a negative delay or one over 10 years
   */
  public DelayedException(Duration delay) {
    this(delay, null, false);
  }

  private DelayedException(Duration delay, Object data, boolean hasData) {
    super("run again in " + checked(delay).toMillis() / 1000.0 + "s");
    this.delay = delay;
    this.data = data;
    this.hasData = hasData;
  }

  /**
   * Runs the job again after {@code delay} with {@code data} as its data (encoded as {@link
   * QueueManager#addJob} encodes data; null is JSON null).
   *
   * @throws IllegalArgumentException for a negative delay or one over 10 years
   */
  public static DelayedException withData(Duration delay, Object data) {
    return new DelayedException(delay, data, true);
  }

  /** How long the job waits before its next run. */
  public Duration delay() {
    return delay;
  }

  /** The job's new data; null when it is kept ({@link #hasData()} false) or is JSON null. */
  public Object data() {
    return data;
  }

  /** Whether the job's data is replaced with {@link #data()}. */
  public boolean hasData() {
    return hasData;
  }

  private static Duration checked(Duration delay) {
    if (delay == null || delay.isNegative() || delay.compareTo(MAX_DELAY) > 0) {
      throw new IllegalArgumentException("the delay must be 0 to 10 years, got " + delay);
    }
    return delay;
  }
}
