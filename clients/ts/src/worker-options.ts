/** The worker's options, its defaults and limits, and the small helpers its loops use. */
import type { PayloadCodec } from "./codecs.js";
import { readFileSync } from "node:fs";
import { Code } from "@connectrpc/connect";
import type { TracerProvider } from "@opentelemetry/api";
import type { ActiveJob, JobContext } from "./context.js";
import { CONNECTION_KEYS, type ConnectionOptions } from "./transport.js";

/** A processor: `async (job, ctx) => result`; throwing fails the attempt. */
export type Processor = (job: ActiveJob, ctx: JobContext) => unknown;

/** Where the worker writes what a person watching it should know. */
export interface WorkerLogger {
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

export interface WorkerOptions extends ConnectionOptions {
  /** Processor per queue name (each queue must be registered on the server). */
  processors: Record<string, Processor>;
  /** Most jobs run at once, 1 to 100,000; default `WORKER_CONCURRENCY` or 10. */
  concurrency?: number;
  /**
   * When several of its queues have jobs ready, each gets at most its share of the slots, by weight (1 to
   * 1,000; a queue left out weighs 1); an idle queue's share goes to the others: `{ critical: 6, low: 1 }`.
   * Not with `queueOrder`.
   */
  queueWeights?: Record<string, number>;
  /**
   * Strict priority instead: every processor's queue once, highest first; a queue gets slots only while none
   * before it has a job ready. Not with `queueWeights`.
   */
  queueOrder?: string[];
  /**
   * Preference among the workers of its queues, 0 to 100 (default 0, the first): a queue's jobs go to workers
   * of a lower tier first, and to this one only while those connected to the same server have no free slot
   * (e.g. 0 for on-premises workers, 1 for cloud workers taking the bursts).
   */
  tier?: number;
  /** Free labels sent in the hello (host and pid are added). */
  labels?: Record<string, string>;
  /** Id sent in the hello; default `{hostname}-{pid}-{6 random hex digits}`. */
  workerId?: string;
  /** How long `shutdown` waits for running jobs by default, ms; default 30,000. */
  shutdownGraceMs?: number;
  /** Reconnect backoff: first delay and cap, ms (default 100 and 5,000), each jittered down to half. */
  reconnect?: { initialDelayMs?: number; maxDelayMs?: number };
  /** Default: warnings and errors to the console, nothing else. */
  logger?: WorkerLogger;
  /**
   * OpenTelemetry tracer provider of the runs' spans; default the global one, read at `start` (tracing is
   * off when none is configured then).
   */
  tracerProvider?: TracerProvider;
  /**
   * Payload codecs (`QueueManagerOptions.codecs`): job data, parents' and children's results are decoded before
   * the processor sees them, results and data updates encoded. A job whose payload cannot be decoded fails for
   * good, with why (its key id), without running. Default: from `QM_CODEC_KEYS` and the like, else none.
   */
  codecs?: PayloadCodec[];
}

/** The keys `WorkerOptions` takes: a misspelt one would be ignored silently (`concurency`: 10 slots). */
export const WORKER_OPTION_KEYS: ReadonlySet<string> = new Set([
  ...CONNECTION_KEYS,
  "processors",
  "concurrency",
  "queueWeights",
  "queueOrder",
  "tier",
  "labels",
  "workerId",
  "shutdownGraceMs",
  "reconnect",
  "logger",
  "tracerProvider",
  "codecs",
]);

export const DEFAULT_HEARTBEAT_MS = 10_000;
// How long to wait for the server to end the stream after we half-closed it.
export const CLOSE_TIMEOUT_MS = 10_000;
export const MAX_CONCURRENCY = 100_000;
// Largest weight of a queue (WorkerOptions.queueWeights), as the server allows.
export const MAX_QUEUE_WEIGHT = 1_000;
// Highest tier of a worker (WorkerOptions.tier), as the server allows.
export const MAX_TIER = 100;
// What the server keeps of a job's log: its last lines, each cut to a length (sending more is waste).
export const LOG_LINES_KEPT = 1000;
export const LOG_LINE_CHARS = 2000;
// Errors that retrying soon will not fix (unknown queue, bad hello, refused token): wait the longest backoff.
export const CONFIG_ERRORS = new Set([
  Code.NotFound,
  Code.InvalidArgument,
  Code.FailedPrecondition,
  Code.PermissionDenied,
  Code.Unauthenticated,
  Code.Unimplemented,
]);

export const consoleLogger: WorkerLogger = {
  info: () => {},
  warn: (m) => console.warn(`[qm worker] ${m}`),
  error: (m) => console.error(`[qm worker] ${m}`),
};

let version: string | undefined;
export function clientVersion(): string {
  if (version === undefined) {
    try {
      const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version?: string };
      version = pkg.version ?? "0.0.0";
    } catch {
      version = "0.0.0";
    }
  }
  return version;
}

/** `WORKER_CONCURRENCY` from the environment, else 10. */
export function defaultConcurrency(env: NodeJS.ProcessEnv = process.env): number {
  const text = (env.WORKER_CONCURRENCY ?? "").trim();
  return text ? checkConcurrency(Number(text), `WORKER_CONCURRENCY (${JSON.stringify(text)})`) : 10;
}

export function checkConcurrency(value: number, what = "concurrency"): number {
  if (!Number.isInteger(value) || value < 1 || value > MAX_CONCURRENCY) {
    throw new RangeError(`${what} must be a whole number from 1 to ${MAX_CONCURRENCY}, got ${value}`);
  }
  return value;
}

/** A worker's tier (undefined: 0), a whole number from 0 to 100. */
export function checkTier(value: unknown): number {
  if (value === undefined) {
    return 0;
  }
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value > MAX_TIER) {
    throw new RangeError(`tier must be a whole number from 0 to ${MAX_TIER}, got ${String(value)}`);
  }
  return value;
}

/** Weights of a worker's queues (undefined: none), each a whole number from 1 to 1,000 of one of them. */
export function checkQueueWeights(value: unknown, queues: readonly string[]): Record<string, number> {
  if (value === undefined) {
    return {};
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new TypeError(`queueWeights must be an object of queue name to weight, not ${describe(value)}`);
  }
  const out: Record<string, number> = {};
  for (const [name, weight] of Object.entries(value)) {
    if (!queues.includes(name)) {
      throw new RangeError(`queueWeights names ${JSON.stringify(name)}, which has no processor on this worker`);
    }
    if (typeof weight !== "number" || !Number.isInteger(weight)) {
      throw new TypeError(`queueWeights[${JSON.stringify(name)}] must be a whole number, not ${describe(weight)}`);
    }
    if (weight < 1 || weight > MAX_QUEUE_WEIGHT) {
      throw new RangeError(`queueWeights[${JSON.stringify(name)}] must be 1 to 1,000, got ${weight}`);
    }
    out[name] = weight;
  }
  return out;
}

/** A strict order of a worker's queues: each of them once, highest priority first. */
export function checkQueueOrder(value: unknown, queues: readonly string[]): string[] {
  if (!Array.isArray(value)) {
    throw new TypeError(`queueOrder must be an array of queue names, not ${describe(value)}`);
  }
  const order = [...(value as unknown[])];
  const known = new Set(queues);
  if (new Set(order).size !== order.length || order.length !== known.size || !order.every((q) => known.has(q as string))) {
    throw new RangeError(
      `queueOrder must name each of the worker's queues once: ${JSON.stringify([...known].sort())}, got ${JSON.stringify(order)}`,
    );
  }
  return order as string[];
}

function describe(value: unknown): string {
  return value === null ? "null" : Array.isArray(value) ? "an array" : typeof value;
}

/** Checks that a queue's processor is a function (a `TypeError` naming the queue otherwise). */
export function checkProcessor(queueName: string, processor: unknown): Processor {
  if (typeof processor !== "function") {
    throw new TypeError(`the processor of ${JSON.stringify(queueName)} must be a function`);
  }
  return processor as Processor;
}

/** Resolves after `ms`, or as soon as `signal` fires. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}

/** Whether `promise` settled within `ms`. */
export async function within(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([promise.then(() => true, () => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

