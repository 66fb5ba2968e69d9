package dev.queuemanager;

import java.lang.reflect.Type;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import queue_manager.v1.Types;

/**
 * A child a job added at run time ({@link JobContext#waitForChildren}), with its outcome once it finished:
 * what the parent's run after the wait combines ({@link Job#children()}).
 */
public final class ChildJob {
  private final Types.ChildJob proto;
  private final byte[] result;
  private final String resultContentType;

  ChildJob(Types.ChildJob proto) {
    this.proto = proto;
    this.result = proto.hasResult() ? Payloads.body(proto.getResult()) : null;
    this.resultContentType = proto.hasResult() ? Payloads.contentType(proto.getResult()) : null;
  }

  static List<ChildJob> of(List<Types.ChildJob> children) {
    List<ChildJob> out = new ArrayList<>();
    for (Types.ChildJob c : children) {
      out.add(new ChildJob(c));
    }
    return List.copyOf(out);
  }

  /** The child's queue and id. */
  public JobRef ref() {
    return new JobRef(proto.getJob().getQueueName(), proto.getJob().getJobId());
  }

  /** How it finished (COMPLETED, FAILED or CANCELLED); null while it has not, or when it was removed. */
  public JobState state() {
    return JobState.fromProto(proto.getState());
  }

  /**
   * Its state now, as {@link QueueManager#getJob} read it (the server reads every child's in one batched
   * read), whether or not it has finished; null on the children a run reads.
   */
  public JobState currentState() {
    return JobState.fromProto(proto.getCurrentState());
  }

  /** Whether it was removed before it finished: the parent no longer waits for it. */
  public boolean removed() {
    return proto.getRemoved();
  }

  /** Why it failed for good, was cancelled or removed; "" otherwise. */
  public String failedReason() {
    return proto.getFailedReason();
  }

  /** Whether its result was too large to keep here (read it with {@link QueueManager#getJob}). */
  public boolean truncated() {
    return proto.getTruncated();
  }

  /** The result's bytes once it completed; null before, or when it returned none. */
  public byte[] result() {
    return result == null ? null : result.clone();
  }

  /** The result's JSON text; null when there is none. */
  public String resultJson() {
    if (result == null) {
      return null;
    }
    if (!Payloads.isJson(resultContentType)) {
      throw new IllegalStateException("the child's result is not JSON but " + resultContentType);
    }
    return new String(result, StandardCharsets.UTF_8);
  }

  /** The JSON result decoded by Gson into a class. */
  public <T> T result(Class<T> type) {
    return Payloads.decode(result, resultContentType, type, "the child's result");
  }

  /** The JSON result decoded by Gson into {@code type} (a {@code TypeToken}'s type, for generics). */
  public <T> T result(Type type) {
    return Payloads.decode(result, resultContentType, type, "the child's result");
  }

  @Override
  public String toString() {
    return "ChildJob{" + ref() + " " + state() + "}";
  }
}
