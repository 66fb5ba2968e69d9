/**
 * Where protobuf messages become the public shapes of types.ts, and payloads, durations and times cross.
 *
 * Payload convention (as the Python client's): JSON-serialisable data travels as UTF-8 JSON in
 * `Payload.raw` with content type `application/json`; a `Uint8Array` (or `Buffer`) travels as
 * `application/octet-stream`. On the way back a `json` Value, JSON `raw` bytes and other `raw` bytes
 * become a JSON value, a JSON value and a `Uint8Array`.
 */
import { create, fromJson, toJson, type JsonValue } from "@bufbuild/protobuf";
import {
  DurationSchema,
  durationMs,
  timestampDate,
  timestampFromDate,
  ValueSchema,
  type Duration,
  type Timestamp,
  type Value,
} from "@bufbuild/protobuf/wkt";
import type { AddJobRequest, CreatedJob } from "./gen/queue_manager/v1/jobs_pb.js";
import { WorkerState as WorkerStatePb, type WorkerInfo as WorkerInfoPb } from "./gen/queue_manager/v1/metrics_pb.js";
import {
  PayloadSchema,
  type GroupInfo as GroupInfoPb,
  type GroupLimits as GroupLimitsPb,
  type Job as JobPb,
  type JobLogLine as JobLogLinePb,
  type JobMetadata as JobMetadataPb,
  type KeepJobs as KeepJobsPb,
  type MaintenanceWindow as MaintenanceWindowPb,
  type ChildJob as ChildJobPb,
  type ParentJob as ParentJobPb,
  type Payload,
  type PriorityBound,
  type Queue as QueuePb,
  type QueueMetrics as QueueMetricsPb,
  type RateLimit as RateLimitPb,
} from "./gen/queue_manager/v1/types_pb.js";
import { EncodedPayload, encodedPayload, isEncoded } from "./payload-format.js";
import {
  JOB_STATES,
  JobPriority,
  type BoundedPriority,
  type ChildJob,
  type EventWait,
  type ExternalEvent,
  type GroupInfo,
  type Job,
  type JobLogLine,
  type JobMetadata,
  type JobState,
  type MaintenanceWindow,
  type Page,
  type ParentJob,
  type PauseOptions,
  type PriorityLike,
  type Queue,
  type QueueMetrics,
  type JobError,
  type JobErrorKind,
  type RateLimit,
  type WorkerInfo,
  type WorkerState,
} from "./types.js";

export const JSON_CONTENT_TYPE = "application/json";
export const OCTET_STREAM = "application/octet-stream";

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** Encodes job data or a result: bytes as they are, anything else as JSON (a TypeError if it is not JSON). */
export function encodePayload(value: unknown, what = "data"): Payload | undefined {
  if (value === undefined) {
    return undefined;
  }
  if (value instanceof Uint8Array) {
    return create(PayloadSchema, { body: { case: "raw", value }, contentType: OCTET_STREAM });
  }
  if (value instanceof EncodedPayload) {
    // Read without the keys: handed on as it came.
    return create(PayloadSchema, { body: { case: "raw", value: value.raw }, contentType: value.contentType });
  }
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch (err) {
    throw new TypeError(`${what} is not JSON-serialisable: ${(err as Error).message}`);
  }
  if (text === undefined) {
    throw new TypeError(`${what} is not JSON-serialisable (a ${typeof value})`);
  }
  return create(PayloadSchema, { body: { case: "raw", value: encoder.encode(text) }, contentType: JSON_CONTENT_TYPE });
}

/**
 * Decodes a payload: a JSON value, an `EncodedPayload` for one compressed or encrypted by a client that this
 * client could not decode (codecs.ts), or a `Uint8Array` for any other body that is not JSON; `null` when unset.
 */
export function decodePayload(payload: Payload | undefined): unknown {
  if (payload === undefined) {
    return null;
  }
  const body = payload.body;
  if (body.case === "json") {
    return toJson(ValueSchema, body.value);
  }
  if (body.case === "raw") {
    const type = payload.contentType.split(";")[0]?.trim().toLowerCase();
    if (type === JSON_CONTENT_TYPE) {
      return JSON.parse(decoder.decode(body.value)) as unknown;
    }
    if (isEncoded(payload.contentType)) {
      return encodedPayload(payload.contentType, body.value);
    }
    return body.value;
  }
  return null;
}

/** A `google.protobuf.Value` as JSON text. */
export function valueText(value: Value): string {
  return JSON.stringify(toJson(ValueSchema, value));
}

/** A JSON value as a `google.protobuf.Value` (progress). */
export function toValue(value: unknown, what: string): Value {
  let json: JsonValue;
  try {
    json = JSON.parse(JSON.stringify(value ?? null)) as JsonValue;
  } catch (err) {
    throw new TypeError(`${what} is not JSON-serialisable: ${(err as Error).message}`);
  }
  return fromJson(ValueSchema, json);
}

/** A `google.protobuf.Value` as a JSON value; undefined when unset. */
export function fromValue(value: Value | undefined): unknown {
  return value === undefined ? undefined : toJson(ValueSchema, value);
}

/** A duration in ms (finite, at least 0; fractions kept to the nanosecond) as a `Duration`. */
export function msToDuration(ms: number): Duration {
  let seconds = Math.floor(ms / 1000);
  let nanos = Math.round((ms - seconds * 1000) * 1e6);
  if (nanos >= 1e9) {
    seconds += 1;
    nanos -= 1e9;
  }
  return create(DurationSchema, { seconds: BigInt(seconds), nanos });
}

/** Checks a duration in ms (a finite number, at least 0): a RangeError naming the field otherwise. */
export function checkMs(value: number, what: string): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value < 0) {
    throw new RangeError(`${what} must be a number of milliseconds of at least 0, got ${String(value)}`);
  }
  return value;
}

/** Checks a duration in ms (finite, at least 0) and returns it as a `Duration`. */
export function toDuration(ms: number, what: string): Duration {
  return msToDuration(checkMs(ms, what));
}

/** A `Duration` in ms; undefined when unset. */
export function fromDuration(duration: Duration | undefined): number | undefined {
  return duration === undefined ? undefined : durationMs(duration);
}

/** Checks a `Date` and returns it as a `Timestamp`. */
export function toTimestamp(date: Date, what: string): Timestamp {
  if (!(date instanceof Date) || Number.isNaN(date.getTime())) {
    throw new TypeError(`${what} must be a valid Date`);
  }
  return timestampFromDate(date);
}

/** A pause request's resume time (`PauseOptions`): at most one of the two, a duration more than 0 ms. */
export function pauseTimeToProto(options: PauseOptions): { resumeAfter?: Duration; resumeAt?: Timestamp } {
  if (typeof options !== "object" || options === null) {
    throw new TypeError(`pause options must be an object { resumeAfterMs, resumeAt }, not ${String(options)}`);
  }
  const { resumeAfterMs, resumeAt } = options;
  if (resumeAfterMs !== undefined && resumeAt !== undefined) {
    throw new RangeError("give resumeAfterMs or resumeAt, not both");
  }
  if (resumeAfterMs !== undefined) {
    if (resumeAfterMs === 0) throw new RangeError("resumeAfterMs must be more than 0 ms, got 0");
    return { resumeAfter: toDuration(resumeAfterMs, "resumeAfterMs") };
  }
  return resumeAt === undefined ? {} : { resumeAt: toTimestamp(resumeAt, "resumeAt") };
}

/** A `Timestamp` as a `Date`; undefined when unset. */
export function fromTimestamp(ts: Timestamp | undefined): Date | undefined {
  return ts === undefined ? undefined : timestampDate(ts);
}

/** A priority given as the enum, its number or its name ("high", "HIGH"), as the enum. */
export function parsePriority(value: PriorityLike, what = "priority"): JobPriority {
  if (typeof value === "number" && Number.isInteger(value) && value >= 1 && value <= 5) {
    return value as JobPriority;
  }
  if (typeof value === "string") {
    const named = (JobPriority as unknown as Record<string, number>)[value.toUpperCase()];
    if (named !== undefined) {
      return named;
    }
  }
  throw new RangeError(
    `${what} must be one of critical, high, normal, low, background (or 1 to 5), got ${JSON.stringify(value)}`,
  );
}

/** A wire priority number as the enum; NORMAL for 0 (unspecified). */
export function priorityOf(number: number): JobPriority {
  return number >= 1 && number <= 5 ? (number as JobPriority) : JobPriority.NORMAL;
}

/** A state name as its wire number (JobState.JOB_STATE_*). */
export function stateNumber(state: JobState, what = "state"): number {
  const index = JOB_STATES.indexOf(state);
  if (index < 0) {
    throw new RangeError(`${what} must be one of ${JOB_STATES.join(", ")}, got ${JSON.stringify(state)}`);
  }
  return index + 1;
}

/** A wire state number as its name; undefined for 0 (unspecified) or an unknown number. */
export function stateName(number: number): JobState | undefined {
  return JOB_STATES[number - 1];
}

function keepFromProto(keep: KeepJobsPb | undefined): Queue["config"]["completedRetention"] {
  return keep === undefined ? undefined : { remove: keep.remove, age: fromDuration(keep.age), count: keep.count };
}

/** The levels this client knows (a newer server's unknown level is left out). */
function knownLevel(number: number): boolean {
  return number >= JobPriority.CRITICAL && number <= JobPriority.BACKGROUND;
}

/** Priority bounds as ms by level name, in the order stored (HIGH first); unknown levels left out. */
function boundsFromProto(bounds: PriorityBound[]): Partial<Record<BoundedPriority, number>> {
  const byLevel: Partial<Record<BoundedPriority, number>> = {};
  for (const bound of bounds) {
    if (knownLevel(bound.priority) && bound.priority !== JobPriority.CRITICAL) {
      byLevel[JobPriority[bound.priority].toLowerCase() as BoundedPriority] = fromDuration(bound.maxWait) ?? 0;
    }
  }
  return byLevel;
}

/**
 * A job's metadata message (or the same fields of a workflow run's), every field present; copies, which the
 * caller may change.
 */
export function metadataFromProto(metadata: Omit<JobMetadataPb, "$typeName" | "$unknown"> | undefined): Required<JobMetadata> {
  return {
    correlationId: metadata?.correlationId ?? "",
    tags: [...(metadata?.tags ?? [])],
    attributes: { ...(metadata?.attributes ?? {}) },
  };
}

/** A predecessor message (a chain's or a workflow's) as a `ParentJob`. */
export function parentFromProto(parent: ParentJobPb): ParentJob {
  return {
    queueName: parent.job?.queueName ?? "",
    jobId: parent.job?.jobId ?? "",
    stepKey: parent.stepKey,
    state: stateName(parent.state),
    result: parent.result === undefined ? undefined : decodePayload(parent.result),
    failedReason: parent.failedReason,
  };
}

/** A child a job added at run time, with its outcome, as a `ChildJob`. */
export function childJobFromProto(child: ChildJobPb): ChildJob {
  return {
    queueName: child.job?.queueName ?? "",
    jobId: child.job?.jobId ?? "",
    state: stateName(child.state),
    result: child.result === undefined ? undefined : decodePayload(child.result),
    failedReason: child.failedReason,
    truncated: child.truncated,
    currentState: stateName(child.currentState),
    removed: child.removed,
  };
}

/** The job's event wait (parked, or the one its run follows); undefined when it has none. */
export function eventWaitFromProto(job: JobPb): EventWait | undefined {
  const w = job.eventWait;
  return w === undefined ? undefined : { keys: [...w.keys], until: fromTimestamp(w.until) };
}

/** The external event that ended the job's last wait; undefined when none did. */
export function eventFromProto(job: JobPb): ExternalEvent | undefined {
  const e = job.event;
  if (e === undefined) {
    return undefined;
  }
  return { key: e.key, data: e.data === undefined ? undefined : decodePayload(e.data), eventId: e.eventId, pushedAt: fromTimestamp(e.pushedAt) };
}

/** A log line message as a `JobLogLine`. */
export function logLineFromProto(line: JobLogLinePb): JobLogLine {
  return { time: fromTimestamp(line.time), message: line.message };
}

/** A page of converted items, with the answer's token of the next page and total. */
export function pageFromProto<T>(items: T[], answer: { nextPageToken: string; totalSize: bigint }): Page<T> {
  return { items, nextPageToken: answer.nextPageToken, totalSize: Number(answer.totalSize) };
}

/** A job message as a `Job`. */
export function jobFromProto(job: JobPb): Job {
  return {
    id: job.id,
    queueName: job.queueName,
    name: job.name,
    data: decodePayload(job.data),
    state: stateName(job.state),
    priority: priorityOf(job.priority),
    attemptsMade: job.attemptsMade,
    maxAttempts: job.maxAttempts,
    stalledCount: job.stalledCount,
    result: job.result === undefined ? undefined : decodePayload(job.result),
    failedReason: job.failedReason,
    stacktrace: job.stacktrace,
    progress: fromValue(job.progress),
    createdAt: fromTimestamp(job.createTime),
    processedAt: fromTimestamp(job.processTime),
    finishedAt: fromTimestamp(job.finishTime),
    runAt: fromTimestamp(job.runTime),
    metadata: metadataFromProto(job.metadata),
    workerId: job.workerId,
    parents: job.parents.map(parentFromProto),
    children: job.children.map((c) => ({ queueName: c.queueName, jobId: c.jobId })),
    chainRoot: job.chainRoot && { queueName: job.chainRoot.queueName, jobId: job.chainRoot.jobId },
    chainFailure: job.chainFailure,
    workflow: job.workflow && { runId: job.workflow.runId, stepKey: job.workflow.stepKey },
    logs: job.logs.map(logLineFromProto),
    logCount: Number(job.logCount),
    errors: jobErrorsFromProto(job.errors),
    childJobs: job.childJobs.map(childJobFromProto),
    childrenPending: job.childrenPending,
    eventWait: eventWaitFromProto(job),
    event: eventFromProto(job),
    cancelRequested: job.cancelRequested,
    cancelReason: job.cancelReason,
    expiresAt: fromTimestamp(job.expireTime),
    group: job.options?.group ?? "",
    workerLabels: { ...(job.options?.workerLabels ?? {}) },
    lifo: job.options?.lifo ?? false,
  };
}

/**
 * The job a brief answer stands for (AddJobStreamRequest.brief): the request's queue, name and data with the
 * answer's id, state and time, as `jobFromProto` reads the same job from a whole answer (priority NORMAL,
 * one attempt, nothing else set).
 */
export function createdJob(request: AddJobRequest, created: CreatedJob): Job {
  return {
    id: created.id,
    queueName: request.queueName,
    name: request.job?.name ?? "",
    data: decodePayload(request.job?.data),
    state: stateName(created.state),
    priority: JobPriority.NORMAL,
    attemptsMade: 0,
    maxAttempts: 1,
    stalledCount: 0,
    result: undefined,
    failedReason: "",
    stacktrace: "",
    progress: undefined,
    createdAt: fromTimestamp(created.createTime),
    processedAt: undefined,
    finishedAt: undefined,
    runAt: undefined,
    metadata: { correlationId: "", tags: [], attributes: {} },
    workerId: "",
    parents: [],
    children: [],
    chainRoot: undefined,
    chainFailure: "",
    workflow: undefined,
    logs: [],
    logCount: 0,
    errors: [],
    childJobs: [],
    childrenPending: 0,
    eventWait: undefined,
    event: undefined,
    cancelRequested: false,
    cancelReason: "",
    expiresAt: undefined,
    group: "", // a job with a group is answered whole: its group is stored
    workerLabels: {}, // so is a job with worker labels (they are its group)
    lifo: false, // so is a LIFO job
    created: true, // a brief answer is only ever a job the add created
    replaced: false,
  };
}

/** A queue message as a `Queue`. */
export function queueFromProto(queue: QueuePb): Queue {
  const config = queue.config;
  return {
    name: queue.name,
    paused: queue.paused,
    ...(queue.pausedUntil ? { pausedUntil: fromTimestamp(queue.pausedUntil) } : {}),
    ...(queue.maintenanceUntil ? { maintenanceUntil: fromTimestamp(queue.maintenanceUntil) } : {}),
    ...(queue.nextMaintenanceTime ? { nextMaintenanceTime: fromTimestamp(queue.nextMaintenanceTime) } : {}),
    createdAt: fromTimestamp(queue.createTime),
    config: {
      rateLimit: rateLimitFromProto(config?.rateLimit),
      deadLetterQueue: config?.deadLetterQueue ?? "",
      disableDeadLetter: config?.disableDeadLetter ?? false,
      concurrency: config?.concurrency ?? 0,
      defaultAttempts: config?.defaultJobOptions?.attempts ?? 0,
      defaultPriority: config?.defaultJobOptions?.priority ? priorityOf(config.defaultJobOptions.priority) : undefined,
      completedRetention: keepFromProto(config?.completedRetention),
      failedRetention: keepFromProto(config?.failedRetention),
      priorityBounds: boundsFromProto(config?.priorityBounds ?? []),
      groupLimits: queueGroupLimitsFromProto(config?.groupLimits),
      maxSize: Number(config?.maxSize ?? 0n),
      maintenanceWindows: windowsFromProto(config?.maintenanceWindows ?? []),
    },
  };
}

/** Maintenance windows as read back (a queue's, a group's). */
function windowsFromProto(windows: MaintenanceWindowPb[]): Required<MaintenanceWindow>[] {
  return windows.map((w) => ({ cron: w.cron, durationMs: fromDuration(w.duration) ?? 0, timezone: w.timezone }));
}

/** A rate limit message; undefined when unset or of 0 jobs (none). */
function rateLimitFromProto(rate: RateLimitPb | undefined): Required<RateLimit> | undefined {
  return rate && rate.max
    ? { max: rate.max, duration: fromDuration(rate.duration) ?? 0, burst: rate.burst }
    : undefined;
}

const ERROR_KINDS: Record<number, JobErrorKind> = { 1: "error", 2: "timeout", 3: "stalled", 4: "cancelled" };

/** A job's error history (`Job.errors`). */
function jobErrorsFromProto(errors: JobPb["errors"]): JobError[] {
  return errors.map((e) => ({
    attempt: e.attempt,
    kind: ERROR_KINDS[e.kind] ?? "unknown",
    message: e.message,
    stacktrace: e.stacktrace,
    workerId: e.workerId,
    time: fromTimestamp(e.time),
  }));
}

/** Group limits as read back: concurrency 0, no rate limit and max size 0 when the message limits nothing. */
function groupLimitsFromProto(limits: GroupLimitsPb | undefined): GroupInfo["limits"] {
  return {
    concurrency: limits?.concurrency ?? 0,
    rateLimit: rateLimitFromProto(limits?.rateLimit),
    maxSize: Number(limits?.maxSize ?? 0n),
  };
}

/** A queue's group limits: undefined when they limit no group. */
function queueGroupLimitsFromProto(limits: GroupLimitsPb | undefined): Queue["config"]["groupLimits"] {
  const read = groupLimitsFromProto(limits);
  return read.concurrency || read.rateLimit || read.maxSize ? read : undefined;
}

/** A group message as a `GroupInfo`. */
export function groupInfoFromProto(group: GroupInfoPb): GroupInfo {
  return {
    group: group.group,
    waiting: Number(group.waiting),
    active: Number(group.active),
    limits: groupLimitsFromProto(group.limits),
    customLimits: group.customLimits,
    paused: group.paused,
    ...(group.pausedUntil ? { pausedUntil: fromTimestamp(group.pausedUntil) } : {}),
    ...(group.limits?.maintenanceWindows.length ? { maintenanceWindows: windowsFromProto(group.limits.maintenanceWindows) } : {}),
    ...(group.maintenanceUntil ? { maintenanceUntil: fromTimestamp(group.maintenanceUntil) } : {}),
    ...(group.nextMaintenanceTime ? { nextMaintenanceTime: fromTimestamp(group.nextMaintenanceTime) } : {}),
  };
}

/** A metrics message as `QueueMetrics` (counters as numbers, durations in ms). */
export function metricsFromProto(m: QueueMetricsPb): QueueMetrics {
  return {
    queueName: m.queueName,
    waiting: Number(m.waiting),
    active: Number(m.active),
    delayed: Number(m.delayed),
    completed: Number(m.completed),
    failed: Number(m.failed),
    paused: Number(m.paused),
    stalled: Number(m.stalled),
    stalledTotal: Number(m.stalledTotal),
    timedOutTotal: Number(m.timedOutTotal),
    raisedTotal: Number(m.raisedTotal),
    memoryBytes: Number(m.memoryBytes),
    cancelled: Number(m.cancelled),
    addedTotal: Number(m.addedTotal),
    completedTotal: Number(m.completedTotal),
    failedTotal: Number(m.failedTotal),
    completedPerSecond: m.completedPerSecond,
    failedPerSecond: m.failedPerSecond,
    completedLastMinute: Number(m.completedLastMinute),
    failedLastMinute: Number(m.failedLastMinute),
    averageProcessingTime: fromDuration(m.averageProcessingTime),
    p95ProcessingTime: fromDuration(m.p95ProcessingTime),
    errorRate: m.errorRate,
    oldestWaitingAge: fromDuration(m.oldestWaitingAge),
    workers: m.workers,
    freeCapacity: m.freeCapacity,
    rateLimitTokens: m.rateLimitTokens,
    isPaused: m.isPaused,
    pausedUntil: fromTimestamp(m.pausedUntil),
    maintenanceUntil: fromTimestamp(m.maintenanceUntil),
    heldUntil: fromTimestamp(m.heldUntil),
    history: m.history.map((b) => ({
      startTime: fromTimestamp(b.startTime),
      added: Number(b.added),
      completed: Number(b.completed),
      failed: Number(b.failed),
    })),
    sampleTime: fromTimestamp(m.sampleTime),
    levels: m.levels
      .filter((level) => knownLevel(level.priority))
      .map((level) => ({
        priority: level.priority as number as JobPriority,
        waiting: Number(level.waiting),
        oldestWaitingAge: fromDuration(level.oldestWaitingAge),
      })),
    groups: Number(m.groups),
    groupsPaused: Number(m.groupsPaused),
  };
}

/** A wire WorkerState as its name ("active" for a server that predates worker control). */
export function workerStateName(state: WorkerStatePb): WorkerState {
  if (state === WorkerStatePb.QUIET) {
    return "quiet";
  }
  return state === WorkerStatePb.STOPPING ? "stopping" : "active";
}

/** A worker message as `WorkerInfo`. */
export function workerFromProto(w: WorkerInfoPb): WorkerInfo {
  return {
    workerId: w.workerId,
    serverId: w.serverId,
    host: w.host,
    language: w.language,
    version: w.version,
    queues: [...w.queues],
    concurrency: w.concurrency,
    inFlight: w.inFlight,
    connectTime: fromTimestamp(w.connectTime),
    lastHeartbeatTime: fromTimestamp(w.lastHeartbeatTime),
    uptimeMs: fromDuration(w.uptime) ?? 0,
    cpuPercent: w.cpuPercent,
    memoryBytes: Number(w.memoryBytes),
    labels: { ...w.labels },
    state: workerStateName(w.state),
    tier: w.tier,
  };
}
