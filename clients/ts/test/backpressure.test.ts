/**
 * LIFO jobs and producer backpressure against the live server: a LIFO job runs before the older ones of its
 * level; a queue's `maxSize` and a group's refuse the adds beyond them with `ResourceExhaustedError` (alone,
 * concurrent, bulk), read back with the queue and the group; bad sizes refused with the field.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import {
  InvalidArgumentError,
  ResourceExhaustedError,
  type ActiveJob,
  type QueueManager,
} from "../src/index.js";
import { client, deferred, queueName, worker } from "./helpers.js";

let qm: QueueManager;

before(() => {
  qm = client();
});

after(async () => {
  await qm.shutdown();
});

/** Asserts that `call` is refused as a full queue or group, the server's words matching `words`. */
async function full(call: Promise<unknown>, words: RegExp): Promise<void> {
  await assert.rejects(call, (err: unknown) => {
    assert.ok(err instanceof ResourceExhaustedError, `not a ResourceExhaustedError: ${String(err)}`);
    assert.equal(err.codeName, "RESOURCE_EXHAUSTED");
    assert.match(err.message, words);
    assert.match(err.message, /the job was not added|none was added/); // a single add; a bulk add
    return true;
  });
}

describe("lifo", () => {
  it("runs a LIFO job before the older jobs of its level, and reads the option back", async () => {
    const name = queueName("lifo");
    await qm.registerQueue(name);
    const old = await qm.addJob(name, "old");
    const older = await qm.addJob(name, "older", null, { lifo: false });
    const newest = await qm.addJob(name, "new", null, { lifo: true });
    assert.equal(newest.lifo, true);
    assert.equal(old.lifo, false);
    assert.equal(older.lifo, false);
    assert.equal((await qm.getJob(name, newest.id)).lifo, true);
    assert.equal((await qm.getJob(name, old.id)).lifo, false);

    const runs: string[] = [];
    const all = deferred();
    const w = await worker({
      concurrency: 1,
      processors: {
        [name]: async (job: ActiveJob) => {
          runs.push(job.name);
          if (runs.length === 3) {
            all.resolve();
          }
        },
      },
    });
    try {
      await all.promise;
      assert.deepEqual(runs, ["new", "old", "older"]);
    } finally {
      await w.shutdown();
    }
  });
});

describe("max size", () => {
  it("refuses the adds beyond a queue's maxSize, alone, concurrent or bulk; the size is read back", async () => {
    const name = queueName("full");
    const queue = await qm.registerQueue(name, { maxSize: 3 });
    assert.equal(queue.config.maxSize, 3);
    assert.equal((await qm.getQueue(name)).config.maxSize, 3);
    const first = await qm.addJob(name, "j", null, { jobId: "first" });
    await qm.addJob(name, "j", null, { delay: 60_000 }); // a delayed job counts too
    await full(qm.addBulk(name, [{ name: "a" }, { name: "b" }]), new RegExp(`^queue '${name}' is full: `));
    // Concurrent adds share calls: exactly the one that fits is added, each other one refused on its own.
    const outcomes = await Promise.allSettled(Array.from({ length: 12 }, (_, i) => qm.addJob(name, `n${i}`)));
    assert.equal(outcomes.filter((o) => o.status === "fulfilled").length, 1);
    for (const o of outcomes) {
      if (o.status === "rejected") {
        assert.ok(o.reason instanceof ResourceExhaustedError, String(o.reason));
        assert.match(o.reason.message, /is full: .*\(QueueConfig\.max_size\)/);
      }
    }
    await full(qm.addJob(name, "j"), /QueueConfig\.max_size/);
    // An add that finds its job there is answered with it, full or not.
    assert.equal((await qm.addJob(name, "j", null, { jobId: "first" })).id, first.id);
    const metrics = await qm.getQueueMetrics(name);
    assert.deepEqual([metrics.waiting, metrics.delayed], [2, 1]);
    // Raised, there is room again; registerQueue replaces the whole config: without it, no limit.
    await qm.registerQueue(name, { maxSize: 4 });
    await qm.addJob(name, "j");
    assert.equal((await qm.registerQueue(name)).config.maxSize, 0);
    await qm.addJob(name, "j");
  });

  it("refuses the adds beyond a group's maxSize, the queue's or the group's own, and not the other groups'", async () => {
    const name = queueName("group-full");
    const queue = await qm.registerQueue(name, { groupLimits: { maxSize: 1 } });
    assert.deepEqual(queue.config.groupLimits, { concurrency: 0, rateLimit: undefined, maxSize: 1 });
    await qm.addJob(name, "j", null, { group: "a" });
    await full(qm.addJob(name, "j", null, { group: "a" }), new RegExp(`^group 'a' of queue '${name}' is full: `));
    await qm.addJob(name, "j", null, { group: "b" });
    await qm.addJob(name, "j"); // no group: no group limit
    const own = await qm.setGroupLimits(name, "a", { maxSize: 2, concurrency: 1 });
    assert.deepEqual(own.limits, { concurrency: 1, rateLimit: undefined, maxSize: 2 });
    assert.equal(own.customLimits, true);
    await qm.addJob(name, "j", null, { group: "a" });
    await full(qm.addBulk(name, [{ name: "j", options: { group: "a" } }]), /GroupLimits\.max_size/);
    const listed = (await qm.listGroups(name)).items.map((g) => [g.group, g.waiting, g.limits.maxSize]);
    assert.deepEqual(listed, [
      ["a", 2, 2],
      ["b", 1, 1],
    ]);
  });

  it("refuses bad sizes and options before the call, naming the field, and relays the server's refusals", async () => {
    const name = queueName("bad-size");
    await qm.registerQueue(name);
    await assert.rejects(qm.registerQueue(name, { maxSize: -1 }), /^RangeError: maxSize must be a whole number of jobs/);
    await assert.rejects(qm.registerQueue(name, { maxSize: 1.5 }), /maxSize must be a whole number/);
    await assert.rejects(qm.setGroupLimits(name, "g", { maxSize: Number.NaN }), /limits\.maxSize must be a whole/);
    await assert.rejects(
      qm.addJob(name, "j", null, { lifo: "yes" as unknown as boolean }),
      /^TypeError: job\.options\.lifo must be a boolean, not string/,
    );
    // Above the server's own maximum (2^48): its INVALID_ARGUMENT, naming the field.
    await assert.rejects(qm.registerQueue(name, { maxSize: 2 ** 50 }), (err: unknown) => {
      assert.ok(err instanceof InvalidArgumentError, String(err));
      assert.match(err.message, /config\.max_size/);
      return true;
    });
    await assert.rejects(qm.registerQueue(name, { defaultJobOptions: { lifo: true } }), InvalidArgumentError);
    assert.equal((await qm.getQueue(name)).config.maxSize, 0);
  });
});
