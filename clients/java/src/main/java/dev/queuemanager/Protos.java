package dev.queuemanager;

import java.time.Duration;
import java.time.Instant;

/** Time conversions between java.time and the protobuf well-known types. */
final class Protos {
  private Protos() {}

  static com.google.protobuf.Duration duration(Duration d) {
    return com.google.protobuf.Duration.newBuilder()
        .setSeconds(d.getSeconds())
        .setNanos(d.getNano())
        .build();
  }

  static Duration duration(com.google.protobuf.Duration d) {
    return Duration.ofSeconds(d.getSeconds(), d.getNanos());
  }

  static com.google.protobuf.Timestamp timestamp(Instant t) {
    return com.google.protobuf.Timestamp.newBuilder()
        .setSeconds(t.getEpochSecond())
        .setNanos(t.getNano())
        .build();
  }

  /** The instant of a timestamp; null for an unset one (the epoch's zero). */
  static Instant instant(com.google.protobuf.Timestamp t) {
    if (t.getSeconds() == 0 && t.getNanos() == 0) {
      return null;
    }
    return Instant.ofEpochSecond(t.getSeconds(), t.getNanos());
  }

  /**
   * Refuses a null queue name, naming the argument: protobuf's setters threw a NullPointerException whose
   * message was "null". The server checks the name's characters.
   */
  static String queueName(String queue) {
    if (queue == null) {
      throw new IllegalArgumentException(
          "the queue name is null: give the queue's name (1 to 100 letters, digits, - _ .)");
    }
    return queue;
  }

  /** Refuses a negative duration, naming the setting. */
  static Duration notNegative(Duration d, String name) {
    if (d == null) {
      throw new IllegalArgumentException(name + " is null");
    }
    if (d.isNegative()) {
      throw new IllegalArgumentException(name + " must not be negative, got " + d);
    }
    return d;
  }
}
