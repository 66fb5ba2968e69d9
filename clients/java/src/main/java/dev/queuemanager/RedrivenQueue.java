package dev.queuemanager;

import queue_manager.v1.QueueServiceOuterClass;

/** The copies a redrive sent back to one original queue ({@link RedriveResult#queues()}). */
public final class RedrivenQueue {
  private final QueueServiceOuterClass.RedrivenQueue proto;

  RedrivenQueue(QueueServiceOuterClass.RedrivenQueue proto) {
    this.proto = proto;
  }

  /** The original queue. */
  public String queue() {
    return proto.getQueueName();
  }

  /** The copies sent back: {@link #retried()} + {@link #added()} + {@link #unchanged()}. */
  public long count() {
    return proto.getCount();
  }

  /** Originals that were failed and run again, their attempts counted afresh. */
  public long retried() {
    return proto.getRetried();
  }

  /** Originals gone (retention, a removal) and added anew. */
  public long added() {
    return proto.getAdded();
  }

  /** Originals no longer failed, left as they are (the copy was dropped). */
  public long unchanged() {
    return proto.getUnchanged();
  }
}
