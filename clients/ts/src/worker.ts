/**
 * The stream worker: one `WorkerService.Connect` stream runs the processors of several queues.
 *
 * Protocol, as this side speaks it (the server's side: server/queue_manager_server/services/workers.py;
 * the summary for other languages: docs/api.md, "Worker stream protocol"):
 *
 * 1. Send `hello` (worker id, queues, concurrency, labels, language, version); the server answers `welcome`
 *    (lease duration, heartbeat interval) or ends the call (NOT_FOUND for an unknown queue).
 * 2. Credits: the first report grants `concurrency - running` credits; each delivered job uses one and each
 *    finished job gives one back, in the same report as its outcome. So at most `concurrency` jobs run.
 * 3. Deliveries carry several leased jobs; each starts at once. A run is named by its queue and job id (jobs
 *    claimed together share one lease token); every report item carries all three.
 * 4. Everything to say waits in one outbox (outbox.ts); the request stream takes it as ONE report each time
 *    the transport can send, so a lone completion goes out at once and a burst shares a message.
 * 5. Every heartbeat interval the leases of running jobs are extended (with this process's CPU and memory).
 *    The server acks each extension and every rejected item; a rejected lease marks its run lost: its
 *    AbortSignal fires and nothing is reported for it (the job is, or will be, delivered again).
 * 6. DRAIN command (no delivery follows it): grant nothing more, let running jobs finish, send their
 *    outcomes, release jobs that had not started, half-close, read until the server ends the stream,
 *    reconnect with backoff.
 * 7. CANCEL_JOB command: the run's AbortSignal fires; however the processor then ends, the run is reported
 *    in `cancelled`. A processor that throws `UnrecoverableError` fails its job for good (`do_not_retry`);
 *    one that throws `RateLimitedError` fails with `retry_after` (no attempt used).
 * 8. A broken stream is reopened with jittered exponential backoff (100 ms doubling to 5 s). Running jobs
 *    keep running; the first report on the new stream extends their leases, and outcomes not yet sent go
 *    out on it.
 * 9. `shutdown`: send `stop` (the server confirms no more jobs come), release jobs delivered meanwhile,
 *    wait up to the grace for running jobs, abandon the rest (a stall), flush the outbox, half-close, wait
 *    (bounded) for the server to end the stream, close the connection.
 */
import { EventEmitter } from "node:events";
import { hostname } from "node:os";
import { randomBytes } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { createClient, type Client } from "@connectrpc/connect";
import { context, type Tracer } from "@opentelemetry/api";
import {
  ConnectRequestSchema,
  JobCompletionSchema,
  JobFailureSchema,
  ServerCommandType,
  WorkerService,
  type ConnectRequest,
  type JobDelivery,
  type ReportAck,
  type ServerCommand,
  type ServerWelcome,
} from "./gen/queue_manager/v1/worker_service_pb.js";
import { leaseOf, Run, runKey } from "./context.js";
import { checkMs, encodePayload, fromDuration, msToDuration, toValue } from "./convert.js";
import { codeName, errorFromRpc, errorText, RateLimitedError, UnrecoverableError } from "./errors.js";
import { Outbox, type Taken } from "./outbox.js";
import { recordFailure, startProcess, tracerOf } from "./tracing.js";
import { connect, type Connection } from "./transport.js";
import {
  CLOSE_TIMEOUT_MS,
  CONFIG_ERRORS,
  DEFAULT_HEARTBEAT_MS,
  LOG_LINE_CHARS,
  LOG_LINES_KEPT,
  checkConcurrency,
  checkProcessor,
  clientVersion,
  consoleLogger,
  defaultConcurrency,
  sleep,
  within,
  type Processor,
  type WorkerLogger,
  type WorkerOptions,
} from "./worker-options.js";

export type { ActiveJob, JobContext } from "./context.js";
export { defaultConcurrency, type Processor, type WorkerLogger, type WorkerOptions } from "./worker-options.js";

/**
 * Runs processors for jobs pushed over one worker stream. Events: `connected` (serverId), `disconnected`
 * (error), `completed` (job, result), `failed` (job, error), `cancelled` (job), `lost` (job, reason),
 * `closed`.
 */
export class Worker extends EventEmitter {
  readonly workerId: string;
  readonly concurrency: number;
  readonly queues: string[];
  serverId = "";
  leaseDurationMs = 0;
  heartbeatIntervalMs = DEFAULT_HEARTBEAT_MS;

  private readonly options: WorkerOptions;
  private readonly processors: Map<string, Processor>;
  private readonly labels: Record<string, string>;
  private readonly log: WorkerLogger;
  private readonly shutdownGraceMs: number;
  private readonly backoffFirst: number;
  private readonly backoffMax: number;
  private connection: Connection | undefined;
  private client: Client<typeof WorkerService> | undefined;
  private main: Promise<void> | undefined;
  private readonly running = new Map<string, Run>();
  private readonly outbox = new Outbox();
  private connectedNow = false;
  private stopping = false; // no more credits: shutting down
  private closing = false; // running jobs are done or abandoned: flush, half-close, stop
  private gaveUp = false; // shutdown stopped waiting for the stream
  private draining = false; // the server asked this stream to drain
  private deliveryStopped = false; // the server confirmed no more jobs come on this stream
  private readonly closingSignal = new AbortController();
  private session: AbortController | undefined;
  private wakeUp: (() => void) | undefined;
  private woken = false;
  private closed: Promise<void> | undefined;
  private cpu = { usage: process.cpuUsage(), at: performance.now() };
  private tracer: Tracer | undefined; // set at start when tracing is on

  constructor(options: WorkerOptions) {
    super();
    const queues = Object.keys(options.processors ?? {});
    if (!queues.length) {
      throw new RangeError("a worker needs at least one processor: processors: { queueName: async (job, ctx) => result }");
    }
    for (const [queue, fn] of Object.entries(options.processors)) {
      checkProcessor(queue, fn);
    }
    this.options = options;
    this.processors = new Map(Object.entries(options.processors));
    this.queues = queues.sort();
    this.concurrency = options.concurrency === undefined ? defaultConcurrency() : checkConcurrency(options.concurrency);
    this.workerId = options.workerId ?? `${hostname().slice(0, 150)}-${process.pid}-${randomBytes(3).toString("hex")}`;
    this.labels = { host: hostname(), pid: String(process.pid), ...(options.labels ?? {}) };
    this.log = options.logger ?? consoleLogger;
    this.shutdownGraceMs = checkMs(options.shutdownGraceMs ?? 30_000, "shutdownGraceMs");
    this.backoffFirst = checkMs(options.reconnect?.initialDelayMs ?? 100, "reconnect.initialDelayMs");
    this.backoffMax = Math.max(this.backoffFirst, checkMs(options.reconnect?.maxDelayMs ?? 5_000, "reconnect.maxDelayMs"));
  }

  /** True while the server has welcomed the current stream. */
  get connected(): boolean {
    return this.connectedNow;
  }

  /** Jobs running now. */
  get runningCount(): number {
    return this.running.size;
  }

  /** Opens the connection and starts the stream in the background (returns at once). */
  start(): this {
    if (this.main === undefined && !this.stopping) {
      this.tracer = tracerOf(this.options.tracerProvider);
      this.connection = connect(this.options);
      this.client = createClient(WorkerService, this.connection.transport);
      this.main = this.mainLoop();
    }
    return this;
  }

  /** Resolves once the server has welcomed a stream; rejects after `timeoutMs` (default 30 s). */
  async waitConnected(timeoutMs = 30_000): Promise<void> {
    if (this.connectedNow) {
      return;
    }
    const connected = new Promise<void>((resolve) => this.once("connected", () => resolve()));
    if (!(await within(connected, timeoutMs))) {
      throw new Error(`worker ${this.workerId} was not welcomed by ${this.connection?.address} within ${timeoutMs} ms`);
    }
  }

  /**
   * Stops taking jobs, waits up to `graceMs` (default `shutdownGraceMs`) for running ones, abandons the
   * rest (their signals fire; the server redelivers them), flushes outcomes and closes the connection.
   */
  shutdown(graceMs?: number): Promise<void> {
    if (this.closed === undefined) {
      this.closed = this.close(graceMs === undefined ? this.shutdownGraceMs : checkMs(graceMs, "graceMs"));
    }
    return this.closed;
  }

  private async close(graceMs: number): Promise<void> {
    this.stopping = true;
    this.outbox.credits = 0;
    this.outbox.stop = true;
    this.wake();
    if (this.main === undefined) {
      this.emit("closed");
      return;
    }
    const runs = [...this.running.values()];
    if (runs.length && !(await within(Promise.all(runs.map((r) => r.done)), graceMs))) {
      this.log.warn(`${this.running.size} job(s) still running after ${graceMs} ms; abandoning them`);
      for (const run of [...this.running.values()]) {
        run.abandoned = true;
        run.stop("shutdown", "the worker is shutting down");
        this.outbox.add("abandoned", run.lease);
        this.running.delete(run.key);
      }
    }
    this.closing = true;
    this.closingSignal.abort();
    this.wake();
    if (!(await within(this.main, CLOSE_TIMEOUT_MS + 5_000))) {
      this.log.warn(`worker ${this.workerId}: the stream did not close in ${CLOSE_TIMEOUT_MS} ms; cutting it`);
      this.gaveUp = true;
      this.session?.abort();
      await within(this.main, 1_000);
    }
    if (this.outbox.unsent) {
      this.log.warn(`worker ${this.workerId}: ${this.outbox.unsent} report item(s) could not be sent`);
    }
    this.connection?.close();
    this.emit("closed");
  }

  // ---------------------------------------------------------------- the stream

  private async mainLoop(): Promise<void> {
    let delay = this.backoffFirst;
    while (!this.finished()) {
      let welcomed = false;
      try {
        welcomed = await this.runSession();
        this.emit("disconnected", undefined);
      } catch (err) {
        const error = errorFromRpc(err);
        this.emit("disconnected", error);
        if (CONFIG_ERRORS.has(error.code)) {
          this.log.error(`worker ${this.workerId} refused: ${error.toString()}`);
          delay = this.backoffMax;
        } else if (!this.gaveUp) {
          this.log.warn(`worker ${this.workerId} stream lost: ${error.toString()}`);
        }
      }
      if (this.finished()) {
        return;
      }
      if (welcomed) {
        delay = this.backoffFirst;
      }
      // While closing with outcomes left to send, keep trying (backing off) until shutdown gives up.
      await sleep(delay * (0.5 + Math.random() / 2), this.closing ? undefined : this.closingSignal.signal);
      delay = Math.min(delay * 2, this.backoffMax);
    }
  }

  private finished(): boolean {
    return this.gaveUp || (this.closing && this.outbox.unsent === 0);
  }

  /** Runs one stream until it ends; returns whether the server welcomed it. */
  private async runSession(): Promise<boolean> {
    const session = new AbortController();
    this.session = session;
    let ended = false;
    let inFlight: Taken | undefined;
    let closeTimer: NodeJS.Timeout | undefined;
    let heartbeat: NodeJS.Timeout | undefined;
    const hello = create(ConnectRequestSchema, {
      kind: {
        case: "hello",
        value: {
          workerId: this.workerId,
          queues: this.queues,
          concurrency: this.concurrency,
          labels: this.labels,
          language: "typescript",
          version: clientVersion(),
        },
      },
    });
    const requests = async function* (this: Worker): AsyncGenerator<ConnectRequest> {
      yield hello;
      while (!ended) {
        await this.nextWake();
        if (ended) {
          return;
        }
        const taken = this.connectedNow ? this.outbox.take() : undefined;
        if (taken) {
          inFlight = taken;
          yield taken.message;
          inFlight = undefined;
        }
        if (this.readyToHalfClose()) {
          // The server ends the stream once it has read everything; bound the wait for it.
          closeTimer = setTimeout(() => session.abort(), CLOSE_TIMEOUT_MS);
          return;
        }
      }
    }.call(this);
    let welcomed = false;
    try {
      for await (const message of this.client!.connect(requests, { signal: session.signal })) {
        const kind = message.kind;
        if (!welcomed) {
          if (kind.case !== "welcome") {
            throw new Error("the server's first message is not a welcome");
          }
          welcomed = true;
          this.onWelcome(kind.value);
          heartbeat = setInterval(() => this.onHeartbeat(), this.heartbeatIntervalMs);
        } else if (kind.case === "delivery") {
          this.onDelivery(kind.value);
        } else if (kind.case === "ack") {
          this.onAck(kind.value);
        } else if (kind.case === "command") {
          this.onCommand(kind.value);
        }
      }
    } finally {
      ended = true;
      this.connectedNow = false;
      clearInterval(heartbeat);
      clearTimeout(closeTimer);
      if (inFlight) {
        this.outbox.restore(inFlight); // the stream broke before the transport took it
        inFlight = undefined;
      }
      this.wake();
      session.abort();
    }
    return welcomed;
  }

  private wake(): void {
    this.woken = true;
    const resolve = this.wakeUp;
    this.wakeUp = undefined;
    resolve?.();
  }

  private async nextWake(): Promise<void> {
    if (!this.woken) {
      await new Promise<void>((resolve) => (this.wakeUp = resolve));
    }
    this.woken = false;
  }

  private readyToHalfClose(): boolean {
    return (this.closing || this.draining) && this.deliveryStopped && this.running.size === 0 && this.outbox.unsent === 0;
  }

  // ---------------------------------------------------------------- server messages

  private onWelcome(welcome: ServerWelcome): void {
    this.serverId = welcome.serverId;
    this.leaseDurationMs = fromDuration(welcome.leaseDuration) ?? 0;
    const interval = fromDuration(welcome.heartbeatInterval) ?? 0;
    this.heartbeatIntervalMs = interval > 0 ? interval : this.leaseDurationMs > 0 ? this.leaseDurationMs / 3 : DEFAULT_HEARTBEAT_MS;
    this.draining = false;
    this.deliveryStopped = false;
    this.outbox.stop = this.outbox.stop || this.stopping;
    this.outbox.credits = this.stopping ? 0 : Math.max(0, this.concurrency - this.running.size);
    // Extensions queued for the old stream are stale. Fresh ones for every run still going go in the first
    // report: a server that ended the old stream at its shutdown left their leases held, and this server
    // takes them over when they are extended here (a lease lost meanwhile is refused: that run is stopped).
    this.outbox.clearExtensions();
    this.extendRunning();
    this.attachStats();
    this.connectedNow = true;
    this.log.info(`worker ${this.workerId} connected to ${this.connection?.address} (server ${this.serverId})`);
    this.emit("connected", this.serverId);
    this.wake();
  }

  private onHeartbeat(): void {
    this.attachStats();
    this.extendRunning();
    this.wake();
  }

  private extendRunning(): void {
    for (const run of this.running.values()) {
      if (!run.lost) {
        this.outbox.extensions.push(run.lease);
      }
    }
  }

  private attachStats(): void {
    const now = performance.now();
    const usage = process.cpuUsage();
    const cpuMicros = usage.user + usage.system - (this.cpu.usage.user + this.cpu.usage.system);
    const wallMs = now - this.cpu.at;
    this.cpu = { usage, at: now };
    this.outbox.stats = {
      $typeName: "queue_manager.v1.WorkerStats",
      cpuPercent: wallMs > 0 ? cpuMicros / 10 / wallMs : 0,
      memoryBytes: BigInt(process.memoryUsage.rss()),
    };
  }

  private onDelivery(delivery: JobDelivery): void {
    for (const leased of delivery.jobs) {
      const job = leased.job!;
      const processor = this.processors.get(job.queueName);
      if (processor === undefined || this.stopping || this.draining) {
        if (processor === undefined) {
          this.log.error(`received job ${job.id} of queue ${JSON.stringify(job.queueName)} that has no processor`);
        }
        this.outbox.add("releases", leaseOf(leased));
        this.wake();
        continue;
      }
      const run = new Run(leased);
      const earlier = this.running.get(run.key);
      if (earlier !== undefined) {
        // The server leased the job again (its earlier lease here was recovered): that run is lost.
        this.lose(earlier, "the job was delivered again");
      }
      this.running.set(run.key, run);
      // Tracing off: this one test per run.
      run.done = this.tracer === undefined ? this.execute(run, processor) : this.executeTraced(run, processor, this.tracer);
    }
  }

  private onAck(ack: ReportAck): void {
    if (ack.deliveryStopped) {
      this.deliveryStopped = true;
      this.wake();
    }
    for (const item of ack.results) {
      if (item.code === 0) {
        continue;
      }
      const lease = item.lease!;
      const run = this.running.get(runKey(lease.queueName, lease.jobId));
      const why = `${codeName(item.code)}: ${item.message}`;
      if (run !== undefined && run.lease.leaseToken === lease.leaseToken && !run.lost) {
        this.log.warn(`job ${lease.queueName}/${lease.jobId} lost its lease (${why}); its run is stopped and its result discarded`);
        this.lose(run, why);
      } else {
        this.log.info(`server rejected a report for job ${lease.queueName}/${lease.jobId}: ${why}`);
      }
    }
  }

  private onCommand(command: ServerCommand): void {
    if (command.type === ServerCommandType.DRAIN) {
      this.log.info(`worker ${this.workerId}: the server asks to drain (${command.reason || "no reason given"})`);
      this.draining = true;
      this.deliveryStopped = true; // the server sends no job after this command
      this.outbox.credits = 0;
      this.wake();
    } else if (command.type === ServerCommandType.CANCEL_JOB && command.job) {
      const ref = command.job;
      const run = this.running.get(runKey(ref.queueName, ref.jobId));
      if (run === undefined || run.lease.leaseToken !== ref.leaseToken || run.cancelled) {
        return; // finished meanwhile (its outcome is recorded as usual), another run, or told already
      }
      run.cancelled = true;
      run.stop("cancelled", command.reason || "the job was cancelled");
    }
  }

  /** A run whose lease was recovered: stopped, and nothing reported (the job is delivered again). */
  private lose(run: Run, why: string): void {
    run.lost = true;
    run.stop("lease-lost", `the lease was lost (${why})`);
    this.emit("lost", run.job, why);
  }

  // ---------------------------------------------------------------- running jobs

  private async execute(run: Run, processor: Processor): Promise<void> {
    const limit = run.job.timeoutMs;
    const timer =
      limit === undefined
        ? undefined
        : setTimeout(() => {
            run.timedOut = true;
            run.stop("timeout", `job timed out after ${limit / 1000}s`);
          }, limit);
    const ctx = run.context(this.workerId, {
      progress: (value) => this.reportProgress(run, value),
      log: (message) => this.reportLog(run, message),
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
    if (run.cancelled) {
      if (!run.lost) {
        this.outbox.add("cancelled", run.lease);
        this.emit("cancelled", run.job);
      }
    } else if (run.lost) {
      this.log.info(`discarding the result of job ${run.job.queueName}/${run.job.id} (its lease was lost)`);
    } else if (run.timedOut) {
      this.fail(run, new Error(`job timed out after ${run.job.timeoutMs! / 1000}s`), ms, false);
    } else if (ok) {
      this.complete(run, value, ms);
    } else {
      this.fail(run, value, ms, true);
    }
    this.finish(run);
  }

  private complete(run: Run, result: unknown, ms: number): void {
    let payload;
    try {
      payload = encodePayload(result, "the processor's result");
    } catch (err) {
      this.fail(run, err, ms, true);
      return;
    }
    this.outbox.add("completions", create(JobCompletionSchema, { ...run.leaseFields, result: payload, duration: msToDuration(ms) }));
    this.emit("completed", run.job, result);
  }

  private fail(run: Run, error: unknown, ms: number, withStack: boolean): void {
    const err = error instanceof Error ? error : undefined;
    const message = errorText(error);
    const failure = create(JobFailureSchema, {
      ...run.leaseFields,
      message: message || "Error",
      stacktrace: withStack ? (err?.stack ?? "") : "",
      doNotRetry: err instanceof UnrecoverableError || err?.name === "UnrecoverableError",
      duration: msToDuration(ms),
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
    this.log.warn(`job ${run.job.queueName}/${run.job.id} (${run.job.name}) failed on attempt ${attempt} of ${run.job.maxAttempts}: ${message}`);
    this.outbox.add("failures", failure);
    this.emit("failed", run.job, error);
  }

  /** Forgets a finished run and gives its credit back (unless the worker takes no more jobs). */
  private finish(run: Run): void {
    if (this.running.get(run.key) === run) {
      this.running.delete(run.key);
    }
    if (!(this.stopping || this.draining)) {
      this.outbox.credits += 1;
    }
    this.wake();
  }

  private reportProgress(run: Run, value: unknown): void {
    if (this.running.get(run.key) !== run || run.lost) {
      return;
    }
    this.outbox.add("progress", { $typeName: "queue_manager.v1.JobProgress", lease: run.lease, progress: toValue(value, "progress") });
    this.wake();
  }

  private reportLog(run: Run, message: string): void {
    if (this.running.get(run.key) !== run || run.lost) {
      return;
    }
    const text = (typeof message === "string" ? message : String(message)).slice(0, LOG_LINE_CHARS);
    this.outbox.addLogLine(run.lease, { $typeName: "queue_manager.v1.JobLogLine", time: timestampNow(), message: text }, LOG_LINES_KEPT);
    this.wake();
  }
}
