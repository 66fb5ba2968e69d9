package dev.queuemanager;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import queue_manager.v1.Jobs;
import queue_manager.v1.Types;

/** One page of {@link QueueManager#listJobs} or {@link QueueManager#listJobsMatching}. */
public final class JobPage {
  private final List<Job> jobs;
  private final String nextPageToken;
  private final long total;

  JobPage(Jobs.ListJobsResponse resp) {
    List<Job> out = new ArrayList<>();
    for (Types.Job job : resp.getJobsList()) {
      out.add(new Job(job, false));
    }
    this.jobs = Collections.unmodifiableList(out);
    this.nextPageToken = resp.getNextPageToken();
    this.total = resp.getTotalSize();
  }

  /**
   * The jobs of this page: waiting ones by priority then age, delayed ones by run time, active ones by
   * lease, finished ones newest first.
   */
  public List<Job> jobs() {
    return jobs;
  }

  /** The token that asks for the next page; "" on the last page. */
  public String nextPageToken() {
    return nextPageToken;
  }

  /** Whether there is a next page (the token is not ""). */
  public boolean hasNextPage() {
    return !nextPageToken.isEmpty();
  }

  /** How many jobs were in the state when the page was read, matching a filter or not. */
  public long total() {
    return total;
  }
}
