package dev.queuemanager;

import java.time.Duration;
import java.time.Instant;
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
  private final Instant scheduleTime;
  private final Retention removeOnComplete;
  private final Retention removeOnFail;
  private final int maxStalled;
  private final List<ChainLink> chainTo;
  private final Duration expireAfter;
  private final String group;
  private final Integer errorHistory;
  private final Map<String, String> workerLabels;

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
    scheduleTime = b.scheduleTime;
    removeOnComplete = b.removeOnComplete;
    removeOnFail = b.removeOnFail;
    maxStalled = b.maxStalled;
    chainTo = Collections.unmodifiableList(new ArrayList<>(b.chainTo));
    expireAfter = b.expireAfter;
    group = b.group;
    errorHistory = b.errorHistory;
    workerLabels = Collections.unmodifiableMap(new LinkedHashMap<>(b.workerLabels));
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

  /**
   * When the job may first run, as given; null: after {@link #delay()}. The server keeps it as the job's
   * {@link Job#runTime()}, so options read back from it have none.
   */
  public Instant scheduleTime() {
    return scheduleTime;
  }

  /** How the job is kept once completed; null: the queue's default. */
  public Retention removeOnComplete() {
    return removeOnComplete;
  }

  /** How the job is kept once failed for good; null: the queue's default. */
  public Retention removeOnFail() {
    return removeOnFail;
  }

  /** How many times the job may be recovered from a lost worker before it fails; 0: the queue's default. */
  public int maxStalled() {
    return maxStalled;
  }

  /** The jobs that run one after another once this one completes. */
  public List<ChainLink> chainTo() {
    return chainTo;
  }

  /** How long after it is ready the job may still start; zero: the queue's default (never expires). */
  public Duration expireAfter() {
    return expireAfter;
  }

  /** The fairness group; "" for none (a routing group "labels:…" when read back with worker labels). */
  public String group() {
    return group;
  }

  /** How many failed runs the job keeps in its error history; null: the queue's default, else 10. */
  public Integer errorHistory() {
    return errorHistory;
  }

  /** The labels a worker must have to run the job. */
  public Map<String, String> workerLabels() {
    return workerLabels;
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
    if (scheduleTime != null) {
      b.setScheduleTime(Protos.timestamp(scheduleTime));
    }
    if (removeOnComplete != null) {
      b.setRemoveOnComplete(removeOnComplete.proto());
    }
    if (removeOnFail != null) {
      b.setRemoveOnFail(removeOnFail.proto());
    }
    b.setMaxStalled(maxStalled);
    for (ChainLink link : chainTo) {
      b.addChainTo(link.proto());
    }
    if (!expireAfter.isZero()) {
      b.setExpireAfter(Protos.duration(expireAfter));
    }
    b.setGroup(group);
    if (errorHistory != null) {
      b.setErrorHistory(errorHistory);
    }
    b.putAllWorkerLabels(workerLabels);
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
    b.scheduleTime = Protos.instant(o.getScheduleTime());
    b.removeOnComplete = o.hasRemoveOnComplete() ? new Retention(o.getRemoveOnComplete()) : null;
    b.removeOnFail = o.hasRemoveOnFail() ? new Retention(o.getRemoveOnFail()) : null;
    b.maxStalled = o.getMaxStalled();
    for (Types.ChainLink link : o.getChainToList()) {
      b.chainTo.add(ChainLink.fromProto(link));
    }
    b.expireAfter = Protos.duration(o.getExpireAfter());
    b.group = o.getGroup();
    b.errorHistory = o.hasErrorHistory() ? o.getErrorHistory() : null;
    b.workerLabels.putAll(o.getWorkerLabelsMap());
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
    private Instant scheduleTime;
    private Retention removeOnComplete;
    private Retention removeOnFail;
    private int maxStalled;
    private final List<ChainLink> chainTo = new ArrayList<>();
    private Duration expireAfter = Duration.ZERO;
    private String group = "";
    private Integer errorHistory;
    private final Map<String, String> workerLabels = new LinkedHashMap<>();

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

    /**
     * Runs the job no earlier than this time (a time past runs it at once). Not with {@link #delay}: the
     * server refuses the two together.
     */
    public Builder scheduleTime(Instant at) {
      this.scheduleTime = at;
      return this;
    }

    /** How the job is kept once completed ({@link Retention#removeAtOnce()}: not kept); null: the queue's. */
    public Builder removeOnComplete(Retention retention) {
      this.removeOnComplete = retention;
      return this;
    }

    /** How the job is kept once failed for good; null: the queue's. */
    public Builder removeOnFail(Retention retention) {
      this.removeOnFail = retention;
      return this;
    }

    /** How many times the job may be recovered from a lost worker before it fails; 0: the queue's default. */
    public Builder maxStalled(int maxStalled) {
      if (maxStalled < 0) {
        throw new IllegalArgumentException("maxStalled must not be negative, got " + maxStalled);
      }
      this.maxStalled = maxStalled;
      return this;
    }

    /**
     * Jobs to run one after another once this one completes: the first is added when this job completes,
     * the next when that one completes, and so on; a link that fails for good stops the chain. Each link's
     * job has its predecessor as its parent. At most 100 links (the server checks).
     */
    public Builder chainTo(ChainLink... links) {
      this.chainTo.clear();
      for (ChainLink link : links) {
        if (link == null) {
          throw new IllegalArgumentException("a chain link is null");
        }
        this.chainTo.add(link);
      }
      return this;
    }

    /**
     * The job's expiry: not started within this long of being ready to run (its add, or its run time when
     * delayed or scheduled), it is not run but ends cancelled, its cancel reason starting "expired: ". Whole
     * milliseconds, 1 ms to 365 days (the server checks); zero: the queue's default.
     */
    public Builder expireAfter(Duration expireAfter) {
      this.expireAfter = Protos.notNegative(expireAfter, "expireAfter");
      return this;
    }

    /**
     * The fairness group (a tenant, a customer): the ready jobs of different groups take turns, so one
     * group's flood does not hold back the others. 1 to 128 characters, not starting with "labels:" (the
     * server checks); not with {@link #workerLabels}, nor in a queue's default options.
     */
    public Builder group(String group) {
      this.group = group == null ? "" : group;
      return this;
    }

    /** How many failed runs the job keeps in its error history, 0 to 100 (the server checks the top). */
    public Builder errorHistory(int errorHistory) {
      if (errorHistory < 0) {
        throw new IllegalArgumentException("errorHistory must not be negative, got " + errorHistory);
      }
      this.errorHistory = errorHistory;
      return this;
    }

    /**
     * Labels a worker must have to run the job (hard routing): it goes only to a worker whose labels hold
     * every one of these pairs, and waits until one connects. At most 16 pairs (the server checks the
     * form); not with {@link #group}, nor in a queue's default options.
     */
    public Builder workerLabels(Map<String, String> labels) {
      this.workerLabels.clear();
      this.workerLabels.putAll(labels);
      return this;
    }

    /** The options. */
    public JobOptions build() {
      return new JobOptions(this);
    }
  }
}
