/** Dead-letter copies sent back to their original queues (redriveDeadLetters) against the live server. */
import assert from "node:assert/strict";
import { after, before, it } from "node:test";
import {
  DEAD_LETTER_QUEUE,
  InvalidArgumentError,
  NotFoundError,
  UnrecoverableError,
  type QueueManager,
} from "../src/index.js";
import { client, queueName, worker } from "./helpers.js";

let qm: QueueManager;

before(() => {
  qm = client();
});

after(async () => {
  await qm.shutdown();
});

/** Waits until `check` holds, testing it every 20 ms; fails after 20 s (a copy is written after the failure). */
async function eventually(check: () => Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!(await check())) {
    assert.ok(Date.now() < deadline, `not within 20 s: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

it("sends a failed job's copy back: the original runs again; a removed one is added anew", async () => {
  const queue = queueName("redrive");
  await qm.registerQueue(queue);
  const kept = await qm.addJob(queue, "charge", { n: 1 });
  const gone = await qm.addJob(queue, "refund", { n: 2 });
  const w = await worker({ processors: { [queue]: async (job) => Promise.reject(new UnrecoverableError(`bad ${job.name}`)) } });
  try {
    for (const job of [kept, gone]) {
      assert.equal((await qm.waitForJob(queue, job.id, { timeoutMs: 15_000 })).state, "failed");
    }
  } finally {
    await w.shutdown();
  }
  const copies = [kept, gone].map((job) => `${queue}:${job.id}`);
  const copied = async () => (await qm.listJobs(DEAD_LETTER_QUEUE, "waiting", { pageSize: 1000 })).items.filter((j) => copies.includes(j.id)).length === 2;
  await eventually(copied, "both dead-letter copies written");
  await qm.removeJob(queue, gone.id); // as retention would
  const result = await qm.redriveDeadLetters(DEAD_LETTER_QUEUE, { originalQueue: queue });
  assert.equal(result.count, 2);
  assert.deepEqual(result.queues[queue], { count: 2, retried: 1, added: 1, unchanged: 0 });
  assert.deepEqual(result.skipped, {});
  assert.deepEqual(result.missingQueues, []);
  for (const job of [kept, gone]) {
    const again = await qm.getJob(queue, job.id);
    assert.equal(again.state, "waiting");
    assert.deepEqual(again.data, job.data);
  }
  await assert.rejects(qm.getJob(DEAD_LETTER_QUEUE, copies[0]!), NotFoundError); // the copies left
  // Named copies that are not there stay skipped, with why.
  const named = await qm.redriveDeadLetters(DEAD_LETTER_QUEUE, { jobIds: [copies[0]!] });
  assert.equal(named.count, 0);
  assert.ok(named.skipped[copies[0]!]);
});

it("refuses bad options before the call, and passes on the server's refusals", async () => {
  const refused: [() => Promise<unknown>, RegExp][] = [
    [() => qm.redriveDeadLetters(DEAD_LETTER_QUEUE, { limit: 1, jobIds: ["q:x"] }), /give jobIds or limit, not both/],
    [() => qm.redriveDeadLetters(DEAD_LETTER_QUEUE, { jobIds: ["no-colon"] }), /"no-colon" is not a dead-letter copy's id/],
    [() => qm.redriveDeadLetters(DEAD_LETTER_QUEUE, { jobIds: Array(1001).fill("q:x") }), /names 1001 copies; at most 1000/],
    [() => qm.redriveDeadLetters(DEAD_LETTER_QUEUE, { limit: -1 }), /limit must be a whole number of at least 1/],
    [() => qm.redriveDeadLetters(DEAD_LETTER_QUEUE, { limit: 0 }), /limit must be a whole number of at least 1/],
    [() => qm.redriveDeadLetters(DEAD_LETTER_QUEUE, { originalQueue: "a b" }), /originalQueue "a b" must be 1 to 100/],
    [() => qm.redriveDeadLetters(DEAD_LETTER_QUEUE, { orginalQueue: "q" } as never), /unknown key\(s\) orginalQueue/],
  ];
  for (const [call, message] of refused) {
    await assert.rejects(call, message);
  }
  const plain = queueName("plain");
  await qm.registerQueue(plain, { disableDeadLetter: true });
  await assert.rejects(qm.redriveDeadLetters("nope-not-here"), NotFoundError);
  await assert.rejects(qm.redriveDeadLetters(plain), (err: unknown) => err instanceof InvalidArgumentError && /is not a dead-letter queue/.test(err.message));
});
