/**
 * The worker's side of `WorkerService.Connect`: one stream at a time, reopened when it breaks.
 *
 * Protocol, as this side speaks it (the server's side: server/queue_manager_server/services/workers.py;
 * the summary for other languages: docs/api.md, "Worker stream protocol"):
 *
 * 1. Send `hello` (worker id, queues, concurrency, labels, language, version, the commands it obeys, its
 *    queues' weights or strict order); the server answers `welcome` (lease duration, heartbeat interval)
 *    or ends the call (NOT_FOUND for an unknown queue).
 * 2. Credits: the first report grants `concurrency - running` credits; each delivered job uses one and each
 *    finished job gives one back, in the same report as its outcome. So at most `concurrency` jobs run.
 * 3. Deliveries carry several leased jobs; each starts at once (worker-runs.ts). A run is named by its queue
 *    and job id (jobs claimed together share one lease token); every report item carries all three.
 * 4. Everything to say waits in one outbox (outbox.ts); the request stream takes it as ONE report each time
 *    the transport can send, so a lone completion goes out at once and a burst shares a message.
 * 5. Every heartbeat interval the leases of running jobs are extended (with this process's CPU and memory).
 *    The server acks each extension and every rejected item; a rejected lease marks its run lost: its
 *    AbortSignal fires and nothing is reported for it (the job is, or will be, delivered again).
 * 6. DRAIN command (no delivery follows it): grant nothing more, let running jobs finish, send their
 *    outcomes, release jobs that had not started, half-close, read until the server ends the stream,
 *    reconnect with backoff.
 *    Operators' commands (ControlWorker; the hello lists them in `commands`, so the server sends no other):
 *    QUIET — the server delivers nothing until RESUME; runs in hand finish and report as usual, credits
 *    included, and a stream opened meanwhile says `quiet` in its hello. STOP — `shutdown` as if called (no
 *    reconnect); `stoppedByServer` is then true. SET_CONCURRENCY — `concurrency` becomes the command's: a
 *    higher value sends the extra credits at once; for a lower one the server dropped `revoked_credits` of
 *    those it held, and the rest of the decrease comes from credits not yet sent, then from runs that finish
 *    (their credits are not given back until it is paid). A stream opened later says the new concurrency.
 * 7. CANCEL_JOB command: the run's AbortSignal fires; however the processor then ends, the run is reported
 *    in `cancelled`. With `timed_out` (the server timed the run out before this worker's own timer fired)
 *    it ends exactly as at its own timeout: the signal's reason is a JobAbortedError of kind "timeout", and
 *    the run is reported as a failure with `timed_out`, which the server, having recorded it, rejects. A processor that throws `UnrecoverableError` fails its job for good (`do_not_retry`);
 *    one that throws `RateLimitedError` fails with `retry_after` (no attempt used).
 * 8. A broken stream is reopened with jittered exponential backoff (100 ms doubling to 5 s). Running jobs
 *    keep running; the first report on the new stream extends their leases, and outcomes not yet sent go
 *    out on it.
 * 9. `ctx.waitForChildren` and `ctx.waitForEvent` are unary calls that park the job and end the run: the run
 *    is no longer extended, and the next report (the one giving its credit back) names it in `parked`, so
 *    the stream's server forgets the lease even when the call reached another server.
 * 10. `shutdown` (worker.ts): send `stop` (the server confirms no more jobs come), release jobs delivered
 *    meanwhile, wait up to the grace for running jobs, abandon the rest (a stall), flush the outbox,
 *    half-close, wait (bounded) for the server to end the stream, close the connection.
 */
import { create } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import {
  ConnectRequestSchema,
  ServerCommandType,
  type ConnectRequest,
  type ReportAck,
  type ServerCommand,
  type ServerWelcome,
  type WorkerService,
} from "./gen/queue_manager/v1/worker_service_pb.js";
import { fromDuration } from "./convert.js";
import { codeName, errorFromRpc } from "./errors.js";
import type { Outbox, Taken } from "./outbox.js";
import type { Runs } from "./worker-runs.js";
import {
  CLOSE_TIMEOUT_MS,
  CONFIG_ERRORS,
  DEFAULT_HEARTBEAT_MS,
  clientVersion,
  sleep,
  type WorkerLogger,
} from "./worker-options.js";

/** The worker a stream serves: what its hello says, what the server's welcome set, and its events. */
export interface StreamOwner {
  readonly workerId: string;
  readonly queues: string[];
  serverId: string;
  leaseDurationMs: number;
  heartbeatIntervalMs: number;
  /** Set when an operator stopped the worker (STOP command). */
  stoppedByServer: boolean;
  /** The worker's events: `connected` (serverId) and `disconnected` (error). */
  emit(event: string, ...args: unknown[]): boolean;
  /** The worker's graceful shutdown (a STOP command starts it). */
  shutdown(): Promise<void>;
}

/** The operators' commands this worker obeys (its hello lists them). */
const CONTROL_COMMANDS = [
  ServerCommandType.QUIET,
  ServerCommandType.RESUME,
  ServerCommandType.STOP,
  ServerCommandType.SET_CONCURRENCY,
];

/**
 * How a stream says hello and comes back: the hello's labels and queue shares (weights, or a strict order of
 * the owner's queues), the log, the reconnect backoff (ms).
 */
export interface StreamSettings {
  labels: Record<string, string>;
  queueWeights: Record<string, number>;
  strictOrder: boolean;
  tier: number;
  log: WorkerLogger;
  backoffFirst: number;
  backoffMax: number;
}

export class WorkerStream {
  private connectedNow = false;
  private stoppingNow = false; // no more credits: shutting down
  private closing = false; // running jobs are done or abandoned: flush, half-close, stop
  private gaveUp = false; // shutdown stopped waiting for the stream
  private draining = false; // the server asked this stream to drain
  private deliveryStopped = false; // the server confirmed no more jobs come on this stream
  private quiet = false; // an operator quieted this worker: the server delivers nothing until RESUME
  private readonly closingSignal = new AbortController();
  private session: AbortController | undefined;
  private wakeUp: (() => void) | undefined;
  private woken = false;
  private cpu = { usage: process.cpuUsage(), at: performance.now() };
  /** The most jobs run at once: the worker's option until a SET_CONCURRENCY command changes it. */
  concurrency: number;

  constructor(
    private readonly owner: StreamOwner,
    private readonly settings: StreamSettings,
    concurrency: number,
    private readonly outbox: Outbox,
    private readonly runs: Runs,
  ) {
    this.concurrency = concurrency;
  }

  /** True while the server has welcomed the current stream. */
  get connected(): boolean {
    return this.connectedNow;
  }

  /** True once shutdown has begun (`stop`). */
  get stopping(): boolean {
    return this.stoppingNow;
  }

  /** Whether the worker takes jobs: not once shutting down, nor while the server drains this stream. */
  get accepting(): boolean {
    return !(this.stoppingNow || this.draining);
  }

  /** Runs streams on `client` (reopening broken ones) until `closeWhenSent` has nothing left, or `cut`. */
  async run(client: Client<typeof WorkerService>, address: string): Promise<void> {
    const { backoffFirst, backoffMax, log } = this.settings;
    const workerId = this.owner.workerId;
    let delay = backoffFirst;
    while (!this.finished()) {
      let welcomed = false;
      try {
        welcomed = await this.runSession(client, address);
        this.owner.emit("disconnected", undefined);
      } catch (err) {
        const error = errorFromRpc(err);
        this.owner.emit("disconnected", error);
        if (CONFIG_ERRORS.has(error.code)) {
          log.error(`worker ${workerId} refused: ${error.toString()}`);
          delay = backoffMax;
        } else if (!this.gaveUp) {
          log.warn(`worker ${workerId} stream lost: ${error.toString()}`);
        }
      }
      if (this.finished()) {
        return;
      }
      if (welcomed) {
        delay = backoffFirst;
      }
      // While closing with outcomes left to send, keep trying (backing off) until shutdown gives up.
      await sleep(delay * (0.5 + Math.random() / 2), this.closing ? undefined : this.closingSignal.signal);
      delay = Math.min(delay * 2, backoffMax);
    }
  }

  /** Shutdown's first step: grant nothing more and ask the server to stop delivering. */
  stop(): void {
    this.stoppingNow = true;
    this.outbox.credits = 0;
    this.outbox.stop = true;
    this.wake();
  }

  /** Running jobs are done or abandoned: send what is left, half-close, and stop once it is sent. */
  closeWhenSent(): void {
    this.closing = true;
    this.closingSignal.abort();
    this.wake();
  }

  /** Shutdown stopped waiting: cancel the stream, reopen none. */
  cut(): void {
    this.gaveUp = true;
    this.session?.abort();
  }

  /** Tells the request stream there may be something to send (or to half-close). */
  wake(): void {
    this.woken = true;
    const resolve = this.wakeUp;
    this.wakeUp = undefined;
    resolve?.();
  }

  private finished(): boolean {
    return this.gaveUp || (this.closing && this.outbox.unsent === 0);
  }

  /** Runs one stream until it ends; returns whether the server welcomed it. */
  private async runSession(client: Client<typeof WorkerService>, address: string): Promise<boolean> {
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
          workerId: this.owner.workerId,
          queues: this.owner.queues,
          concurrency: this.concurrency,
          labels: this.settings.labels,
          language: "typescript",
          version: clientVersion(),
          commands: CONTROL_COMMANDS,
          quiet: this.quiet,
          queueWeights: this.settings.queueWeights,
          strictOrder: this.settings.strictOrder,
          tier: this.settings.tier,
        },
      },
    });
    const requests = async function* (this: WorkerStream): AsyncGenerator<ConnectRequest> {
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
      for await (const message of client.connect(requests, { signal: session.signal })) {
        const kind = message.kind;
        if (!welcomed) {
          if (kind.case !== "welcome") {
            throw new Error("the server's first message is not a welcome");
          }
          welcomed = true;
          this.onWelcome(kind.value, address);
          heartbeat = setInterval(() => this.onHeartbeat(), this.owner.heartbeatIntervalMs);
        } else if (kind.case === "delivery") {
          this.runs.deliver(kind.value);
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

  private async nextWake(): Promise<void> {
    if (!this.woken) {
      await new Promise<void>((resolve) => (this.wakeUp = resolve));
    }
    this.woken = false;
  }

  private readyToHalfClose(): boolean {
    return (this.closing || this.draining) && this.deliveryStopped && this.runs.size === 0 && this.outbox.unsent === 0;
  }

  // ---------------------------------------------------------------- server messages

  private onWelcome(welcome: ServerWelcome, address: string): void {
    const owner = this.owner;
    owner.serverId = welcome.serverId;
    owner.leaseDurationMs = fromDuration(welcome.leaseDuration) ?? 0;
    const interval = fromDuration(welcome.heartbeatInterval) ?? 0;
    owner.heartbeatIntervalMs =
      interval > 0 ? interval : owner.leaseDurationMs > 0 ? owner.leaseDurationMs / 3 : DEFAULT_HEARTBEAT_MS;
    this.draining = false;
    this.deliveryStopped = false;
    this.outbox.stop = this.outbox.stop || this.stoppingNow;
    this.outbox.credits = this.stoppingNow ? 0 : Math.max(0, this.concurrency - this.runs.size);
    this.runs.debt = Math.max(0, this.runs.size - this.concurrency); // runs beyond a lowered concurrency
    // Extensions queued for the old stream are stale. Fresh ones for every run still going go in the first
    // report: a server that ended the old stream at its shutdown left their leases held, and this server
    // takes them over when they are extended here (a lease lost meanwhile is refused: that run is stopped).
    this.outbox.clearExtensions();
    this.runs.extendAll();
    this.attachStats();
    this.connectedNow = true;
    this.settings.log.info(`worker ${owner.workerId} connected to ${address} (server ${owner.serverId})`);
    owner.emit("connected", owner.serverId);
    this.wake();
  }

  private onHeartbeat(): void {
    this.attachStats();
    this.runs.extendAll();
    this.wake();
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

  private onAck(ack: ReportAck): void {
    if (ack.deliveryStopped) {
      this.deliveryStopped = true;
      this.wake();
    }
    for (const item of ack.results) {
      if (item.code !== 0) {
        this.runs.refused(item.lease!, `${codeName(item.code)}: ${item.message}`);
      }
    }
  }

  private onCommand(command: ServerCommand): void {
    if (command.type === ServerCommandType.DRAIN) {
      this.settings.log.info(`worker ${this.owner.workerId}: the server asks to drain (${command.reason || "no reason given"})`);
      this.draining = true;
      this.deliveryStopped = true; // the server sends no job after this command
      this.outbox.credits = 0;
      this.wake();
    } else if (command.type === ServerCommandType.CANCEL_JOB && command.job) {
      this.runs.cancel(command.job, command.reason, command.timedOut);
    } else if (command.type === ServerCommandType.QUIET || command.type === ServerCommandType.RESUME) {
      this.quiet = command.type === ServerCommandType.QUIET;
      this.settings.log.info(`worker ${this.owner.workerId}: ${this.quiet ? "quiet" : "resumed"} by the server`);
    } else if (command.type === ServerCommandType.STOP) {
      this.settings.log.info(`worker ${this.owner.workerId}: the server asks it to stop (${command.reason || "no reason given"})`);
      if (!this.stoppingNow) {
        this.owner.stoppedByServer = true;
        void this.owner.shutdown();
      }
    } else if (command.type === ServerCommandType.SET_CONCURRENCY) {
      this.resize(command.concurrency, command.revokedCredits);
    }
  }

  /**
   * SET_CONCURRENCY: at most `concurrency` jobs from now on. The server took back `revoked` of the credits it
   * held; the rest of a decrease comes from credits not yet sent, then from finished runs (the runs' debt).
   */
  private resize(concurrency: number, revoked: number): void {
    if (concurrency < 1) {
      return;
    }
    const change = concurrency - this.concurrency;
    this.concurrency = concurrency;
    this.settings.log.info(`worker ${this.owner.workerId}: concurrency set to ${concurrency} by the server`);
    if (change > 0) {
      const paid = Math.min(change, this.runs.debt);
      this.runs.debt -= paid;
      if (this.accepting) {
        this.outbox.credits += change - paid;
        this.wake();
      }
      return;
    }
    const owed = Math.max(0, -change - revoked);
    const taken = Math.min(owed, this.outbox.credits);
    this.outbox.credits -= taken;
    this.runs.debt += owed - taken;
  }
}
