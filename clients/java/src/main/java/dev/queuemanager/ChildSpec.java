package dev.queuemanager;

import queue_manager.v1.Jobs;

/**
 * A child job for a running job to add ({@link JobContext#waitForChildren}), as {@link QueueManager#addJob}
 * takes one. Without a job id or dedup key in its options the child's id is derived from its parent's, its
 * wait and its place in the list, so a repeated call adds it once. With a job id the child is that job of its
 * queue: added if none exists, else the existing one (already finished, it counts at once). With a dedup key
 * it is the job the key resolves to (this one, or the key's holder).
 */
public final class ChildSpec {
  private final String queue;
  private final String name;
  private final Object data;
  private final JobOptions options;

  private ChildSpec(String queue, String name, Object data, JobOptions options) {
    this.queue = queue;
    this.name = name;
    this.data = data;
    this.options = options;
  }

  /** A child with its queue's default options. */
  public static ChildSpec of(String queue, String name, Object data) {
    return new ChildSpec(queue, name, data, null);
  }

  /** A child with its own options (null: its queue's defaults). */
  public static ChildSpec of(String queue, String name, Object data, JobOptions options) {
    return new ChildSpec(queue, name, data, options);
  }

  /** The child's queue: any registered queue. */
  public String queue() {
    return queue;
  }

  public String name() {
    return name;
  }

  public Object data() {
    return data;
  }

  public JobOptions options() {
    return options;
  }

  Jobs.ChildJobSpec proto() {
    Jobs.ChildJobSpec.Builder b =
        Jobs.ChildJobSpec.newBuilder()
            .setQueueName(queue == null ? "" : queue)
            .setName(name == null ? "" : name);
    queue_manager.v1.Types.Payload payload = Payloads.encode(data);
    if (payload != null) {
      b.setData(payload);
    }
    if (options != null) {
      b.setOptions(options.proto());
    }
    return b.build();
  }

  @Override
  public String toString() {
    return "ChildSpec{" + queue + " " + name + "}";
  }
}
