package dev.queuemanager;

import java.util.List;

/** What {@link QueueManager#addBulk} did. */
public final class BulkResult {
  private final List<String> jobIds;
  private final long created;
  private final long replaced;

  BulkResult(List<String> jobIds, long created, long replaced) {
    this.jobIds = List.copyOf(jobIds);
    this.created = created;
    this.replaced = replaced;
  }

  /** The jobs' ids in the order they were given (an existing job's where a job id or dedup key was held). */
  public List<String> jobIds() {
    return jobIds;
  }

  /** How many jobs were newly created. */
  public long created() {
    return created;
  }

  /** How many replaced the pending job holding their dedup key ({@link Dedup.Mode#REPLACE}). */
  public long replaced() {
    return replaced;
  }
}
