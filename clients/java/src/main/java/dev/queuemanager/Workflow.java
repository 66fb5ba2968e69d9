package dev.queuemanager;

import java.util.Arrays;
import java.util.Map;
import queue_manager.v1.Workflows;

/**
 * A graph of steps, each a job; each execution of it ({@link QueueManager#executeWorkflow}) is a run
 * (docs/flows.md). Make one with {@link #builder}.
 */
public final class Workflow {
  private final Workflows.Workflow proto;

  private Workflow(Workflows.Workflow proto) {
    this.proto = proto;
  }

  /** A workflow whose definition is named {@code id} (free text, for grouping runs; may be ""). */
  public static Builder builder(String id) {
    return new Builder(id);
  }

  Workflows.Workflow proto() {
    return proto;
  }

  /** Builds a {@link Workflow}. */
  public static final class Builder {
    private final Workflows.Workflow.Builder b = Workflows.Workflow.newBuilder();
    private final Workflows.WorkflowMetadata.Builder metadata = Workflows.WorkflowMetadata.newBuilder();

    private Builder(String id) {
      b.setId(id == null ? "" : id);
    }

    /** The display name. */
    public Builder name(String name) {
      b.setName(name);
      return this;
    }

    /** Root steps: they start at once unless they name {@code dependsOn}. 1 to 1,000 steps in all. */
    public Builder steps(WorkflowStep... steps) {
      for (WorkflowStep s : steps) {
        b.addSteps(s.proto());
      }
      return this;
    }

    /** A correlation id to follow a request across systems; also set on every step's job. */
    public Builder correlationId(String correlationId) {
      metadata.setCorrelationId(correlationId);
      return this;
    }

    /** Who started the run. */
    public Builder createdBy(String createdBy) {
      metadata.setCreatedBy(createdBy);
      return this;
    }

    /** Free tags. */
    public Builder tags(String... tags) {
      metadata.addAllTags(Arrays.asList(tags));
      return this;
    }

    /** A free string map copied into every step's job (a step's own attributes win). */
    public Builder attributes(Map<String, String> attributes) {
      metadata.putAllAttributes(attributes);
      return this;
    }

    /** The workflow. */
    public Workflow build() {
      return new Workflow(b.setMetadata(metadata).build());
    }
  }
}
