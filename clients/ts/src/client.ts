/** `QueueManager`: the producer and admin API, and the entry point that starts workers. */
import { create } from "@bufbuild/protobuf";
import { createClient, type CallOptions, type Client } from "@connectrpc/connect";
import type { Tracer, TracerProvider } from "@opentelemetry/api";
import { AddBatcher, type Answer } from "./adds.js";
import {
  AddBulkRequestSchema,
  AddJobRequestSchema,
  type AddBulkRequest,
  type AddJobRequest,
  type CreatedJob,
} from "./gen/queue_manager/v1/jobs_pb.js";
import { QueueService } from "./gen/queue_manager/v1/queue_service_pb.js";
import {
  checkMs,
  createdJob,
  encodePayload,
  fromTimestamp,
  jobFromProto,
  logLineFromProto,
  metricsFromProto,
  pageFromProto,
  parsePriority,
  queueFromProto,
  stateName,
  stateNumber,
  toDuration,
  workerFromProto,
} from "./convert.js";
import { errorFromRpc, mapped } from "./errors.js";
import { newJob, pageRequest, queueConfigToProto, uint } from "./options.js";
import { carry, jobAttributes, publish, publishAttributes, SYSTEM, traceContext, tracerOf, workflowAttributes } from "./tracing.js";
import { connect, type Connection, type ConnectionOptions } from "./transport.js";
import type {
  Job,
  JobLogLine,
  JobOptions,
  JobState,
  MetricsSnapshot,
  Page,
  PriorityLike,
  Queue,
  QueueConfig,
  QueueMetrics,
  WorkerInfo,
} from "./types.js";
import { Worker, type Processor, type WorkerOptions } from "./worker.js";
import { checkProcessor } from "./worker-options.js";
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

/** Options of a `QueueManager`: the connection, a deadline for unary calls, and worker defaults. */
export interface QueueManagerOptions extends ConnectionOptions {
  /** Deadline of each unary call in ms; default 30,000; 0 for none. */
  timeoutMs?: number;
  /** Jobs each worker from `startWorkers` runs at once; default `WORKER_CONCURRENCY` or 10. */
  concurrency?: number;
  /** Labels sent in each worker's hello. */
  workerLabels?: Record<string, string>;
  /** How long `shutdown` waits for running jobs, ms; default 30,000. */
  shutdownGraceMs?: number;
  /**
   * OpenTelemetry tracer provider of the adds' spans and of the workers `startWorkers` starts; default the
   * global one, read at the first add (tracing is off when none is configured then).
   */
  tracerProvider?: TracerProvider;
}

/** A job for `addBulk`. */
export interface BulkJob {
  name: string;
  data?: unknown;
  options?: JobOptions;
}

// AddBulk: jobs per stream message (a message costs ~60 µs whatever its size), and per stream (server limit).
const BULK_MESSAGE_JOBS = 500;
const BULK_STREAM_JOBS = 100_000;
// The adds' tracer before the first add has read it (tracing.tracerOf).
const UNREAD = Symbol("unread");

/**
 * Client of a Queue Manager server: add and read jobs, administer queues, start workers.
 *
 * Nothing connects before the first call; `shutdown` stops the workers and closes the connection.
 */
export class QueueManager {
  readonly address: string;
  private readonly options: QueueManagerOptions;
  private readonly connection: Connection;
  private readonly client: Client<typeof QueueService>;
  private readonly processors = new Map<string, Processor>();
  private readonly started: Worker[] = [];
  private readonly callOptions: CallOptions;
  private readonly adds: AddBatcher;
  // The adds' tracer: undefined when tracing is off, UNREAD before the first add (a client made at import
  // time, before the application configured OpenTelemetry, still traces).
  private tracer: Tracer | undefined | typeof UNREAD = UNREAD;

  constructor(options: QueueManagerOptions = {}) {
    this.options = options;
    this.connection = connect(options);
    this.address = this.connection.address;
    this.client = createClient(QueueService, this.connection.transport);
    const timeoutMs = checkMs(options.timeoutMs ?? 30_000, "timeoutMs");
    this.callOptions = timeoutMs > 0 ? { timeoutMs } : {};
    this.adds = new AddBatcher(
      (request) => mapped(() => this.client.addJob(request, this.callOptions)),
      (requests, signal) => this.client.addJobStream(requests, { signal }),
      timeoutMs,
    );
  }

  // ---------------------------------------------------------------- processors and workers

  /** Registers the processor of a queue (one per queue); `startWorkers` runs it. */
  registerProcessor(queueName: string, processor: Processor): void {
    checkProcessor(queueName, processor);
    if (this.processors.has(queueName)) {
      throw new RangeError(`queue ${JSON.stringify(queueName)} already has a processor`);
    }
    this.processors.set(queueName, processor);
  }

  /** Starts one worker (one stream) for the registered processors (or those of `queues`) and returns it. */
  async startWorkers(options: { queues?: string[] } & Partial<Omit<WorkerOptions, "processors">> = {}): Promise<Worker> {
    const { queues, ...workerOptions } = options;
    const wanted = queues ?? [...this.processors.keys()];
    const missing = wanted.filter((q) => !this.processors.has(q));
    if (missing.length) {
      throw new RangeError(`no processor registered for queue(s) ${missing.join(", ")}`);
    }
    if (!wanted.length) {
      throw new RangeError("no processors registered; call registerProcessor(queueName, fn) first");
    }
    const worker = new Worker({
      address: this.options.address,
      token: this.options.token,
      tls: this.options.tls,
      interceptors: this.options.interceptors,
      concurrency: this.options.concurrency,
      labels: this.options.workerLabels,
      shutdownGraceMs: this.options.shutdownGraceMs,
      tracerProvider: this.options.tracerProvider,
      ...workerOptions,
      processors: Object.fromEntries(wanted.map((q) => [q, this.processors.get(q) as Processor])),
    });
    worker.start();
    this.started.push(worker);
    return worker;
  }

  /**
   * Stops the workers gracefully (see `Worker.shutdown`), lets the adds under way get their answers and ends
   * their stream, then closes the connection.
   */
  async shutdown(graceMs?: number): Promise<void> {
    const workers = this.started.splice(0);
    await Promise.all(workers.map((w) => w.shutdown(graceMs)));
    await this.adds.close();
    this.connection.close();
  }

  // ---------------------------------------------------------------- queues

  /** Registers a queue, or updates an existing one's settings; returns it as stored. */
  async registerQueue(name: string, config: QueueConfig = {}): Promise<Queue> {
    const request = { name, config: queueConfigToProto(config) };
    const res = await mapped(() => this.client.registerQueue(request, this.callOptions));
    return queueFromProto(res.queue!);
  }

  async getQueue(name: string): Promise<Queue> {
    const res = await mapped(() => this.client.getQueue({ name }, this.callOptions));
    return queueFromProto(res.queue!);
  }

  /** Every registered queue, by name. */
  async listQueues(): Promise<Queue[]> {
    const res = await mapped(() => this.client.listQueues({}, this.callOptions));
    return res.queues.map(queueFromProto);
  }

  /** Pauses a queue: jobs are still added, none start until resumed. */
  async pauseQueue(name: string): Promise<Queue> {
    const res = await mapped(() => this.client.pauseQueue({ name }, this.callOptions));
    return queueFromProto(res.queue!);
  }

  async resumeQueue(name: string): Promise<Queue> {
    const res = await mapped(() => this.client.resumeQueue({ name }, this.callOptions));
    return queueFromProto(res.queue!);
  }

  /** Removes jobs of one state older than `graceMs`; returns how many. */
  async cleanQueue(name: string, graceMs: number, state: JobState, limit = 0): Promise<number> {
    const request = { name, grace: toDuration(graceMs, "graceMs"), state: stateNumber(state), limit: uint(limit, "limit") };
    const res = await mapped(() => this.client.cleanQueue(request, this.callOptions));
    return Number(res.removed);
  }

  /** Removes all waiting jobs (and delayed ones if asked); returns how many. */
  async drainQueue(name: string, includeDelayed = false): Promise<number> {
    const res = await mapped(() => this.client.drainQueue({ name, includeDelayed }, this.callOptions));
    return Number(res.removed);
  }

  /** Deletes a queue and all its jobs (`force`: even with active jobs); returns how many jobs. */
  async obliterateQueue(name: string, force = false): Promise<number> {
    const res = await mapped(() => this.client.obliterateQueue({ name, force }, this.callOptions));
    return Number(res.removed);
  }

  async getQueueMetrics(name: string, options: { includeHistory?: boolean } = {}): Promise<QueueMetrics> {
    const request = { name, includeHistory: options.includeHistory ?? false };
    const res = await mapped(() => this.client.getQueueMetrics(request, this.callOptions));
    return metricsFromProto(res.metrics!);
  }

  async getAllMetrics(options: { includeHistory?: boolean } = {}): Promise<QueueMetrics[]> {
    const request = { includeHistory: options.includeHistory ?? false };
    const res = await mapped(() => this.client.getAllMetrics(request, this.callOptions));
    return res.metrics.map(metricsFromProto);
  }

  /**
   * Yields a snapshot of the queues' metrics at once, then every `intervalMs` (100 to 60,000; default
   * 1,000), until you stop iterating (`break`) or `signal` fires (the loop then ends, with no error). Pushed
   * by the server: no polling.
   * `queues` is a name or a list of names (`NotFoundError` if one is unknown); none watches every queue,
   * those registered later included.
   */
  async *watchMetrics(
    queues?: string | string[],
    options: { intervalMs?: number; includeHistory?: boolean; includeWorkers?: boolean; signal?: AbortSignal } = {},
  ): AsyncGenerator<MetricsSnapshot, void, undefined> {
    const request = {
      queueNames: queues === undefined ? [] : typeof queues === "string" ? [queues] : [...queues],
      interval: toDuration(options.intervalMs ?? 1_000, "intervalMs"),
      includeHistory: options.includeHistory ?? false,
      includeWorkers: options.includeWorkers ?? false,
    };
    // Leaving the loop (or the caller's signal) cancels the call, so the server stops sending.
    const call = new AbortController();
    const stop = () => call.abort(options.signal?.reason);
    options.signal?.addEventListener("abort", stop, { once: true });
    if (options.signal?.aborted) {
      stop();
    }
    try {
      for await (const res of this.client.watchMetrics(request, { signal: call.signal })) {
        yield { time: fromTimestamp(res.time), metrics: res.metrics.map(metricsFromProto), workers: res.workers.map(workerFromProto) };
      }
    } catch (err) {
      if (options.signal?.aborted) {
        return; // the caller's own signal ends the stream, as leaving the loop does
      }
      throw errorFromRpc(err);
    } finally {
      options.signal?.removeEventListener("abort", stop);
      call.abort();
    }
  }

  /** The workers connected to any server (taking jobs of `queueName`, if given). */
  async listWorkers(queueName = ""): Promise<WorkerInfo[]> {
    const res = await mapped(() => this.client.listWorkers({ queueName }, this.callOptions));
    return res.workers.map(workerFromProto);
  }

  // ---------------------------------------------------------------- jobs

  /**
   * Adds one job; returns it as stored (the existing one when `options.jobId` was taken). Concurrent calls
   * share the messages of one AddJobStream (adds.ts); a lone call goes out at once.
   */
  async addJob(queueName: string, name: string, data?: unknown, options?: JobOptions): Promise<Job> {
    const request = create(AddJobRequestSchema, { queueName, job: newJob(name, data, options) });
    // Tracing off: this one test per add.
    const answer = this.tracer === undefined ? await this.adds.add(request) : await this.addTraced(request);
    return isBrief(answer) ? createdJob(request, answer) : jobFromProto(answer.job!);
  }

  /**
   * Adds many jobs over client streams (500 jobs a message, 100,000 a stream); each stream is added in full
   * or not at all. Every job is checked before anything is sent. Returns the ids in order.
   */
  async addBulk(queueName: string, jobs: BulkJob[]): Promise<string[]> {
    const messages: AddBulkRequest[] = [];
    for (let i = 0; i < jobs.length; i += BULK_MESSAGE_JOBS) {
      const slice = jobs.slice(i, i + BULK_MESSAGE_JOBS);
      const built = slice.map((j, k) => newJob(j.name, j.data, j.options, `jobs[${i + k}]`));
      messages.push(create(AddBulkRequestSchema, { queueName, jobs: built }));
    }
    const tracer = this.tracing();
    if (tracer === undefined) {
      return this.sendBulk(messages);
    }
    // One span for the whole batch; every job carries its context.
    return publish(tracer, `${queueName} publish`, publishAttributes(queueName, jobs.length), (span) => {
      const context = traceContext(span);
      messages.forEach((message) => message.jobs.forEach((job) => carry(jobAttributes(job), context)));
      return this.sendBulk(messages);
    });
  }

  private async sendBulk(messages: AddBulkRequest[]): Promise<string[]> {
    const ids: string[] = [];
    const perStream = BULK_STREAM_JOBS / BULK_MESSAGE_JOBS;
    for (let i = 0; i < messages.length; i += perStream) {
      const stream = messages.slice(i, i + perStream);
      async function* requests() {
        yield* stream;
      }
      const res = await mapped(() => this.client.addBulk(requests(), this.callOptions));
      ids.push(...res.jobIds);
    }
    return ids;
  }

  /** One job (with the tail of its log); `NotFoundError` when it does not exist. */
  async getJob(queueName: string, jobId: string): Promise<Job> {
    const res = await mapped(() => this.client.getJob({ queueName, jobId }, this.callOptions));
    return jobFromProto(res.job!);
  }

  /** A page of a queue's jobs in one state. */
  async listJobs(queueName: string, state: JobState, page: { pageSize?: number; pageToken?: string } = {}): Promise<Page<Job>> {
    const request = { queueName, state: stateNumber(state), ...pageRequest(page) };
    const res = await mapped(() => this.client.listJobs(request, this.callOptions));
    return pageFromProto(res.jobs.map(jobFromProto), res);
  }

  /** Removes a job that is not active; returns the state it was in. */
  async removeJob(queueName: string, jobId: string): Promise<JobState | undefined> {
    const res = await mapped(() => this.client.removeJob({ queueName, jobId }, this.callOptions));
    return stateName(res.previousState);
  }

  /** A page of a job's log lines, oldest first. */
  async getJobLogs(queueName: string, jobId: string, page: { pageSize?: number; pageToken?: string } = {}): Promise<Page<JobLogLine>> {
    const request = { queueName, jobId, ...pageRequest(page) };
    const res = await mapped(() => this.client.getJobLogs(request, this.callOptions));
    return pageFromProto(res.lines.map(logLineFromProto), res);
  }

  /**
   * Waits until a job is finished (completed, failed for good or cancelled) and returns it; after
   * `timeoutMs` (default: no limit) returns it in whatever state it is then. Pushed by the server: no polling.
   */
  async waitForJob(queueName: string, jobId: string, options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<Job> {
    const request = { queueName, jobId, timeout: options.timeoutMs === undefined ? undefined : toDuration(options.timeoutMs, "timeoutMs") };
    return mapped(async () => {
      let last: Job | undefined;
      for await (const res of this.client.waitForJob(request, { signal: options.signal })) {
        last = jobFromProto(res.job!);
      }
      if (last === undefined) {
        throw new Error(`the server ended the wait for job ${queueName}/${jobId} without sending the job`);
      }
      return last;
    });
  }

  /**
   * Cancels a job: a waiting or delayed one ends cancelled at once; an active one is marked
   * `cancelRequested` and its worker's processor sees its AbortSignal fire.
   */
  async cancelJob(queueName: string, jobId: string, reason = ""): Promise<Job> {
    const res = await mapped(() => this.client.cancelJob({ queueName, jobId, reason }, this.callOptions));
    return jobFromProto(res.job!);
  }

  /** Runs a failed or cancelled job again, its attempts counted afresh. */
  async retryJob(queueName: string, jobId: string): Promise<Job> {
    const res = await mapped(() => this.client.retryJob({ queueName, jobId }, this.callOptions));
    return jobFromProto(res.job!);
  }

  /** Runs every failed (or cancelled) job of a queue again; returns how many. */
  async retryFailedJobs(queueName: string, state: "failed" | "cancelled" = "failed"): Promise<number> {
    const res = await mapped(() => this.client.retryFailedJobs({ queueName, state: stateNumber(state) }, this.callOptions));
    return Number(res.count);
  }

  /** Makes a delayed job waiting now. */
  async promoteJob(queueName: string, jobId: string): Promise<Job> {
    const res = await mapped(() => this.client.promoteJob({ queueName, jobId }, this.callOptions));
    return jobFromProto(res.job!);
  }

  /** Changes the priority of a waiting or delayed job. */
  async changeJobPriority(queueName: string, jobId: string, priority: PriorityLike): Promise<Job> {
    const request = { queueName, jobId, priority: parsePriority(priority) };
    const res = await mapped(() => this.client.changeJobPriority(request, this.callOptions));
    return jobFromProto(res.job!);
  }

  /**
   * Replaces the data of a job that has not finished (waiting, paused, delayed or active): a running attempt
   * keeps the data it was given, the next attempt gets the new data. Bytes go as octet-stream, anything else
   * as JSON (`undefined` as JSON null). A finished job gives `FailedPreconditionError`.
   */
  async updateJobData(queueName: string, jobId: string, data: unknown): Promise<Job> {
    const request = { queueName, jobId, data: encodePayload(data === undefined ? null : data) };
    const res = await mapped(() => this.client.updateJobData(request, this.callOptions));
    return jobFromProto(res.job!);
  }

  // ---------------------------------------------------------------- workflows and schedules

  /** Starts a workflow run and returns its id at once (with `runId`, executing again starts nothing). */
  async executeWorkflow(workflow: Workflow, options: { runId?: string } = {}): Promise<string> {
    const request = { workflow: workflowToProto(workflow), runId: options.runId ?? "" };
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
    const request = pageRequest(page);
    const res = await mapped(() => this.client.listWorkflows(request, this.callOptions));
    return pageFromProto(res.runs.map(workflowRunFromProto), res);
  }

  /** Cancels a run: no further step starts, and its started steps' jobs are cancelled. */
  async cancelWorkflow(runId: string, reason = ""): Promise<WorkflowRun> {
    const res = await mapped(() => this.client.cancelWorkflow({ runId, reason }, this.callOptions));
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

  // ---------------------------------------------------------------- tracing

  /** The adds' tracer (undefined: tracing is off), read once. */
  private tracing(): Tracer | undefined {
    if (this.tracer === UNREAD) {
      this.tracer = tracerOf(this.options.tracerProvider);
    }
    return this.tracer;
  }

  /** An add inside its PRODUCER span, the span's context carried in the job's metadata attributes. */
  private async addTraced(request: AddJobRequest): Promise<Answer> {
    const tracer = this.tracing();
    if (tracer === undefined) {
      return this.adds.add(request);
    }
    const queueName = request.queueName;
    return publish(tracer, `${queueName} publish`, publishAttributes(queueName), async (span) => {
      carry(jobAttributes(request.job!), traceContext(span));
      const answer = await this.adds.add(request);
      span.setAttribute("messaging.message.id", isBrief(answer) ? answer.id : answer.job!.id);
      return answer;
    });
  }
}

/** Whether an add's answer is brief (the job created as its request says: the request makes the rest). */
function isBrief(answer: Answer): answer is CreatedJob {
  return answer.$typeName === "queue_manager.v1.CreatedJob";
}
