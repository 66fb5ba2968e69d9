/**
 * Operators' control of connected workers (ControlWorker): the request of each action, checked before the
 * call, and the result read back (as the Python client's client_workers.py).
 */
import { create } from "@bufbuild/protobuf";
import {
  ControlWorkerRequestSchema,
  WorkerControlAction,
  type ControlWorkerRequest,
  type ControlWorkerResponse,
} from "./gen/queue_manager/v1/queue_service_pb.js";
import { workerStateName } from "./convert.js";
import type { WorkerControlResult } from "./types.js";
import { checkConcurrency } from "./worker-options.js";

/** What ControlWorker asks of a worker. */
export type WorkerControl = "quiet" | "resume" | "stop" | "concurrency";

const ACTIONS: Record<WorkerControl, WorkerControlAction> = {
  quiet: WorkerControlAction.QUIET,
  resume: WorkerControlAction.RESUME,
  stop: WorkerControlAction.STOP,
  concurrency: WorkerControlAction.SET_CONCURRENCY,
};

/**
 * A ControlWorkerRequest; a TypeError or RangeError for an empty worker id or (with "concurrency") a
 * concurrency that is not a whole number from 1 to 100,000.
 */
export function controlRequest(workerId: string, action: WorkerControl, concurrency = 0): ControlWorkerRequest {
  if (typeof workerId !== "string" || !workerId) {
    throw new TypeError("workerId must be a non-empty string (`listWorkers` gives the ids)");
  }
  if (action === "concurrency") {
    checkConcurrency(concurrency);
  }
  return create(ControlWorkerRequestSchema, { workerId, action: ACTIONS[action], concurrency });
}

/** A ControlWorkerResponse as a `WorkerControlResult`. */
export function controlResultFromProto(res: ControlWorkerResponse): WorkerControlResult {
  return { serverId: res.serverId, state: workerStateName(res.state), concurrency: res.concurrency, changed: res.changed };
}
