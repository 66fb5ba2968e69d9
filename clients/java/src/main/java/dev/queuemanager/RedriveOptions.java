package dev.queuemanager;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import queue_manager.v1.QueueServiceOuterClass;
import queue_manager.v1.Types;

/**
 * Picks the dead-letter copies {@link QueueManager#redriveDeadLetters} sends back; {@link #ALL} takes every
 * waiting copy. The server refuses options that do not fit together ({@link InvalidArgumentException}).
 */
public final class RedriveOptions {
  /** Every waiting copy, each original run with the data it failed with. */
  public static final RedriveOptions ALL = builder().build();

  private final String originalQueue;
  private final int limit;
  private final List<String> jobIds;
  private final boolean replaceData;
  private final Types.Payload data;

  private RedriveOptions(Builder b) {
    this.originalQueue = b.originalQueue;
    this.limit = b.limit;
    this.jobIds = Collections.unmodifiableList(new ArrayList<>(b.jobIds));
    this.replaceData = b.replaceData;
    this.data = b.data;
  }

  public static Builder builder() {
    return new Builder();
  }

  /** Only copies of this queue's jobs; "" for every queue's. */
  public String originalQueue() {
    return originalQueue;
  }

  /** At most this many copies; 0 for every one. */
  public int limit() {
    return limit;
  }

  /** Only these copies ({@code <original queue>:<job id>}); empty for the waiting copies in order. */
  public List<String> jobIds() {
    return jobIds;
  }

  /** Whether a failed original runs with the copy's original data rather than the data it failed with. */
  public boolean replaceData() {
    return replaceData;
  }

  QueueServiceOuterClass.RedriveDeadLettersRequest proto(String dlq) {
    var b =
        QueueServiceOuterClass.RedriveDeadLettersRequest.newBuilder()
            .setQueueName(dlq)
            .setOriginalQueue(originalQueue)
            .setLimit(limit)
            .addAllJobIds(jobIds)
            .setReplaceData(replaceData);
    if (data != null) {
      b.setData(data);
    }
    return b.build();
  }

  /** Builds {@link RedriveOptions}. */
  public static final class Builder {
    private String originalQueue = "";
    private int limit;
    private final List<String> jobIds = new ArrayList<>();
    private boolean replaceData;
    private Types.Payload data;

    private Builder() {}

    /** Takes only copies of this queue's jobs. */
    public Builder originalQueue(String originalQueue) {
      this.originalQueue = originalQueue == null ? "" : originalQueue;
      return this;
    }

    /** Takes at most this many copies (0: every one); not with {@link #jobIds}. */
    public Builder limit(int limit) {
      if (limit < 0) {
        throw new IllegalArgumentException("the redrive limit must not be negative, got " + limit);
      }
      this.limit = limit;
      return this;
    }

    /** Takes only these copies ({@code <original queue>:<job id>}, {@link DeadLetter#id()}), up to 1,000. */
    public Builder jobIds(String... jobIds) {
      this.jobIds.clear();
      Collections.addAll(this.jobIds, jobIds);
      return this;
    }

    /** Runs a failed original with the copy's original data rather than the data it failed with. */
    public Builder replaceData(boolean replaceData) {
      this.replaceData = replaceData;
      return this;
    }

    /**
     * With exactly one of {@link #jobIds}: the data the original runs with instead, encoded as {@link
     * QueueManager#addJob} encodes it, null as JSON null. The server records it in the same step as it takes
     * the copy, so a copy skipped or a call refused keeps its data.
     */
    public Builder data(Object data) {
      this.data = data == null ? Payloads.encode(JsonText.of("null")) : Payloads.encode(data);
      return this;
    }

    public RedriveOptions build() {
      return new RedriveOptions(this);
    }
  }
}
