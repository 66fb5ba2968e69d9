package dev.queuemanager;

import java.time.Instant;
import queue_manager.v1.Jobs;

/**
 * Picks jobs by what they are ({@link QueueManager#listJobsMatching}, {@link QueueManager#countJobs} and the
 * bulk calls through {@link BulkOptions}): a job matches when it matches every condition set, and a filter
 * that sets none ({@link #ALL}) matches every job. The server checks the conditions and refuses a bad one
 * with {@link InvalidArgumentException} naming the field ({@code filter.name}…). It keeps no index for a
 * filter: each call reads at most a few thousand jobs of the state, so a filtered page may hold fewer jobs
 * than asked, or none, and still carry a token; the listing is complete only when the token comes back "".
 */
public final class JobFilter {
  /** The filter that sets no condition: every job matches. */
  public static final JobFilter ALL = builder().build();

  private final String name;
  private final String group;
  private final String tag;
  private final String correlationId;
  private final Instant createdAfter;
  private final Instant createdBefore;

  private JobFilter(Builder b) {
    this.name = b.name;
    this.group = b.group;
    this.tag = b.tag;
    this.correlationId = b.correlationId;
    this.createdAfter = b.createdAfter;
    this.createdBefore = b.createdBefore;
  }

  public static Builder builder() {
    return new Builder();
  }

  /** The job name, exact, or a prefix when it ends with {@code *}; "" for any name. */
  public String name() {
    return name;
  }

  /** The fairness group, exact; "" for any. */
  public String group() {
    return group;
  }

  /** A tag the job's metadata holds, exact; "" for any. */
  public String tag() {
    return tag;
  }

  /** The job's correlation id, exact; "" for any. */
  public String correlationId() {
    return correlationId;
  }

  /** Only jobs created at or after this time; null for no bound. */
  public Instant createdAfter() {
    return createdAfter;
  }

  /** Only jobs created before this time; null for no bound. */
  public Instant createdBefore() {
    return createdBefore;
  }

  /** The filter for the wire; null when it sets no condition, so the request carries none. */
  Jobs.JobFilter proto() {
    Jobs.JobFilter.Builder b =
        Jobs.JobFilter.newBuilder()
            .setName(name)
            .setGroup(group)
            .setTag(tag)
            .setCorrelationId(correlationId);
    if (createdAfter != null) {
      b.setCreatedAfter(Protos.timestamp(createdAfter));
    }
    if (createdBefore != null) {
      b.setCreatedBefore(Protos.timestamp(createdBefore));
    }
    Jobs.JobFilter out = b.build();
    return out.equals(Jobs.JobFilter.getDefaultInstance()) ? null : out;
  }

  /** Builds a {@link JobFilter}; a condition left unset (or set to "" or null) is no condition. */
  public static final class Builder {
    private String name = "";
    private String group = "";
    private String tag = "";
    private String correlationId = "";
    private Instant createdAfter;
    private Instant createdBefore;

    private Builder() {}

    /** The name: exact ({@code "send-email"}), or a prefix when it ends with {@code *} ({@code "send-*"}). */
    public Builder name(String name) {
      this.name = name == null ? "" : name;
      return this;
    }

    /** The fairness group, exact. */
    public Builder group(String group) {
      this.group = group == null ? "" : group;
      return this;
    }

    /** A tag the job's metadata holds, exact. */
    public Builder tag(String tag) {
      this.tag = tag == null ? "" : tag;
      return this;
    }

    /** The job's correlation id, exact. */
    public Builder correlationId(String correlationId) {
      this.correlationId = correlationId == null ? "" : correlationId;
      return this;
    }

    /** Keeps the jobs created at or after this time. */
    public Builder createdAfter(Instant createdAfter) {
      this.createdAfter = createdAfter;
      return this;
    }

    /** Keeps the jobs created before this time; it must come after {@link #createdAfter}. */
    public Builder createdBefore(Instant createdBefore) {
      this.createdBefore = createdBefore;
      return this;
    }

    public JobFilter build() {
      return new JobFilter(this);
    }
  }
}
