/**
 * Job options, queue settings and page requests to their protobuf messages. Types and ranges are checked
 * here (a `TypeError` or `RangeError` naming the field); the server checks the rest and answers
 * INVALID_ARGUMENT with the field's path.
 */
import { create } from "@bufbuild/protobuf";
import {
  BackoffSchema,
  BackoffType,
  ChainLinkSchema,
  DedupMode as DedupModePb,
  DedupSchema,
  GroupLimitsSchema,
  JobMetadataSchema,
  JobOptionsSchema,
  KeepJobsSchema,
  MaintenanceWindowSchema,
  PriorityBoundSchema,
  QueueConfigSchema,
  RateLimitSchema,
  type GroupLimits as GroupLimitsPb,
  type JobOptions as JobOptionsPb,
  type KeepJobs as KeepJobsPb,
  type MaintenanceWindow as MaintenanceWindowPb,
  type PriorityBound,
  type QueueConfig as QueueConfigPb,
} from "./gen/queue_manager/v1/types_pb.js";
import { NewJobSchema, type NewJob } from "./gen/queue_manager/v1/jobs_pb.js";
import { encodePayload, parsePriority, toDuration, toTimestamp } from "./convert.js";
import {
  JobPriority,
  type Backoff,
  type ChainLink,
  type Dedup,
  type DedupMode,
  type GroupLimits,
  type JobOptions,
  type KeepJobs,
  type MaintenanceWindow,
  type PriorityBoundsLike,
  type PriorityLike,
  type QueueConfig,
  type RateLimit,
} from "./types.js";

const JOB_OPTION_KEYS = new Set([
  "priority",
  "delay",
  "scheduleTime",
  "attempts",
  "backoff",
  "jobId",
  "metadata",
  "removeOnComplete",
  "removeOnFail",
  "timeout",
  "maxStalled",
  "chainTo",
  "dedup",
  "expireAfter",
  "group",
  "workerLabels",
  "lifo",
  "errorHistory",
]);

/** A whole number from `min` up, else a RangeError naming the field. */
export function uint(value: unknown, what: string, min = 0): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > 0xffffffff) {
    throw new RangeError(`${what} must be a whole number of at least ${min}, got ${String(value)}`);
  }
  return value;
}

const PAGE_KEYS: ReadonlySet<string> = new Set(["pageSize", "pageToken"]);

/** The paging fields of a list request: 100 items a page unless asked, from the first page unless a token. */
export function pageRequest(
  page: { pageSize?: number; pageToken?: string },
  what = "page options",
): { pageSize: number; pageToken: string } {
  checkKeys(page, PAGE_KEYS, what);
  return { pageSize: uint(page.pageSize ?? 100, "pageSize"), pageToken: page.pageToken ?? "" };
}

// A queue name as the server takes it (letters, digits, "-", "_", "."), checked before a call as the Python
// client checks it.
const QUEUE_NAME = /^[A-Za-z0-9._-]{1,100}$/;

/** Checks a queue name (1 to 100 letters, digits, "-", "_" or "."): a TypeError or RangeError otherwise. */
export function checkQueueName(value: unknown, what = "queue name"): string {
  const name = text(value, what);
  if (!QUEUE_NAME.test(name)) {
    throw new RangeError(`${what} ${JSON.stringify(name)} must be 1 to 100 letters, digits, '-', '_' or '.'`);
  }
  return name;
}

/**
 * Checks that an options object is an object holding only known keys: a misspelt key would otherwise be
 * ignored silently (a filter left out matches every job).
 */
export function checkKeys(value: unknown, known: ReadonlySet<string>, what: string): void {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    const kind = value === null ? "null" : Array.isArray(value) ? "an array" : typeof value;
    throw new TypeError(`${what} must be an object, not ${kind}`);
  }
  const unknown = Object.keys(value).filter((k) => !known.has(k));
  if (unknown.length) {
    throw new RangeError(`${what} has unknown key(s) ${unknown.join(", ")}; known: ${[...known].join(", ")}`);
  }
}

/** A string, else a TypeError naming the field. */
export function text(value: unknown, what: string): string {
  if (typeof value !== "string") {
    throw new TypeError(`${what} must be a string, not ${value === null ? "null" : typeof value}`);
  }
  return value;
}

function backoffToProto(value: Backoff | number, what: string) {
  if (typeof value === "number") {
    return create(BackoffSchema, { type: BackoffType.FIXED, delay: toDuration(value, what) });
  }
  // No type is a fixed backoff, as in the Python client (the server refuses a delay with no type).
  const type =
    value.type === undefined
      ? BackoffType.FIXED
      : value.type === "fixed"
        ? BackoffType.FIXED
        : value.type === "exponential"
          ? BackoffType.EXPONENTIAL
          : undefined;
  if (type === undefined) {
    throw new RangeError(`${what}.type must be "fixed" or "exponential", got ${JSON.stringify(value.type)}`);
  }
  return create(BackoffSchema, {
    type,
    delay: value.delay === undefined ? undefined : toDuration(value.delay, `${what}.delay`),
    jitter: value.jitter ?? 0,
    maxDelay: value.maxDelay === undefined ? undefined : toDuration(value.maxDelay, `${what}.maxDelay`),
  });
}

/** Retention: `true` removes at once, `false` keeps the defaults, a number keeps that many. */
export function keepToProto(value: KeepJobs, what: string): KeepJobsPb {
  if (typeof value === "boolean") {
    return create(KeepJobsSchema, { remove: value });
  }
  if (typeof value === "number") {
    return create(KeepJobsSchema, { count: uint(value, what) });
  }
  checkKeys(value, KEEP_KEYS, what);
  return create(KeepJobsSchema, {
    remove: value.remove ?? false,
    age: value.age === undefined ? undefined : toDuration(value.age, `${what}.age`),
    count: value.count === undefined ? 0 : uint(value.count, `${what}.count`),
  });
}

function linkToProto(link: ChainLink, what: string) {
  return create(ChainLinkSchema, {
    queueName: text(link.queueName, `${what}.queueName`),
    jobName: text(link.jobName, `${what}.jobName`),
    data: encodePayload(link.data, `${what}.data`),
    options: link.options === undefined ? undefined : jobOptionsToProto(link.options, `${what}.options`),
  });
}

const DEDUP_MODES: Record<DedupMode, DedupModePb> = {
  keep_first: DedupModePb.KEEP_FIRST,
  extend: DedupModePb.EXTEND,
  replace: DedupModePb.REPLACE,
};

/** A dedup's mode as its wire number (0 when unset); "extend" needs a ttl. */
function dedupMode(dedup: Dedup, what: string): DedupModePb {
  if (dedup.mode === undefined) return DedupModePb.UNSPECIFIED;
  if (!Object.hasOwn(DEDUP_MODES, dedup.mode)) {
    throw new RangeError(`${what}.mode must be one of ${Object.keys(DEDUP_MODES).join(", ")}, got ${JSON.stringify(dedup.mode)}`);
  }
  if (dedup.mode === "extend" && dedup.ttl === undefined) {
    throw new RangeError(`${what}.mode "extend" restarts the ttl at each duplicate: give ${what}.ttl`);
  }
  return DEDUP_MODES[dedup.mode];
}

/** Job options as their message; unknown keys are refused (a misspelt option would be silently ignored). */
export function jobOptionsToProto(options: JobOptions, what = "options"): JobOptionsPb {
  if (typeof options !== "object" || options === null) {
    throw new TypeError(`${what} must be an object of job options`);
  }
  const unknown = Object.keys(options).filter((k) => !JOB_OPTION_KEYS.has(k));
  if (unknown.length) {
    throw new RangeError(`${what} has unknown option(s) ${unknown.join(", ")}; known: ${[...JOB_OPTION_KEYS].join(", ")}`);
  }
  const o = options;
  const dedup = typeof o.dedup === "string" ? { key: o.dedup } : o.dedup;
  return create(JobOptionsSchema, {
    priority: o.priority === undefined ? 0 : parsePriority(o.priority, `${what}.priority`),
    delay: o.delay === undefined ? undefined : toDuration(o.delay, `${what}.delay`),
    scheduleTime: o.scheduleTime === undefined ? undefined : toTimestamp(o.scheduleTime, `${what}.scheduleTime`),
    attempts: o.attempts === undefined ? 0 : uint(o.attempts, `${what}.attempts`),
    backoff: o.backoff === undefined ? undefined : backoffToProto(o.backoff, `${what}.backoff`),
    jobId: o.jobId === undefined ? "" : text(o.jobId, `${what}.jobId`),
    metadata:
      o.metadata === undefined
        ? undefined
        : create(JobMetadataSchema, {
            correlationId: o.metadata.correlationId ?? "",
            tags: o.metadata.tags ?? [],
            // A copy: create() keeps a string map as given, and a traced add writes into the message's.
            attributes: { ...(o.metadata.attributes ?? {}) },
          }),
    removeOnComplete: o.removeOnComplete === undefined ? undefined : keepToProto(o.removeOnComplete, `${what}.removeOnComplete`),
    removeOnFail: o.removeOnFail === undefined ? undefined : keepToProto(o.removeOnFail, `${what}.removeOnFail`),
    timeout: o.timeout === undefined ? undefined : toDuration(o.timeout, `${what}.timeout`),
    maxStalled: o.maxStalled === undefined ? 0 : uint(o.maxStalled, `${what}.maxStalled`),
    chainTo: (o.chainTo ?? []).map((link, i) => linkToProto(link, `${what}.chainTo[${i}]`)),
    dedup:
      dedup === undefined
        ? undefined
        : create(DedupSchema, {
            key: text(dedup.key, `${what}.dedup.key`),
            ttl: dedup.ttl === undefined ? undefined : toDuration(dedup.ttl, `${what}.dedup.ttl`),
            mode: dedupMode(dedup, `${what}.dedup`),
          }),
    expireAfter: o.expireAfter === undefined ? undefined : toDuration(o.expireAfter, `${what}.expireAfter`),
    group: o.group === undefined ? "" : jobGroup(o.group, o.workerLabels, what),
    workerLabels: o.workerLabels === undefined ? {} : workerLabels(o.workerLabels, `${what}.workerLabels`),
    lifo: o.lifo === undefined ? false : flag(o.lifo, `${what}.lifo`),
    errorHistory: o.errorHistory === undefined ? undefined : errorHistory(o.errorHistory, `${what}.errorHistory`),
  });
}

/** A job's error history length (`JobOptions.errorHistory`): 0 to 100. */
function errorHistory(value: unknown, what: string): number {
  const n = uint(value, what);
  if (n > 100) throw new RangeError(`${what} must be at most 100, got ${n}`);
  return n;
}

/** A job to add (name, data, options) as a `NewJob` message. */
export function newJob(name: string, data: unknown, options: JobOptions | undefined, what = "job"): NewJob {
  return create(NewJobSchema, {
    name: text(name, `${what}.name`),
    data: encodePayload(data, `${what}.data`),
    options: options === undefined ? undefined : jobOptionsToProto(options, `${what}.options`),
  });
}

/** Queue settings as their message. */
export function queueConfigToProto(config: QueueConfig): QueueConfigPb {
  // registerQueue replaces the whole config, so a misspelt key would also lift the setting it meant to give.
  checkKeys(config, QUEUE_CONFIG_KEYS, "queue config");
  const rate = config.rateLimit;
  return create(QueueConfigSchema, {
    rateLimit:
      rate === undefined
        ? undefined
        : rateLimitToProto(rate, "rateLimit"),
    defaultJobOptions:
      config.defaultJobOptions === undefined ? undefined : jobOptionsToProto(config.defaultJobOptions, "defaultJobOptions"),
    deadLetterQueue: config.deadLetterQueue ?? "",
    completedRetention:
      config.completedRetention === undefined ? undefined : keepToProto(config.completedRetention, "completedRetention"),
    failedRetention: config.failedRetention === undefined ? undefined : keepToProto(config.failedRetention, "failedRetention"),
    disableDeadLetter: config.disableDeadLetter ?? false,
    concurrency: config.concurrency === undefined ? 0 : uint(config.concurrency, "concurrency"),
    priorityBounds: config.priorityBounds === undefined ? [] : priorityBoundsToProto(config.priorityBounds),
    groupLimits: config.groupLimits === undefined ? undefined : groupLimitsToProto(config.groupLimits, "groupLimits"),
    maxSize: config.maxSize === undefined ? 0n : sizeLimit(config.maxSize, "maxSize"),
    maintenanceWindows: maintenanceWindowsToProto(config.maintenanceWindows ?? []),
  });
}

const QUEUE_CONFIG_KEYS: ReadonlySet<string> = new Set([
  "rateLimit",
  "defaultJobOptions",
  "deadLetterQueue",
  "completedRetention",
  "failedRetention",
  "disableDeadLetter",
  "concurrency",
  "priorityBounds",
  "groupLimits",
  "maxSize",
  "maintenanceWindows",
]);
const RATE_LIMIT_KEYS: ReadonlySet<string> = new Set(["max", "duration", "burst"]);
const KEEP_KEYS: ReadonlySet<string> = new Set(["remove", "age", "count"]);
const WINDOW_KEYS: ReadonlySet<string> = new Set(["cron", "durationMs", "timezone"]);

/**
 * Checks the windows' form (the server checks the cron and the zone) and returns them as messages; errors
 * name `field` (a queue's `maintenanceWindows`, a group's `setGroupLimits` windows).
 */
export function maintenanceWindowsToProto(windows: MaintenanceWindow[], field = "maintenanceWindows"): MaintenanceWindowPb[] {
  if (!Array.isArray(windows)) {
    throw new TypeError(`${field} must be an array of { cron, durationMs, timezone }`);
  }
  return windows.map((w, i) => {
    const what = `${field}[${i}]`;
    if (typeof w !== "object" || w === null || typeof w.cron !== "string" || w.cron.trim() === "") {
      throw new TypeError(`${what}.cron must be a cron expression such as "0 2 * * SUN"`);
    }
    checkKeys(w, WINDOW_KEYS, what);
    if (w.durationMs === 0) throw new RangeError(`${what}.durationMs must be more than 0 ms, got 0`);
    if (w.timezone !== undefined && typeof w.timezone !== "string") {
      throw new TypeError(`${what}.timezone must be a string, not ${typeof w.timezone}`);
    }
    return create(MaintenanceWindowSchema, {
      cron: w.cron,
      duration: toDuration(w.durationMs, `${what}.durationMs`),
      timezone: w.timezone ?? "",
    });
  });
}

/**
 * A size limit (`maxSize`) as its uint64: a whole number of jobs, 0 for none. The server refuses one above
 * 2^48 (INVALID_ARGUMENT naming the field).
 */
function sizeLimit(value: unknown, what: string): bigint {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) {
    throw new RangeError(`${what} must be a whole number of jobs, at least 0 (0: no limit), got ${String(value)}`);
  }
  return BigInt(value);
}

function flag(value: unknown, what: string): boolean {
  if (typeof value !== "boolean") {
    throw new TypeError(`${what} must be a boolean, not ${value === null ? "null" : typeof value}`);
  }
  return value;
}

// The longest fairness group name, in characters (code points), as the server counts them.
const MAX_GROUP_LENGTH = 128;

// The prefix of the routing groups, the groups the server keeps jobs with `workerLabels` in
// ("labels:gpu=a100,region=eu"): a job's own group may not start with it, and the group calls take such a
// name, up to MAX_ROUTE_GROUP_LENGTH characters, as `listGroups` gives it.
const ROUTE_PREFIX = "labels:";
const MAX_ROUTE_PAIRS = 16;
const MAX_ROUTE_KEY = 64;
const MAX_ROUTE_VALUE = 128;
const MAX_ROUTE_GROUP_LENGTH = ROUTE_PREFIX.length + MAX_ROUTE_PAIRS * (MAX_ROUTE_KEY + MAX_ROUTE_VALUE + 2);
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\ud800-\udfff]/u;

/** A job's own group: a group name that is not a routing group's, and not given with worker labels. */
function jobGroup(value: unknown, labels: unknown, what: string): string {
  const group = checkGroup(value, `${what}.group`);
  if (group.startsWith(ROUTE_PREFIX)) {
    throw new RangeError(`${what}.group must not start with "${ROUTE_PREFIX}": workerLabels' groups have it`);
  }
  if (labels !== undefined && Object.keys(labels as object).length > 0) {
    throw new RangeError(`${what}.group and ${what}.workerLabels cannot be given together yet`);
  }
  return group;
}

/** A job's worker labels (`JobOptions.workerLabels`), checked as the server checks them. */
function workerLabels(value: unknown, what: string): Record<string, string> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new TypeError(`${what} must be an object of string labels`);
  }
  const entries = Object.entries(value as Record<string, unknown>);
  if (entries.length > MAX_ROUTE_PAIRS) {
    throw new RangeError(`${what} has ${entries.length} pairs; the limit is ${MAX_ROUTE_PAIRS}`);
  }
  const out: Record<string, string> = {};
  for (const [key, v] of entries) {
    const val = text(v, `${what}[${JSON.stringify(key)}]`);
    const keyLength = [...key].length;
    if (keyLength < 1 || keyLength > MAX_ROUTE_KEY || /[=,]/.test(key) || CONTROL.test(key)) {
      throw new RangeError(
        `${what} key ${JSON.stringify(key)} must be 1 to ${MAX_ROUTE_KEY} characters without "=", "," or control characters`,
      );
    }
    if ([...val].length > MAX_ROUTE_VALUE || val.includes(",") || CONTROL.test(val)) {
      throw new RangeError(
        `${what}[${JSON.stringify(key)}] must be up to ${MAX_ROUTE_VALUE} characters without "," or control characters`,
      );
    }
    out[key] = val;
  }
  return out;
}

/**
 * Checks a fairness group name as the server does (1 to 128 characters, no control characters), and that it
 * is well-formed Unicode: a lone surrogate would reach the server as U+FFFD, another group than the one given.
 */
export function checkGroup(value: unknown, what: string): string {
  const group = text(value, what);
  const length = [...group].length;
  const longest = group.startsWith(ROUTE_PREFIX) ? MAX_ROUTE_GROUP_LENGTH : MAX_GROUP_LENGTH;
  if (length < 1 || length > longest) {
    throw new RangeError(`${what} must be 1 to ${longest} characters, got ${length}`);
  }
  // With the u flag a surrogate pair is one character: the class matches lone surrogates only.
  // Control characters as the server counts them: C0, DEL, C1 (NEL among them), U+2028 and U+2029.
  const bad = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\ud800-\udfff]/u.exec(group)?.[0].charCodeAt(0);
  if (bad !== undefined) {
    const code = `U+${bad.toString(16).toUpperCase().padStart(4, "0")}`;
    const why = bad >= 0xd800 ? `a lone surrogate (${code}), which is not Unicode text` : `control characters (found ${code})`;
    throw new RangeError(`${what} ${JSON.stringify(group)} must not contain ${why}`);
  }
  return group;
}

const GROUP_LIMIT_KEYS = new Set(["concurrency", "rateLimit", "maxSize"]);

function rateLimitToProto(rate: RateLimit, what: string) {
  if (typeof rate !== "object" || rate === null) {
    throw new TypeError(`${what} must be an object { max, duration }, not ${rate === null ? "null" : typeof rate}`);
  }
  checkKeys(rate, RATE_LIMIT_KEYS, what);
  const max = uint(rate.max, `${what}.max`);
  const duration = toDuration(rate.duration, `${what}.duration`);
  if (max > 0 && rate.duration <= 0) {
    throw new RangeError(`${what}.duration must be more than 0 ms when max is set, got ${rate.duration}`);
  }
  const burst = uint(rate.burst ?? 0, `${what}.burst`);
  if (burst > 1_000_000) throw new RangeError(`${what}.burst must be at most 1000000, got ${burst}`);
  if (burst > 0 && max === 0) throw new RangeError(`${what}.burst needs a max: a burst is the capacity of a rate limit`);
  return create(RateLimitSchema, { max, duration, burst });
}

/**
 * Group limits as their message (present even when it limits nothing: for `setGroupLimits` that lifts every
 * per-group limit off the group); unknown keys are refused, as a misspelt one would lift a limit silently.
 */
export function groupLimitsToProto(limits: GroupLimits, what: string): GroupLimitsPb {
  if (typeof limits !== "object" || limits === null || Array.isArray(limits)) {
    const kind = limits === null ? "null" : Array.isArray(limits) ? "an array" : typeof limits;
    throw new TypeError(`${what} must be an object { concurrency, rateLimit, maxSize }, not ${kind}`);
  }
  const unknown = Object.keys(limits).filter((k) => !GROUP_LIMIT_KEYS.has(k));
  if (unknown.length) {
    throw new RangeError(`${what} has unknown key(s) ${unknown.join(", ")}; known: concurrency, rateLimit, maxSize`);
  }
  return create(GroupLimitsSchema, {
    concurrency: limits.concurrency === undefined ? 0 : uint(limits.concurrency, `${what}.concurrency`),
    rateLimit: limits.rateLimit === undefined ? undefined : rateLimitToProto(limits.rateLimit, `${what}.rateLimit`),
    maxSize: limits.maxSize === undefined ? 0n : sizeLimit(limits.maxSize, `${what}.maxSize`),
  });
}

// The server's range for a priority bound (it checks too; these give the message before the call).
const MIN_BOUND_MS = 1_000;
const MAX_BOUND_MS = 30 * 24 * 3600 * 1000;

/**
 * Priority bounds as their messages, by level: a `TypeError` for something that is not a map of levels to
 * milliseconds, a `RangeError` for an unknown level, CRITICAL, a level given twice or a wait outside 1 s to
 * 30 days.
 */
export function priorityBoundsToProto(bounds: PriorityBoundsLike): PriorityBound[] {
  if (typeof bounds !== "object" || bounds === null || Array.isArray(bounds)) {
    const kind = bounds === null ? "null" : Array.isArray(bounds) ? "an array" : typeof bounds;
    throw new TypeError(`priorityBounds must be an object of levels to milliseconds ({ background: 300_000 }), not ${kind}`);
  }
  // An object's keys are strings: { [JobPriority.LOW]: 60_000 } has the key "4".
  const entries: [unknown, unknown][] =
    bounds instanceof Map ? [...bounds.entries()] : Object.entries(bounds).map(([key, ms]) => [/^\d+$/.test(key) ? Number(key) : key, ms]);
  const levels = new Map<JobPriority, number>();
  for (const [key, ms] of entries) {
    const level = parsePriority(key as PriorityLike, "a priorityBounds level");
    const name = JobPriority[level].toLowerCase();
    if (level === JobPriority.CRITICAL) {
      throw new RangeError("priorityBounds: CRITICAL jobs run first already; bound high to background");
    }
    if (levels.has(level)) {
      throw new RangeError(`priorityBounds: ${name} is given twice (${JSON.stringify(key)})`);
    }
    toDuration(ms as number, `priorityBounds.${name}`);
    if ((ms as number) < MIN_BOUND_MS || (ms as number) > MAX_BOUND_MS) {
      throw new RangeError(
        `priorityBounds.${name} is ${String(ms)} ms: a bound is from 1 second to 30 days, in milliseconds (60 seconds is 60_000)`,
      );
    }
    levels.set(level, ms as number);
  }
  return [...levels.entries()]
    .sort(([a], [b]) => a - b)
    .map(([priority, ms]) => create(PriorityBoundSchema, { priority, maxWait: toDuration(ms, "priorityBounds") }));
}
