/** `QueueManager`'s calls on workflows (a graph of steps, each a job) and on repeatable schedules. */
import { refuseResultConditions } from "./codecs.js";
import { WorkerCalls } from "./client-workers.js";
import { pageFromProto } from "./convert.js";
import { mapped } from "./errors.js";
import { checkKeys, pageRequest } from "./options.js";
import { carry, publish, SYSTEM, traceContext, workflowAttributes } from "./tracing.js";
import type { Page } from "./types.js";
import {
  scheduleFromProto,
  scheduleToProto,
  workflowRunFromProto,
  workflowToProto,
  type Schedule,
  type ScheduleSpec,
  type Workflow,
  type WorkflowRun,
} from "./workflows.js";

const RUN_KEYS: ReadonlySet<string> = new Set(["runId"]);

/** Runs workflows and keeps schedules. */
export class WorkflowCalls extends WorkerCalls {
  /** Starts a workflow run and returns its id at once (with `runId`, executing again starts nothing). */
  async executeWorkflow(workflow: Workflow, options: { runId?: string } = {}): Promise<string> {
    // A misspelt runId would start a run of a random id each time, not once.
    checkKeys(options, RUN_KEYS, "executeWorkflow options");
    const request = { workflow: workflowToProto(workflow), runId: options.runId ?? "" };
    if (this.codecs !== undefined) {
      refuseResultConditions(request.workflow.steps); // a TypeError before anything is sent
    }
    const tracer = this.tracing();
    if (tracer === undefined) {
      const res = await mapped(() => this.client.executeWorkflow(request, this.callOptions));
      return res.runId;
    }
    // Every step's job carries the context: the server copies the run's attributes into each.
    const id = request.workflow.id;
    const attributes = {
      "messaging.system": SYSTEM,
      "messaging.operation": "publish",
      "messaging.batch.message_count": request.workflow.steps.length,
      "queue_manager.workflow.id": id,
    };
    return publish(tracer, id ? `workflow ${id} publish` : "workflow publish", attributes, async (span) => {
      carry(workflowAttributes(request.workflow), traceContext(span));
      const res = await mapped(() => this.client.executeWorkflow(request, this.callOptions));
      span.setAttribute("queue_manager.workflow.run_id", res.runId);
      return res.runId;
    });
  }

  /** A run with every step's state, job, result or error. */
  async getWorkflow(runId: string): Promise<WorkflowRun> {
    const res = await mapped(() => this.client.getWorkflow({ runId }, this.callOptions));
    return workflowRunFromProto(res.run!);
  }

  /** A page of runs, newest first, without their steps. */
  async listWorkflows(page: { pageSize?: number; pageToken?: string } = {}): Promise<Page<WorkflowRun>> {
    const request = pageRequest(page, "listWorkflows options");
    const res = await mapped(() => this.client.listWorkflows(request, this.callOptions));
    return pageFromProto(res.runs.map(workflowRunFromProto), res);
  }

  /** Cancels a run: no further step starts, and its started steps' jobs are cancelled. */
  async cancelWorkflow(runId: string, reason = ""): Promise<WorkflowRun> {
    const res = await mapped(() => this.client.cancelWorkflow({ runId, reason }, this.callOptions));
    return workflowRunFromProto(res.run!);
  }

  /**
   * Runs the job of every failed (or cancelled) step of a failed run again, in one call: the steps start
   * again, the steps skipped because of them are pending again, and the run is running until they finish.
   * `NotFoundError` for an unknown run; `FailedPreconditionError` for a run that is running, completed or
   * cancelled with `cancelWorkflow`, or whose failed step's job no longer exists (the message names it).
   */
  async retryWorkflow(runId: string): Promise<WorkflowRun> {
    const res = await mapped(() => this.client.retryWorkflow({ runId }, this.callOptions));
    return workflowRunFromProto(res.run!);
  }

  /** Creates or replaces a repeatable schedule; returns it as stored, with its next run time. */
  async upsertSchedule(spec: ScheduleSpec): Promise<Schedule> {
    const request = { schedule: scheduleToProto(spec) };
    const res = await mapped(() => this.client.upsertSchedule(request, this.callOptions));
    return scheduleFromProto(res.schedule!);
  }

  async getSchedule(queueName: string, scheduleId: string): Promise<Schedule> {
    const res = await mapped(() => this.client.getSchedule({ queueName, scheduleId }, this.callOptions));
    return scheduleFromProto(res.schedule!);
  }

  /** The schedules of a queue, or of every queue. */
  async listSchedules(queueName = ""): Promise<Schedule[]> {
    const res = await mapped(() => this.client.listSchedules({ queueName }, this.callOptions));
    return res.schedules.map(scheduleFromProto);
  }

  /** Deletes a schedule (jobs it added stay); returns it as it was. */
  async deleteSchedule(queueName: string, scheduleId: string): Promise<Schedule> {
    const res = await mapped(() => this.client.deleteSchedule({ queueName, scheduleId }, this.callOptions));
    return scheduleFromProto(res.schedule!);
  }
}
