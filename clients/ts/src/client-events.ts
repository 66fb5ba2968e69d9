/**
 * `QueueManager`'s calls for external events (PushEvent): push one, waking the jobs waiting for its key
 * (`ctx.waitForEvent`).
 */
import { WorkflowCalls } from "./client-workflows.js";
import { mapped } from "./errors.js";
import { pushEventRequest, pushedFromProto, type PushedEvent, type PushEventOptions } from "./external-events.js";

export class ExternalEventCalls extends WorkflowCalls {
  /**
   * Pushes an external event: every job waiting for `key` (`ctx.waitForEvent`) goes back to waiting at once,
   * and its next run sees the event in `job.event`. A job that starts waiting after the push does not see it.
   * `data` is JSON (or a `Uint8Array`), within the server's payload limit; `eventId` makes the push safe to
   * repeat within 24 hours (a webhook's retries). Rejects with `InvalidArgumentError` for a bad key or
   * oversized data, `FailedPreconditionError` when the server uses a Redis Cluster.
   */
  async pushEvent(key: string, data?: unknown, options: PushEventOptions = {}): Promise<PushedEvent> {
    const request = pushEventRequest(key, data, options); // a bad argument rejects, before any call
    return pushedFromProto(await mapped(() => this.client.pushEvent(request, this.callOptions)));
  }
}
