package dev.queuemanager;

/** What {@link QueueManager#executeWorkflow} did: the run's id, and whether this call started it. */
public final class WorkflowExecution {
  private final String runId;
  private final boolean created;

  WorkflowExecution(String runId, boolean created) {
    this.runId = runId;
    this.created = created;
  }

  /** The run's id, for {@link QueueManager#getWorkflow} and the other run calls. */
  public String runId() {
    return runId;
  }

  /** False when a run of the given run id existed already: nothing was started. */
  public boolean created() {
    return created;
  }
}
