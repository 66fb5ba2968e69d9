package dev.queuemanager;

import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParseException;
import com.google.gson.JsonParser;
import java.lang.reflect.Type;
import java.nio.charset.StandardCharsets;
import java.time.Instant;
import java.util.Base64;
import java.util.Locale;

/**
 * A dead-letter copy ({@link QueueManager#listDeadLetters}), read as what it says about the job that failed:
 * its queue, id, name, data and why it failed.
 */
public final class DeadLetter {
  // The fields every copy's data holds as text, as the server writes them.
  private static final String[] COPY_FIELDS = {
    "original_queue", "original_job_id", "original_name", "original_content_type"
  };

  private final String id;
  private final JobState state;
  private final String originalQueue;
  private final String originalJobId;
  private final String originalName;
  private final byte[] originalData;
  private final String originalContentType;
  private final String failureReason;
  private final int attemptsMade;
  private final Instant deadTime;

  private DeadLetter(Job copy, JsonObject body, byte[] data, String contentType) {
    this.id = copy.id();
    this.state = copy.state();
    this.originalQueue = body.get("original_queue").getAsString();
    this.originalJobId = body.get("original_job_id").getAsString();
    this.originalName = body.get("original_name").getAsString();
    this.originalData = data;
    this.originalContentType = contentType;
    JsonElement reason = body.get("failure_reason");
    this.failureReason = reason == null || !reason.isJsonPrimitive() ? "" : reason.getAsString();
    JsonElement attempts = body.get("attempts_made");
    this.attemptsMade = attempts == null || !attempts.isJsonPrimitive() ? 0 : attempts.getAsInt();
    this.deadTime = copy.createTime();
  }

  /**
   * Reads a job of a dead-letter queue as the copy it is, as the other clients read it; null for a job that
   * is not a copy (added to the queue directly, or its data edited out of shape).
   */
  public static DeadLetter fromJob(Job job) {
    if (job == null || job.data() == null || !Payloads.isJson(job.contentType())) {
      return null;
    }
    try {
      JsonElement parsed = JsonParser.parseString(job.dataJson());
      if (!parsed.isJsonObject()) {
        return null;
      }
      JsonObject body = parsed.getAsJsonObject();
      for (String field : COPY_FIELDS) {
        if (!body.has(field) || !body.get(field).isJsonPrimitive()) {
          return null;
        }
      }
      JsonElement original = body.get("original_data");
      if (original == null) {
        return null;
      }
      String contentType = body.get("original_content_type").getAsString();
      byte[] data;
      if (Payloads.isJson(contentType.strip().toLowerCase(Locale.ROOT))) {
        data = Payloads.GSON.toJson(original).getBytes(StandardCharsets.UTF_8);
      } else {
        // Bytes travel as base64 in the copy's JSON.
        data = Base64.getDecoder().decode(original.getAsString());
      }
      return new DeadLetter(job, body, data, contentType);
    } catch (JsonParseException
        | IllegalStateException
        | UnsupportedOperationException
        | IllegalArgumentException e) {
      // Data edited out of a copy's shape (a field of another type, bytes that are not base64).
      return null;
    }
  }

  /** The copy's id in the dead-letter queue ({@code <original queue>:<job id>}), as a redrive names it. */
  public String id() {
    return id;
  }

  /** The copy's state in the dead-letter queue (waiting until something consumes or redrives it). */
  public JobState state() {
    return state;
  }

  /** The queue the job failed in. */
  public String originalQueue() {
    return originalQueue;
  }

  /** The job's id in its queue. */
  public String originalJobId() {
    return originalJobId;
  }

  /** The job's name. */
  public String originalName() {
    return originalName;
  }

  /** The job's data: its JSON text's bytes when {@link #originalContentType()} is JSON, else its bytes. */
  public byte[] originalData() {
    return originalData.clone();
  }

  /** The job's content type. */
  public String originalContentType() {
    return originalContentType;
  }

  /** The job's JSON data decoded by Gson into {@code type}. */
  public <T> T originalData(Type type) {
    return Payloads.decode(originalData, originalContentType, type, "the dead job's data");
  }

  /** The error of the job's last run: why it is dead. */
  public String failureReason() {
    return failureReason;
  }

  /** The runs it had. */
  public int attemptsMade() {
    return attemptsMade;
  }

  /** When the copy was written (the job failed for good just before). */
  public Instant deadTime() {
    return deadTime;
  }

  @Override
  public String toString() {
    return "DeadLetter{" + id + " " + originalName + ": " + failureReason + "}";
  }
}
