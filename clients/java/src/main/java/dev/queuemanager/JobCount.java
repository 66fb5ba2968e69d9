package dev.queuemanager;

/** How many jobs of a state match a filter ({@link QueueManager#countJobs}). */
public final class JobCount {
  private final long count;
  private final String nextPageToken;
  private final int calls;

  JobCount(long count, String nextPageToken, int calls) {
    this.count = count;
    this.nextPageToken = nextPageToken;
    this.calls = calls;
  }

  /** The matches counted. */
  public long count() {
    return count;
  }

  /** Where counting would go on (the next count's page token); "" once the whole state was read. */
  public String nextPageToken() {
    return nextPageToken;
  }

  /** The ListJobs calls made. */
  public int calls() {
    return calls;
  }

  /** Whether the whole state was read, so that {@link #count()} is every match (as of the reads). */
  public boolean complete() {
    return nextPageToken.isEmpty();
  }
}
