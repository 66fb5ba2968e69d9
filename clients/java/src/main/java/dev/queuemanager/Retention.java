package dev.queuemanager;

import java.time.Duration;
import queue_manager.v1.Types;

/** Which finished jobs of a state a queue keeps: a job goes when it is too old or too far down the list. */
public final class Retention {
  private final boolean remove;
  private final Duration age;
  private final long count;

  Retention(Types.KeepJobs p) {
    this.remove = p.getRemove();
    this.age = Protos.duration(p.getAge());
    this.count = p.getCount();
  }

  /** Whether a job is removed as soon as it finishes ({@link #age()} and {@link #count()} do not apply). */
  public boolean remove() {
    return remove;
  }

  /** How long finished jobs are kept at most. */
  public Duration age() {
    return age;
  }

  /** How many finished jobs of the state are kept at most. */
  public long count() {
    return count;
  }

  @Override
  public String toString() {
    return remove ? "Retention{remove}" : "Retention{" + age + ", " + count + "}";
  }
}
