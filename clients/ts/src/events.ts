/**
 * A queue's job events (WatchJobEvents), as BullMQ's QueueEvents gives them: their shapes, the request and
 * the live stream (`JobEventStream`).
 *
 * The feed is live and at most once (docs/events.md): it holds what happens once the server watches the
 * queue, which `JobEventStream.ready` waits for (the server sends the stream's response headers then), and
 * never a replay; a job's durable state is `getJob` / `waitForJob`. A watcher that reads too slowly for the
 * server's buffer ends with `ResourceExhaustedError` ("events dropped: the watcher fell behind by N events…").
 */
import { create } from "@bufbuild/protobuf";
import type { StreamResponse, Transport } from "@connectrpc/connect";
import { createAsyncIterable } from "@connectrpc/connect/protocol";
import {
  WatchJobEventsRequestSchema,
  type JobEvent as JobEventPb,
  type WatchJobEventsRequest,
  type WatchJobEventsResponseSchema,
} from "./gen/queue_manager/v1/jobs_pb.js";
import { QueueService } from "./gen/queue_manager/v1/queue_service_pb.js";
import { fromTimestamp } from "./convert.js";
import { errorFromRpc } from "./errors.js";
import { checkKeys, checkQueueName } from "./options.js";

/** What happened to a job (`queue_manager.v1.JobEventType`). */
export type JobEventType =
  | "added"
  | "waiting"
  | "active"
  | "progress"
  | "completed"
  | "failed"
  | "retrying"
  | "delayed"
  | "stalled"
  | "cancelled"
  | "removed"
  | "expired";

/** The event types, in the order of their wire numbers (1 = added … 12 = expired). */
export const JOB_EVENT_TYPES: readonly JobEventType[] = [
  "added",
  "waiting",
  "active",
  "progress",
  "completed",
  "failed",
  "retrying",
  "delayed",
  "stalled",
  "cancelled",
  "removed",
  "expired",
];

/** An event type by its name in either case ("completed", "COMPLETED"). */
export type JobEventTypeLike = JobEventType | Uppercase<JobEventType>;

/** One thing that happened to one job. */
export interface JobEvent {
  queueName: string;
  jobId: string;
  /** The job's name; "" when the job was gone before the event could read it. */
  jobName: string;
  /** What happened; undefined for a type this client does not know (a newer server's). */
  type: JobEventType | undefined;
  /** When (the job store's clock; the same for every event of one stream message). */
  time: Date | undefined;
  /** ACTIVE: which attempt this run is (1 = the first); COMPLETED, FAILED, RETRYING: the attempts made; else 0. */
  attempt: number;
  /** FAILED and RETRYING: the failure's reason (its first 200 bytes; `getJob` has all of it); else "". */
  failedReason: string;
  /**
   * PROGRESS: the progress reported, as the JSON value it was (`ctx.updateProgress`'s); undefined when it was
   * over 1,000 bytes (`getJob` has it) and for the other types.
   */
  progress: unknown;
  /** ADDED (a delayed job), RETRYING and DELAYED: when the job runs; else undefined. */
  runAt: Date | undefined;
}

/** Which events of the queue `watchJobEvents` sends, and how to stop it. */
export interface WatchJobEventsOptions {
  /** Only events of these types (a type or a list, names in either case); unset or empty: every type. */
  types?: JobEventTypeLike | JobEventTypeLike[];
  /** Only events of jobs with these names (a name or a list, at most 100); unset or empty: every job. */
  jobNames?: string | string[];
  /** Ends the stream (the iteration then ends with no error), as `close()` does. */
  signal?: AbortSignal;
}

const WATCH_KEYS = new Set(["types", "jobNames", "signal"]);

/** An event message as a `JobEvent`. */
export function eventFromProto(event: JobEventPb): JobEvent {
  return {
    queueName: event.queueName,
    jobId: event.jobId,
    jobName: event.jobName,
    type: JOB_EVENT_TYPES[event.type - 1],
    time: fromTimestamp(event.time),
    attempt: event.attempt,
    failedReason: event.failedReason,
    progress: progressValue(event.progress),
    runAt: fromTimestamp(event.runAt),
  };
}

/** The JSON text of a PROGRESS event as its value; undefined when empty (none, or over the server's cap). */
function progressValue(text: string): unknown {
  if (!text) {
    return undefined;
  }
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text; // not JSON (the server sends JSON): the text as it came rather than nothing
  }
}

/** An event type's wire number, from its name in either case; a RangeError listing the types otherwise. */
function eventNumber(value: unknown): number {
  const index = typeof value === "string" ? JOB_EVENT_TYPES.indexOf(value.toLowerCase() as JobEventType) : -1;
  if (index < 0) {
    throw new RangeError(`unknown job event type ${JSON.stringify(value)}: use one of ${JOB_EVENT_TYPES.join(", ")}`);
  }
  return index + 1;
}

/** Builds and checks a WatchJobEventsRequest (unset or empty filters: everything). */
export function watchJobEventsRequest(queueName: string, options: WatchJobEventsOptions): WatchJobEventsRequest {
  checkKeys(options, WATCH_KEYS, "watchJobEvents options");
  const types = options.types === undefined ? [] : Array.isArray(options.types) ? options.types : [options.types];
  const names = options.jobNames === undefined ? [] : Array.isArray(options.jobNames) ? options.jobNames : [options.jobNames];
  for (const name of names) {
    if (typeof name !== "string" || !name) {
      throw new RangeError(`jobNames must be non-empty strings, got ${JSON.stringify(name)}`);
    }
  }
  return create(WatchJobEventsRequestSchema, {
    queueName: checkQueueName(queueName),
    types: [...new Set(types.map(eventNumber))].sort((a, b) => a - b),
    jobNames: [...names],
  });
}

type WatchResponse = StreamResponse<typeof WatchJobEventsRequestSchema, typeof WatchJobEventsResponseSchema>;

/**
 * A live WatchJobEvents call, started when it is made: iterate it (`for await`) for `JobEvent`s, once;
 * `await events.ready()` returns once the server watches the queue, so every event from then on is in the
 * stream. Leaving the loop (`break`, a throw), `close()` or the options' signal ends the call; an iteration
 * it ends finishes with no error. The server's refusals (`NotFoundError` for an unknown queue,
 * `InvalidArgumentError`) and a watcher's fall behind (`ResourceExhaustedError`) reject `ready()` or are
 * thrown by the iteration.
 */
export class JobEventStream implements AsyncIterable<JobEvent> {
  private readonly call = new AbortController();
  private readonly response: Promise<WatchResponse>;
  private readonly signal: AbortSignal | undefined;
  private readonly stop = () => this.close();
  private readonly onClose: () => void;
  private iterated = false;

  /** Starts the call (`QueueManager.watchJobEvents` makes these). */
  constructor(transport: Transport, request: WatchJobEventsRequest, signal: AbortSignal | undefined, onClose: () => void) {
    this.signal = signal;
    this.onClose = onClose;
    // No deadline: the feed runs until it is closed (the client's unary timeoutMs is not for streams).
    this.response = transport.stream(
      QueueService.method.watchJobEvents,
      this.call.signal,
      undefined,
      undefined,
      createAsyncIterable([request]),
    );
    // Its failure is reported by ready() or the iteration, whichever asks; unasked, it must not go unhandled.
    this.response.catch(() => undefined);
    if (signal?.aborted) {
      this.call.abort(); // closed before it was ever open: nothing to tell the client
    } else {
      signal?.addEventListener("abort", this.stop, { once: true });
    }
  }

  /** Whether the call was ended from this side (`close()`, the signal, leaving the loop). */
  get closed(): boolean {
    return this.call.signal.aborted;
  }

  /**
   * Resolves once the server watches the queue (it has sent the stream's headers): every event from then on
   * is in the stream. Rejects with the call's error when it ended instead (an unknown queue:
   * `NotFoundError`), or with a `QueueManagerError` of code CANCELLED when it was closed first.
   */
  async ready(): Promise<void> {
    try {
      await this.response;
    } catch (err) {
      throw errorFromRpc(err);
    }
  }

  /** Ends the call (the server stops watching for it); an iteration under way ends with no error. */
  close(): void {
    if (!this.call.signal.aborted) {
      this.call.abort();
      this.signal?.removeEventListener("abort", this.stop);
      this.onClose();
    }
  }

  [Symbol.asyncIterator](): AsyncIterator<JobEvent> {
    if (this.iterated) {
      throw new TypeError("a JobEventStream is iterated once; call watchJobEvents again for another iteration");
    }
    this.iterated = true;
    return this.events();
  }

  private async *events(): AsyncGenerator<JobEvent, void, undefined> {
    try {
      const response = await this.response;
      for await (const message of response.message) {
        for (const event of message.events) {
          yield eventFromProto(event);
        }
      }
    } catch (err) {
      if (this.closed) {
        return; // ended from this side, as leaving the loop ends it
      }
      throw errorFromRpc(err);
    } finally {
      this.close();
    }
  }
}
