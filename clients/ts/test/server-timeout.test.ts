/**
 * A run the server times out before the worker's own timer fires (tests/test_client_ts.py times it out when
 * this file prints "QM-STEP time-out <queue> <id>"; the job's own timeout is 30 s away): the CANCEL_JOB says
 * timed_out, and the worker ends the run exactly as at its own timeout (worker-timeout.test.ts): the signal's
 * reason is a JobAbortedError of kind "timeout", and the run is reported as a failure that timed out (the
 * worker's "failed" event, not "cancelled"), which the server, having recorded the timeout, rejects: the
 * attempt counts once.
 */
import assert from "node:assert/strict";
import { after, before, it } from "node:test";
import { JobAbortedError, type QueueManager } from "../src/index.js";
import { aborted, client, nextEvent, queueName, worker } from "./helpers.js";

let qm: QueueManager;

before(() => {
  qm = client();
});

after(async () => {
  await qm.shutdown();
});

it("ends a run the server timed out as at the worker's own timeout", async () => {
  const name = queueName("server-timeout");
  await qm.registerQueue(name, { disableDeadLetter: true });
  const reasons: unknown[] = [];
  const cancelled: unknown[] = [];
  const w = await worker({
    processors: {
      [name]: async (job, ctx) => {
        console.log(`QM-STEP time-out ${name} ${job.id}`);
        reasons.push(await aborted(ctx.signal, 15_000));
        return "too late";
      },
    },
  });
  w.on("cancelled", (job) => cancelled.push(job));
  try {
    const failedHere = nextEvent<[{ id: string }, Error]>(w, "failed", () => true, 15_000);
    const job = await qm.addJob(name, "hangs", null, { timeout: 30_000, attempts: 1 });
    const [ran, error] = await failedHere;
    assert.equal(ran.id, job.id);
    assert.equal(error.message, "job timed out after 30s");
    const [why] = reasons;
    assert.ok(why instanceof JobAbortedError && why.kind === "timeout", String(why));
    assert.deepEqual(cancelled, []);
    const failed = await qm.waitForJob(name, job.id, { timeoutMs: 15_000 });
    assert.equal(failed.state, "failed");
    assert.equal(failed.attemptsMade, 1);
    assert.deepEqual(
      failed.errors.map((e) => [e.kind, e.message]),
      [["timeout", "job timed out after 30s"]],
    );
    const metrics = await qm.getQueueMetrics(name);
    assert.equal(metrics.timedOutTotal, 1);
    assert.equal(metrics.raisedTotal, 0);
  } finally {
    await w.shutdown();
    await qm.obliterateQueue(name, true);
  }
});
