/**
 * Batch processors: many jobs of a queue handed to one call (BullMQ Pro's batches, Celery's Batches), as the
 * Python client's `queue_manager.batch`. Each job is still its own run on the worker stream (its own lease,
 * credit, timeout, abort and outcome); the processor parks each run until its batch has `size` jobs or its
 * first job has waited `waitMs`, then calls the handler once with the jobs in arrival order:
 *
 * - the handler returns undefined: every job completes with no result;
 * - it returns an array with one entry per job: each job completes with its entry, or fails with it when
 *   the entry is an `Error`;
 * - it throws: every job of the batch fails with that error.
 *
 * A run whose signal fires while its batch fills leaves the batch; one whose signal fires while the handler
 * runs only stops waiting for it. When every run of a running batch has stopped, the handler's own signal
 * fires. Give the worker a concurrency of at least `size`, else batches leave at `waitMs` with what came.
 */
import type { ActiveJob, JobContext } from "./context.js";
import type { Processor } from "./worker-options.js";

/** One job of a batch: the job and its run's context. */
export interface BatchItem {
  job: ActiveJob;
  ctx: JobContext;
}

/** Called with a batch's jobs; `signal` fires when every run of the batch has stopped. */
export type BatchHandler = (items: BatchItem[], signal: AbortSignal) => Promise<unknown[] | undefined | void>;

export interface BatchOptions {
  /** Most jobs per batch, 1 to 100,000; a batch leaves as soon as it has them. */
  size: number;
  /** Ms a batch waits for more jobs after its first one came, more than 0 and at most 3,600,000; default 1,000. */
  waitMs?: number;
  /** Puts jobs of different keys into different batches (by name, tenant…); default one batch at a time. */
  key?: (job: ActiveJob) => string;
}

interface Waiter {
  item: BatchItem;
  resolve: (value: unknown) => void;
  reject: (reason: unknown) => void;
  done: boolean;
}

interface Batch {
  waiters: Waiter[];
  timer: ReturnType<typeof setTimeout> | undefined;
  running: boolean;
  left: number;
  abort: AbortController;
}

const MAX_SIZE = 100_000;
const MAX_WAIT_MS = 3_600_000;

/** A processor that runs `handler` once per batch of up to `options.size` jobs (see the module comment). */
export function batch(handler: BatchHandler, options: BatchOptions): Processor {
  if (typeof handler !== "function") {
    throw new TypeError(`handler must be a function, not ${typeof handler}`);
  }
  const { size, waitMs = 1_000, key } = options;
  if (!Number.isInteger(size) || size < 1 || size > MAX_SIZE) {
    throw new RangeError(`size must be an integer from 1 to ${MAX_SIZE}, got ${String(size)}`);
  }
  if (typeof waitMs !== "number" || !Number.isFinite(waitMs) || waitMs <= 0 || waitMs > MAX_WAIT_MS) {
    throw new RangeError(`waitMs must be more than 0 and at most ${MAX_WAIT_MS}, got ${String(waitMs)}`);
  }
  if (key !== undefined && typeof key !== "function") {
    throw new TypeError(`key must be a function, not ${typeof key}`);
  }
  const open = new Map<string, Batch>();

  const leave = (k: string, b: Batch): void => {
    if (open.get(k) === b) {
      open.delete(k);
    }
    clearTimeout(b.timer);
    if (b.running || b.waiters.length === 0) {
      return;
    }
    b.running = true;
    b.left = b.waiters.length;
    void run(b);
  };

  const run = async (b: Batch): Promise<void> => {
    const waiters = [...b.waiters];
    let answer: unknown;
    try {
      answer = await handler(
        waiters.map((w) => w.item),
        b.abort.signal,
      );
    } catch (err) {
      for (const w of waiters) {
        settle(w, false, err);
      }
      return;
    }
    const results = perJob(answer, waiters.length);
    waiters.forEach((w, i) => {
      const r = results[i];
      settle(w, !(r instanceof Error), r);
    });
  };

  const settle = (w: Waiter, ok: boolean, value: unknown): void => {
    if (w.done) {
      return;
    }
    w.done = true;
    if (ok) {
      w.resolve(value);
    } else {
      w.reject(value);
    }
  };

  return (job: ActiveJob, ctx: JobContext): Promise<unknown> => {
    const k = key === undefined ? "" : key(job);
    let b = open.get(k);
    if (b === undefined) {
      const fresh: Batch = { waiters: [], timer: undefined, running: false, left: 0, abort: new AbortController() };
      fresh.timer = setTimeout(() => leave(k, fresh), waitMs);
      open.set(k, fresh);
      b = fresh;
    }
    const current = b;
    return new Promise((resolve, reject) => {
      const w: Waiter = { item: { job, ctx }, resolve, reject, done: false };
      current.waiters.push(w);
      const gone = (): void => {
        if (w.done) {
          return;
        }
        settle(w, false, ctx.signal.reason);
        if (!current.running) {
          current.waiters.splice(current.waiters.indexOf(w), 1);
          if (current.waiters.length === 0) {
            clearTimeout(current.timer);
            if (open.get(k) === current) {
              open.delete(k);
            }
          }
          return;
        }
        current.left -= 1;
        if (current.left === 0) {
          current.abort.abort(ctx.signal.reason);
        }
      };
      if (ctx.signal.aborted) {
        gone();
        return;
      }
      ctx.signal.addEventListener("abort", gone, { once: true });
      if (current.waiters.length >= size) {
        leave(k, current);
      }
    });
  };
}

/** The handler's answer as one entry per job (an error for each when its shape is wrong). */
function perJob(answer: unknown, n: number): unknown[] {
  if (answer === undefined) {
    return new Array<unknown>(n).fill(undefined);
  }
  if (Array.isArray(answer) && answer.length === n) {
    return answer;
  }
  const got = Array.isArray(answer) ? `${answer.length} entries` : typeof answer;
  const error = new TypeError(`a batch handler must return undefined or one result per job: ${n} jobs, got ${got}`);
  return new Array<unknown>(n).fill(error);
}
