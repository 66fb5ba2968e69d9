/** A job as a processor sees it (`ActiveJob`), the context of its run (`JobContext`), and the run itself. */
import { create } from "@bufbuild/protobuf";
import type { Span } from "@opentelemetry/api";
import { LeaseRefSchema, type LeasedJob, type LeaseRef } from "./gen/queue_manager/v1/worker_service_pb.js";
import type { WaitForChildrenOptions } from "./children.js";
import type { WaitForEventOptions } from "./external-events.js";
import { childJobFromProto, decodePayload, eventFromProto, eventWaitFromProto, fromDuration, fromTimestamp, metadataFromProto, parentFromProto, priorityOf } from "./convert.js";
import { JobAbortedError } from "./errors.js";
import type { ChildJob, ChildSpec, EventWait, ExternalEvent, JobMetadata, JobPriority, ParentJob } from "./types.js";

/** The job a processor runs: its data and what the server tells about it. */
export interface ActiveJob {
  readonly id: string;
  readonly name: string;
  readonly queueName: string;
  /** The job's data: a JSON value, or a `Uint8Array` for non-JSON bytes; after `ctx.updateData`, the new data. */
  readonly data: unknown;
  /** Finished (failed) runs so far; `attemptsMade + 1` is this run's attempt number. */
  readonly attemptsMade: number;
  /** Maximum runs including the first. */
  readonly maxAttempts: number;
  readonly priority: JobPriority;
  /** Times the job was recovered from a lost worker. */
  readonly stalledCount: number;
  /** True when an earlier run of this attempt was lost (crash, lease expiry). */
  readonly redelivery: boolean;
  readonly createdAt: Date | undefined;
  readonly metadata: Required<JobMetadata>;
  /** Predecessors in a chain or workflow, with their results. */
  readonly parents: ParentJob[];
  /**
   * The children this job added at run time (`ctx.waitForChildren`), each with its outcome: what a run after
   * the wait combines. In the order they were added, over all the job's waits; empty before the first.
   */
  readonly children: ChildJob[];
  /**
   * The external event that ended this job's last `ctx.waitForEvent` (its key, data, id and time); undefined
   * when the job never waited, or when the wait timed out (`eventTimedOut`).
   */
  readonly event: ExternalEvent | undefined;
  /** The last `ctx.waitForEvent` of this job (its keys and timeout), which this run follows; undefined if none. */
  readonly eventWait: EventWait | undefined;
  /** True when this run follows a `ctx.waitForEvent` that ended with no event: it timed out (or was promoted). */
  readonly eventTimedOut: boolean;
  /** The workflow run and step of this job, if it is a workflow step. */
  readonly workflow: { runId: string; stepKey: string } | undefined;
  /** The job's timeout, ms; undefined for none. */
  readonly timeoutMs: number | undefined;
  /** The job's fairness group (`JobOptions.group`); "" when it has none. */
  readonly group: string;
}

/** What a processor can do besides returning: watch its AbortSignal, report progress, log lines. */
export interface JobContext {
  /**
   * Fires when the run must stop: its job was cancelled (`reason.kind` "cancelled"), its lease was lost
   * ("lease-lost": the result would be discarded), its timeout passed ("timeout": whether this worker or the
   * server noticed first; the run is reported as a failure that timed out), or the worker is shutting
   * down past its grace ("shutdown"). The reason is a `JobAbortedError`.
   */
  readonly signal: AbortSignal;
  readonly workerId: string;
  /** Token of this run's lease (shared by the jobs delivered in the same batch). */
  readonly leaseToken: string;
  /** Reports progress (a number 0-100 or any JSON value); sent with the next report. */
  updateProgress(value: unknown): void;
  /** Adds a line to the job's log (the server keeps the last 1,000 lines, each cut to 2,000 characters). */
  log(message: string): void;
  /**
   * Replaces this job's data on the server, so that its next attempt (a retry after a failure, or a
   * redelivery after a lost worker) starts from it: a checkpoint of the step a long job has reached. Fenced by
   * this run's lease: once the lease is lost (the job was recovered and may run elsewhere) the server refuses
   * it with `FailedPreconditionError` and nothing changes. Resolves once the server has stored it; then
   * `job.data` holds the new value. A `Uint8Array` goes as octet-stream, anything else as JSON (`undefined`
   * as null); data over the server's payload limit gives `InvalidArgumentError`, data that is not JSON a
   * `TypeError` before anything is sent.
   */
  updateData(data: unknown): Promise<void>;
  /**
   * Adds child jobs and ends this run until they have all finished: a map-reduce whose width is known only at
   * run time (split a file into chunks, process each, combine the results). The server adds the children (in
   * any registered queues) and parks this job in delayed with no due time, using no attempt and holding no
   * worker slot. Once every child has completed, failed for good or been cancelled, the job runs again, its
   * `job.children` holding their outcomes. Fenced by this run's lease, and safe to repeat: each child's id is
   * derived from this job, its wait and the child's place in the list, so a run lost after the call and run
   * again adds no child twice.
   *
   * It never resolves: once the server has answered, it rejects with `WaitingForChildrenError`, which ends
   * the run (let it propagate; nothing the processor does afterwards is reported). 1 to 1,000 children a
   * call, 1,000 over a job's life. A refusal comes back as the server's error and the run goes on:
   * `InvalidArgumentError` (a malformed child, a queue that is not registered, too many children: nothing
   * was added) or `FailedPreconditionError` (this run's lease was lost). A child or data that cannot be
   * encoded is a TypeError or RangeError before anything is sent.
   */
  waitForChildren(children: readonly ChildSpec[], options?: WaitForChildrenOptions): Promise<never>;
  /**
   * Ends this run until an external event of one of `keys` is pushed (`pushEvent`, the HTTP
   * `POST /api/v1/events`): an approval, a payment's webhook, a reply. The server parks this job in delayed,
   * using no attempt and holding no worker slot; a push of one of the keys made after this call moves it back
   * to waiting at once, and its next run sees the event in `job.event`. Events pushed before the call are not
   * seen. With `timeoutMs`, the job runs again when it passes with no event (`job.eventTimedOut`). Fenced by
   * this run's lease, and one atomic step on the server.
   *
   * It never resolves: once the server has answered, it rejects with `WaitingForEventError`, which ends the
   * run (let it propagate; nothing the processor does afterwards is reported). 1 to 16 keys, each 1 to 256
   * characters without control characters. A refusal comes back as the server's error and the run goes on:
   * `InvalidArgumentError` or `FailedPreconditionError` (this run's lease was lost, or a Redis Cluster).
   */
  waitForEvent(keys: string | readonly string[], options?: WaitForEventOptions): Promise<never>;
}

/** What a run's context reports through: its worker's outbox (progress, log lines) and calls (data, children). */
export interface RunReports {
  progress(value: unknown): void;
  log(message: string): void;
  updateData(data: unknown): Promise<void>;
  waitForChildren(children: readonly ChildSpec[], options?: WaitForChildrenOptions): Promise<never>;
  waitForEvent(keys: string | readonly string[], options?: WaitForEventOptions): Promise<never>;
}

/** One run of a job on this worker. */
export class Run {
  readonly key: string;
  readonly job: ActiveJob;
  readonly lease: LeaseRef;
  readonly abort = new AbortController();
  readonly startedAt = performance.now();
  /** The server asked to stop it (CANCEL_JOB): however it ends, it is reported cancelled. */
  cancelled = false;
  /** Its lease was refused: it is stopped and nothing is reported. */
  lost = false;
  /** Why it passed its job's timeout ("" before), noticed here or by the server: reported as a failure. */
  timedOut = "";
  /** Given up at shutdown (reported abandoned); its end reports nothing more. */
  abandoned = false;
  /**
   * It added children (waitForChildren) or waits for an event (waitForEvent), and the server parked its job: it
   * ended there, nothing is reported.
   */
  parked = false;
  /** Calls that may park it (waitForChildren, waitForEvent) in flight: the server may end its lease in one. */
  parking = 0;
  done: Promise<void> = Promise.resolve();
  /** Its CONSUMER span, when tracing is on: a failure marks it (tracing.ts). */
  span: Span | undefined;
  /** The job's data: as delivered, then as the run's last `updateData` stored it (what `job.data` reads). */
  data: unknown;

  constructor(leased: LeasedJob) {
    const job = leased.job!;
    this.key = runKey(job.queueName, job.id);
    this.lease = leaseOf(leased);
    this.data = decodePayload(job.data);
    const run = this; // what the getter of job.data reads
    this.job = Object.freeze({
      id: job.id,
      name: job.name,
      queueName: job.queueName,
      get data(): unknown {
        return run.data;
      },
      attemptsMade: job.attemptsMade,
      maxAttempts: job.maxAttempts,
      priority: priorityOf(job.priority),
      stalledCount: job.stalledCount,
      redelivery: leased.redelivery,
      createdAt: fromTimestamp(job.createTime),
      metadata: metadataFromProto(job.metadata),
      parents: job.parents.map(parentFromProto),
      children: job.childJobs.map(childJobFromProto),
      event: eventFromProto(job),
      eventWait: eventWaitFromProto(job),
      eventTimedOut: job.eventWait !== undefined && job.event === undefined,
      workflow: job.workflow && { runId: job.workflow.runId, stepKey: job.workflow.stepKey },
      timeoutMs: fromDuration(job.options?.timeout),
      group: job.options?.group ?? "",
    });
  }

  /** The lease fields, for the report items that carry them flat (completions, failures). */
  get leaseFields(): { queueName: string; jobId: string; leaseToken: string } {
    const { queueName, jobId, leaseToken } = this.lease;
    return { queueName, jobId, leaseToken };
  }

  /** The context handed to the processor; `report` sends what it reports while the run is current. */
  context(workerId: string, report: RunReports): JobContext {
    return {
      signal: this.abort.signal,
      workerId,
      leaseToken: this.lease.leaseToken,
      updateProgress: (value) => report.progress(value),
      log: (message) => report.log(message),
      updateData: (data) => report.updateData(data),
      waitForChildren: (children, options) => report.waitForChildren(children, options),
      waitForEvent: (keys, options) => report.waitForEvent(keys, options),
    };
  }

  /** Fires the run's signal (once) with a reason the processor can read. */
  stop(kind: JobAbortedError["kind"], message: string): void {
    if (!this.abort.signal.aborted) {
      this.abort.abort(new JobAbortedError(kind, message));
    }
  }
}

/** What names a run on a worker: its queue and job id (a lease token may cover a whole batch). */
export function runKey(queueName: string, jobId: string): string {
  return `${queueName}\u0000${jobId}`;
}

/** The lease a delivered job is held by (what a report item about it names). */
export function leaseOf(leased: LeasedJob): LeaseRef {
  const job = leased.job!;
  return create(LeaseRefSchema, { queueName: job.queueName, jobId: job.id, leaseToken: leased.leaseToken });
}
