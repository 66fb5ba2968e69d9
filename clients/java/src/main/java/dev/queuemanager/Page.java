package dev.queuemanager;

import java.util.List;

/**
 * One page of a listing: {@link QueueManager#listJobs} and {@link QueueManager#listJobsMatching} (jobs),
 * {@link QueueManager#listDeadLetters} (dead-letter copies), {@link QueueManager#getJobLogs} (log lines),
 * {@link QueueManager#listGroups} (fairness groups) and {@link QueueManager#listWorkflows} (runs). The
 * token of one page asks for the next; each listing's documentation says its order and what {@link
 * #total()} counts.
 *
 * @param <T> what the listing lists
 */
public final class Page<T> {
  private final List<T> items;
  private final String nextPageToken;
  private final long total;

  Page(List<T> items, String nextPageToken, long total) {
    this.items = List.copyOf(items);
    this.nextPageToken = nextPageToken;
    this.total = total;
  }

  /** What this page lists, in the listing's order. */
  public List<T> items() {
    return items;
  }

  /** The token that asks for the next page; "" on the last page. */
  public String nextPageToken() {
    return nextPageToken;
  }

  /** Whether there is a next page (the token is not ""). */
  public boolean hasNextPage() {
    return !nextPageToken.isEmpty();
  }

  /** How many there were to list when the page was read (see the listing's documentation). */
  public long total() {
    return total;
  }
}
