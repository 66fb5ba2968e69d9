/**
 * How a worker of several queues shares its slots (`queueWeights`, `queueOrder`, sent in the hello): strict
 * priority and weights against the live server, and the options' checks before connecting.
 */
import assert from "node:assert/strict";
import { it } from "node:test";
import { Worker, type ActiveJob, type Processor } from "../src/index.js";
import { address, client, queueName, until, worker } from "./helpers.js";

/** Processors that record each start and hold the run until `release`. */
function holding(queues: string[]) {
  const started: string[] = [];
  const running: Record<string, number> = {};
  const gates: (() => void)[] = [];
  let open = false;
  const processors: Record<string, Processor> = {};
  for (const queue of queues) {
    processors[queue] = async (job: ActiveJob) => {
      started.push(queue);
      running[queue] = (running[queue] ?? 0) + 1;
      if (!open) {
        await new Promise<void>((resolve) => gates.push(resolve));
      }
      running[queue] -= 1;
      return job.name;
    };
  }
  return {
    started,
    running,
    processors,
    release: () => {
      open = true;
      gates.splice(0).forEach((go) => go());
    },
    next: () => gates.shift()?.(),
  };
}

const settle = () => new Promise((resolve) => setTimeout(resolve, 300)); // to see that nothing more starts

it("queueOrder: a queue takes slots only while none before it has jobs ready", async () => {
  const qm = client();
  // Named so that the sorted order (the hello's without queueOrder) is the opposite of the priority.
  const hi = queueName("z-hi");
  const lo = queueName("a-lo");
  await qm.registerQueue(hi);
  await qm.registerQueue(lo);
  await qm.addBulk(lo, Array.from({ length: 6 }, () => ({ name: "l", data: null })));
  await qm.addBulk(hi, Array.from({ length: 4 }, () => ({ name: "h", data: null })));
  const runs = holding([hi, lo]);
  const w = await worker({ concurrency: 3, processors: runs.processors, queueOrder: [hi, lo] });
  try {
    assert.deepEqual(w.queues, [hi, lo]);
    assert.equal(w.strictOrder, true);
    await until(() => runs.started.length >= 3);
    await settle();
    assert.deepEqual(runs.started, [hi, hi, hi]);
    runs.next();
    runs.next();
    runs.next();
    await until(() => runs.started.length >= 6); // the last hi job, then lo once hi has none
    assert.deepEqual(runs.started, [hi, hi, hi, hi, lo, lo]);
  } finally {
    runs.release();
    await w.shutdown();
    await qm.shutdown();
  }
});

it("queueWeights: busy queues share the slots by weight", async () => {
  const qm = client();
  const a = queueName("a");
  const b = queueName("b");
  await qm.registerQueue(a);
  await qm.registerQueue(b);
  await qm.addBulk(a, Array.from({ length: 10 }, () => ({ name: "x", data: null })));
  await qm.addBulk(b, Array.from({ length: 10 }, () => ({ name: "x", data: null })));
  const runs = holding([a, b]);
  const weighted = await worker({ concurrency: 4, processors: runs.processors, queueWeights: { [a]: 1, [b]: 3 } });
  try {
    assert.deepEqual(weighted.queueWeights, { [a]: 1, [b]: 3 });
    await until(() => runs.started.length >= 4);
    await settle();
    assert.deepEqual(runs.running, { [a]: 1, [b]: 3 });
  } finally {
    runs.release();
    await weighted.shutdown();
    await qm.shutdown();
  }
});

it("checks the shares before connecting, as the Python worker does", () => {
  const fn = async () => null;
  const make = (options: object) => () => new Worker({ address: address(), processors: { a: fn, b: fn }, ...options });
  assert.throws(make({ queueWeights: { z: 1 } }), {
    name: "RangeError",
    message: 'queueWeights names "z", which has no processor on this worker',
  });
  assert.throws(make({ queueWeights: { a: 0 } }), { name: "RangeError", message: 'queueWeights["a"] must be 1 to 1,000, got 0' });
  assert.throws(make({ queueWeights: { a: 1001 } }), { name: "RangeError", message: 'queueWeights["a"] must be 1 to 1,000, got 1001' });
  assert.throws(make({ queueWeights: { a: "2" } }), { name: "TypeError", message: 'queueWeights["a"] must be a whole number, not string' });
  assert.throws(make({ queueWeights: [1] }), { name: "TypeError", message: "queueWeights must be an object of queue name to weight, not an array" });
  assert.throws(make({ queueOrder: ["a"] }), {
    name: "RangeError",
    message: 'queueOrder must name each of the worker\'s queues once: ["a","b"], got ["a"]',
  });
  assert.throws(make({ queueOrder: ["a", "a", "b"] }), /queueOrder must name each of the worker's queues once/);
  assert.throws(make({ queueOrder: "a,b" }), { name: "TypeError", message: "queueOrder must be an array of queue names, not string" });
  assert.throws(make({ queueWeights: { a: 2 }, queueOrder: ["a", "b"] }), { name: "RangeError", message: "give queueWeights or queueOrder, not both" });
  const plain = make({})();
  assert.deepEqual([plain.queues, plain.queueWeights, plain.strictOrder], [["a", "b"], {}, false]);
});

it("refuses a processor's queue name the server would never take, before connecting", () => {
  const fn = async () => null;
  for (const name of ["emails:high", "a{b}", "q".repeat(101)]) {
    assert.throws(() => new Worker({ address: address(), processors: { [name]: fn } }), {
      name: "RangeError",
      message: `processors key ${JSON.stringify(name)} must be 1 to 100 letters, digits, '-', '_' or '.'`,
    });
  }
});

it("tier: jobs go to the lower tier while it has free slots, then to the higher one", async () => {
  const qm = client();
  const q = queueName("tier");
  await qm.registerQueue(q);
  const home = holding([q]);
  const burst = holding([q]);
  // The tier-0 worker connects first, so that its credits (granted once it is welcomed) are in when the jobs
  // come; tests/test_worker_tiers.py shows that the tier, not the order of arrival, decides.
  const first = await worker({ concurrency: 2, processors: home.processors, workerId: `${q}-home` });
  const spare = await worker({ concurrency: 2, processors: burst.processors, tier: 1, workerId: `${q}-burst` });
  try {
    for (let i = 0; i < 2; i++) {
      await qm.addJob(q, `j${i}`, null);
      await until(() => home.started.length + burst.started.length > i);
    }
    assert.deepEqual([home.started.length, burst.started.length], [2, 0]);
    await qm.addJob(q, "j2", null);
    await until(() => burst.started.length >= 1);
    assert.deepEqual([home.started.length, burst.started.length], [2, 1]);
    const tiers = Object.fromEntries((await qm.listWorkers(q)).map((w) => [w.workerId, w.tier]));
    assert.deepEqual(tiers, { [`${q}-home`]: 0, [`${q}-burst`]: 1 });
    assert.throws(() => new Worker({ address: address(), processors: home.processors, tier: 101 }), {
      name: "RangeError",
      message: "tier must be a whole number from 0 to 100, got 101",
    });
  } finally {
    home.release();
    burst.release();
    await first.shutdown();
    await spare.shutdown();
    await qm.shutdown();
  }
});
