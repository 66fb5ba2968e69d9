package dev.queuemanager;

import java.util.List;

/** One page of {@link QueueManager#listWorkflows}: runs newest first, without their steps. */
public final class WorkflowPage {
  private final List<WorkflowRun> runs;
  private final String nextPageToken;
  private final long total;

  WorkflowPage(List<WorkflowRun> runs, String nextPageToken, long total) {
    this.runs = List.copyOf(runs);
    this.nextPageToken = nextPageToken;
    this.total = total;
  }

  /** The runs of this page, newest first ({@link QueueManager#getWorkflow} has their steps). */
  public List<WorkflowRun> runs() {
    return runs;
  }

  /** The token that asks for the next page; "" on the last page. */
  public String nextPageToken() {
    return nextPageToken;
  }

  /** How many runs the server keeps. */
  public long total() {
    return total;
  }
}
