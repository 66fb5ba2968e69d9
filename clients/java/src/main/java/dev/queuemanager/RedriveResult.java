package dev.queuemanager;

import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import queue_manager.v1.QueueServiceOuterClass;

/** What {@link QueueManager#redriveDeadLetters} did. */
public final class RedriveResult {
  private final long count;
  private final Map<String, RedrivenQueue> queues;
  private final Map<String, String> skipped;
  private final List<String> missingQueues;

  RedriveResult(QueueServiceOuterClass.RedriveDeadLettersResponse resp) {
    this.count = resp.getCount();
    Map<String, RedrivenQueue> byQueue = new LinkedHashMap<>();
    for (QueueServiceOuterClass.RedrivenQueue q : resp.getQueuesList()) {
      byQueue.put(q.getQueueName(), new RedrivenQueue(q));
    }
    this.queues = Collections.unmodifiableMap(byQueue);
    Map<String, String> skips = new LinkedHashMap<>();
    for (QueueServiceOuterClass.RedriveSkip s : resp.getSkippedList()) {
      skips.put(s.getJobId(), s.getReason());
    }
    this.skipped = Collections.unmodifiableMap(skips);
    this.missingQueues = List.copyOf(resp.getMissingQueuesList());
  }

  /** The copies sent back in all. */
  public long count() {
    return count;
  }

  /** The copies sent back per original queue, by queue name. */
  public Map<String, RedrivenQueue> queues() {
    return queues;
  }

  /** Each named copy that stays in the dead-letter queue, and why. */
  public Map<String, String> skipped() {
    return skipped;
  }

  /** Original queues no longer registered: their copies stay. */
  public List<String> missingQueues() {
    return missingQueues;
  }
}
