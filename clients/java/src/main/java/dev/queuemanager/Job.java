package dev.queuemanager;

import java.lang.reflect.Type;
import java.nio.charset.StandardCharsets;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import queue_manager.v1.Types;

/** A job as the server stored it: what was added, where it is now, and how its runs went. */
public final class Job {
  private final Types.Job proto;
  private final boolean created;
  private final byte[] data;
  private final String contentType;
  private final byte[] result;
  private final String resultContentType;

  Job(Types.Job proto, boolean created) {
    this.proto = proto;
    this.created = created;
    this.data = proto.hasData() ? Payloads.body(proto.getData()) : null;
    this.contentType = proto.hasData() ? Payloads.contentType(proto.getData()) : null;
    this.result = proto.hasResult() ? Payloads.body(proto.getResult()) : null;
    this.resultContentType = proto.hasResult() ? Payloads.contentType(proto.getResult()) : null;
  }

  public String id() {
    return proto.getId();
  }

  public String queue() {
    return proto.getQueueName();
  }

  /** The kind of work, as added. */
  public String name() {
    return proto.getName();
  }

  /** Where the job is now; null if the server sent a state this client does not know. */
  public JobState state() {
    return JobState.fromProto(proto.getState());
  }

  public JobPriority priority() {
    return JobPriority.fromProto(proto.getPriority());
  }

  /** Runs that ended (the current one not included). */
  public int attemptsMade() {
    return proto.getAttemptsMade();
  }

  /** The most runs the job may have. */
  public int maxAttempts() {
    return proto.getMaxAttempts();
  }

  /** How often the job was recovered from a lost worker. */
  public int stalledCount() {
    return proto.getStalledCount();
  }

  /** The data's bytes (JSON text for JSON data); null when the job has none. */
  public byte[] data() {
    return data == null ? null : data.clone();
  }

  /** The data's content type ({@code application/json} for JSON); null when the job has none. */
  public String contentType() {
    return contentType;
  }

  /** The data's JSON text; null when the job has none. */
  public String dataJson() {
    return jsonText(data, contentType, "the job's data");
  }

  /** The JSON data decoded by Gson into a class. */
  public <T> T data(Class<T> type) {
    return Payloads.decode(data, contentType, type, "the job's data");
  }

  /** The JSON data decoded by Gson into {@code type} (a {@code TypeToken}'s type, for generics). */
  public <T> T data(Type type) {
    return Payloads.decode(data, contentType, type, "the job's data");
  }

  /** The result's bytes; null before completion or when the processor returned null. */
  public byte[] result() {
    return result == null ? null : result.clone();
  }

  public String resultContentType() {
    return resultContentType;
  }

  /** The result's JSON text; null when there is none. */
  public String resultJson() {
    return jsonText(result, resultContentType, "the job's result");
  }

  /** The JSON result decoded by Gson into a class. */
  public <T> T result(Class<T> type) {
    return Payloads.decode(result, resultContentType, type, "the job's result");
  }

  /** The JSON result decoded by Gson into {@code type} (a {@code TypeToken}'s type, for generics). */
  public <T> T result(Type type) {
    return Payloads.decode(result, resultContentType, type, "the job's result");
  }

  /** The last failure's message; "" when none. */
  public String failedReason() {
    return proto.getFailedReason();
  }

  /** The last failure's stack trace; "" when none. */
  public String stacktrace() {
    return proto.getStacktrace();
  }

  /** The last progress reported, as JSON text; null when none was. */
  public String progressJson() {
    return proto.hasProgress() ? Payloads.valueJson(proto.getProgress()) : null;
  }

  public Instant createTime() {
    return Protos.instant(proto.getCreateTime());
  }

  /** When the current or last run started; null before the first. */
  public Instant processTime() {
    return Protos.instant(proto.getProcessTime());
  }

  /** When the job finished; null before. */
  public Instant finishTime() {
    return Protos.instant(proto.getFinishTime());
  }

  /** When a delayed job becomes ready; null when it is not delayed. */
  public Instant runTime() {
    return Protos.instant(proto.getRunTime());
  }

  /** The job's options and metadata as stored. */
  public JobOptions options() {
    return JobOptions.fromProto(proto.getOptions(), proto.getMetadata());
  }

  /** The worker running it, or that ran it last; "" when none. */
  public String workerId() {
    return proto.getWorkerId();
  }

  /** Why it was cancelled; "" when it was not. */
  public String cancelReason() {
    return proto.getCancelReason();
  }

  /** The messages of the job's log lines that came with it (GetJob sends the last ones), oldest first. */
  public List<String> logs() {
    List<String> lines = new ArrayList<>();
    for (Types.JobLogLine line : proto.getLogsList()) {
      lines.add(line.getMessage());
    }
    return Collections.unmodifiableList(lines);
  }

  /**
   * The children the job added at run time ({@link JobContext#waitForChildren}), each with its outcome once
   * finished, in the order they were added over all its waits: what a run after the wait combines.
   */
  public List<ChildJob> children() {
    return ChildJob.of(proto.getChildJobsList());
  }

  /** How many of the children the job added at run time have not finished yet. */
  public int childrenPending() {
    return proto.getChildrenPending();
  }

  /**
   * The external event that ended the job's last {@link JobContext#waitForEvent}; null when it never waited,
   * or when the wait ended without an event ({@link #eventTimedOut()}).
   */
  public ExternalEvent event() {
    return proto.hasEvent() ? new ExternalEvent(proto.getEvent()) : null;
  }

  /** The event keys of the job's last {@link JobContext#waitForEvent}; empty when it never waited. */
  public List<String> eventWaitKeys() {
    return List.copyOf(proto.getEventWait().getKeysList());
  }

  /**
   * Whether the job's last {@link JobContext#waitForEvent} ended with no event: it timed out, or an operator
   * promoted the job.
   */
  public boolean eventTimedOut() {
    return proto.hasEventWait() && !proto.hasEvent();
  }

  /**
   * For an add: whether this call created the job (false when a job id or dedup key answered with an
   * existing job). For a read: false.
   */
  public boolean created() {
    return created;
  }

  private static String jsonText(byte[] body, String contentType, String what) {
    if (body == null) {
      return null;
    }
    if (!Payloads.isJson(contentType)) {
      throw new IllegalStateException(what + " is not JSON but " + contentType + ": read its bytes");
    }
    return new String(body, StandardCharsets.UTF_8);
  }

  Types.Job proto() {
    return proto;
  }

  /** The job's wire form with other data (a checkpoint saved by its run). */
  Types.Job protoWithData(Types.Payload payload) {
    return proto.toBuilder().setData(payload).build();
  }

  @Override
  public String toString() {
    return "Job{" + queue() + "/" + id() + " " + name() + " " + state() + "}";
  }
}
