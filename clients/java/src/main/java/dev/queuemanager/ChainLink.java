package dev.queuemanager;

import java.nio.charset.StandardCharsets;
import queue_manager.v1.Types;

/**
 * One job of a chain ({@link JobOptions.Builder#chainTo}): added to its queue when the job before it
 * completes, with that job as its parent.
 */
public final class ChainLink {
  private final String queue;
  private final String name;
  private final Object data;
  private final JobOptions options;

  private ChainLink(String queue, String name, Object data, JobOptions options) {
    this.queue = queue;
    this.name = name;
    this.data = data;
    this.options = options;
  }

  /** A link with its queue's default options. */
  public static ChainLink of(String queue, String name, Object data) {
    return new ChainLink(queue, name, data, null);
  }

  /**
   * A link with options of its own.
   *
   * @param queue a queue that must be registered when the link is added
   * @param name the link's job name, 1 to 200 characters
   * @param data as {@link QueueManager#addJob} takes it
   * @param options its options (no chainTo and no dedup: the server refuses them); null: the queue's
   *     defaults
   */
  public static ChainLink of(String queue, String name, Object data, JobOptions options) {
    return new ChainLink(queue, name, data, options);
  }

  public String queue() {
    return queue;
  }

  public String name() {
    return name;
  }

  /** The data as given; read back from the server, a {@link JsonText} or a {@code byte[]}. */
  public Object data() {
    return data;
  }

  /** The link's options; null for its queue's defaults. */
  public JobOptions options() {
    return options;
  }

  Types.ChainLink proto() {
    Types.ChainLink.Builder b =
        Types.ChainLink.newBuilder()
            .setQueueName(queue == null ? "" : queue)
            .setJobName(name == null ? "" : name);
    Types.Payload payload = Payloads.encode(data);
    if (payload != null) {
      b.setData(payload);
    }
    if (options != null) {
      b.setOptions(options.proto());
    }
    return b.build();
  }

  static ChainLink fromProto(Types.ChainLink p) {
    Object data = null;
    if (p.hasData()) {
      byte[] body = Payloads.body(p.getData());
      // JSON comes back as its text so that the link can be sent again as it was.
      data =
          Payloads.isJson(Payloads.contentType(p.getData()))
              ? JsonText.of(new String(body, StandardCharsets.UTF_8))
              : body;
    }
    JobOptions options =
        p.hasOptions() ? JobOptions.fromProto(p.getOptions(), Types.JobMetadata.getDefaultInstance()) : null;
    return new ChainLink(p.getQueueName(), p.getJobName(), data, options);
  }

  @Override
  public String toString() {
    return "ChainLink{" + queue + "/" + name + "}";
  }
}
