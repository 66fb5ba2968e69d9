/**
 * The stream `Worker`: one `WorkerService.Connect` stream runs the processors of several queues. Its
 * stream and the protocol it speaks: worker-stream.ts; its running jobs: worker-runs.ts; the context a
 * processor gets: context.ts; its options and defaults: worker-options.ts.
 */
import { withCodecs } from "./codec-client.js";
import { makeChain, type CodecChain } from "./codecs.js";
import { EventEmitter } from "node:events";
import { hostname } from "node:os";
import { randomBytes } from "node:crypto";
import { createClient, type Client } from "@connectrpc/connect";
import { QueueService } from "./gen/queue_manager/v1/queue_service_pb.js";
import { WorkerService } from "./gen/queue_manager/v1/worker_service_pb.js";
import { checkMs } from "./convert.js";
import { mapped } from "./errors.js";
import { checkKeys, checkQueueName } from "./options.js";
import { Outbox } from "./outbox.js";
import { tracerOf } from "./tracing.js";
import { connect, type Connection } from "./transport.js";
import {
  CLOSE_TIMEOUT_MS,
  DEFAULT_HEARTBEAT_MS,
  checkConcurrency,
  checkProcessor,
  checkQueueOrder,
  checkQueueWeights,
  checkTier,
  consoleLogger,
  defaultConcurrency,
  within,
  WORKER_OPTION_KEYS,
  type WorkerLogger,
  type WorkerOptions,
} from "./worker-options.js";
import { Runs } from "./worker-runs.js";
import { WorkerStream } from "./worker-stream.js";

export type { ActiveJob, JobContext } from "./context.js";

/** How long a run's checkpoint (ctx.updateData) or its children's add (ctx.waitForChildren) waits for the server's answer. */
const UPDATE_DATA_TIMEOUT_MS = 30_000;
export { defaultConcurrency, type Processor, type WorkerLogger, type WorkerOptions } from "./worker-options.js";

/**
 * Runs processors for jobs pushed over one worker stream. Events: `connected` (serverId), `disconnected`
 * (error), `completed` (job, result), `failed` (job, error), `cancelled` (job), `lost` (job, reason),
 * `closed`.
 */
export class Worker extends EventEmitter {
  readonly workerId: string;
  /** Its queues, in the hello's order: `queueOrder` when given (a strict priority), else sorted. */
  readonly queues: string[];
  /** Its queues' weights sent in the hello (`queueWeights`); empty for none. */
  readonly queueWeights: Record<string, number>;
  /** Whether `queues` is a strict priority order (`queueOrder`). */
  readonly strictOrder: boolean;
  serverId = "";
  leaseDurationMs = 0;
  heartbeatIntervalMs = DEFAULT_HEARTBEAT_MS;
  /** True once an operator stopped this worker (`qm workers stop`): its run ends as after `shutdown`. */
  stoppedByServer = false;

  private readonly options: WorkerOptions;
  private readonly log: WorkerLogger;
  private readonly shutdownGraceMs: number;
  private readonly outbox = new Outbox();
  private readonly runs: Runs;
  private readonly stream: WorkerStream;
  private connection: Connection | undefined;
  /** The producer service on the worker's connection: a run's checkpoints (ctx.updateData) go through it. */
  private queueService: Client<typeof QueueService> | undefined;
  /** The payload codecs (codecs.ts): the runs decode deliveries and encode results; checkpoints go through them. */
  private readonly codecs: CodecChain | undefined;
  private main: Promise<void> | undefined;
  private closed: Promise<void> | undefined;

  constructor(options: WorkerOptions) {
    super();
    checkKeys(options, WORKER_OPTION_KEYS, "Worker options");
    const queues = Object.keys(options.processors ?? {});
    if (!queues.length) {
      throw new RangeError("a worker needs at least one processor: processors: { queueName: async (job, ctx) => result }");
    }
    for (const [queue, fn] of Object.entries(options.processors)) {
      // The server refuses a hello naming a queue it would never take; the worker would only warn of that
      // refusal every few seconds.
      checkQueueName(queue, "processors key");
      checkProcessor(queue, fn);
    }
    this.options = options;
    this.queueWeights = checkQueueWeights(options.queueWeights, queues);
    if (options.queueOrder !== undefined && Object.keys(this.queueWeights).length) {
      throw new RangeError("give queueWeights or queueOrder, not both");
    }
    this.strictOrder = options.queueOrder !== undefined;
    this.queues = this.strictOrder ? checkQueueOrder(options.queueOrder, queues) : queues.sort();
    const concurrency = options.concurrency === undefined ? defaultConcurrency() : checkConcurrency(options.concurrency);
    this.workerId = options.workerId ?? `${hostname().slice(0, 150)}-${process.pid}-${randomBytes(3).toString("hex")}`;
    const labels = { host: hostname(), pid: String(process.pid), ...(options.labels ?? {}) };
    const log = (this.log = options.logger ?? consoleLogger);
    this.shutdownGraceMs = checkMs(options.shutdownGraceMs ?? 30_000, "shutdownGraceMs");
    const backoffFirst = checkMs(options.reconnect?.initialDelayMs ?? 100, "reconnect.initialDelayMs");
    const backoffMax = Math.max(backoffFirst, checkMs(options.reconnect?.maxDelayMs ?? 5_000, "reconnect.maxDelayMs"));
    const host = {
      workerId: this.workerId,
      log,
      emit: (event: string, ...args: unknown[]) => this.emit(event, ...args),
      accepting: () => this.stream.accepting,
      wake: () => this.stream.wake(),
      updateJobData: async (request: Parameters<Client<typeof QueueService>["updateJobData"]>[0]) => {
        const service = this.queueService;
        if (service === undefined) {
          throw new Error(`worker ${this.workerId} is not started: it has no connection to update a job's data on`);
        }
        await mapped(() => service.updateJobData(request, { timeoutMs: UPDATE_DATA_TIMEOUT_MS }));
      },
      waitForChildren: async (request: Parameters<Client<typeof QueueService>["waitForChildren"]>[0]) => {
        const service = this.queueService;
        if (service === undefined) {
          throw new Error(`worker ${this.workerId} is not started: it has no connection to add a job's children on`);
        }
        return await mapped(() => service.waitForChildren(request, { timeoutMs: UPDATE_DATA_TIMEOUT_MS }));
      },
      waitForEvent: async (request: Parameters<Client<typeof QueueService>["waitForEvent"]>[0]) => {
        const service = this.queueService;
        if (service === undefined) {
          throw new Error(`worker ${this.workerId} is not started: it has no connection to park a job on`);
        }
        return await mapped(() => service.waitForEvent(request, { timeoutMs: UPDATE_DATA_TIMEOUT_MS }));
      },
    };
    this.codecs = makeChain(options.codecs);
    this.runs = new Runs(host, this.outbox, new Map(Object.entries(options.processors)), this.codecs);
    const settings = {
      labels,
      log,
      backoffFirst,
      backoffMax,
      queueWeights: this.queueWeights,
      strictOrder: this.strictOrder,
      tier: checkTier(options.tier),
    };
    this.stream = new WorkerStream(this, settings, concurrency, this.outbox, this.runs);
  }

  /** The most jobs it runs at once: the `concurrency` option until an operator changes it (`setWorkerConcurrency`). */
  get concurrency(): number {
    return this.stream.concurrency;
  }

  /** True while the server has welcomed the current stream. */
  get connected(): boolean {
    return this.stream.connected;
  }

  /** Jobs running now. */
  get runningCount(): number {
    return this.runs.size;
  }

  /** Opens the connection and starts the stream in the background (returns at once). */
  start(): this {
    if (this.main === undefined && !this.stream.stopping) {
      this.runs.tracer = tracerOf(this.options.tracerProvider);
      this.connection = connect(this.options);
      const queueService = createClient(QueueService, this.connection.transport);
      this.queueService = this.codecs === undefined ? queueService : withCodecs(queueService, QueueService, this.codecs);
      this.main = this.stream.run(createClient(WorkerService, this.connection.transport), this.connection.address);
    }
    return this;
  }

  /** Resolves once the server has welcomed a stream; rejects after `timeoutMs` (default 30 s). */
  async waitConnected(timeoutMs = 30_000): Promise<void> {
    if (this.stream.connected) {
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
    this.stream.stop();
    if (this.main === undefined) {
      this.emit("closed");
      return;
    }
    if (this.runs.size && !(await this.runs.settled(graceMs))) {
      this.log.warn(`${this.runs.size} job(s) still running after ${graceMs} ms; abandoning them`);
      this.runs.abandonAll();
    }
    this.stream.closeWhenSent();
    if (!(await within(this.main, CLOSE_TIMEOUT_MS + 5_000))) {
      this.log.warn(`worker ${this.workerId}: the stream did not close in ${CLOSE_TIMEOUT_MS} ms; cutting it`);
      this.stream.cut();
      await within(this.main, 1_000);
    }
    if (this.outbox.unsent) {
      this.log.warn(`worker ${this.workerId}: ${this.outbox.unsent} report item(s) could not be sent`);
    }
    this.connection?.close();
    this.emit("closed");
  }
}
