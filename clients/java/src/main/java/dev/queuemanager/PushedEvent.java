package dev.queuemanager;

import java.time.Instant;
import java.util.List;
import queue_manager.v1.ExternalEvents;

/** What {@link QueueManager#pushEvent} did: the jobs it woke and the jobs its triggers added. */
public final class PushedEvent {
  private final ExternalEvents.PushEventResponse proto;
  private final List<JobRef> woken;
  private final List<JobRef> added;

  PushedEvent(ExternalEvents.PushEventResponse proto) {
    this.proto = proto;
    // protoc names the list getWoken1List, as woken_count takes getWokenCount: field numbers part them.
    this.woken = JobRef.of(proto.getWoken1List());
    this.added = JobRef.of(proto.getAddedList());
  }

  /** The jobs the event woke (they waited for its key), now waiting to run: all up to 1,000. */
  public List<JobRef> woken() {
    return woken;
  }

  /** How many jobs the event woke, listed in {@link #woken()} or not. */
  public int wokenCount() {
    return proto.getWokenCount5();
  }

  /** Whether {@link #woken()} lists fewer jobs than {@link #wokenCount()}. */
  public boolean wokenTruncated() {
    return proto.getWokenTruncated();
  }

  /** The jobs the event triggers added (one per trigger whose pattern matches the key). */
  public List<JobRef> added() {
    return added;
  }

  /**
   * Whether the event id had been pushed in the last 24 hours: nothing changed, and {@link #woken()},
   * {@link #added()} and {@link #pushedAt()} are the first push's.
   */
  public boolean duplicate() {
    return proto.getDuplicate();
  }

  /** When the server recorded the push. */
  public Instant pushedAt() {
    return Protos.instant(proto.getPushedAt());
  }
}
