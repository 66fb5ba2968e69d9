package dev.queuemanager;

import java.util.ArrayList;
import java.util.List;
import queue_manager.v1.Types;

/**
 * Names a job: its queue and id.
 *
 * @param queue the job's queue
 * @param id the job's id
 */
public record JobRef(String queue, String id) {
  static List<JobRef> of(List<Types.JobRef> refs) {
    List<JobRef> out = new ArrayList<>();
    for (Types.JobRef r : refs) {
      out.add(new JobRef(r.getQueueName(), r.getJobId()));
    }
    return List.copyOf(out);
  }

  @Override
  public String toString() {
    return queue + "/" + id;
  }
}
