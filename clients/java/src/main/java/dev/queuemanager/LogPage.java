package dev.queuemanager;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import queue_manager.v1.Jobs;
import queue_manager.v1.Types;

/** One page of {@link QueueManager#getJobLogs}. */
public final class LogPage {
  private final List<LogLine> lines;
  private final String nextPageToken;
  private final long total;

  LogPage(Jobs.GetJobLogsResponse resp) {
    List<LogLine> out = new ArrayList<>();
    for (Types.JobLogLine line : resp.getLinesList()) {
      out.add(new LogLine(line));
    }
    this.lines = Collections.unmodifiableList(out);
    this.nextPageToken = resp.getNextPageToken();
    this.total = resp.getTotalSize();
  }

  /** The lines of this page, oldest first. */
  public List<LogLine> lines() {
    return lines;
  }

  /** The token that asks for the next page; "" on the last page. */
  public String nextPageToken() {
    return nextPageToken;
  }

  /** Whether there is a next page (the token is not ""). */
  public boolean hasNextPage() {
    return !nextPageToken.isEmpty();
  }

  /** How many lines are kept for the job (its last 1,000). */
  public long total() {
    return total;
  }
}
