/**
 * The worker's outbox: everything it has to tell the server (credits, outcomes, extensions, progress, log
 * lines, releases, stop), gathered until the stream can take a message, then sent as ONE report. A lone
 * completion goes out at once; a burst shares a message (a message costs the same whatever it holds).
 */
import { create } from "@bufbuild/protobuf";
import {
  ConnectRequestSchema,
  type ConnectRequest,
  type JobCompletion,
  type JobDelay,
  type JobFailure,
  type JobLogs,
  type JobProgress,
  type LeaseRef,
  type WorkerStats,
} from "./gen/queue_manager/v1/worker_service_pb.js";

/** Report items by kind; those in `COUNTED` are outcomes and such that must reach the server. */
export interface Items {
  completions: JobCompletion[];
  failures: JobFailure[];
  progress: JobProgress[];
  logs: JobLogs[];
  releases: LeaseRef[];
  abandoned: LeaseRef[];
  cancelled: LeaseRef[];
  delays: JobDelay[];
}

/** A report taken for sending, with what it counted (so an unsent one can be put back). */
export interface Taken {
  message: ConnectRequest;
  items: Items;
  unsent: number;
  stop: boolean;
}

function emptyItems(): Items {
  return { completions: [], failures: [], progress: [], logs: [], releases: [], abandoned: [], cancelled: [], delays: [] };
}

export class Outbox {
  /** Credits not yet granted on the current stream. */
  credits = 0;
  /** Items that must reach the server (outcomes, progress, log lines, releases); extensions and credits aside. */
  unsent = 0;
  /** Ask the server to stop delivering (shutdown). */
  stop = false;
  extensions: LeaseRef[] = [];
  /**
   * Runs whose call parked their job (WaitForChildren, WaitForEvent), for the stream's server to forget the
   * lease: the call may have reached another server. Like extensions, they name the current stream's leases,
   * so they are not counted in `unsent` nor kept for the next stream (whose server never held them); they
   * wait for the report the run's end sends with its credit.
   */
  parked: LeaseRef[] = [];
  stats: WorkerStats | undefined;
  private items: Items = emptyItems();

  /** Adds an item that must reach the server. */
  add<K extends keyof Items>(kind: K, item: Items[K][number]): void {
    (this.items[kind] as Items[K][number][]).push(item);
    this.unsent += 1;
  }

  /** Adds a log line of a run, sharing the entry of the run's previous line when it is the last one. */
  addLogLine(lease: LeaseRef, line: JobLogs["lines"][number], maxLines: number): void {
    const logs = this.items.logs;
    const last = logs[logs.length - 1];
    let entry = last;
    if (!last || last.lease?.leaseToken !== lease.leaseToken || last.lease.jobId !== lease.jobId || last.lease.queueName !== lease.queueName) {
      entry = { $typeName: "queue_manager.v1.JobLogs", lease, lines: [] };
      logs.push(entry);
    }
    if (entry!.lines.length >= maxLines) {
      // The server keeps a job's last lines only: while the stream is down, hold no more than that.
      entry!.lines.shift();
      this.unsent -= 1;
    }
    entry!.lines.push(line);
    this.unsent += 1;
  }

  /** Whether there is anything to send. */
  get ready(): boolean {
    return (
      this.unsent > 0 ||
      this.credits > 0 ||
      this.extensions.length > 0 ||
      this.parked.length > 0 ||
      this.stop ||
      this.stats !== undefined
    );
  }

  /** Takes everything as one report message (and empties the outbox), or undefined when there is nothing. */
  take(): Taken | undefined {
    if (!this.ready) {
      return undefined;
    }
    const items = this.items;
    const message = create(ConnectRequestSchema, {
      kind: {
        case: "report",
        value: { ...items, credits: this.credits, extensions: this.extensions, parked: this.parked, stop: this.stop, stats: this.stats },
      },
    });
    const taken = { message, items, unsent: this.unsent, stop: this.stop };
    this.items = emptyItems();
    this.extensions = [];
    this.parked = [];
    this.stats = undefined;
    this.credits = 0;
    this.unsent = 0;
    this.stop = false;
    return taken;
  }

  /**
   * Puts an unsent report back at the head of the outbox (without its credits, extensions, parked runs and
   * stats: the next stream grants and extends afresh, and its server never held the parked runs' leases).
   */
  restore(taken: Taken): void {
    const current = this.items;
    const merged = emptyItems();
    for (const kind of Object.keys(merged) as (keyof Items)[]) {
      (merged[kind] as unknown[]) = [...taken.items[kind], ...current[kind]];
    }
    this.items = merged;
    this.unsent += taken.unsent;
    this.stop = this.stop || taken.stop;
  }

  /** Drops the pending extensions and parked runs (they named the old stream's leases). */
  clearExtensions(): void {
    this.extensions = [];
    this.parked = [];
  }
}
