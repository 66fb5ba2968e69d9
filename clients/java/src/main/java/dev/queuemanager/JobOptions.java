package dev.queuemanager;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import queue_manager.v1.Types;

/**
 * A job's settings (docs/api.md, "Job options"); what is left unset takes the queue's defaults. Build with
 * {@link #builder()}; {@link Job#options()} reads them back as the server stored them.
 */
public final class JobOptions {
  private final JobPriority priority;
  private final Duration delay;
  private final int attempts;
  private final Backoff backoff;
  private final String jobId;
  private final Dedup dedup;
  private final Duration timeout;
  private final boolean lifo;
  private final String correlationId;
  private final List<String> tags;
  private final Map<String, String> attributes;

  private JobOptions(Builder b) {
    priority = b.priority;
    delay = b.delay;
    attempts = b.attempts;
    backoff = b.backoff;
    jobId = b.jobId;
    dedup = b.dedup;
    timeout = b.timeout;
    lifo = b.lifo;
    correlationId = b.correlationId;
    tags = Collections.unmodifiableList(new ArrayList<>(b.tags));
    attributes = Collections.unmodifiableMap(new LinkedHashMap<>(b.attributes));
  }

  /** A builder with nothing set. */
  public static Builder builder() {
    return new Builder();
  }

  /** The priority level; null: the queue's default (NORMAL unless it says otherwise). */
  public JobPriority priority() {
    return priority;
  }

  /** How long after the add the job may first run; zero: at once. */
  public Duration delay() {
    return delay;
  }

  /** The most runs, the first included; 0: the queue's default. */
  public int attempts() {
    return attempts;
  }

  /** The delay policy between attempts; null: the queue's default, or none. */
  public Backoff backoff() {
    return backoff;
  }

  /** The caller's id for the job; "" for a random one. */
  public String jobId() {
    return jobId;
  }

  /** The deduplication key; null for none. */
  public Dedup dedup() {
    return dedup;
  }

  /** The longest a run may take; zero: no limit. */
  public Duration timeout() {
    return timeout;
  }

  /** Whether the job goes to the head of its priority level. */
  public boolean lifo() {
    return lifo;
  }

  /** The correlation id; "" for none. */
  public String correlationId() {
    return correlationId;
  }

  /** Free tags. */
  public List<String> tags() {
    return tags;
  }

  /** Free attributes. */
  public Map<String, String> attributes() {
    return attributes;
  }

  Types.JobOptions proto() {
    Types.JobOptions.Builder b = Types.JobOptions.newBuilder();
    if (priority != null) {
      b.setPriority(priority.proto());
    }
    if (!delay.isZero()) {
      b.setDelay(Protos.duration(delay));
    }
    b.setAttempts(attempts);
    if (backoff != null) {
      b.setBackoff(backoff.proto());
    }
    b.setJobId(jobId);
    if (dedup != null) {
      b.setDedup(dedup.proto());
    }
    if (!timeout.isZero()) {
      b.setTimeout(Protos.duration(timeout));
    }
    b.setLifo(lifo);
    if (!correlationId.isEmpty() || !tags.isEmpty() || !attributes.isEmpty()) {
      b.setMetadata(
          Types.JobMetadata.newBuilder()
              .setCorrelationId(correlationId)
              .addAllTags(tags)
              .putAllAttributes(attributes));
    }
    return b.build();
  }

  static JobOptions fromProto(Types.JobOptions o, Types.JobMetadata metadata) {
    Builder b = new Builder();
    b.priority = JobPriority.fromProto(o.getPriority());
    b.delay = Protos.duration(o.getDelay());
    b.attempts = o.getAttempts();
    b.backoff = o.hasBackoff() ? Backoff.fromProto(o.getBackoff()) : null;
    b.jobId = o.getJobId();
    b.dedup = o.hasDedup() ? Dedup.fromProto(o.getDedup()) : null;
    b.timeout = Protos.duration(o.getTimeout());
    b.lifo = o.getLifo();
    // The job's metadata is stored beside its options; the options read back carry it.
    Types.JobMetadata m = o.hasMetadata() ? o.getMetadata() : metadata;
    b.correlationId = m.getCorrelationId();
    b.tags.addAll(m.getTagsList());
    b.attributes.putAll(m.getAttributesMap());
    return new JobOptions(b);
  }

  /** Builds {@link JobOptions}; each setter refuses a value the server would refuse for certain. */
  public static final class Builder {
    private JobPriority priority;
    private Duration delay = Duration.ZERO;
    private int attempts;
    private Backoff backoff;
    private String jobId = "";
    private Dedup dedup;
    private Duration timeout = Duration.ZERO;
    private boolean lifo;
    private String correlationId = "";
    private final List<String> tags = new ArrayList<>();
    private final Map<String, String> attributes = new LinkedHashMap<>();

    private Builder() {}

    /** The priority level. */
    public Builder priority(JobPriority priority) {
      this.priority = priority;
      return this;
    }

    /** Runs the job no earlier than this long after the add. */
    public Builder delay(Duration delay) {
      this.delay = Protos.notNegative(delay, "the delay");
      return this;
    }

    /** The most runs, the first included (BullMQ's meaning: 3 is up to 3 runs). */
    public Builder attempts(int attempts) {
      if (attempts < 1) {
        throw new IllegalArgumentException("attempts must be at least 1, got " + attempts);
      }
      this.attempts = attempts;
      return this;
    }

    /** The delay policy between attempts. */
    public Builder backoff(Backoff backoff) {
      this.backoff = backoff;
      return this;
    }

    /**
     * An idempotency key: adding an id that exists answers with the existing job. Letters, digits and
     * {@code - _ . @ :}, at most 200 characters (the server checks).
     */
    public Builder jobId(String jobId) {
      this.jobId = jobId == null ? "" : jobId;
      return this;
    }

    /** A deduplication key. */
    public Builder dedup(Dedup dedup) {
      this.dedup = dedup;
      return this;
    }

    /** The longest a run may take: then the worker stops it and the attempt fails as timed out. */
    public Builder timeout(Duration timeout) {
      this.timeout = Protos.notNegative(timeout, "the timeout");
      return this;
    }

    /** Puts the job at the head of its priority level instead of the back. */
    public Builder lifo(boolean lifo) {
      this.lifo = lifo;
      return this;
    }

    /** A correlation id that follows a request across systems. */
    public Builder correlationId(String correlationId) {
      this.correlationId = correlationId == null ? "" : correlationId;
      return this;
    }

    /** Free tags for filtering and display. */
    public Builder tags(String... tags) {
      this.tags.clear();
      Collections.addAll(this.tags, tags);
      return this;
    }

    /** Free string attributes (tenant, trace context…). */
    public Builder attributes(Map<String, String> attributes) {
      this.attributes.clear();
      this.attributes.putAll(attributes);
      return this;
    }

    /** The options. */
    public JobOptions build() {
      return new JobOptions(this);
    }
  }
}
