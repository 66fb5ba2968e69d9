/**
 * External events: `pushEvent`'s request (PushEvent), what a processor's `ctx.waitForEvent` sends
 * (WaitForEvent), and the event and wait a job carries, as the Python client's external_events.py.
 */
import { create } from "@bufbuild/protobuf";
import {
  EventTriggerSchema,
  PushEventRequestSchema,
  WaitForEventRequestSchema,
  type EventTrigger as EventTriggerPb,
  type PushEventRequest,
  type PushEventResponse,
  type WaitForEventRequest,
} from "./gen/queue_manager/v1/external_events_pb.js";
import { NewJobSchema } from "./gen/queue_manager/v1/jobs_pb.js";
import type { LeaseRef } from "./gen/queue_manager/v1/worker_service_pb.js";
import { encodePayload, fromTimestamp, msToDuration } from "./convert.js";
import { checkKeys, checkQueueName, jobOptionsToProto, text } from "./options.js";
import type { JobOptions, JobRef } from "./types.js";

/** The server's limits (services/external_events.py), checked before a call. */
const MAX_EVENT_KEY = 256;
const MAX_EVENT_KEYS = 16;
const WAIT_KEYS = new Set(["timeoutMs", "data"]);
const PUSH_KEYS = new Set(["eventId"]);

/** What `ctx.waitForEvent` takes besides the keys. */
export interface WaitForEventOptions {
  /** How long to wait at most, ms (the job then runs again with no event); without it the wait has no end. */
  timeoutMs?: number;
  /**
   * The job's new data for its next run (a checkpoint), written in the same step; without the key the data
   * is kept (`undefined` given stores JSON null, as `updateData` does).
   */
  data?: unknown;
}

/** What `pushEvent` takes besides the key and data. */
export interface PushEventOptions {
  /** Makes the push safe to repeat: a push of an id pushed in the last 24 hours changes nothing. */
  eventId?: string;
}

/** What `pushEvent` did. */
export interface PushedEvent {
  /** The jobs the event woke (they waited for its key), now waiting to run. */
  woken: JobRef[];
  /** True when its event id had been pushed in the last 24 hours: nothing changed; the rest is the first push's. */
  duplicate: boolean;
  /** When the server recorded the push. */
  pushedAt: Date | undefined;
  /** The jobs its event triggers added (one per trigger whose pattern matches its key). */
  added: JobRef[];
  /** How many jobs the event woke: `woken` lists them all up to the server's bound (1,000), the first past it. */
  wokenCount: number;
  /** True when `woken` lists fewer jobs than `wokenCount`. */
  wokenTruncated: boolean;
}

/** Checks an event key or id: 1 to 256 characters, no control characters (a TypeError or RangeError). */
export function checkEventKey(value: unknown, what: string): string {
  if (typeof value !== "string") {
    throw new TypeError(`${what} must be a string, not ${value === null ? "null" : typeof value}`);
  }
  if (value.length === 0 || value.length > MAX_EVENT_KEY) {
    throw new RangeError(`${what} must be 1 to ${MAX_EVENT_KEY} characters, got ${value.length}`);
  }
  // C0, DEL, C1 and the line and paragraph separators, as the server's validate.is_control.
  if (/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/u.test(value)) {
    throw new RangeError(`${what} ${JSON.stringify(value.slice(0, 40))} must not contain control characters`);
  }
  return value;
}

/** Builds and checks the PushEvent request of an event of `key` with `data` (undefined: none). */
export function pushEventRequest(key: string, data: unknown, options: PushEventOptions = {}): PushEventRequest {
  checkKeys(options, PUSH_KEYS, "pushEvent options");
  return create(PushEventRequestSchema, {
    key: checkEventKey(key, "event key"),
    data: encodePayload(data, "the event's data"),
    eventId: options.eventId === undefined ? "" : checkEventKey(options.eventId, "eventId"),
  });
}

/** A PushEventResponse as a `PushedEvent`. */
export function pushedFromProto(res: PushEventResponse): PushedEvent {
  return {
    woken: res.woken.map((r) => ({ queueName: r.queueName, jobId: r.jobId })),
    duplicate: res.duplicate,
    pushedAt: fromTimestamp(res.pushedAt),
    added: res.added.map((r) => ({ queueName: r.queueName, jobId: r.jobId })),
    wokenCount: res.wokenCount,
    wokenTruncated: res.wokenTruncated,
  };
}

/** Builds and checks the WaitForEvent request of the run holding `lease`. */
export function waitForEventRequest(
  lease: LeaseRef,
  keys: string | readonly string[],
  options: WaitForEventOptions = {},
): WaitForEventRequest {
  checkKeys(options, WAIT_KEYS, "waitForEvent options");
  const names = typeof keys === "string" ? [keys] : keys;
  if (!Array.isArray(names) || names.length < 1 || names.length > MAX_EVENT_KEYS) {
    throw new RangeError(`waitForEvent takes 1 to ${MAX_EVENT_KEYS} event keys`);
  }
  const { timeoutMs } = options;
  if (timeoutMs !== undefined && !(Number.isFinite(timeoutMs) && timeoutMs > 0)) {
    throw new RangeError(`timeoutMs must be a positive number of ms (leave it out to wait with no end), got ${String(timeoutMs)}`);
  }
  const { queueName, jobId, leaseToken } = lease;
  return create(WaitForEventRequestSchema, {
    queueName,
    jobId,
    leaseToken,
    keys: names.map((k, i) => checkEventKey(k, `keys[${i}]`)),
    timeout: timeoutMs === undefined ? undefined : msToDuration(timeoutMs),
    // Present but undefined is JSON null, as for updateData; absent keeps the job's data.
    data: "data" in options ? encodePayload(options.data === undefined ? null : options.data, "the job's new data") : undefined,
  });
}

/** An event trigger: a job added for every pushed event whose key matches its pattern, with the event's data. */
export interface EventTriggerSpec {
  /** Unique on the server: 1 to 100 letters, digits, "-", "_" or ".". */
  id: string;
  /** An exact event key, or a prefix ending in "*" ("order:*"; "*" alone matches every key). */
  keyPattern: string;
  /** The queue the jobs are added to; it must be registered. */
  queueName: string;
  /** The jobs' name and options (jobId is not allowed). */
  job: { name: string; options?: JobOptions };
}

/** An event trigger as stored. */
export interface EventTrigger extends EventTriggerSpec {
  createdAt: Date | undefined;
  updatedAt: Date | undefined;
}

const TRIGGER_KEYS = new Set(["id", "keyPattern", "queueName", "job"]);

/** Builds and checks the EventTrigger message of `upsertEventTrigger` (the server checks the rest). */
export function eventTriggerToProto(spec: EventTriggerSpec): EventTriggerPb {
  checkKeys(spec, TRIGGER_KEYS, "event trigger");
  const pattern = checkEventKey(spec.keyPattern, "keyPattern");
  if (pattern.slice(0, -1).includes("*")) {
    throw new RangeError(`'*' may only end a key pattern (a key prefix, 'order:*'), got ${JSON.stringify(pattern)}`);
  }
  return create(EventTriggerSchema, {
    id: text(spec.id, "id"),
    keyPattern: pattern,
    queueName: checkQueueName(spec.queueName, "queueName"),
    job: create(NewJobSchema, {
      name: text(spec.job?.name, "job.name"),
      options: spec.job.options === undefined ? undefined : jobOptionsToProto(spec.job.options, "job.options"),
    }),
  });
}

/** An EventTrigger message as an `EventTrigger` (its job's name; its options as the server keeps them are not read back). */
export function eventTriggerFromProto(t: EventTriggerPb): EventTrigger {
  return {
    id: t.id,
    keyPattern: t.keyPattern,
    queueName: t.queueName,
    job: { name: t.job?.name ?? "" },
    createdAt: fromTimestamp(t.createTime),
    updatedAt: fromTimestamp(t.updateTime),
  };
}
