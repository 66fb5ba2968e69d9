package dev.queuemanager;

import java.nio.charset.StandardCharsets;
import java.util.List;
import queue_manager.v1.Workflows;

/** One step of a {@link WorkflowRun}. */
public final class WorkflowStepRun {
  /** Where a step is. */
  public enum State {
    /** Not started yet; it may still start. */
    PENDING,
    /** Its job exists and has not finished. */
    STARTED,
    /** Its job completed. */
    COMPLETED,
    /** Its job failed for good. */
    FAILED,
    /** It will never run: its branch was not taken, a condition failed, or a step it waits for failed. */
    SKIPPED,
    /** The run was cancelled before the step finished. */
    CANCELLED;

    static State fromProto(Workflows.WorkflowStepState wire) {
      switch (wire) {
        case WORKFLOW_STEP_STATE_PENDING:
          return PENDING;
        case WORKFLOW_STEP_STATE_STARTED:
          return STARTED;
        case WORKFLOW_STEP_STATE_COMPLETED:
          return COMPLETED;
        case WORKFLOW_STEP_STATE_FAILED:
          return FAILED;
        case WORKFLOW_STEP_STATE_SKIPPED:
          return SKIPPED;
        case WORKFLOW_STEP_STATE_CANCELLED:
          return CANCELLED;
        default:
          return null;
      }
    }
  }

  private final Workflows.WorkflowStepRun proto;
  private final byte[] result;
  private final String resultContentType;

  WorkflowStepRun(Workflows.WorkflowStepRun proto) {
    this.proto = proto;
    this.result = proto.hasResult() ? Payloads.body(proto.getResult()) : null;
    this.resultContentType = proto.hasResult() ? Payloads.contentType(proto.getResult()) : null;
  }

  public String key() {
    return proto.getKey();
  }

  /** The queue of the step's job. */
  public String queue() {
    return proto.getQueueName();
  }

  /** The name of the step's job. */
  public String jobName() {
    return proto.getJobName();
  }

  /** The step's job, once started; "" before. */
  public String jobId() {
    return proto.getJobId();
  }

  /** Where the step is; null if the server sent a state this client does not know. */
  public State state() {
    return State.fromProto(proto.getState());
  }

  /** The key of the step whose onSuccess or onFailure holds this one; "" for a root step. */
  public String parentKey() {
    return proto.getParentKey();
  }

  /** The keys this step waits for. */
  public List<String> dependsOn() {
    return List.copyOf(proto.getDependsOnList());
  }

  /** Why it failed, was skipped or cancelled; "" otherwise. */
  public String error() {
    return proto.getError();
  }

  /** The result's bytes once completed; null before, or when the job returned none. */
  public byte[] result() {
    return result == null ? null : result.clone();
  }

  public String resultContentType() {
    return resultContentType;
  }

  /** The result's JSON text; null when there is none. */
  public String resultJson() {
    if (result == null) {
      return null;
    }
    if (!Payloads.isJson(resultContentType)) {
      throw new IllegalStateException("the step's result is not JSON but " + resultContentType);
    }
    return new String(result, StandardCharsets.UTF_8);
  }

  /** The JSON result decoded by Gson into a class. */
  public <T> T result(Class<T> type) {
    return Payloads.decode(result, resultContentType, type, "the step's result");
  }
}
