/**
 * `QueueManager`'s calls that control connected workers (ControlWorker): quiet, resume, stop, or change the
 * concurrency of one worker, on whichever server holds its stream.
 */
import { QueueCalls } from "./client-queues.js";
import { mapped } from "./errors.js";
import type { ControlWorkerRequest } from "./gen/queue_manager/v1/queue_service_pb.js";
import type { WorkerControlResult } from "./types.js";
import { controlRequest, controlResultFromProto } from "./worker-control.js";

/**
 * Controls connected workers. Each call rejects with `NotFoundError` when no live server holds a stream of
 * the worker, and `FailedPreconditionError` when the worker does not take the command (an older client) or
 * is stopping.
 */
export class WorkerCalls extends QueueCalls {
  /** Delivers nothing more to the worker until `resumeWorker`; it runs what it holds and stays connected. */
  quietWorker(workerId: string): Promise<WorkerControlResult> {
    return this.control(() => controlRequest(workerId, "quiet"));
  }

  /** Delivers to a quiet worker again. */
  resumeWorker(workerId: string): Promise<WorkerControlResult> {
    return this.control(() => controlRequest(workerId, "resume"));
  }

  /**
   * Stops the worker: it finishes (within its shutdown grace) or releases what it holds, then ends its run
   * without reconnecting.
   */
  stopWorker(workerId: string): Promise<WorkerControlResult> {
    return this.control(() => controlRequest(workerId, "stop"));
  }

  /**
   * Makes the worker run at most `concurrency` jobs at once from now on (1 to 100,000); a lower value takes
   * effect as its running jobs finish.
   */
  setWorkerConcurrency(workerId: string, concurrency: number): Promise<WorkerControlResult> {
    return this.control(() => controlRequest(workerId, "concurrency", concurrency));
  }

  private async control(request: () => ControlWorkerRequest): Promise<WorkerControlResult> {
    const checked = request(); // a bad argument rejects the promise, before any call
    const res = await mapped(() => this.client.controlWorker(checked, this.callOptions));
    return controlResultFromProto(res);
  }
}
