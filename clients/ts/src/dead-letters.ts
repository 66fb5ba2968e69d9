/** Sending dead-letter copies back to their original queues (RedriveDeadLetters): the request and the result. */
import { create } from "@bufbuild/protobuf";
import {
  RedriveDeadLettersRequestSchema,
  type RedriveDeadLettersRequest,
  type RedriveDeadLettersResponse,
} from "./gen/queue_manager/v1/queue_service_pb.js";
import { checkKeys, checkQueueName } from "./options.js";
import type { RedriveOptions, RedriveResult, RedrivenQueue } from "./types.js";

/** The dead-letter queue of every queue registered without one of its own. */
export const DEAD_LETTER_QUEUE = "dead-letter-queue";

// Most copies one redrive names (the server's limit).
const MAX_REDRIVE_IDS = 1000;

const REDRIVE_KEYS = new Set(["originalQueue", "limit", "jobIds", "replaceData"]);

/**
 * Builds and checks a RedriveDeadLettersRequest, refusing before the call what the Python client refuses: a
 * bad queue name, a limit that is not a whole number from 1, more than 1,000 `jobIds` or one that is no
 * copy's id (`<original queue>:<job id>`), `jobIds` with `limit`, an unknown option key.
 */
export function redriveRequest(queueName: string, options: RedriveOptions): RedriveDeadLettersRequest {
  checkKeys(options, REDRIVE_KEYS, "redriveDeadLetters options");
  const { originalQueue, limit, jobIds, replaceData } = options;
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
  return create(RedriveDeadLettersRequestSchema, {
    queueName: checkQueueName(queueName),
    originalQueue: originalQueue === undefined ? "" : checkQueueName(originalQueue, "originalQueue"),
    limit: limit ?? 0,
    jobIds: [...ids],
    replaceData: replaceData ?? false,
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
