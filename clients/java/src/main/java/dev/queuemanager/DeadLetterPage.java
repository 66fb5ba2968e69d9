package dev.queuemanager;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

/** One page of {@link QueueManager#listDeadLetters}. */
public final class DeadLetterPage {
  private final List<DeadLetter> deadLetters;
  private final String nextPageToken;
  private final long total;

  DeadLetterPage(JobPage page) {
    List<DeadLetter> out = new ArrayList<>();
    for (Job job : page.jobs()) {
      DeadLetter copy = DeadLetter.fromJob(job);
      if (copy != null) {
        out.add(copy);
      }
    }
    this.deadLetters = Collections.unmodifiableList(out);
    this.nextPageToken = page.nextPageToken();
    this.total = page.total();
  }

  /** The copies of this page; jobs of the queue that are not copies are left out. */
  public List<DeadLetter> deadLetters() {
    return deadLetters;
  }

  /** The token that asks for the next page; "" on the last page. */
  public String nextPageToken() {
    return nextPageToken;
  }

  /** Whether there is a next page (the token is not ""). */
  public boolean hasNextPage() {
    return !nextPageToken.isEmpty();
  }

  /** How many jobs (copies or not) were in the state when the page was read. */
  public long total() {
    return total;
  }
}
