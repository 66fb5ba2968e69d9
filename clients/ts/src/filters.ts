/**
 * Finding jobs by what they are and acting on those found: the JobFilter of ListJobs and of the bulk calls
 * (RetryFailedJobs, CancelJobs, RemoveJobs), their requests and their results (docs/jobs.md, "Find jobs by
 * filter, act on what was found").
 *
 * The server keeps no index for a filter: each call reads at most a few thousand jobs of the state, so a
 * filtered page may hold fewer jobs than asked, or none, and still carry a token; the listing (or the bulk
 * action) is complete only when the token comes back empty.
 */
import { create } from "@bufbuild/protobuf";
import {
  CancelJobsRequestSchema,
  JobFilterSchema,
  ListJobsRequestSchema,
  RemoveJobsRequestSchema,
  RetryFailedJobsRequestSchema,
  type CancelJobsRequest,
  type JobFilter as JobFilterPb,
  type ListJobsRequest,
  type RemoveJobsRequest,
  type RetryFailedJobsRequest,
} from "./gen/queue_manager/v1/jobs_pb.js";
import { stateNumber, toTimestamp } from "./convert.js";
import { checkKeys, checkQueueName, text, uint } from "./options.js";
import type { JobState } from "./types.js";

/** Which jobs of a state a call takes: a job matches when it matches every condition given (none: every job). */
export interface JobFilter {
  /** The job name, exact, or a prefix when it ends with "*" ("send-*"); "*" anywhere else is refused. */
  name?: string;
  /** The fairness group (`JobOptions.group`), exact. */
  group?: string;
  /** A tag of the job's metadata (`JobMetadata.tags`), exact. */
  tag?: string;
  /** The job's correlation id (`JobMetadata.correlationId`), exact. */
  correlationId?: string;
  /** Created at or after this time. */
  createdAfter?: Date;
  /** Created before this time (after `createdAfter` when both are given). */
  createdBefore?: Date;
}

/** `listJobs`'s page and filter. */
export interface ListJobsOptions extends JobFilter {
  /** Jobs per page, 1 to 1,000; default 100. */
  pageSize?: number;
  /** The previous page's `nextPageToken`; unset or "" for the first page. */
  pageToken?: string;
}

/** `countJobs`'s filter, where it starts and how many calls it may make. */
export interface CountJobsOptions extends JobFilter {
  /** Where to start: unset or "" for the state's start, or a previous count's (or listing's) token. */
  pageToken?: string;
  /** Most ListJobs calls, a whole number of at least 1; unset: until the state's end. */
  maxCalls?: number;
}

/** How many jobs of a state match a filter (`countJobs`). */
export interface JobCount {
  /** The matches counted. */
  count: number;
  /** Where counting would go on (`CountJobsOptions.pageToken`); "" once the whole state was read. */
  nextPageToken: string;
  /** The ListJobs calls made. */
  calls: number;
  /** The whole state was read: `count` is every match (as of the reads). */
  complete: boolean;
}

/** The filter of one bounded bulk call (`retryJobs`, `removeJobs`), how many it acts on and where it continues. */
export interface BulkOptions extends JobFilter {
  /** Most jobs this call acts on, 1 to 1,000; unset or 0: 1,000. */
  limit?: number;
  /** The previous call's `nextPageToken`; unset or "" to start. */
  pageToken?: string;
}

/** `cancelJobs`'s options: a bulk call's, and why. */
export interface CancelJobsOptions extends BulkOptions {
  /** Why, kept with each job (at most 1,000 characters). */
  reason?: string;
}

/** What one bounded bulk call did. */
export interface BulkResult {
  /** Jobs retried, cancelled or removed. */
  count: number;
  /** Where the next call continues; "" once the whole state was read (the action is then complete). */
  nextPageToken: string;
  /** `cancelJobs`: active jobs whose workers were told to stop them (they end cancelled); else 0. */
  requested: number;
}

// Most jobs one bulk call acts on (the server's limit per call).
export const MAX_BULK_LIMIT = 1000;

const FILTER_KEYS = ["name", "group", "tag", "correlationId", "createdAfter", "createdBefore"];
export const LIST_KEYS: ReadonlySet<string> = new Set([...FILTER_KEYS, "pageSize", "pageToken"]);
const BULK_KEYS = new Set([...FILTER_KEYS, "limit", "pageToken"]);
const CANCEL_KEYS = new Set([...BULK_KEYS, "reason"]);
const COUNT_KEYS = new Set([...FILTER_KEYS, "pageToken", "maxCalls"]);

/** A filter's text condition: "" when unset; a TypeError or RangeError for a non-string or a blank one. */
function condition(value: unknown, what: string): string {
  if (value === undefined) {
    return "";
  }
  if (!text(value, what).trim()) {
    throw new RangeError(`${what} is empty; leave it out to match every job`);
  }
  return value as string;
}

/**
 * Builds and checks a JobFilter; undefined when it sets no condition. Refused (a RangeError): an empty value,
 * a "*" that does not end the name (or a name of "*" alone), `createdAfter` not before `createdBefore`.
 */
export function jobFilterToProto(filter: JobFilter): JobFilterPb | undefined {
  const name = condition(filter.name, "name");
  if (name.slice(0, -1).includes("*")) {
    throw new RangeError(`name ${JSON.stringify(name)} holds a '*' before its end; '*' may only end a name ("send-*")`);
  }
  if (name === "*") {
    throw new RangeError("name \"*\" matches every name; leave it out instead");
  }
  const { createdAfter: after, createdBefore: before } = filter;
  const message = create(JobFilterSchema, {
    name,
    group: condition(filter.group, "group"),
    tag: condition(filter.tag, "tag"),
    correlationId: condition(filter.correlationId, "correlationId"),
    createdAfter: after === undefined ? undefined : toTimestamp(after, "createdAfter"),
    createdBefore: before === undefined ? undefined : toTimestamp(before, "createdBefore"),
  });
  if (after !== undefined && before !== undefined && after.getTime() >= before.getTime()) {
    throw new RangeError(
      `createdAfter (${after.toISOString()}) is not before createdBefore (${before.toISOString()}): no job can match`,
    );
  }
  const empty = !message.name && !message.group && !message.tag && !message.correlationId && !after && !before;
  return empty ? undefined : message;
}

function limit(value: unknown): number {
  if (value === undefined) {
    return 0;
  }
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value > MAX_BULK_LIMIT) {
    throw new RangeError(`limit must be a whole number from 1 to ${MAX_BULK_LIMIT} (0 means ${MAX_BULK_LIMIT}), got ${String(value)}`);
  }
  return value;
}

function token(value: unknown): string {
  return value === undefined ? "" : text(value, "pageToken");
}

/** A ListJobsRequest: a page of one state's jobs, those that match the options' filter. */
export function listJobsRequest(queueName: string, state: JobState, options: ListJobsOptions): ListJobsRequest {
  checkKeys(options, LIST_KEYS, "listJobs options");
  const pageSize = uint(options.pageSize ?? 100, "pageSize");
  if (pageSize > MAX_BULK_LIMIT) {
    throw new RangeError(`pageSize must be a whole number from 1 to 1000 (0 means 100), got ${pageSize}`);
  }
  return create(ListJobsRequestSchema, {
    queueName: checkQueueName(queueName),
    state: stateNumber(state),
    pageSize,
    pageToken: token(options.pageToken),
    filter: jobFilterToProto(options),
  });
}

/**
 * `countJobs`' checked options: the filter of its requests (undefined: none), its first token and its most
 * calls (undefined: until the end). A RangeError or TypeError names a bad option.
 */
export function countJobsPlan(
  queueName: string,
  state: JobState,
  options: CountJobsOptions,
): { filter: JobFilterPb | undefined; pageToken: string; maxCalls: number | undefined } {
  checkKeys(options, COUNT_KEYS, "countJobs options");
  checkQueueName(queueName);
  stateNumber(state);
  const most = options.maxCalls;
  if (most !== undefined && (typeof most !== "number" || !Number.isInteger(most) || most < 1)) {
    throw new RangeError(`maxCalls must be a whole number of at least 1 (leave it out: until the end), got ${String(most)}`);
  }
  return { filter: jobFilterToProto(options), pageToken: token(options.pageToken), maxCalls: most };
}

/** A ListJobsRequest with countOnly: the matches of one bounded read, no jobs. */
export function countJobsRequest(queueName: string, state: JobState, filter: JobFilterPb | undefined, pageToken: string): ListJobsRequest {
  return create(ListJobsRequestSchema, { queueName, state: stateNumber(state), pageToken, filter, countOnly: true });
}

/** A bounded RetryFailedJobsRequest (state: failed or cancelled; the limit always set, so the call is bounded). */
export function retryJobsRequest(queueName: string, state: JobState, options: BulkOptions): RetryFailedJobsRequest {
  checkKeys(options, BULK_KEYS, "retryJobs options");
  if (state !== "failed" && state !== "cancelled") {
    throw new RangeError(`retryJobs: state must be "failed" or "cancelled", got ${JSON.stringify(state)}`);
  }
  return create(RetryFailedJobsRequestSchema, {
    queueName: checkQueueName(queueName),
    state: stateNumber(state),
    filter: jobFilterToProto(options),
    limit: limit(options.limit) || MAX_BULK_LIMIT,
    pageToken: token(options.pageToken),
  });
}

/** A CancelJobsRequest (the server checks the state: waiting, paused, delayed or active). */
export function cancelJobsRequest(queueName: string, state: JobState, options: CancelJobsOptions): CancelJobsRequest {
  checkKeys(options, CANCEL_KEYS, "cancelJobs options");
  return create(CancelJobsRequestSchema, {
    queueName: checkQueueName(queueName),
    state: stateNumber(state),
    filter: jobFilterToProto(options),
    limit: limit(options.limit),
    pageToken: token(options.pageToken),
    reason: options.reason === undefined ? "" : text(options.reason, "reason"),
  });
}

/** A RemoveJobsRequest (the server checks the state: any but active). */
export function removeJobsRequest(queueName: string, state: JobState, options: BulkOptions): RemoveJobsRequest {
  checkKeys(options, BULK_KEYS, "removeJobs options");
  return create(RemoveJobsRequestSchema, {
    queueName: checkQueueName(queueName),
    state: stateNumber(state),
    filter: jobFilterToProto(options),
    limit: limit(options.limit),
    pageToken: token(options.pageToken),
  });
}

/** A bulk call's answer as a `BulkResult`. */
export function bulkResult(answer: { count: bigint; nextPageToken: string; requestedCount?: bigint }): BulkResult {
  return { count: Number(answer.count), nextPageToken: answer.nextPageToken, requested: Number(answer.requestedCount ?? 0n) };
}
