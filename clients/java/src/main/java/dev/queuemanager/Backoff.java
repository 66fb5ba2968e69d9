package dev.queuemanager;

import java.time.Duration;
import queue_manager.v1.Types;

/**
 * The delay before each retry of a failed job: fixed, or exponential ({@code delay · 2^(attempt-1)}), with
 * an optional jitter (a random extra, a fraction 0 to 1 of the delay) and an optional cap.
 */
public final class Backoff {
  /** How the delay grows from one retry to the next. */
  public enum Type {
    /** The same delay before every retry. */
    FIXED,
    /** The delay doubles at each retry. */
    EXPONENTIAL
  }

  private final Type type;
  private final Duration delay;
  private final double jitter;
  private final Duration maxDelay;

  private Backoff(Type type, Duration delay, double jitter, Duration maxDelay) {
    this.type = type;
    this.delay = delay;
    this.jitter = jitter;
    this.maxDelay = maxDelay;
  }

  /** The same delay before every retry. */
  public static Backoff fixed(Duration delay) {
    return new Backoff(Type.FIXED, Protos.notNegative(delay, "the backoff delay"), 0, Duration.ZERO);
  }

  /** A delay that doubles at each retry, starting from {@code delay}. */
  public static Backoff exponential(Duration delay) {
    return new Backoff(Type.EXPONENTIAL, Protos.notNegative(delay, "the backoff delay"), 0, Duration.ZERO);
  }

  /** This backoff with a random extra delay of up to {@code fraction} (0 to 1) of the computed one. */
  public Backoff withJitter(double fraction) {
    if (!(fraction >= 0 && fraction <= 1)) {
      throw new IllegalArgumentException("the backoff jitter must be from 0 to 1, got " + fraction);
    }
    return new Backoff(type, delay, fraction, maxDelay);
  }

  /** This backoff with the computed delay capped at {@code max}. */
  public Backoff withMaxDelay(Duration max) {
    return new Backoff(type, delay, jitter, Protos.notNegative(max, "the backoff's max delay"));
  }

  public Type type() {
    return type;
  }

  public Duration delay() {
    return delay;
  }

  public double jitter() {
    return jitter;
  }

  /** The cap; zero for none. */
  public Duration maxDelay() {
    return maxDelay;
  }

  Types.Backoff proto() {
    Types.Backoff.Builder b =
        Types.Backoff.newBuilder()
            .setType(
                type == Type.FIXED
                    ? Types.BackoffType.BACKOFF_TYPE_FIXED
                    : Types.BackoffType.BACKOFF_TYPE_EXPONENTIAL)
            .setDelay(Protos.duration(delay))
            .setJitter(jitter);
    if (!maxDelay.isZero()) {
      b.setMaxDelay(Protos.duration(maxDelay));
    }
    return b.build();
  }

  static Backoff fromProto(Types.Backoff b) {
    Type type = b.getType() == Types.BackoffType.BACKOFF_TYPE_EXPONENTIAL ? Type.EXPONENTIAL : Type.FIXED;
    return new Backoff(type, Protos.duration(b.getDelay()), b.getJitter(), Protos.duration(b.getMaxDelay()));
  }
}
