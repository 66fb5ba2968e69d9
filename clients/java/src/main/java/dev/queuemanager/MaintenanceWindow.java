package dev.queuemanager;

import java.time.Duration;
import queue_manager.v1.Types;

/**
 * A recurring window in which a queue starts no job, or a fairness group none of its jobs ({@link
 * QueueManager#setGroupLimits}): running jobs finish, added ones wait.
 */
public final class MaintenanceWindow {
  private final String cron;
  private final Duration duration;
  private final String timezone;

  private MaintenanceWindow(String cron, Duration duration, String timezone) {
    this.cron = cron;
    this.duration = duration;
    this.timezone = timezone;
  }

  /**
   * A window read in UTC.
   *
   * @param cron when each window starts: a cron expression of 5 fields (or 6, seconds first), as {@code "0 2
   *     * * SUN"}; the server checks it
   * @param duration how long each window lasts: 1 s to 31 days
   */
  public static MaintenanceWindow of(String cron, Duration duration) {
    if (cron == null || cron.isBlank()) {
      throw new IllegalArgumentException("a maintenance window needs a cron, such as \"0 2 * * SUN\"");
    }
    if (duration == null || duration.isZero() || duration.isNegative()) {
      throw new IllegalArgumentException("a maintenance window's duration must be positive, got " + duration);
    }
    return new MaintenanceWindow(cron, duration, "");
  }

  /** This window with its cron read in an IANA time zone, such as {@code "Europe/Paris"} ("" for UTC). */
  public MaintenanceWindow inZone(String timezone) {
    return new MaintenanceWindow(cron, duration, timezone == null ? "" : timezone);
  }

  public String cron() {
    return cron;
  }

  public Duration duration() {
    return duration;
  }

  /** The IANA time zone the cron is read in; "" for UTC. */
  public String timezone() {
    return timezone;
  }

  Types.MaintenanceWindow proto() {
    return Types.MaintenanceWindow.newBuilder()
        .setCron(cron)
        .setDuration(Protos.duration(duration))
        .setTimezone(timezone)
        .build();
  }

  static MaintenanceWindow fromProto(Types.MaintenanceWindow p) {
    return new MaintenanceWindow(p.getCron(), Protos.duration(p.getDuration()), p.getTimezone());
  }

  @Override
  public String toString() {
    String zone = timezone.isEmpty() ? "" : " " + timezone;
    return "MaintenanceWindow{" + cron + " for " + duration + zone + "}";
  }
}
