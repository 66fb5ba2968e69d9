/**
 * `QueueManager`'s calls for external events (PushEvent): push one, waking the jobs waiting for its key
 * (`ctx.waitForEvent`); and the event triggers, which add a job for every matching push.
 */
import { PullCalls } from "./client-pull.js";
import { mapped } from "./errors.js";
import {
  eventTriggerFromProto,
  eventTriggerToProto,
  pushEventRequest,
  pushedFromProto,
  type EventTrigger,
  type EventTriggerSpec,
  type PushedEvent,
  type PushEventOptions,
} from "./external-events.js";

export class ExternalEventCalls extends PullCalls {
  /**
   * Pushes an external event: every job waiting for `key` (`ctx.waitForEvent`) goes back to waiting at once,
   * and its next run sees the event in `job.event`. A job that starts waiting after the push does not see it.
   * `data` is JSON (or a `Uint8Array`), within the server's payload limit; `eventId` makes the push safe to
   * repeat within 24 hours (a webhook's retries). Rejects with `InvalidArgumentError` for a bad key or
   * oversized data.
   */
  async pushEvent(key: string, data?: unknown, options: PushEventOptions = {}): Promise<PushedEvent> {
    const request = pushEventRequest(key, data, options); // a bad argument rejects, before any call
    return pushedFromProto(await mapped(() => this.client.pushEvent(request, this.callOptions)));
  }

  /**
   * Creates an event trigger, or replaces the one of that id: every `pushEvent` whose key matches
   * `keyPattern` then adds a job to `queueName` with the event's data, in the push's step. Rejects with
   * `NotFoundError` for a queue that is not registered, `InvalidArgumentError` for a bad field,
   * `FailedPreconditionError` past 1,000 triggers.
   */
  async upsertEventTrigger(spec: EventTriggerSpec): Promise<{ trigger: EventTrigger; created: boolean }> {
    const trigger = eventTriggerToProto(spec); // a bad argument rejects, before any call
    const res = await mapped(() => this.client.upsertEventTrigger({ trigger }, this.callOptions));
    return { trigger: eventTriggerFromProto(res.trigger!), created: res.created };
  }

  /** The event triggers (of one queue, or all), by id. */
  async listEventTriggers(queueName = ""): Promise<EventTrigger[]> {
    const res = await mapped(() => this.client.listEventTriggers({ queueName }, this.callOptions));
    return res.triggers.map(eventTriggerFromProto);
  }

  /** Deletes an event trigger (the jobs it added stay) and returns it as it was; `NotFoundError` if unknown. */
  async deleteEventTrigger(triggerId: string): Promise<EventTrigger> {
    const res = await mapped(() => this.client.deleteEventTrigger({ triggerId }, this.callOptions));
    return eventTriggerFromProto(res.trigger!);
  }
}
