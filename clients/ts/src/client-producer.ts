/** `QueueManager`'s adds: one job (carried with other adds of the moment, adds.ts) or many (AddBulk). */
import { create } from "@bufbuild/protobuf";
import { AddBatcher, type Answer } from "./adds.js";
import {
  AddBulkRequestSchema,
  AddDisposition,
  AddJobRequestSchema,
  type AddBulkRequest,
  type AddJobRequest,
  type CreatedJob,
} from "./gen/queue_manager/v1/jobs_pb.js";
import { ClientBase, type QueueManagerOptions } from "./client-base.js";
import { createdJob, jobFromProto } from "./convert.js";
import { mapped } from "./errors.js";
import { newJob } from "./options.js";
import { carry, jobAttributes, publish, publishAttributes, traceContext } from "./tracing.js";
import type { Job, JobOptions } from "./types.js";

/** A job for `addBulk`. */
export interface BulkJob {
  name: string;
  data?: unknown;
  options?: JobOptions;
}

// AddBulk: jobs per stream message (a message costs ~60 µs whatever its size), and per stream (server limit).
const BULK_MESSAGE_JOBS = 500;
const BULK_STREAM_JOBS = 100_000;
// A message also ends once its jobs' data reach about this many bytes, as the Python client splits them:
// the transport refuses a message over 16 MiB whole, and 500 jobs of up to 1 MiB each could make one.
const BULK_MESSAGE_BYTES = 4 * 1024 * 1024;

/** Adds jobs. */
export class Producer extends ClientBase {
  /** The concurrent `addJob` calls, carried together. */
  protected readonly adds: AddBatcher;

  constructor(options: QueueManagerOptions = {}) {
    super(options);
    this.adds = new AddBatcher(
      (request) => mapped(() => this.client.addJob(request, this.callOptions)),
      (requests, signal) => this.client.addJobStream(requests, { signal }),
      this.timeoutMs,
    );
  }

  /**
   * Adds one job; returns it as stored (the existing one when `options.jobId` or the dedup key was taken),
   * its `created` saying which: true when this call created it, false when it found it. Concurrent calls
   * share the messages of one AddJobStream (adds.ts); a lone call goes out at once.
   */
  async addJob(queueName: string, name: string, data?: unknown, options?: JobOptions): Promise<Job> {
    const request = create(AddJobRequestSchema, { queueName, job: newJob(name, data, options) });
    // Tracing off: this one test per add.
    const answer = this.untraced ? await this.adds.add(request) : await this.addTraced(request);
    if (isBrief(answer)) {
      return createdJob(request, answer);
    }
    const job = jobFromProto(answer.job!);
    job.created = answer.created;
    job.replaced = answer.disposition === AddDisposition.REPLACED;
    return job;
  }

  /**
   * Adds many jobs over client streams (500 jobs or about 4 MiB of data a message, 100,000 jobs a stream); each stream is added in full
   * or not at all. Every job is checked before anything is sent. Returns the ids in order.
   */
  async addBulk(queueName: string, jobs: BulkJob[]): Promise<string[]> {
    const messages: AddBulkRequest[] = [];
    let message = create(AddBulkRequestSchema, { queueName });
    let size = 0;
    jobs.forEach((j, i) => {
      const built = newJob(j.name, j.data, j.options, `jobs[${i}]`);
      message.jobs.push(built);
      size += (built.data?.body.case === "raw" ? built.data.body.value.length : 0) + built.name.length + 32;
      if (message.jobs.length >= BULK_MESSAGE_JOBS || size >= BULK_MESSAGE_BYTES) {
        messages.push(message);
        message = create(AddBulkRequestSchema, { queueName });
        size = 0;
      }
    });
    if (message.jobs.length > 0) {
      messages.push(message);
    }
    const tracer = this.tracing();
    if (tracer === undefined) {
      return this.sendBulk(messages);
    }
    // One span for the whole batch; every job carries its context.
    return publish(tracer, `${queueName} publish`, publishAttributes(queueName, jobs.length), (span) => {
      const context = traceContext(span);
      messages.forEach((message) => message.jobs.forEach((job) => carry(jobAttributes(job), context)));
      return this.sendBulk(messages);
    });
  }

  private async sendBulk(messages: AddBulkRequest[]): Promise<string[]> {
    const ids: string[] = [];
    // Each stream holds whole messages, at most BULK_STREAM_JOBS jobs in all.
    const streams: AddBulkRequest[][] = [];
    let count = BULK_STREAM_JOBS;
    for (const message of messages) {
      if (count + message.jobs.length > BULK_STREAM_JOBS) {
        streams.push([]);
        count = 0;
      }
      streams[streams.length - 1]!.push(message);
      count += message.jobs.length;
    }
    for (const stream of streams) {
      async function* requests() {
        yield* stream;
      }
      const res = await mapped(() => this.client.addBulk(requests(), this.callOptions));
      ids.push(...res.jobIds);
    }
    return ids;
  }

  /** An add inside its PRODUCER span, the span's context carried in the job's metadata attributes. */
  private async addTraced(request: AddJobRequest): Promise<Answer> {
    const tracer = this.tracing();
    if (tracer === undefined) {
      return this.adds.add(request);
    }
    const queueName = request.queueName;
    return publish(tracer, `${queueName} publish`, publishAttributes(queueName), async (span) => {
      carry(jobAttributes(request.job!), traceContext(span));
      const answer = await this.adds.add(request);
      span.setAttribute("messaging.message.id", isBrief(answer) ? answer.id : answer.job!.id);
      return answer;
    });
  }
}

/** Whether an add's answer is brief (the job created as its request says: the request makes the rest). */
function isBrief(answer: Answer): answer is CreatedJob {
  return answer.$typeName === "queue_manager.v1.CreatedJob";
}
