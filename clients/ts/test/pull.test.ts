/**
 * Pull workers against the live server: `fetchJobs` leases jobs without a stream, each `PulledJob` completes,
 * fails or extends itself, a long poll answers a job added while it waits, and a stale lease is refused.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { FailedPreconditionError, InvalidArgumentError, NotFoundError, type QueueManager } from "../src/index.js";
import { client, queueName } from "./helpers.js";

let qm: QueueManager;

before(() => {
  qm = client();
});

after(async () => {
  await qm.shutdown();
});

async function freshQueue(): Promise<string> {
  const name = queueName("pull");
  await qm.registerQueue(name);
  return name;
}

describe("pull workers", () => {
  it("fetches, extends and completes a job, then fails one that is retried", async () => {
    const q = await freshQueue();
    const a = await qm.addJob(q, "a", { n: 1 });
    const b = await qm.addJob(q, "b", { n: 2 }, { attempts: 2 });
    const [first, second] = await qm.fetchJobs(q, { maxJobs: 5, workerName: "ts-pull" });
    assert.ok(first && second);
    assert.deepEqual([first.id, first.data, second.id], [a.id, { n: 1 }, b.id]);
    const before = first.leaseExpires?.getTime() ?? 0;
    const after = await first.extendLease(120_000);
    assert.ok((after?.getTime() ?? 0) > before && !first.cancelRequested);
    await first.reportProgress(50, ["half way"]);
    await first.complete({ ok: true });
    assert.deepEqual((await qm.getJob(q, a.id)).result, { ok: true });
    const outcome = await second.fail("boom");
    assert.equal(outcome.willRetry, true);
    const [again] = await qm.fetchJobs(q);
    assert.ok(again);
    assert.equal(again.id, b.id);
    assert.equal(again.job.attemptsMade, 1);
    assert.equal((await again.fail("boom again")).willRetry, false);
    assert.equal((await qm.getJob(q, b.id)).state, "failed");
    await assert.rejects(first.complete("late"), FailedPreconditionError);
  });

  it("answers a long poll with a job added while it waits, and an empty one when none comes", async () => {
    const q = await freshQueue();
    const poll = qm.fetchJobs(q, { waitMs: 20_000 });
    const job = await qm.addJob(q, "late", null);
    const [got] = await poll;
    assert.equal(got?.id, job.id);
    assert.deepEqual(await qm.fetchJobs(q, { waitMs: 200 }), []);
  });

  it("refuses bad arguments before the call, and an unknown queue", async () => {
    const q = await freshQueue();
    await assert.rejects(qm.fetchJobs(q, { maxJobs: 0 }), RangeError);
    await assert.rejects(qm.fetchJobs(q, { maxJobs: 1001 }), RangeError);
    await assert.rejects(qm.fetchJobs(q, { waitMs: 31_000 }), RangeError);
    await assert.rejects(qm.fetchJobs(q, { leaseMs: 10 }), InvalidArgumentError);
    await assert.rejects(qm.fetchJobs(queueName("nowhere")), NotFoundError);
  });

  it("refuses a pulled job's bad report options before the call, and the job goes on", async () => {
    const q = await freshQueue();
    const added = await qm.addJob(q, "a", null, { attempts: 3 });
    const [job] = await qm.fetchJobs(q);
    assert.ok(job);
    // A misspelt noRetry would let the job be retried; a lone line would fail deep inside the client.
    await assert.rejects(job.fail("boom", { noretry: true } as never), /fail options has unknown key\(s\) noretry/);
    await assert.rejects(job.reportProgress(50, "half way" as never), /logs must be an array of log lines/);
    assert.equal((await qm.getJob(q, added.id)).state, "active");
    assert.equal((await job.fail("boom", { noRetry: true })).willRetry, false);
  });
});
