package dev.queuemanager;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import queue_manager.v1.Types;
import queue_manager.v1.Workflows;

/** One job of a {@link Workflow} and the steps that follow it; make one with {@link #builder}. */
public final class WorkflowStep {
  private final Workflows.WorkflowStep proto;

  private WorkflowStep(Workflows.WorkflowStep proto) {
    this.proto = proto;
  }

  /** A step adding a job named {@code jobName} to {@code queue} (registered), with no data yet. */
  public static Builder builder(String queue, String jobName) {
    return new Builder(queue, jobName);
  }

  Workflows.WorkflowStep proto() {
    return proto;
  }

  /** Builds a {@link WorkflowStep}. */
  public static final class Builder {
    private final Workflows.WorkflowStep.Builder b = Workflows.WorkflowStep.newBuilder();

    private Builder(String queue, String jobName) {
      b.setQueueName(queue == null ? "" : queue).setJobName(jobName == null ? "" : jobName);
    }

    /**
     * The step's key, unique within the workflow (1 to 64 letters, digits, {@code -} or {@code _}); unset,
     * its position ("0", "0.s0"…). Name a step to refer to it in {@link #dependsOn} and conditions.
     */
    public Builder key(String key) {
      b.setKey(key);
      return this;
    }

    /** The job's data, as {@link QueueManager#addJob} takes it. */
    public Builder data(Object data) {
      Types.Payload payload = Payloads.encode(data);
      if (payload == null) {
        b.clearData();
      } else {
        b.setData(payload);
      }
      return this;
    }

    /** The job's options (no job id, chain or dedup: the run names the step's job). */
    public Builder options(JobOptions options) {
      b.setOptions(options.proto());
      return this;
    }

    /** Steps that start when this one completes. */
    public Builder onSuccess(WorkflowStep... steps) {
      for (WorkflowStep s : steps) {
        b.addOnSuccess(s.proto);
      }
      return this;
    }

    /** Steps that start when this one fails for good (after all its attempts). */
    public Builder onFailure(WorkflowStep... steps) {
      for (WorkflowStep s : steps) {
        b.addOnFailure(s.proto);
      }
      return this;
    }

    /** Keys of steps that must all complete before this one starts (fan-in). */
    public Builder dependsOn(String... keys) {
      b.addAllDependsOn(Arrays.asList(keys));
      return this;
    }

    /**
     * Conditions (at most 16) checked once the step is due: it runs only if every one holds; otherwise it
     * is skipped (its error says which failed), and so is everything that would only run after it.
     */
    public Builder runIf(StepCondition... conditions) {
      List<Workflows.StepCondition> list = new ArrayList<>();
      for (StepCondition c : conditions) {
        list.add(c.proto());
      }
      b.addAllRunIf(list);
      return this;
    }

    /** The step. */
    public WorkflowStep build() {
      return new WorkflowStep(b.build());
    }
  }
}
