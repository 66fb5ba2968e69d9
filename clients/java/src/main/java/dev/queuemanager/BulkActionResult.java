package dev.queuemanager;

/**
 * What one bounded bulk call ({@link QueueManager#retryJobs}, {@link QueueManager#cancelJobs} or {@link
 * QueueManager#removeJobs}) did.
 */
public final class BulkActionResult {
  private final long count;
  private final long requested;
  private final String nextPageToken;

  BulkActionResult(long count, long requested, String nextPageToken) {
    this.count = count;
    this.requested = requested;
    this.nextPageToken = nextPageToken;
  }

  /** The jobs retried, cancelled or removed. */
  public long count() {
    return count;
  }

  /**
   * For {@link QueueManager#cancelJobs}: the active jobs whose workers were told to stop them (each ends
   * cancelled when its run stops); 0 for the other calls.
   */
  public long requested() {
    return requested;
  }

  /**
   * Where the next call continues ({@link BulkOptions.Builder#pageToken}); "" once the whole state was read,
   * and only then is the action complete.
   */
  public String nextPageToken() {
    return nextPageToken;
  }

  /** Whether the whole state was read (the token is ""). */
  public boolean complete() {
    return nextPageToken.isEmpty();
  }
}
