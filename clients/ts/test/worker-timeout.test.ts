/**
 * A run the worker stops at the job's own timeout, against a server that leaves timeouts to the workers
 * (tests/test_client_ts.py stops its timeouts): the failure goes out with `timedOut`, so the server records
 * the run as timed out (not as an error the processor threw) and counts it in `timedOutTotal`.
 */
import assert from "node:assert/strict";
import { after, before, it } from "node:test";
import { JobAbortedError, type QueueManager } from "../src/index.js";
import { aborted, client, queueName, worker } from "./helpers.js";

let qm: QueueManager;

before(() => {
  qm = client();
});

after(async () => {
  await qm.shutdown();
});

it("reports a run past its timeout on the worker as timed out", async () => {
  const name = queueName("worker-timeout");
  await qm.registerQueue(name, { disableDeadLetter: true });
  const reasons: unknown[] = [];
  const w = await worker({
    processors: {
      [name]: async (_job, ctx) => {
        reasons.push(await aborted(ctx.signal, 15_000));
        return "too late";
      },
    },
  });
  try {
    const job = await qm.addJob(name, "hangs", null, { timeout: 300, attempts: 1 });
    const failed = await qm.waitForJob(name, job.id, { timeoutMs: 15_000 });
    assert.equal(failed.state, "failed");
    assert.equal(failed.failedReason, "job timed out after 0.3s");
    assert.deepEqual(
      failed.errors.map((e) => e.kind),
      ["timeout"],
    );
    const [why] = reasons;
    assert.ok(why instanceof JobAbortedError && why.kind === "timeout", String(why));
    const metrics = await qm.getQueueMetrics(name);
    assert.equal(metrics.timedOutTotal, 1);
    assert.equal(metrics.raisedTotal, 0);
  } finally {
    await w.shutdown();
    await qm.obliterateQueue(name, true);
  }
});
