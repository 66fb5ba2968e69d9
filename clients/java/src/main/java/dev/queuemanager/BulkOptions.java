package dev.queuemanager;

/**
 * Bounds one {@link QueueManager#retryJobs}, {@link QueueManager#cancelJobs} or {@link
 * QueueManager#removeJobs} call: which jobs ({@link #filter()}), how many at most ({@link #limit()}) and
 * where to continue ({@link #pageToken()}). {@link #ALL} acts on every job of the state, up to {@link
 * #MAX_LIMIT}, from the start.
 */
public final class BulkOptions {
  /** The most jobs one bulk call acts on (the server's limit). */
  public static final int MAX_LIMIT = 1000;

  /** Every job of the state, up to {@link #MAX_LIMIT}, from the start. */
  public static final BulkOptions ALL = builder().build();

  private final JobFilter filter;
  private final int limit;
  private final String pageToken;

  private BulkOptions(Builder b) {
    this.filter = b.filter;
    this.limit = b.limit;
    this.pageToken = b.pageToken;
  }

  public static Builder builder() {
    return new Builder();
  }

  /** The jobs acted on ({@link JobFilter#ALL}: every job of the state). */
  public JobFilter filter() {
    return filter;
  }

  /** The most jobs the call acts on, 1 to {@link #MAX_LIMIT}; 0 means {@link #MAX_LIMIT}. */
  public int limit() {
    return limit;
  }

  /** The previous call's {@link BulkActionResult#nextPageToken()}; "" to start. */
  public String pageToken() {
    return pageToken;
  }

  /** Builds {@link BulkOptions}. */
  public static final class Builder {
    private JobFilter filter = JobFilter.ALL;
    private int limit;
    private String pageToken = "";

    private Builder() {}

    /** Only the jobs that match. */
    public Builder filter(JobFilter filter) {
      this.filter = filter == null ? JobFilter.ALL : filter;
      return this;
    }

    /** At most this many jobs, 1 to {@link #MAX_LIMIT} (0: {@link #MAX_LIMIT}). */
    public Builder limit(int limit) {
      if (limit < 0 || limit > MAX_LIMIT) {
        throw new IllegalArgumentException(
            "the limit must be from 1 to " + MAX_LIMIT + " (0 means " + MAX_LIMIT + "), got " + limit);
      }
      this.limit = limit;
      return this;
    }

    /** Continues where the previous call stopped (its {@link BulkActionResult#nextPageToken()}). */
    public Builder pageToken(String pageToken) {
      this.pageToken = pageToken == null ? "" : pageToken;
      return this;
    }

    public BulkOptions build() {
      return new BulkOptions(this);
    }
  }
}
