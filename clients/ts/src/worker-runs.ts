/**
 * The jobs running on a worker: each delivered job's run of its processor, and what the run tells the server
 * (its outcome, progress and log lines, its credit back) put in the outbox for the stream to send.
 *
 * A run is named by its queue and job id. It ends in one of five ways: completed or failed (reported), cancelled
 * by the server (reported `cancelled`, however the processor ends), lost (its lease was refused or the job was
 * delivered again: nothing is reported), abandoned at shutdown (reported `abandoned` then, nothing later), or
 * parked by `ctx.waitForChildren` or `ctx.waitForEvent` (the server ended it in that call: nothing is reported,
 * like a lost run, but the next report names it in `parked` for the stream's server to forget its lease).
 */
import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { context, type Tracer } from "@opentelemetry/api";
import type { UpdateJobDataRequest, WaitForChildrenRequest, WaitForChildrenResponse } from "./gen/queue_manager/v1/jobs_pb.js";
import {
  JobCompletionSchema,
  JobDelaySchema,
  JobFailureSchema,
  type JobDelivery,
  type LeaseRef,
} from "./gen/queue_manager/v1/worker_service_pb.js";
import { waitForChildrenRequest, type WaitForChildrenOptions } from "./children.js";
import type { WaitForEventRequest, WaitForEventResponse } from "./gen/queue_manager/v1/external_events_pb.js";
import { waitForEventRequest, type WaitForEventOptions } from "./external-events.js";
import { leaseOf, Run, runKey } from "./context.js";
import { PayloadCodecError, type CodecChain } from "./codecs.js";
import { decodePayload, encodePayload, fromTimestamp, msToDuration, toValue } from "./convert.js";
import type { Payload } from "./gen/queue_manager/v1/types_pb.js";
import { DelayedError, errorText, RateLimitedError, UnrecoverableError, WaitingForChildrenError, WaitingForEventError } from "./errors.js";
import type { Outbox } from "./outbox.js";
import { recordFailure, startProcess } from "./tracing.js";
import type { ChildSpec } from "./types.js";
import { LOG_LINE_CHARS, LOG_LINES_KEPT, within, type Processor, type WorkerLogger } from "./worker-options.js";

/** How many parked runs' leases are remembered (their heartbeats' refusals are expected); the oldest go first. */
const PARKED_KEPT = 1000;

/** What names a lease in `Runs.parked`: its queue, job id and token. */
function leaseKey(lease: LeaseRef): string {
  return `${runKey(lease.queueName, lease.jobId)}\u0000${lease.leaseToken}`;
}

/** What the runs need of their worker: its id, its log, its events and whether it takes jobs now. */
export interface RunsHost {
  readonly workerId: string;
  readonly log: WorkerLogger;
  /** The worker's events: `completed`, `failed`, `cancelled`, `lost`. */
  emit(event: string, ...args: unknown[]): boolean;
  /** False while shutting down or draining: deliveries are released, a finished run's credit is kept. */
  accepting(): boolean;
  /** Tells the stream the outbox has something to send. */
  wake(): void;
  /** Calls UpdateJobData on the worker's connection (a run's checkpoint); rejects with the mapped error. */
  updateJobData(request: Omit<UpdateJobDataRequest, "$typeName">): Promise<void>;
  /** Calls WaitForChildren on the worker's connection (a run adding children); rejects with the mapped error. */
  waitForChildren(request: WaitForChildrenRequest): Promise<WaitForChildrenResponse>;
  /** Calls WaitForEvent on the worker's connection (a run waiting for an external event); rejects with the mapped error. */
  waitForEvent(request: WaitForEventRequest): Promise<WaitForEventResponse>;
}

export class Runs {
  /** Set at start when tracing is on: each run then has a CONSUMER span. */
  tracer: Tracer | undefined;
  /** Slots given up by a lowered concurrency (SET_CONCURRENCY): that many finished runs give no credit back. */
  debt = 0;
  private readonly running = new Map<string, Run>();
  /**
   * Leases of runs their own call parked, oldest first (bounded): the server ended each lease in that call, so a
   * heartbeat that crossed it is refused, as expected.
   */
  private readonly parked = new Set<string>();

  constructor(
    private readonly host: RunsHost,
    private readonly outbox: Outbox,
    private readonly processors: Map<string, Processor>,
    private readonly codecs: CodecChain | undefined = undefined,
  ) {}

  /** Jobs running now. */
  get size(): number {
    return this.running.size;
  }

  /** Starts a run for each delivered job; releases those the worker does not take (no processor, not accepting). */
  deliver(delivery: JobDelivery): void {
    for (const leased of delivery.jobs) {
      const job = leased.job!;
      const processor = this.processors.get(job.queueName);
      if (processor === undefined || !this.host.accepting()) {
        if (processor === undefined) {
          this.host.log.error(`received job ${job.id} of queue ${JSON.stringify(job.queueName)} that has no processor`);
        }
        this.outbox.add("releases", leaseOf(leased));
        this.host.wake();
        continue;
      }
      const undecodable = this.decode(leased);
      const run = new Run(leased);
      const earlier = this.running.get(run.key);
      if (earlier !== undefined) {
        // The server leased the job again (its earlier lease here was recovered): that run is lost.
        this.lose(earlier, "the job was delivered again");
      }
      this.running.set(run.key, run);
      if (undecodable !== undefined) {
        // Fails for good, where an operator sees it: no attempt could read it.
        this.fail(run, new UnrecoverableError(`cannot decode the job's payload: ${undecodable.message}`), 0, false);
        this.finish(run);
        continue;
      }
      // Tracing off: this one test per run.
      run.done = this.tracer === undefined ? this.execute(run, processor) : this.executeTraced(run, processor, this.tracer);
    }
  }

  /** Decodes a delivered job's payloads (data, parents' and children's results) in place; the error when one cannot be. */
  private decode(leased: JobDelivery["jobs"][number]): PayloadCodecError | undefined {
    try {
      this.codecs?.decodeMessage(leased);
    } catch (err) {
      if (err instanceof PayloadCodecError) {
        return err;
      }
      throw err;
    }
    return undefined;
  }

  /** Asks the server to extend the lease of every run still going (a heartbeat, or the first report of a stream). */
  extendAll(): void {
    for (const run of this.running.values()) {
      if (!run.lost && !run.parked) {
        this.outbox.extensions.push(run.lease);
      }
    }
  }

  /** The server refused a report item about `lease` (`why`): a run still holding that lease is lost. */
  refused(lease: LeaseRef, why: string): void {
    const run = this.running.get(runKey(lease.queueName, lease.jobId));
    const same = run !== undefined && run.lease.leaseToken === lease.leaseToken;
    if ((same && (run.parking > 0 || run.parked)) || this.parked.has(leaseKey(lease))) {
      return; // a heartbeat that crossed the call parking the run: the server ended the lease there, as asked
    }
    if (same && !run.lost) {
      this.host.log.warn(`job ${lease.queueName}/${lease.jobId} lost its lease (${why}); its run is stopped and its result discarded`);
      this.lose(run, why);
    } else {
      this.host.log.info(`server rejected a report for job ${lease.queueName}/${lease.jobId}: ${why}`);
    }
  }

  /**
   * The server cancelled a job (CANCEL_JOB): the run holding `lease` sees its signal fire. `timedOut`: the
   * server timed the run out (it counts from the claim, this worker from the delivery a little later), and
   * the run ends exactly as at its own timeout (`timeOut`).
   */
  cancel(lease: LeaseRef, reason: string, timedOut = false): void {
    const run = this.running.get(runKey(lease.queueName, lease.jobId));
    if (run === undefined || run.lease.leaseToken !== lease.leaseToken || run.cancelled || run.timedOut) {
      return; // finished meanwhile (its outcome is recorded as usual), another run, or told already
    }
    if (timedOut) {
      this.timeOut(run, reason || "job timed out");
      return;
    }
    run.cancelled = true;
    run.stop("cancelled", reason || "the job was cancelled");
  }

  /**
   * Stops a run past its job's timeout, whichever side noticed first (this worker's timer or the server):
   * its signal fires with kind "timeout", and however it ends it is reported as a failure that timed out.
   */
  private timeOut(run: Run, reason: string): void {
    run.timedOut = reason;
    run.stop("timeout", reason);
  }

  /** Whether every run going now has ended within `ms`. */
  settled(ms: number): Promise<boolean> {
    return within(Promise.all([...this.running.values()].map((r) => r.done)), ms);
  }

  /** Gives up the runs still going (shutdown past its grace): their signals fire, they are reported abandoned. */
  abandonAll(): void {
    for (const run of [...this.running.values()]) {
      run.abandoned = true;
      run.stop("shutdown", "the worker is shutting down");
      this.outbox.add("abandoned", run.lease);
      this.running.delete(run.key);
    }
  }

  /** A run whose lease was recovered: stopped, and nothing reported (the job is delivered again). */
  private lose(run: Run, why: string): void {
    run.lost = true;
    run.stop("lease-lost", `the lease was lost (${why})`);
    this.host.emit("lost", run.job, why);
  }

  private async execute(run: Run, processor: Processor): Promise<void> {
    const limit = run.job.timeoutMs;
    const timer =
      limit === undefined
        ? undefined
        : setTimeout(() => {
            if (!run.timedOut) {
              this.timeOut(run, `job timed out after ${limit / 1000}s`);
            }
          }, limit);
    const ctx = run.context(this.host.workerId, {
      progress: (value) => this.reportProgress(run, value),
      log: (message) => this.reportLog(run, message),
      updateData: (data) => this.updateData(run, data),
      waitForChildren: (children, options) => this.waitForChildren(run, children, options),
      waitForEvent: (keys, options) => this.waitForEvent(run, keys, options),
    });
    try {
      const result = await processor(run.job, ctx);
      this.settle(run, true, result);
    } catch (err) {
      this.settle(run, false, err);
    } finally {
      clearTimeout(timer);
    }
  }

  /** `execute` inside the run's CONSUMER span, current while the processor runs; `fail` marks it failed. */
  private async executeTraced(run: Run, processor: Processor, tracer: Tracer): Promise<void> {
    const traced = startProcess(tracer, run.job);
    run.span = traced.span;
    try {
      await context.with(traced.context, () => this.execute(run, processor));
    } finally {
      traced.span.end();
    }
  }

  private settle(run: Run, ok: boolean, value: unknown): void {
    if (run.abandoned) {
      return; // reported abandoned at shutdown already
    }
    const ms = performance.now() - run.startedAt;
    if (run.parked) {
      // The server ended the run when it parked the job: a report about it would be refused as a lost lease.
    } else if (run.cancelled) {
      if (!run.lost) {
        this.outbox.add("cancelled", run.lease);
        this.host.emit("cancelled", run.job);
      }
    } else if (run.lost) {
      this.host.log.info(`discarding the result of job ${run.job.queueName}/${run.job.id} (its lease was lost)`);
    } else if (run.timedOut) {
      this.fail(run, new Error(run.timedOut), ms, false, true);
    } else if (ok) {
      this.complete(run, value, ms);
    } else if (value instanceof DelayedError) {
      this.delay(run, value, ms);
    } else {
      this.fail(run, value, ms, true);
    }
    this.finish(run);
  }

  /** The run asked to run again later (DelayedError): its job waits without using an attempt. */
  private delay(run: Run, err: DelayedError, ms: number): void {
    let data;
    if (err.hasData) {
      try {
        data = this.encoded(encodePayload(err.data, "the delay's data"));
      } catch (bad) {
        this.fail(run, bad, ms, true);
        return;
      }
    }
    this.outbox.add("delays", create(JobDelaySchema, { lease: run.lease, delay: msToDuration(err.delayMs), data }));
  }

  private complete(run: Run, result: unknown, ms: number): void {
    let payload;
    try {
      payload = this.encoded(encodePayload(result, "the processor's result"));
    } catch (err) {
      this.fail(run, err, ms, true);
      return;
    }
    this.outbox.add("completions", create(JobCompletionSchema, { ...run.leaseFields, result: payload, duration: msToDuration(ms) }));
    this.host.emit("completed", run.job, result);
  }

  /** A payload a run reports, through the codecs. */
  private encoded(payload: Payload | undefined): Payload | undefined {
    if (payload !== undefined) {
      this.codecs?.encode(payload);
    }
    return payload;
  }

  /** Reports a failed run; timedOut: the run passed the job's timeout here (recorded as timed out). */
  private fail(run: Run, error: unknown, ms: number, withStack: boolean, timedOut = false): void {
    const err = error instanceof Error ? error : undefined;
    const message = errorText(error);
    const failure = create(JobFailureSchema, {
      ...run.leaseFields,
      message: message || "Error",
      stacktrace: withStack ? (err?.stack ?? "") : "",
      doNotRetry: err instanceof UnrecoverableError || err?.name === "UnrecoverableError",
      duration: msToDuration(ms),
      timedOut,
    });
    if (err instanceof RateLimitedError) {
      // Back without using an attempt; the queue holds off that long.
      failure.retryAfter = msToDuration(err.retryAfterMs);
      failure.stacktrace = "";
    }
    if (run.span !== undefined) {
      recordFailure(run.span, error, message || "Error");
    }
    const attempt = run.job.attemptsMade + 1;
    this.host.log.warn(`job ${run.job.queueName}/${run.job.id} (${run.job.name}) failed on attempt ${attempt} of ${run.job.maxAttempts}: ${message}`);
    this.outbox.add("failures", failure);
    this.host.emit("failed", run.job, error);
  }

  /** Forgets a finished run and gives its credit back (unless the worker takes no more jobs, or owes slots). */
  private finish(run: Run): void {
    if (this.running.get(run.key) === run) {
      this.running.delete(run.key);
    }
    if (this.debt > 0) {
      this.debt -= 1; // a lower concurrency: this slot is given up
    } else if (this.host.accepting()) {
      this.outbox.credits += 1;
    }
    this.host.wake();
  }

  private reportProgress(run: Run, value: unknown): void {
    if (this.running.get(run.key) !== run || run.lost || run.parked) {
      return;
    }
    this.outbox.add("progress", { $typeName: "queue_manager.v1.JobProgress", lease: run.lease, progress: toValue(value, "progress") });
    this.host.wake();
  }

  /** A run's checkpoint: the job's new data, stored by the server only while the run's lease holds. */
  private async updateData(run: Run, data: unknown): Promise<void> {
    const payload = encodePayload(data === undefined ? null : data)!; // a TypeError before anything is sent
    const { queueName, jobId, leaseToken } = run.lease;
    await this.host.updateJobData({ queueName, jobId, leaseToken, data: payload });
    run.data = decodePayload(payload);
  }

  /**
   * A run adding children (WaitForChildren): once the server has added them and parked the job, the run is
   * over, and this rejects with `WaitingForChildrenError` to end the processor; a refusal rejects with the
   * server's error and the run goes on.
   */
  private async waitForChildren(run: Run, children: readonly ChildSpec[], options?: WaitForChildrenOptions): Promise<never> {
    const request = waitForChildrenRequest(run.lease, children, options); // a TypeError before anything is sent
    const answer = await this.park(run, () => this.host.waitForChildren(request));
    this.host.log.info(`job ${run.job.queueName}/${run.job.id} waits for ${answer.childrenPending} children`);
    throw new WaitingForChildrenError(
      answer.children.map((c) => ({ queueName: c.queueName, jobId: c.jobId })),
      answer.childrenPending,
    );
  }

  /**
   * A run waiting for an external event (WaitForEvent): once the server has parked the job, the run is over,
   * and this rejects with `WaitingForEventError` to end the processor; a refusal rejects with the server's
   * error and the run goes on.
   */
  private async waitForEvent(run: Run, keys: string | readonly string[], options?: WaitForEventOptions): Promise<never> {
    const request = waitForEventRequest(run.lease, keys, options); // a TypeError before anything is sent
    const answer = await this.park(run, () => this.host.waitForEvent(request));
    this.host.log.info(`job ${run.job.queueName}/${run.job.id} waits for event ${request.keys.join(", ")}`);
    throw new WaitingForEventError([...request.keys], fromTimestamp(answer.until));
  }

  /**
   * Makes a call that parks the run's job (WaitForChildren, WaitForEvent). While it is out, the server may end
   * the lease in it before a heartbeat of the run arrives, so a refusal of that heartbeat is expected (`refused`);
   * once it has answered, the run is parked: no longer extended, nothing reported, and the next report names it
   * in `parked`, so that the stream's server forgets the lease even when the call reached another server
   * (several behind one address), which cannot tell it. No wake: the item goes with the report that the run's
   * end sends with its credit.
   */
  private async park<T>(run: Run, call: () => Promise<T>): Promise<T> {
    run.parking += 1;
    try {
      const answer = await call();
      run.parked = true;
      this.outbox.parked.push(run.lease);
      this.parked.add(leaseKey(run.lease));
      if (this.parked.size > PARKED_KEPT) {
        this.parked.delete(this.parked.values().next().value!);
      }
      return answer;
    } finally {
      run.parking -= 1;
    }
  }

  private reportLog(run: Run, message: string): void {
    if (this.running.get(run.key) !== run || run.lost || run.parked) {
      return;
    }
    const text = (typeof message === "string" ? message : String(message)).slice(0, LOG_LINE_CHARS);
    this.outbox.addLogLine(run.lease, { $typeName: "queue_manager.v1.JobLogLine", time: timestampNow(), message: text }, LOG_LINES_KEPT);
    this.host.wake();
  }
}
