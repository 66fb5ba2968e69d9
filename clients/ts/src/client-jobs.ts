/** `QueueManager`'s calls on jobs already added: reading them, waiting for them, and controlling them. */
import { Producer } from "./client-producer.js";
import {
  encodePayload,
  jobFromProto,
  logLineFromProto,
  pageFromProto,
  parsePriority,
  stateName,
  stateNumber,
  toDuration,
  toTimestamp,
} from "./convert.js";
import {
  DEAD_LETTER_QUEUE,
  deadLetterFromJob,
  redriveRequest,
  redriveResultFromProto,
  type DeadLetter,
  type ListDeadLettersOptions,
} from "./dead-letters.js";
import { mapped } from "./errors.js";
import {
  bulkResult,
  cancelJobsRequest,
  countJobsPlan,
  countJobsRequest,
  LIST_KEYS,
  listJobsRequest,
  removeJobsRequest,
  retryJobsRequest,
  type BulkOptions,
  type BulkResult,
  type CancelJobsOptions,
  type CountJobsOptions,
  type JobCount,
  type ListJobsOptions,
} from "./filters.js";
import { checkKeys, pageRequest } from "./options.js";
import type {
  Job,
  JobLogLine,
  JobState,
  Page,
  PriorityLike,
  RedriveOptions,
  RedriveResult,
} from "./types.js";

const WAIT_KEYS: ReadonlySet<string> = new Set(["timeoutMs", "signal"]);
// A misspelt data would run the job again with its old data.
const RETRY_KEYS: ReadonlySet<string> = new Set(["data"]);
// A dead-letter page takes a state besides the listJobs options (its filters too, which it hands on).
const DEAD_LETTER_LIST_KEYS: ReadonlySet<string> = new Set(["state", ...LIST_KEYS]);

/** Reads and controls jobs. */
export class JobCalls extends Producer {
  /** One job (with the tail of its log); `NotFoundError` when it does not exist. */
  async getJob(queueName: string, jobId: string): Promise<Job> {
    const res = await mapped(() => this.client.getJob({ queueName, jobId }, this.callOptions));
    return jobFromProto(res.job!);
  }

  /**
   * A page of a queue's jobs in one state, those that match the filter given (`name` exact or "prefix*",
   * `group`, `tag`, `correlationId`, `createdAfter`, `createdBefore`). With a filter the server reads at most
   * a few thousand jobs of the state per call (it keeps no index), so a page may hold fewer jobs than
   * `pageSize`, or none, with a token: follow `nextPageToken` until it is "". `totalSize` counts the state's
   * jobs, matching or not.
   */
  async listJobs(queueName: string, state: JobState, options: ListJobsOptions = {}): Promise<Page<Job>> {
    const request = listJobsRequest(queueName, state, options);
    const res = await mapped(() => this.client.listJobs(request, this.callOptions));
    return pageFromProto(res.jobs.map(jobFromProto), res);
  }

  /**
   * Counts the jobs of one state that match the filter given, on the server: no job is sent back. With a
   * filter each ListJobs call (`countOnly`) reads at most a few thousand jobs of the state, so counting
   * follows the tokens, one call after the other, to the end of the state or for at most `maxCalls` calls;
   * `nextPageToken` then says where to go on (`complete` is false).
   */
  async countJobs(queueName: string, state: JobState, options: CountJobsOptions = {}): Promise<JobCount> {
    const { filter, pageToken, maxCalls } = countJobsPlan(queueName, state, options);
    let count = 0;
    let calls = 0;
    let next = pageToken;
    while (maxCalls === undefined || calls < maxCalls) {
      const request = countJobsRequest(queueName, state, filter, next);
      const res = await mapped(() => this.client.listJobs(request, this.callOptions));
      count += Number(res.matchCount);
      calls += 1;
      next = res.nextPageToken;
      if (!next) {
        break;
      }
    }
    return { count, nextPageToken: next, calls, complete: !next };
  }

  /** Removes a job that is not active; returns the state it was in. */
  async removeJob(queueName: string, jobId: string): Promise<JobState | undefined> {
    const res = await mapped(() => this.client.removeJob({ queueName, jobId }, this.callOptions));
    return stateName(res.previousState);
  }

  /** A page of a job's log lines, oldest first. */
  async getJobLogs(queueName: string, jobId: string, page: { pageSize?: number; pageToken?: string } = {}): Promise<Page<JobLogLine>> {
    const request = { queueName, jobId, ...pageRequest(page, "getJobLogs options") };
    const res = await mapped(() => this.client.getJobLogs(request, this.callOptions));
    return pageFromProto(res.lines.map(logLineFromProto), res);
  }

  /**
   * Waits until a job is finished (completed, failed for good or cancelled) and returns it; after
   * `timeoutMs` (default: no limit) returns it in whatever state it is then. Pushed by the server: no polling.
   */
  async waitForJob(queueName: string, jobId: string, options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<Job> {
    checkKeys(options, WAIT_KEYS, "waitForJob options");
    const request = { queueName, jobId, timeout: options.timeoutMs === undefined ? undefined : toDuration(options.timeoutMs, "timeoutMs") };
    return mapped(async () => {
      let last: Job | undefined;
      for await (const res of this.client.waitForJob(request, { signal: options.signal })) {
        last = jobFromProto(res.job!);
      }
      if (last === undefined) {
        throw new Error(`the server ended the wait for job ${queueName}/${jobId} without sending the job`);
      }
      return last;
    });
  }

  /**
   * Cancels a job: a waiting or delayed one ends cancelled at once; an active one is marked
   * `cancelRequested` and its worker's processor sees its AbortSignal fire.
   */
  async cancelJob(queueName: string, jobId: string, reason = ""): Promise<Job> {
    const res = await mapped(() => this.client.cancelJob({ queueName, jobId, reason }, this.callOptions));
    return jobFromProto(res.job!);
  }

  /**
   * Runs a failed or cancelled job again, its attempts counted afresh. With `options.data` (edit and requeue)
   * the job's data is replaced in the same atomic step (bytes as octet-stream, anything else as JSON: `null`
   * is JSON null); `data` left out (undefined) keeps it, as in `redriveDeadLetters`. A job in another state
   * keeps its data (`FailedPreconditionError`).
   */
  async retryJob(queueName: string, jobId: string, options: { data?: unknown } = {}): Promise<Job> {
    checkKeys(options, RETRY_KEYS, "retryJob options");
    const data = options.data === undefined ? undefined : encodePayload(options.data);
    const res = await mapped(() => this.client.retryJob({ queueName, jobId, data }, this.callOptions));
    return jobFromProto(res.job!);
  }

  /**
   * Sends dead-letter copies back to their original queues: a failed original runs again, one that retention
   * removed is added anew, one run again meanwhile is left as it is; each copy leaves the dead-letter queue.
   * `NotFoundError` for an unknown queue, `InvalidArgumentError` for a queue that is no queue's dead-letter
   * queue; bad options throw a `RangeError` or `TypeError` before the call.
   */
  async redriveDeadLetters(
    queueName = DEAD_LETTER_QUEUE,
    options: RedriveOptions = {},
  ): Promise<RedriveResult> {
    const request = redriveRequest(queueName, options);
    return redriveResultFromProto(await mapped(() => this.client.redriveDeadLetters(request, this.callOptions)));
  }

  /**
   * A page of a dead-letter queue's copies in one state (default "waiting"), each read as its original's
   * queue, id, name, data and why it failed; jobs of the queue that are not copies are left out (so a page
   * may hold fewer than `pageSize`: follow `nextPageToken` until it is ""). `totalSize` counts the state's
   * jobs.
   */
  async listDeadLetters(
    queueName = DEAD_LETTER_QUEUE,
    options: ListDeadLettersOptions = {},
  ): Promise<Page<DeadLetter>> {
    checkKeys(options, DEAD_LETTER_LIST_KEYS, "listDeadLetters options");
    const { state = "waiting", ...page } = options;
    const jobs = await this.listJobs(queueName, state, page);
    const items = jobs.items.map((job) => deadLetterFromJob(job, this.codecs)).filter((d): d is DeadLetter => d !== undefined);
    return { ...jobs, items };
  }

  /** Runs every failed (or cancelled) job of a queue again; returns how many. */
  async retryFailedJobs(queueName: string, state: "failed" | "cancelled" = "failed"): Promise<number> {
    const res = await mapped(() => this.client.retryFailedJobs({ queueName, state: stateNumber(state) }, this.callOptions));
    return Number(res.count);
  }

  /**
   * Runs the failed (or cancelled) jobs that match the filter again: one bounded call (`retryFailedJobs` runs
   * every one). It reads at most a few thousand jobs of the state and retries at most `limit` (1 to 1,000;
   * default 1,000), newest failure first; call again with the result's `nextPageToken` until it is "".
   */
  async retryJobs(queueName: string, state: "failed" | "cancelled" = "failed", options: BulkOptions = {}): Promise<BulkResult> {
    const request = retryJobsRequest(queueName, state, options);
    return bulkResult(await mapped(() => this.client.retryFailedJobs(request, this.callOptions)));
  }

  /**
   * Cancels the jobs of one state ("waiting", "paused", "delayed" or "active") that match the filter: waiting,
   * paused and delayed ones at once (`count`), active ones are asked to stop as `cancelJob` does
   * (`requested`). One bounded call: call again with the result's `nextPageToken` until it is "".
   */
  async cancelJobs(queueName: string, state: JobState, options: CancelJobsOptions = {}): Promise<BulkResult> {
    const request = cancelJobsRequest(queueName, state, options);
    return bulkResult(await mapped(() => this.client.cancelJobs(request, this.callOptions)));
  }

  /**
   * Removes the jobs of one state (any but "active": cancel those first) that match the filter. One bounded
   * call: call again with the result's `nextPageToken` until it is "".
   */
  async removeJobs(queueName: string, state: JobState, options: BulkOptions = {}): Promise<BulkResult> {
    const request = removeJobsRequest(queueName, state, options);
    return bulkResult(await mapped(() => this.client.removeJobs(request, this.callOptions)));
  }

  /** Makes a delayed job waiting now. */
  async promoteJob(queueName: string, jobId: string): Promise<Job> {
    const res = await mapped(() => this.client.promoteJob({ queueName, jobId }, this.callOptions));
    return jobFromProto(res.job!);
  }

  /**
   * Changes when a delayed job runs; a waiting (or paused) job becomes delayed until then. Give exactly one of
   * `delay` (ms from now) and `runAt`. A time that has come (`delay: 0`, a past `runAt`) makes a delayed job
   * waiting now, as `promoteJob` does, and leaves a waiting one as it is; the server's Redis clock decides.
   * An active or finished job gives `FailedPreconditionError` naming its state.
   */
  async rescheduleJob(queueName: string, jobId: string, when: { delay?: number; runAt?: Date }): Promise<Job> {
    if ((when.delay === undefined) === (when.runAt === undefined)) {
      throw new RangeError("rescheduleJob needs exactly one of delay (ms from now) and runAt (a Date)");
    }
    const request = {
      queueName,
      jobId,
      when:
        when.delay !== undefined
          ? { case: "delay" as const, value: toDuration(when.delay, "delay") }
          : { case: "runTime" as const, value: toTimestamp(when.runAt!, "runAt") },
    };
    const res = await mapped(() => this.client.rescheduleJob(request, this.callOptions));
    return jobFromProto(res.job!);
  }

  /** Changes the priority of a waiting or delayed job. */
  async changeJobPriority(queueName: string, jobId: string, priority: PriorityLike): Promise<Job> {
    const request = { queueName, jobId, priority: parsePriority(priority) };
    const res = await mapped(() => this.client.changeJobPriority(request, this.callOptions));
    return jobFromProto(res.job!);
  }

  /**
   * Replaces the data of a job that has not finished (waiting, paused, delayed or active): a running attempt
   * keeps the data it was given, the next attempt gets the new data. Bytes go as octet-stream, anything else
   * as JSON (`undefined` as JSON null). A finished job gives `FailedPreconditionError`.
   */
  async updateJobData(queueName: string, jobId: string, data: unknown): Promise<Job> {
    const request = { queueName, jobId, data: encodePayload(data === undefined ? null : data) };
    const res = await mapped(() => this.client.updateJobData(request, this.callOptions));
    return jobFromProto(res.job!);
  }
}
