/** Shared pieces of the tests: the server address (tests/test_client_ts.py starts it), names, waits. */
import { randomBytes } from "node:crypto";
import type { EventEmitter } from "node:events";
import { QueueManager, Worker, type QueueManagerOptions, type WorkerLogger, type WorkerOptions } from "../src/index.js";

/** The server under test: `QM_TEST_ADDRESS`, set by the pytest that runs these files. */
export function address(): string {
  const value = process.env.QM_TEST_ADDRESS;
  if (!value) {
    throw new Error("QM_TEST_ADDRESS is not set: run these tests through tests/test_client_ts.py");
  }
  return value;
}

/** A queue name no other test uses. */
export function queueName(prefix: string): string {
  return `${prefix}-${randomBytes(4).toString("hex")}`;
}

/** A logger that keeps the lines (tests assert on them) instead of printing them. */
export function memoryLogger(): WorkerLogger & { lines: string[] } {
  const lines: string[] = [];
  return { lines, info: (m) => lines.push(`info ${m}`), warn: (m) => lines.push(`warn ${m}`), error: (m) => lines.push(`error ${m}`) };
}

/** A client of the server under test. */
export function client(options: QueueManagerOptions = {}): QueueManager {
  return new QueueManager({ address: address(), token: null, ...options });
}

/** A started worker on the server under test, welcomed before this resolves. */
export async function worker(options: WorkerOptions): Promise<Worker> {
  const w = new Worker({ address: address(), token: null, logger: memoryLogger(), ...options });
  w.start();
  await w.waitConnected(20_000);
  return w;
}

/** Resolves with the arguments of the next `event` that `match` accepts; rejects after `timeoutMs`. */
export function nextEvent<T extends unknown[]>(
  emitter: EventEmitter,
  event: string,
  match: (...args: T) => boolean = () => true,
  timeoutMs = 20_000,
): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off(event, listener);
      reject(new Error(`no matching ${event} event within ${timeoutMs} ms`));
    }, timeoutMs);
    function listener(...args: unknown[]) {
      if (match(...(args as T))) {
        clearTimeout(timer);
        emitter.off(event, listener);
        resolve(args as T);
      }
    }
    emitter.on(event, listener);
  });
}

/** A promise with its resolve function, to hand a moment from a processor to the test. */
export function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/** Resolves when `signal` fires (with its reason), or with undefined after `timeoutMs`. */
export function aborted(signal: AbortSignal, timeoutMs: number): Promise<unknown> {
  return new Promise((resolve) => {
    if (signal.aborted) {
      resolve(signal.reason);
      return;
    }
    const timer = setTimeout(() => resolve(undefined), timeoutMs);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve(signal.reason);
    });
  });
}

/** Resolves once `check()` holds (looked at every 10 ms); rejects after `timeoutMs`. */
export async function until(check: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!check()) {
    if (performance.now() > deadline) {
      throw new Error(`the condition did not hold within ${timeoutMs} ms: ${check.toString()}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
