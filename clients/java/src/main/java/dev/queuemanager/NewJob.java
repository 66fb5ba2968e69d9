package dev.queuemanager;

import queue_manager.v1.Jobs;

/**
 * One job to add with {@link QueueManager#addBulk}: its name, data (as {@link QueueManager#addJob} takes
 * it) and options (null: the queue's defaults).
 */
public final class NewJob {
  private final String name;
  private final Object data;
  private final JobOptions options;

  private NewJob(String name, Object data, JobOptions options) {
    this.name = name;
    this.data = data;
    this.options = options;
  }

  /** A job with the queue's default options. */
  public static NewJob of(String name, Object data) {
    return new NewJob(name, data, null);
  }

  /** A job with its own options. */
  public static NewJob of(String name, Object data, JobOptions options) {
    return new NewJob(name, data, options);
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

  Jobs.NewJob proto() {
    Jobs.NewJob.Builder b = Jobs.NewJob.newBuilder();
    b.setName(name == null ? "" : name);
    queue_manager.v1.Types.Payload payload = Payloads.encode(data);
    if (payload != null) {
      b.setData(payload);
    }
    if (options != null) {
      b.setOptions(options.proto());
    }
    return b.build();
  }
}
