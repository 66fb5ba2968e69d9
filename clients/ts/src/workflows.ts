/** Workflows (a graph of steps, each a job) and repeatable schedules: their shapes and messages. */
import { create } from "@bufbuild/protobuf";
import { NewJobSchema } from "./gen/queue_manager/v1/jobs_pb.js";
import {
  ScheduleCatchUp,
  ScheduleSchema,
  type Schedule as SchedulePb,
} from "./gen/queue_manager/v1/schedules_pb.js";
import {
  ConditionOperator,
  ConditionSource,
  StepConditionSchema,
  WorkflowMetadataSchema,
  WorkflowSchema,
  WorkflowStepSchema,
  type StepCondition as StepConditionPb,
  type Workflow as WorkflowPb,
  type WorkflowRun as WorkflowRunPb,
  type WorkflowStep as WorkflowStepPb,
} from "./gen/queue_manager/v1/workflows_pb.js";
import {
  decodePayload,
  encodePayload,
  fromDuration,
  fromTimestamp,
  metadataFromProto,
  stateName,
  toDuration,
  toTimestamp,
  toValue,
} from "./convert.js";
import { jobOptionsToProto, uint } from "./options.js";
import type { JobOptions, JobState } from "./types.js";

/** One job of a workflow and the steps that follow it. */
export interface WorkflowStep {
  /** Unique key within the workflow (1 to 64 letters, digits, "-" or "_"); default its position ("0", "0.s0"). */
  key?: string;
  queueName: string;
  jobName: string;
  data?: unknown;
  /** Job options; jobId, chainTo and dedup are not allowed. */
  options?: JobOptions;
  /** Steps that start when this one completes. */
  onSuccess?: WorkflowStep[];
  /** Steps that start when this one fails for good. */
  onFailure?: WorkflowStep[];
  /** Keys of steps that must all complete before this one starts (fan-in). */
  dependsOn?: string[];
  /**
   * Conditions on its predecessors' results (at most 16; see `when`): once due, the step runs only if every
   * one holds; otherwise it is skipped (its `error` says which failed), and so is what would only follow it.
   */
  runIf?: StepCondition[];
}

/** Operators of a `StepCondition`. */
export type ConditionOp = "==" | "!=" | ">" | ">=" | "<" | "<=" | "exists" | "notExists" | "in" | "contains";

/**
 * One condition of a step's `runIf`: a predecessor's result, at a path, compared with a value. Numbers compare
 * as numbers, strings as strings; values of different types, or a path that leads nowhere, make it false
 * (but `notExists`).
 */
export interface StepCondition {
  /** Key of a predecessor (the step whose onSuccess / onFailure holds this one, or one it depends on); default the only one. */
  step?: string;
  /** Dotted path into its JSON result ("order.total", "items.0.sku"); default the whole result. */
  path?: string;
  operator: ConditionOp;
  /** What to compare with (an array for `in`); leave it out for `exists` and `notExists`. */
  value?: unknown;
  /**
   * What of the predecessor is compared: its `"result"` (the default) or its `"error"` message, a string,
   * missing unless it failed for good (for a step on its onFailure branch; `path` must be empty).
   */
  source?: "result" | "error";
}

/** A `StepCondition`: `when("validate", "total", ">", 100)`. */
export function when(step: string, path: string, operator: ConditionOp, ...value: [] | [unknown]): StepCondition {
  return value.length === 0 ? { step, path, operator } : { step, path, operator, value: value[0] };
}

/** A `StepCondition` on a predecessor's error message: `whenError("charge", "contains", "card declined")`. */
export function whenError(step: string, operator: ConditionOp, ...value: [] | [unknown]): StepCondition {
  return { ...when(step, "", operator, ...value), source: "error" };
}

const OPERATORS: Record<ConditionOp, ConditionOperator> = {
  "==": ConditionOperator.EQUAL,
  "!=": ConditionOperator.NOT_EQUAL,
  ">": ConditionOperator.GREATER_THAN,
  ">=": ConditionOperator.GREATER_OR_EQUAL,
  "<": ConditionOperator.LESS_THAN,
  "<=": ConditionOperator.LESS_OR_EQUAL,
  exists: ConditionOperator.EXISTS,
  notExists: ConditionOperator.NOT_EXISTS,
  in: ConditionOperator.IN,
  contains: ConditionOperator.CONTAINS,
};

function conditionToProto(condition: StepCondition, at: string): StepConditionPb {
  const operator = Object.hasOwn(OPERATORS, condition.operator) ? OPERATORS[condition.operator] : undefined;
  if (operator === undefined) {
    throw new TypeError(`${at}.operator: unknown operator ${JSON.stringify(condition.operator)}; use ${Object.keys(OPERATORS).join(", ")}`);
  }
  const takesValue = operator !== ConditionOperator.EXISTS && operator !== ConditionOperator.NOT_EXISTS;
  const given = "value" in condition;
  if (given !== takesValue) {
    throw new TypeError(`${at}.value: ${condition.operator} ${takesValue ? "needs a value to compare with" : "takes no value"}`);
  }
  if (operator === ConditionOperator.IN && !Array.isArray(condition.value)) {
    throw new TypeError(`${at}.value: in needs an array of values`);
  }
  const source = condition.source ?? "result";
  if (source !== "result" && source !== "error") {
    throw new TypeError(`${at}.source: unknown source ${JSON.stringify(source)}; use "result" or "error"`);
  }
  if (source === "error" && condition.path) {
    throw new TypeError(`${at}.path: an error message has no fields; leave the path empty with source "error"`);
  }
  return create(StepConditionSchema, {
    step: condition.step ?? "",
    path: condition.path ?? "",
    operator,
    value: takesValue ? toValue(condition.value, `${at}.value`) : undefined,
    source: source === "error" ? ConditionSource.ERROR : ConditionSource.RESULT,
  });
}

/** A graph of steps; each execution is a `WorkflowRun`. */
export interface Workflow {
  id?: string;
  name?: string;
  steps: WorkflowStep[];
  /**
   * `attributes` (trace context, tenant, origin…) are copied into every step's job's metadata attributes,
   * under the step's own.
   */
  metadata?: { createdBy?: string; correlationId?: string; tags?: string[]; attributes?: Record<string, string> };
}

export type WorkflowState = "running" | "completed" | "failed" | "cancelled";
export type WorkflowStepState = "pending" | "started" | "completed" | "failed" | "skipped" | "cancelled";

/** One step of a run. */
export interface WorkflowStepRun {
  key: string;
  queueName: string;
  jobName: string;
  jobId: string;
  state: WorkflowStepState | undefined;
  jobState: JobState | undefined;
  result: unknown;
  error: string;
  parentKey: string;
  branch: "root" | "onSuccess" | "onFailure" | undefined;
  dependsOn: string[];
}

/** One execution of a workflow. */
export interface WorkflowRun {
  runId: string;
  workflowId: string;
  name: string;
  state: WorkflowState | undefined;
  metadata: { createdBy: string; correlationId: string; tags: string[]; attributes: Record<string, string> };
  steps: WorkflowStepRun[];
  createdAt: Date | undefined;
  finishedAt: Date | undefined;
  cancelReason: string;
  stepCount: number;
  finishedStepCount: number;
}

const RUN_STATES: readonly WorkflowState[] = ["running", "completed", "failed", "cancelled"];
const STEP_STATES: readonly WorkflowStepState[] = ["pending", "started", "completed", "failed", "skipped", "cancelled"];
const BRANCHES = ["root", "onSuccess", "onFailure"] as const;

function stepToProto(step: WorkflowStep, at: string): WorkflowStepPb {
  return create(WorkflowStepSchema, {
    key: step.key ?? "",
    queueName: step.queueName,
    jobName: step.jobName,
    data: encodePayload(step.data, `${at}.data`),
    options: step.options === undefined ? undefined : jobOptionsToProto(step.options, `${at}.options`),
    onSuccess: (step.onSuccess ?? []).map((s, i) => stepToProto(s, `${at}.onSuccess[${i}]`)),
    onFailure: (step.onFailure ?? []).map((s, i) => stepToProto(s, `${at}.onFailure[${i}]`)),
    dependsOn: step.dependsOn ?? [],
    runIf: (step.runIf ?? []).map((c, i) => conditionToProto(c, `${at}.runIf[${i}]`)),
  });
}

/** A workflow as its message. */
export function workflowToProto(workflow: Workflow): WorkflowPb {
  if (typeof workflow !== "object" || workflow === null || !Array.isArray(workflow.steps)) {
    throw new TypeError("workflow must be an object with a steps array");
  }
  return create(WorkflowSchema, {
    id: workflow.id ?? "",
    name: workflow.name ?? "",
    steps: workflow.steps.map((s, i) => stepToProto(s, `workflow.steps[${i}]`)),
    metadata: workflow.metadata && create(WorkflowMetadataSchema, {
      createdBy: workflow.metadata.createdBy ?? "",
      correlationId: workflow.metadata.correlationId ?? "",
      tags: workflow.metadata.tags ?? [],
      attributes: { ...(workflow.metadata.attributes ?? {}) },
    }),
  });
}

/** A run message as a `WorkflowRun`. */
export function workflowRunFromProto(run: WorkflowRunPb): WorkflowRun {
  return {
    runId: run.runId,
    workflowId: run.workflowId,
    name: run.name,
    state: RUN_STATES[run.state - 1],
    metadata: { createdBy: run.metadata?.createdBy ?? "", ...metadataFromProto(run.metadata) },
    steps: run.steps.map((s) => ({
      key: s.key,
      queueName: s.queueName,
      jobName: s.jobName,
      jobId: s.jobId,
      state: STEP_STATES[s.state - 1],
      jobState: stateName(s.jobState),
      result: s.result === undefined ? undefined : decodePayload(s.result),
      error: s.error,
      parentKey: s.parentKey,
      branch: BRANCHES[s.branch - 1],
      dependsOn: [...s.dependsOn],
    })),
    createdAt: fromTimestamp(run.createTime),
    finishedAt: fromTimestamp(run.finishTime),
    cancelReason: run.cancelReason,
    stepCount: run.stepCount,
    finishedStepCount: run.finishedStepCount,
  };
}

/** A repeatable schedule: a cron expression or a fixed interval adding a job to its queue. */
export interface ScheduleSpec {
  /** Unique within its queue: 1 to 100 letters, digits, "-", "_" or ".". */
  id: string;
  queueName: string;
  /** Cron expression (5 fields, or 6 with seconds first); exclusive with `every`. */
  cron?: string;
  /** IANA time zone of the cron expression; default UTC. */
  timezone?: string;
  /** Fixed interval between runs, ms (at least 1,000); exclusive with `cron`. */
  every?: number;
  startTime?: Date;
  endTime?: Date;
  /** Most runs in all; 0 or unset: no limit. */
  limit?: number;
  /** The job each run adds (options.jobId is not allowed). */
  job: { name: string; data?: unknown; options?: JobOptions };
  /** Occurrences missed while no server ran: skip (default), one run for all, or one each. */
  catchUp?: "skip" | "one" | "all";
}

/** A schedule as stored, with what the server keeps about its runs. */
export interface Schedule extends Omit<ScheduleSpec, "job" | "catchUp"> {
  job: { name: string; data: unknown };
  catchUp: "skip" | "one" | "all";
  nextRunTime: Date | undefined;
  lastRunTime: Date | undefined;
  runCount: number;
  lastJobId: string;
  createdAt: Date | undefined;
  updatedAt: Date | undefined;
}

const CATCH_UP = { skip: ScheduleCatchUp.SKIP, one: ScheduleCatchUp.ONE, all: ScheduleCatchUp.ALL } as const;

/** A schedule as its message. */
export function scheduleToProto(spec: ScheduleSpec): SchedulePb {
  const catchUp = spec.catchUp === undefined ? ScheduleCatchUp.UNSPECIFIED : CATCH_UP[spec.catchUp];
  if (catchUp === undefined) {
    throw new RangeError(`catchUp must be "skip", "one" or "all", got ${JSON.stringify(spec.catchUp)}`);
  }
  return create(ScheduleSchema, {
    id: spec.id,
    queueName: spec.queueName,
    cron: spec.cron ?? "",
    timezone: spec.timezone ?? "",
    every: spec.every === undefined ? undefined : toDuration(spec.every, "every"),
    startTime: spec.startTime && toTimestamp(spec.startTime, "startTime"),
    endTime: spec.endTime && toTimestamp(spec.endTime, "endTime"),
    limit: spec.limit === undefined ? 0 : uint(spec.limit, "limit"),
    job: create(NewJobSchema, {
      name: spec.job.name,
      data: encodePayload(spec.job.data, "job.data"),
      options: spec.job.options === undefined ? undefined : jobOptionsToProto(spec.job.options, "job.options"),
    }),
    catchUp,
  });
}

/** A schedule message as a `Schedule`. */
export function scheduleFromProto(s: SchedulePb): Schedule {
  const catchUp = s.catchUp === ScheduleCatchUp.ONE ? "one" : s.catchUp === ScheduleCatchUp.ALL ? "all" : "skip";
  return {
    id: s.id,
    queueName: s.queueName,
    cron: s.cron || undefined,
    timezone: s.timezone || undefined,
    every: fromDuration(s.every),
    startTime: fromTimestamp(s.startTime),
    endTime: fromTimestamp(s.endTime),
    limit: s.limit,
    job: { name: s.job?.name ?? "", data: decodePayload(s.job?.data) },
    catchUp,
    nextRunTime: fromTimestamp(s.nextRunTime),
    lastRunTime: fromTimestamp(s.lastRunTime),
    runCount: Number(s.runCount),
    lastJobId: s.lastJobId,
    createdAt: fromTimestamp(s.createTime),
    updatedAt: fromTimestamp(s.updateTime),
  };
}
