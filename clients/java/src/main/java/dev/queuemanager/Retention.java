package dev.queuemanager;

import java.time.Duration;
import queue_manager.v1.Types;

/**
 * Which finished jobs of a state are kept: a job goes when it is too old or too far down the list. Read from
 * a queue's config, or given to {@link JobOptions.Builder#removeOnComplete}, {@link
 * JobOptions.Builder#removeOnFail} and {@link QueueConfig.Builder#completedRetention} (and failed).
 */
public final class Retention {
  // The wire's count is a uint32.
  private static final long MAX_COUNT = 0xFFFF_FFFFL;

  private final boolean remove;
  private final Duration age;
  private final long count;

  Retention(Types.KeepJobs p) {
    this(p.getRemove(), Protos.duration(p.getAge()), p.getCount() & MAX_COUNT);
  }

  private Retention(boolean remove, Duration age, long count) {
    this.remove = remove;
    this.age = age;
    this.count = count;
  }

  /** Removes each job as soon as it finishes. */
  public static Retention removeAtOnce() {
    return new Retention(true, Duration.ZERO, 0);
  }

  /**
   * Keeps finished jobs at most {@code age} and at most {@code count} of them, the newest.
   *
   * @param age zero: the queue's default (the server's for a queue: 1 day completed, 7 days failed)
   * @param count 0 to 4,294,967,295; 0: the queue's default (10,000 completed, 100,000 failed)
   */
  public static Retention keep(Duration age, long count) {
    Protos.notNegative(age, "the retention age");
    if (count < 0 || count > MAX_COUNT) {
      throw new IllegalArgumentException(
          "the retention count must be from 0 to " + MAX_COUNT + ", got " + count);
    }
    return new Retention(false, age, count);
  }

  /** Whether a job is removed as soon as it finishes ({@link #age()} and {@link #count()} do not apply). */
  public boolean remove() {
    return remove;
  }

  /** How long finished jobs are kept at most; zero: the default. */
  public Duration age() {
    return age;
  }

  /** How many finished jobs of the state are kept at most; 0: the default. */
  public long count() {
    return count;
  }

  Types.KeepJobs proto() {
    Types.KeepJobs.Builder b = Types.KeepJobs.newBuilder().setRemove(remove).setCount((int) count);
    if (!age.isZero()) {
      b.setAge(Protos.duration(age));
    }
    return b.build();
  }

  @Override
  public String toString() {
    return remove ? "Retention{remove}" : "Retention{" + age + ", " + count + "}";
  }
}
