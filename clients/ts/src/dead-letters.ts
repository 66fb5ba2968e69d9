/** Sending dead-letter copies back to their original queues (RedriveDeadLetters): the request and the result. */
import { create } from "@bufbuild/protobuf";
import {
  RedriveDeadLettersRequestSchema,
  type RedriveDeadLettersRequest,
  type RedriveDeadLettersResponse,
} from "./gen/queue_manager/v1/queue_service_pb.js";
import type { CodecChain } from "./codecs.js";
import { decodePayload, encodePayload } from "./convert.js";
import { PayloadSchema } from "./gen/queue_manager/v1/types_pb.js";
import { isEncoded } from "./payload-format.js";
import { checkKeys, checkQueueName } from "./options.js";
import type { Job, JobState, RedriveOptions, RedriveResult, RedrivenQueue } from "./types.js";

/** The dead-letter queue of every queue registered without one of its own. */
export const DEAD_LETTER_QUEUE = "dead-letter-queue";

// Most copies one redrive names (the server's limit).
const MAX_REDRIVE_IDS = 1000;

const REDRIVE_KEYS = new Set(["originalQueue", "limit", "jobIds", "replaceData", "data"]);

/**
 * Builds and checks a RedriveDeadLettersRequest, refusing before the call what the Python client refuses: a
 * bad queue name, a limit that is not a whole number from 1, more than 1,000 `jobIds` or one that is no
 * copy's id (`<original queue>:<job id>`), `jobIds` with `limit`, `data` with other than one of `jobIds`, data
 * that is not JSON, an unknown option key.
 */
export function redriveRequest(queueName: string, options: RedriveOptions): RedriveDeadLettersRequest {
  checkKeys(options, REDRIVE_KEYS, "redriveDeadLetters options");
  const { originalQueue, limit, jobIds, replaceData, data } = options;
  if (limit !== undefined && (typeof limit !== "number" || !Number.isInteger(limit) || limit < 1 || limit > 0xffffffff)) {
    throw new RangeError(`limit must be a whole number of at least 1 (unset: every copy), got ${String(limit)}`);
  }
  if (jobIds !== undefined && !Array.isArray(jobIds)) {
    throw new TypeError("jobIds must be an array of copy ids ('<original queue>:<job id>')");
  }
  const ids = jobIds ?? [];
  if (ids.length > MAX_REDRIVE_IDS) {
    throw new RangeError(`jobIds names ${ids.length} copies; at most ${MAX_REDRIVE_IDS} per call`);
  }
  for (const id of ids) {
    if (typeof id !== "string" || !id.includes(":")) {
      throw new RangeError(`${JSON.stringify(id)} is not a dead-letter copy's id ('<original queue>:<job id>')`);
    }
  }
  if (ids.length && limit !== undefined) {
    throw new RangeError("give jobIds or limit, not both: limit applies to a scan of the queue");
  }
  if (replaceData !== undefined && typeof replaceData !== "boolean") {
    throw new TypeError(`replaceData must be a boolean, not ${typeof replaceData}`);
  }
  if (data !== undefined && ids.length !== 1) {
    throw new RangeError(`data replaces one copy's data: give exactly one of jobIds (${ids.length} given)`);
  }
  return create(RedriveDeadLettersRequestSchema, {
    queueName: checkQueueName(queueName),
    originalQueue: originalQueue === undefined ? "" : checkQueueName(originalQueue, "originalQueue"),
    limit: limit ?? 0,
    jobIds: [...ids],
    replaceData: replaceData ?? false,
    data: encodePayload(data),
  });
}

/** A redrive's answer as a `RedriveResult`. */
export function redriveResultFromProto(res: RedriveDeadLettersResponse): RedriveResult {
  const queues: Record<string, RedrivenQueue> = {};
  for (const q of res.queues) {
    queues[q.queueName] = {
      count: Number(q.count),
      retried: Number(q.retried),
      added: Number(q.added),
      unchanged: Number(q.unchanged),
    };
  }
  const skipped: Record<string, string> = {};
  for (const s of res.skipped) skipped[s.jobId] = s.reason;
  return { count: Number(res.count), queues, skipped, missingQueues: [...res.missingQueues] };
}

/** A dead-letter copy (`listDeadLetters`), read as what it says about the job that failed. */
export interface DeadLetter {
  /** The copy's id in the dead-letter queue (`<original queue>:<job id>`): what `redriveDeadLetters` takes. */
  id: string;
  /** The copy's state in the dead-letter queue (waiting until something consumes or redrives it). */
  state: JobState | undefined;
  /** The queue the job failed in. */
  originalQueue: string;
  /** The job's id there. */
  originalJobId: string;
  /** The job's name. */
  originalName: string;
  /** The job's data (a `Uint8Array` for a job whose content type is not JSON). */
  originalData: unknown;
  /** The job's content type. */
  originalContentType: string;
  /** The error of the job's last run: why it is dead. */
  failureReason: string;
  /** The runs it had. */
  attemptsMade: number;
  /** When the copy was written (the job failed for good just before). */
  deadAt: Date | undefined;
}

/** `listDeadLetters`' options: the copies' state (default "waiting") and the page. */
export interface ListDeadLettersOptions {
  state?: JobState;
  /** Copies per page, 1 to 1,000; default 100. */
  pageSize?: number;
  /** The previous page's `nextPageToken`; unset or "" for the first page. */
  pageToken?: string;
}

/**
 * The copy `job` (a job of a dead-letter queue) as a `DeadLetter`, as the Python client reads it; undefined for
 * a job that is not a copy (added to the queue directly, or its data edited out of shape). The server copies an
 * encoded original (codecs.ts) as it is: with `codecs` its data is decoded (throwing `PayloadCodecError` as any
 * read), without them it is an `EncodedPayload`.
 */
export function deadLetterFromJob(job: Job, codecs?: CodecChain): DeadLetter | undefined {
  const body = job.data;
  if (body === null || typeof body !== "object" || Array.isArray(body) || body instanceof Uint8Array) {
    return undefined;
  }
  const copy = body as Record<string, unknown>;
  const { original_queue: queue, original_job_id: id, original_name: name } = copy;
  const contentType = copy["original_content_type"];
  if (![queue, id, name, contentType].every((v) => typeof v === "string") || !("original_data" in copy)) {
    return undefined;
  }
  let data = copy["original_data"];
  if ((contentType as string).split(";")[0]!.trim().toLowerCase() !== "application/json") {
    // Bytes travel as base64 in the copy's JSON.
    if (typeof data !== "string" || !/^[A-Za-z0-9+/]*={0,2}$/.test(data) || data.length % 4 !== 0) {
      return undefined;
    }
    data = new Uint8Array(Buffer.from(data, "base64"));
  }
  let originalType = contentType as string;
  if (isEncoded(originalType)) {
    const payload = create(PayloadSchema, { body: { case: "raw", value: data as Uint8Array }, contentType: originalType });
    codecs?.decode(payload);
    data = decodePayload(payload);
    originalType = payload.contentType;
  }
  const attempts = Number(copy["attempts_made"] ?? 0);
  return {
    id: job.id,
    state: job.state,
    originalQueue: queue as string,
    originalJobId: id as string,
    originalName: name as string,
    originalData: data,
    originalContentType: originalType,
    failureReason: String(copy["failure_reason"] ?? ""),
    attemptsMade: Number.isInteger(attempts) ? attempts : 0,
    deadAt: job.createdAt,
  };
}
