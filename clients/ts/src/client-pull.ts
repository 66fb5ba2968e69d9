/**
 * Pull workers (no stream): `fetchJobs` leases ready jobs with one unary call (FetchJobs, a long poll when
 * asked to wait), and each `PulledJob` completes, fails or extends itself with one more (CompleteJob,
 * FailJob, ExtendJobLease, ReportJobProgress), each presenting its lease token — BullMQ's getNextJob and
 * moveToCompleted, Faktory's FETCH and ACK/FAIL. A job its holder drops goes back to waiting only when its
 * lease runs out (docs/api.md, "Pull workers (no stream)"). With tracing on, `job.span(run)` gives a run the
 * CONSUMER span a stream worker's run has (docs/observability.md).
 */
import { create } from "@bufbuild/protobuf";
import { SpanStatusCode, context, type Span, type Tracer } from "@opentelemetry/api";
import type { Duration } from "@bufbuild/protobuf/wkt";
import { JobLogLineSchema } from "./gen/queue_manager/v1/types_pb.js";
import {
  CompleteJobRequestSchema,
  ExtendJobLeaseRequestSchema,
  FailJobRequestSchema,
  FetchJobsRequestSchema,
  ReportJobProgressRequestSchema,
} from "./gen/queue_manager/v1/pull_pb.js";
import type { LeasedJob } from "./gen/queue_manager/v1/worker_service_pb.js";
import { WorkflowCalls } from "./client-workflows.js";
import { checkMs, encodePayload, fromTimestamp, jobFromProto, msToDuration, toDuration, toValue } from "./convert.js";
import { errorText, mapped } from "./errors.js";
import { checkKeys, checkQueueName } from "./options.js";
import { recordFailure, startProcess } from "./tracing.js";
import type { Job } from "./types.js";

/** The most jobs one fetch leases, and the longest wait (the server's bounds, checked before the call). */
export const MAX_FETCH = 1000;
export const MAX_FETCH_WAIT_MS = 30_000;

const FETCH_KEYS: ReadonlySet<string> = new Set(["maxJobs", "waitMs", "leaseMs", "workerName"]);
// A misspelt noRetry would let the job be retried.
const FAIL_KEYS: ReadonlySet<string> = new Set(["noRetry", "retryAfterMs", "stacktrace"]);

/** Options of `fetchJobs`. */
export interface FetchOptions {
  /** Most jobs to lease, 1 to 1,000; default 1. */
  maxJobs?: number;
  /** How long to wait for a first job when none is ready, ms (at most 30,000); default 0: answer at once. */
  waitMs?: number;
  /** Each lease's duration, ms (1,000 to 3,600,000); default the server's lease duration. */
  leaseMs?: number;
  /** Lists the caller in `listWorkers` (language "pull") for a lease after each fetch. */
  workerName?: string;
}

/** What a failure did to the job. */
export interface FailOutcome {
  /** The job runs again (attempts left, or retryAfterMs); false: it failed for good. */
  willRetry: boolean;
  /** When the next run is due (undefined when it failed for good). */
  retryAt?: Date;
}

/** Options of `PulledJob.fail`. */
export interface PullFailOptions {
  /** Fail for good now, skipping any attempts left. */
  noRetry?: boolean;
  /** The job waits this long (ms) without using an attempt, and the queue starts no job meanwhile. */
  retryAfterMs?: number;
  /** A stack trace, for display. */
  stacktrace?: string;
}

type Rpc = PullCalls["client"];

/**
 * A job fetched by `fetchJobs`, leased to the caller until `leaseExpires`. A lost lease (it ran out and the
 * job was recovered) makes each call reject with `FailedPreconditionError`.
 */
export class PulledJob {
  /** The job (id, name, data, attempts…). */
  readonly job: Job;
  /** The lease's token, which each call presents. */
  readonly leaseToken: string;
  /** When the lease runs out unless extended. */
  leaseExpires: Date | undefined;
  /** True when an earlier run of this attempt was lost (a crash, a lease run out). */
  readonly redelivery: boolean;
  /** Set by `extendLease` when the job was cancelled while it ran: stop the run. */
  cancelRequested = false;
  private readonly fetchedAt = performance.now();
  // The run's span while `span` runs: `fail` marks it failed.
  private runSpan: Span | undefined;

  constructor(
    leased: LeasedJob,
    private readonly rpc: Rpc,
    private readonly callOptions: { timeoutMs?: number },
    // The client's tracer (undefined: tracing is off).
    private readonly tracer?: Tracer,
  ) {
    if (!leased.job) {
      throw new TypeError("a fetched job without its job");
    }
    this.job = jobFromProto(leased.job);
    this.leaseToken = leased.leaseToken;
    this.leaseExpires = fromTimestamp(leased.leaseExpireTime);
    this.redelivery = leased.redelivery;
  }

  get id(): string {
    return this.job.id;
  }

  get data(): unknown {
    return this.job.data;
  }

  /**
   * Runs `run` inside the run's OpenTelemetry CONSUMER span (`{queue} process`), current while it runs, as a
   * stream worker's run has one: put the run's code and its `complete` or `fail` inside. Its parent is the
   * trace context the job was added with (its add's PRODUCER span); spans `run` starts nest under it; `fail`,
   * or an error `run` throws (rethrown), ends it with ERROR status. `run` gets the span, or undefined when
   * tracing is off (no tracer provider configured): it then just runs. Resolves to what `run` returns.
   */
  async span<T>(run: (span: Span | undefined) => Promise<T> | T): Promise<T> {
    if (this.tracer === undefined) {
      return await run(undefined);
    }
    const traced = startProcess(this.tracer, this.job);
    this.runSpan = traced.span;
    try {
      return await context.with(traced.context, () => run(traced.span));
    } catch (err) {
      recordFailure(traced.span, err, errorText(err) || "Error");
      throw err;
    } finally {
      this.runSpan = undefined;
      traced.span.end();
    }
  }

  /** Records the run's success with its result (JSON-serialisable or a Uint8Array; undefined: none). */
  async complete(result?: unknown): Promise<void> {
    const request = create(CompleteJobRequestSchema, {
      ...this.ref(),
      result: encodePayload(result, "result"),
      duration: this.duration(),
    });
    await mapped(() => this.rpc.completeJob(request, this.callOptions));
  }

  /** Records a failed run: retried per the job's attempts and backoff, or failed for good. */
  async fail(message: string, options: PullFailOptions = {}): Promise<FailOutcome> {
    if (typeof message !== "string") {
      throw new TypeError("message must be a string");
    }
    checkKeys(options, FAIL_KEYS, "fail options");
    const request = create(FailJobRequestSchema, {
      ...this.ref(),
      message,
      stacktrace: options.stacktrace ?? "",
      doNotRetry: options.noRetry ?? false,
      retryAfter: options.retryAfterMs === undefined ? undefined : toDuration(options.retryAfterMs, "retryAfterMs"),
      duration: this.duration(),
    });
    // No exception is at hand: the failure's message is the span's status.
    this.runSpan?.setStatus({ code: SpanStatusCode.ERROR, message });
    const res = await mapped(() => this.rpc.failJob(request, this.callOptions));
    return { willRetry: res.willRetry, retryAt: fromTimestamp(res.retryTime) };
  }

  /**
   * Extends the lease to `leaseMs` from now (1,000 to 3,600,000; default the server's lease) and returns its
   * new expiry; sets `cancelRequested` when the job was cancelled meanwhile.
   */
  async extendLease(leaseMs?: number): Promise<Date | undefined> {
    const request = create(ExtendJobLeaseRequestSchema, {
      ...this.ref(),
      leaseDuration: leaseMs === undefined ? undefined : toDuration(leaseMs, "leaseMs"),
    });
    const res = await mapped(() => this.rpc.extendJobLease(request, this.callOptions));
    this.leaseExpires = fromTimestamp(res.leaseExpireTime);
    this.cancelRequested = res.cancelRequested;
    return this.leaseExpires;
  }

  /** Records the run's progress (any JSON; undefined leaves it) and appends log lines. */
  async reportProgress(progress?: unknown, logs: string[] = []): Promise<void> {
    if (!Array.isArray(logs)) {
      throw new TypeError(`logs must be an array of log lines, such as ["half way"], not ${typeof logs}`);
    }
    const request = create(ReportJobProgressRequestSchema, {
      ...this.ref(),
      progress: progress === undefined ? undefined : toValue(progress, "progress"),
      logs: logs.map((message) => create(JobLogLineSchema, { message: String(message) })),
    });
    await mapped(() => this.rpc.reportJobProgress(request, this.callOptions));
  }

  private ref(): { queueName: string; jobId: string; leaseToken: string } {
    return { queueName: this.job.queueName, jobId: this.job.id, leaseToken: this.leaseToken };
  }

  private duration(): Duration {
    return msToDuration(performance.now() - this.fetchedAt);
  }
}

/** Pull workers: `fetchJobs` (see the module's comment). */
export class PullCalls extends WorkflowCalls {
  /**
   * Leases up to `maxJobs` ready jobs of a queue, as a stream worker's claim does (pause, priorities, rate
   * limits, group limits and caps apply; jobs routed by worker labels are never fetched), waiting up to
   * `waitMs` for a first one. Rejects with `NotFoundError` for an unknown queue; a RangeError or TypeError
   * for a bad option, before any call.
   */
  async fetchJobs(queueName: string, options: FetchOptions = {}): Promise<PulledJob[]> {
    checkQueueName(queueName);
    checkKeys(options, FETCH_KEYS, "fetchJobs options");
    const maxJobs = options.maxJobs ?? 1;
    if (!Number.isInteger(maxJobs) || maxJobs < 1 || maxJobs > MAX_FETCH) {
      throw new RangeError(`maxJobs must be a whole number from 1 to ${MAX_FETCH}, got ${String(maxJobs)}`);
    }
    const waitMs = options.waitMs ?? 0;
    if (checkMs(waitMs, "waitMs") > MAX_FETCH_WAIT_MS) {
      throw new RangeError(`waitMs must be at most ${MAX_FETCH_WAIT_MS}, got ${waitMs}`);
    }
    const request = create(FetchJobsRequestSchema, {
      queueName,
      maxJobs,
      wait: msToDuration(waitMs),
      leaseDuration: options.leaseMs === undefined ? undefined : toDuration(options.leaseMs, "leaseMs"),
      workerName: options.workerName ?? "",
    });
    // The call's deadline covers its wait.
    const callOptions = this.timeoutMs > 0 ? { timeoutMs: this.timeoutMs + waitMs } : {};
    const res = await mapped(() => this.client.fetchJobs(request, callOptions));
    const tracer = this.tracing();
    return res.jobs.map((leased) => new PulledJob(leased, this.client, this.callOptions, tracer));
  }
}
