/**
 * Children added at run time: what a processor passes to `ctx.waitForChildren`, and the request it becomes
 * (WaitForChildren), as the Python client's child_jobs.py builds it.
 */
import { create } from "@bufbuild/protobuf";
import {
  ChildJobSpecSchema,
  WaitForChildrenRequestSchema,
  type ChildJobSpec,
  type WaitForChildrenRequest,
} from "./gen/queue_manager/v1/jobs_pb.js";
import type { LeaseRef } from "./gen/queue_manager/v1/worker_service_pb.js";
import { encodePayload } from "./convert.js";
import { checkKeys, checkQueueName, jobOptionsToProto, text } from "./options.js";
import type { ChildSpec } from "./types.js";

/** What `ctx.waitForChildren` takes besides the children. */
export interface WaitForChildrenOptions {
  /**
   * The job's new data for its next run (a checkpoint), written in the same step; without the key the data
   * is kept (`undefined` given stores JSON null, as `updateData` does).
   */
  data?: unknown;
}

const SPEC_KEYS = new Set(["queueName", "name", "data", "options"]);
const WAIT_KEYS = new Set(["data"]);

/**
 * Builds and checks a WaitForChildrenRequest for the run holding `lease` (the server checks the rest: that
 * the queues are registered, the limits, the sizes). A TypeError or RangeError before anything is sent.
 */
export function waitForChildrenRequest(
  lease: LeaseRef,
  children: readonly ChildSpec[],
  options: WaitForChildrenOptions = {},
): WaitForChildrenRequest {
  if (!Array.isArray(children)) {
    throw new TypeError(`children must be an array of child specs, not ${children === null ? "null" : typeof children}`);
  }
  checkKeys(options, WAIT_KEYS, "waitForChildren options");
  const { queueName, jobId, leaseToken } = lease;
  return create(WaitForChildrenRequestSchema, {
    queueName,
    jobId,
    leaseToken,
    children: children.map((child, i) => childSpecToProto(child, `children[${i}]`)),
    // Present but undefined is JSON null, as for updateData; absent keeps the job's data.
    data: "data" in options ? encodePayload(options.data === undefined ? null : options.data, "the job's new data") : undefined,
  });
}

function childSpecToProto(child: ChildSpec, what: string): ChildJobSpec {
  checkKeys(child, SPEC_KEYS, what);
  return create(ChildJobSpecSchema, {
    queueName: checkQueueName(child.queueName, `${what}.queueName`),
    name: text(child.name, `${what}.name`),
    data: encodePayload(child.data === undefined ? null : child.data, `${what}.data`),
    options: child.options === undefined ? undefined : jobOptionsToProto(child.options, `${what}.options`),
  });
}
