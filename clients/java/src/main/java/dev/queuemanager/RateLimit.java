package dev.queuemanager;

import java.time.Duration;
import queue_manager.v1.Types;

/** A token-bucket limit on job starts: at most {@link #max()} per {@link #duration()}, across all workers. */
public final class RateLimit {
  private final int max;
  private final Duration duration;
  private final int burst;

  private RateLimit(int max, Duration duration, int burst) {
    this.max = max;
    this.duration = duration;
    this.burst = burst;
  }

  /** At most {@code max} starts per {@code duration} (both positive), with the default burst. */
  public static RateLimit of(int max, Duration duration) {
    if (max < 1) {
      throw new IllegalArgumentException("the rate limit's max must be at least 1, got " + max);
    }
    if (duration == null || duration.isZero() || duration.isNegative()) {
      throw new IllegalArgumentException("the rate limit's duration must be positive, got " + duration);
    }
    return new RateLimit(max, duration, 0);
  }

  /**
   * This limit with a bucket of {@code burst} (1 to 1,000,000): how many jobs may start at once after an idle
   * spell; 0 takes the default, a tenth of max rounded up.
   */
  public RateLimit withBurst(int burst) {
    if (burst < 0) {
      throw new IllegalArgumentException("the rate limit's burst must not be negative, got " + burst);
    }
    return new RateLimit(max, duration, burst);
  }

  /** Jobs allowed per {@link #duration()}. */
  public int max() {
    return max;
  }

  public Duration duration() {
    return duration;
  }

  /** The bucket's capacity; 0 for the default. */
  public int burst() {
    return burst;
  }

  Types.RateLimit proto() {
    return Types.RateLimit.newBuilder()
        .setMax(max)
        .setDuration(Protos.duration(duration))
        .setBurst(burst)
        .build();
  }

  /** The limit of a wire value; null for none (unset, or a max of 0). */
  static RateLimit fromProto(Types.RateLimit p) {
    if (p.getMax() == 0) {
      return null;
    }
    return new RateLimit(p.getMax(), Protos.duration(p.getDuration()), p.getBurst());
  }

  @Override
  public String toString() {
    return "RateLimit{" + max + " per " + duration + (burst > 0 ? ", burst " + burst : "") + "}";
  }
}
