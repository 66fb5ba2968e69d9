/**
 * Runs parked through another server than the worker's stream (tests/test_client_ts.py starts two servers on
 * one Redis behind a proxy that sends worker streams to one and every other call to the other): the worker
 * names each run its `ctx.waitForEvent` or `ctx.waitForChildren` ended in its next report's `parked`, so the
 * stream's server forgets the lease. Without that, the stream's server, whose credit bound
 * (`--max-worker-credits`) is below the jobs' count, kept counting the parked leases and stopped delivering.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { ActiveJob, JobContext, QueueManager, Worker } from "../src/index.js";
import { client, queueName, worker } from "./helpers.js";

// Well past the stream server's bound of credits (tests/test_client_ts.py).
const JOBS = 16;

let qm: QueueManager;
let w: Worker | undefined;

before(() => {
  qm = client();
});

after(async () => {
  await w?.shutdown(5_000);
  await qm.shutdown();
});

async function allDelayed(queue: string): Promise<void> {
  const deadline = performance.now() + 20_000;
  let delayed = 0;
  while ((delayed = (await qm.getQueueMetrics(queue)).delayed) !== JOBS) {
    assert.ok(performance.now() < deadline, `only ${delayed} of ${JOBS} jobs parked: the worker stopped getting jobs`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("runs parked through another server", () => {
  it("free their leases on the stream's server, for events and for children", async () => {
    const events = queueName("parked-ev");
    const parents = queueName("parked-parents");
    const children = queueName("parked-children"); // no worker takes these: every parent stays parked
    for (const name of [events, parents, children]) {
      await qm.registerQueue(name);
    }
    w = await worker({
      concurrency: 2,
      processors: {
        [events]: async (job: ActiveJob, ctx: JobContext) => ctx.waitForEvent(`go:${(job.data as { i: number }).i}`),
        [parents]: async (job: ActiveJob, ctx: JobContext) =>
          ctx.waitForChildren([{ queueName: children, name: "part", data: job.data }]),
      },
    });
    const jobs = Array.from({ length: JOBS }, (_, i) => ({ name: "x", data: { i } }));
    await qm.addBulk(events, jobs);
    await qm.addBulk(parents, jobs);
    await allDelayed(events);
    await allDelayed(parents);
  });
});
