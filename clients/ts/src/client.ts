/**
 * `QueueManager`: the producer and admin API, and the entry point that starts workers. Its calls live one
 * group per module (client-base.ts tells how they stack); this module adds the processors and workers.
 */
import { ExternalEventCalls } from "./client-events.js";
import { Worker, type Processor, type WorkerOptions } from "./worker.js";
import { checkProcessor } from "./worker-options.js";

export type { QueueManagerOptions } from "./client-base.js";
export type { BulkJob } from "./client-producer.js";

/**
 * Client of a Queue Manager server: add and read jobs, administer queues, start workers.
 *
 * Nothing connects before the first call; `shutdown` stops the workers and closes the connection.
 */
export class QueueManager extends ExternalEventCalls {
  private readonly processors = new Map<string, Processor>();
  private readonly started: Worker[] = [];

  /** Registers the processor of a queue (one per queue); `startWorkers` runs it. */
  registerProcessor(queueName: string, processor: Processor): void {
    checkProcessor(queueName, processor);
    if (this.processors.has(queueName)) {
      throw new RangeError(`queue ${JSON.stringify(queueName)} already has a processor`);
    }
    this.processors.set(queueName, processor);
  }

  /** Starts one worker (one stream) for the registered processors (or those of `queues`) and returns it. */
  async startWorkers(options: { queues?: string[] } & Partial<Omit<WorkerOptions, "processors">> = {}): Promise<Worker> {
    const { queues, ...workerOptions } = options;
    const wanted = queues ?? [...this.processors.keys()];
    const missing = wanted.filter((q) => !this.processors.has(q));
    if (missing.length) {
      throw new RangeError(`no processor registered for queue(s) ${missing.join(", ")}`);
    }
    if (!wanted.length) {
      throw new RangeError("no processors registered; call registerProcessor(queueName, fn) first");
    }
    const worker = new Worker({
      address: this.options.address,
      token: this.options.token,
      tls: this.options.tls,
      interceptors: this.options.interceptors,
      concurrency: this.options.concurrency,
      labels: this.options.workerLabels,
      shutdownGraceMs: this.options.shutdownGraceMs,
      tracerProvider: this.options.tracerProvider,
      ...workerOptions,
      processors: Object.fromEntries(wanted.map((q) => [q, this.processors.get(q) as Processor])),
    });
    worker.start();
    this.started.push(worker);
    return worker;
  }

  /**
   * Stops the workers gracefully (see `Worker.shutdown`), lets the adds under way get their answers and ends
   * their stream, ends the job event streams (their iterations end with no error), then closes the
   * connection.
   */
  async shutdown(graceMs?: number): Promise<void> {
    for (const stream of [...this.watches]) stream.close();
    const workers = this.started.splice(0);
    await Promise.all(workers.map((w) => w.shutdown(graceMs)));
    await this.adds.close();
    this.connection.close();
  }
}
