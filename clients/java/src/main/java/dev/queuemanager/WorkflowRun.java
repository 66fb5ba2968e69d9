package dev.queuemanager;

import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import queue_manager.v1.Workflows;

/** One execution of a {@link Workflow}: where it is and, from {@link QueueManager#getWorkflow}, its steps. */
public final class WorkflowRun {
  /** Where a run is. */
  public enum State {
    /** Some step is pending a decision, waiting or running. */
    RUNNING,
    /** Every step that started has finished, and none failed for good. */
    COMPLETED,
    /** Every step that started has finished, and at least one failed for good. */
    FAILED,
    /** Cancelled: no further step starts. */
    CANCELLED;

    static State fromProto(Workflows.WorkflowState wire) {
      switch (wire) {
        case WORKFLOW_STATE_RUNNING:
          return RUNNING;
        case WORKFLOW_STATE_COMPLETED:
          return COMPLETED;
        case WORKFLOW_STATE_FAILED:
          return FAILED;
        case WORKFLOW_STATE_CANCELLED:
          return CANCELLED;
        default:
          return null;
      }
    }
  }

  private final Workflows.WorkflowRun proto;
  private final List<WorkflowStepRun> steps;

  WorkflowRun(Workflows.WorkflowRun proto) {
    this.proto = proto;
    List<WorkflowStepRun> list = new ArrayList<>();
    for (Workflows.WorkflowStepRun s : proto.getStepsList()) {
      list.add(new WorkflowStepRun(s));
    }
    this.steps = List.copyOf(list);
  }

  public String runId() {
    return proto.getRunId();
  }

  /** The id of the workflow definition. */
  public String workflowId() {
    return proto.getWorkflowId();
  }

  public String name() {
    return proto.getName();
  }

  /** Where the run is; null if the server sent a state this client does not know. */
  public State state() {
    return State.fromProto(proto.getState());
  }

  /** Every step in definition order (depth first); empty in {@link QueueManager#listWorkflows} pages. */
  public List<WorkflowStepRun> steps() {
    return steps;
  }

  /** The step of that key; null when the run has none (or this is a page's run, without steps). */
  public WorkflowStepRun step(String key) {
    for (WorkflowStepRun s : steps) {
      if (s.key().equals(key)) {
        return s;
      }
    }
    return null;
  }

  /** How many steps the run has. */
  public int stepCount() {
    return proto.getStepCount();
  }

  /** How many steps have finished (completed, failed, skipped or cancelled). */
  public int finishedStepCount() {
    return proto.getFinishedStepCount();
  }

  public String correlationId() {
    return proto.getMetadata().getCorrelationId();
  }

  public Instant createTime() {
    return Protos.instant(proto.getCreateTime());
  }

  /** When the run finished; null while it runs. */
  public Instant finishTime() {
    return Protos.instant(proto.getFinishTime());
  }

  /** Why the run was cancelled; "" when it was not. */
  public String cancelReason() {
    return proto.getCancelReason();
  }

  @Override
  public String toString() {
    return "WorkflowRun{" + runId() + " " + state() + "}";
  }
}
