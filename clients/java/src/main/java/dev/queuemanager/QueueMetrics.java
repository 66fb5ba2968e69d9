package dev.queuemanager;

import java.time.Duration;
import queue_manager.v1.Types;

/** A queue's counts by state, its totals since it was registered and its recent rates. */
public final class QueueMetrics {
  private final Types.QueueMetrics m;

  QueueMetrics(Types.QueueMetrics m) {
    this.m = m;
  }

  public String queue() {
    return m.getQueueName();
  }

  public long waiting() {
    return m.getWaiting();
  }

  public long active() {
    return m.getActive();
  }

  public long delayed() {
    return m.getDelayed();
  }

  public long completed() {
    return m.getCompleted();
  }

  public long failed() {
    return m.getFailed();
  }

  /** Jobs waiting in the queue while it is paused. */
  public long paused() {
    return m.getPaused();
  }

  public long cancelled() {
    return m.getCancelled();
  }

  /** Jobs added since the queue was registered. */
  public long addedTotal() {
    return m.getAddedTotal();
  }

  public long completedTotal() {
    return m.getCompletedTotal();
  }

  public long failedTotal() {
    return m.getFailedTotal();
  }

  /** Completions per second over the last minute. */
  public double completedPerSecond() {
    return m.getCompletedPerSecond();
  }

  /** Failures per second over the last minute. */
  public double failedPerSecond() {
    return m.getFailedPerSecond();
  }

  /** How long the oldest waiting job has waited; zero when none waits. */
  public Duration oldestWaitingAge() {
    return Protos.duration(m.getOldestWaitingAge());
  }

  /** Workers connected for the queue. */
  public int workers() {
    return m.getWorkers();
  }

  public boolean isPaused() {
    return m.getIsPaused();
  }
}
