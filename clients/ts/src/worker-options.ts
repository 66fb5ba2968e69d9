/** The worker's options, its defaults and limits, and the small helpers its loops use. */
import { readFileSync } from "node:fs";
import { Code } from "@connectrpc/connect";
import type { TracerProvider } from "@opentelemetry/api";
import type { ActiveJob, JobContext } from "./context.js";
import type { ConnectionOptions } from "./transport.js";

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
}

export const DEFAULT_HEARTBEAT_MS = 10_000;
// How long to wait for the server to end the stream after we half-closed it.
export const CLOSE_TIMEOUT_MS = 10_000;
export const MAX_CONCURRENCY = 100_000;
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

