/**
 * A run whose lease runs out (the server under test has a short lease, see tests/test_client_ts.py): its
 * worker's next extension is refused, the run's AbortSignal fires with "lease-lost", nothing is reported
 * for it, and the job runs again.
 */
import assert from "node:assert/strict";
import { after, before, it } from "node:test";
import { FailedPreconditionError, JobAbortedError, type QueueManager } from "../src/index.js";
import { aborted, client, deferred, queueName, worker } from "./helpers.js";

let qm: QueueManager;

before(() => {
  qm = client();
});

after(async () => {
  await qm.shutdown();
});

/** Blocks the event loop (no heartbeat can be sent) for `ms`, as a CPU-bound processor would. */
function blockFor(ms: number): void {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    // spin
  }
}

it("stops a run whose lease was lost and discards its result; the job runs again", async () => {
  const name = queueName("lease");
  await qm.registerQueue(name);
  const firstReason = deferred<unknown>();
  const runs: boolean[] = [];
  const w = await worker({
    processors: {
      [name]: async (job, ctx) => {
        runs.push(job.redelivery);
        if (runs.length === 1) {
          // Paused, the queue cannot hand the recovered job straight back: the refused extension alone
          // must stop this run.
          await qm.pauseQueue(name);
          blockFor(3 * w.leaseDurationMs);
          firstReason.resolve(await aborted(ctx.signal, 15_000));
          return "first run";
        }
        return `run ${runs.length}`;
      },
    },
  });
  try {
    assert.ok(w.leaseDurationMs > 0 && w.leaseDurationMs <= 2_000, `the test server's lease is ${w.leaseDurationMs} ms`);
    const job = await qm.addJob(name, "slow", null);
    const why = await firstReason.promise;
    assert.ok(why instanceof JobAbortedError, `signal reason: ${String(why)}`);
    assert.equal(why.kind, "lease-lost");
    assert.equal((await qm.getJob(name, job.id)).state, "paused");
    await qm.resumeQueue(name);
    const done = await qm.waitForJob(name, job.id, { timeoutMs: 15_000 });
    assert.equal(done.state, "completed");
    assert.equal(done.result, "run 2");
    assert.deepEqual(runs, [false, true]);
    assert.equal(done.stalledCount, 1);
  } finally {
    await w.shutdown();
  }
});

it("refuses the checkpoint of a run whose lease was lost: the job's data stays as it was", async () => {
  const name = queueName("lease-data");
  await qm.registerQueue(name);
  const refused = deferred<unknown>();
  const w = await worker({
    processors: {
      [name]: async (job, ctx) => {
        if (!job.redelivery) {
          await ctx.updateData({ step: 1 }); // held: stored
          await qm.pauseQueue(name); // the recovered job waits, so its data can be read as this run left it
          blockFor(3 * w.leaseDurationMs);
          await aborted(ctx.signal, 15_000);
          refused.resolve(await ctx.updateData({ step: 99 }).then(() => "stored", (err: unknown) => err));
          return "first run";
        }
        return job.data;
      },
    },
  });
  try {
    const job = await qm.addJob(name, "slow", { step: 0 });
    const err = await refused.promise;
    assert.ok(err instanceof FailedPreconditionError, `a lost run's checkpoint: ${String(err)}`);
    assert.match(err.message, /lease .* was lost/);
    assert.deepEqual((await qm.getJob(name, job.id)).data, { step: 1 });
    await qm.resumeQueue(name);
    const done = await qm.waitForJob(name, job.id, { timeoutMs: 15_000 });
    assert.equal(done.state, "completed");
    assert.deepEqual(done.result, { step: 1 });
  } finally {
    await w.shutdown();
  }
});
