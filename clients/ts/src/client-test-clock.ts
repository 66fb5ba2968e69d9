/**
 * `QueueManager`'s calls on the clock of a server made for tests (`qm test-server`, docs/testing.md):
 * moving it forward makes delays, backoffs, schedules, timeouts and expiries happen at once.
 */
import { createClient, type Client } from "@connectrpc/connect";
import { ExternalEventCalls } from "./client-events.js";
import { fromTimestamp, toDuration } from "./convert.js";
import { mapped } from "./errors.js";
import { TestClockService } from "./gen/queue_manager/v1/test_clock_service_pb.js";

/**
 * Moves and reads a test server's clock. On any other server (one on real time) each call rejects with
 * `FailedPreconditionError`, and nothing changes.
 */
export class TestClockCalls extends ExternalEventCalls {
  private clockClient: Client<typeof TestClockService> | undefined;

  /**
   * Moves the server's test clock `ms` forward (0 or more) and resolves to its time after the move, once the
   * server has done what fell due by then: delayed jobs and retries due are waiting (or already delivered),
   * due schedules have fired, runs past their timeout have failed, expired jobs have ended.
   */
  async advanceTestClock(ms: number): Promise<Date> {
    const amount = toDuration(ms, "ms"); // a bad argument rejects the promise, before any call
    const res = await mapped(() => this.clock().advanceClock({ amount }, this.callOptions));
    return fromTimestamp(res.now) as Date;
  }

  /** The server's test clock: real time plus every advance so far. */
  async testClockNow(): Promise<Date> {
    const res = await mapped(() => this.clock().getClock({}, this.callOptions));
    return fromTimestamp(res.now) as Date;
  }

  private clock(): Client<typeof TestClockService> {
    this.clockClient ??= createClient(TestClockService, this.connection.transport);
    return this.clockClient;
  }
}
