/** Dead-letter copies sent back to their original queues (redriveDeadLetters) against the live server. */
import assert from "node:assert/strict";
import { after, before, it } from "node:test";
import {
  DEAD_LETTER_QUEUE,
  deadLetterFromJob,
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

it("retryJob: data null is JSON null, data left out keeps the job's data", async () => {
  const queue = queueName("retry-null");
  await qm.registerQueue(queue, { disableDeadLetter: true });
  const nulled = await qm.addJob(queue, "charge", { n: 1 });
  const kept = await qm.addJob(queue, "charge", { n: 2 });
  const w = await worker({ processors: { [queue]: async () => Promise.reject(new UnrecoverableError("bad")) } });
  try {
    for (const job of [nulled, kept]) {
      assert.equal((await qm.waitForJob(queue, job.id, { timeoutMs: 15_000 })).state, "failed");
    }
  } finally {
    await w.shutdown();
  }
  assert.deepEqual((await qm.retryJob(queue, nulled.id, { data: null })).data, null);
  assert.deepEqual((await qm.retryJob(queue, kept.id)).data, { n: 2 });
  assert.deepEqual((await qm.getJob(queue, nulled.id)).data, null);
});

it("sends one copy back with new data in one call; a refused call leaves the copy as it was", async () => {
  const queue = queueName("redrive-data");
  await qm.registerQueue(queue);
  const jobs = [await qm.addJob(queue, "charge", { n: 1 }), await qm.addJob(queue, "charge", { n: 2 })];
  const w = await worker({ processors: { [queue]: async (job) => Promise.reject(new UnrecoverableError(`bad ${job.name}`)) } });
  try {
    for (const job of jobs) {
      assert.equal((await qm.waitForJob(queue, job.id, { timeoutMs: 15_000 })).state, "failed");
    }
  } finally {
    await w.shutdown();
  }
  const copies = jobs.map((job) => `${queue}:${job.id}`);
  const copied = async () => (await qm.listJobs(DEAD_LETTER_QUEUE, "waiting", { pageSize: 1000 })).items.filter((j) => copies.includes(j.id)).length === 2;
  await eventually(copied, "both dead-letter copies written");
  await assert.rejects(qm.redriveDeadLetters(DEAD_LETTER_QUEUE, { jobIds: copies, data: { n: 9 } }), /give exactly one of jobIds \(2 given\)/);
  await assert.rejects(qm.redriveDeadLetters(DEAD_LETTER_QUEUE, { data: { n: 9 } }), /give exactly one of jobIds \(0 given\)/);
  const huge = { blob: "x".repeat(2_000_000) }; // over the server's payload limit
  await assert.rejects(
    qm.redriveDeadLetters(DEAD_LETTER_QUEUE, { jobIds: [copies[0]!], data: huge }),
    (err: unknown) => err instanceof InvalidArgumentError && /^data: is \d+ bytes; the limit is/.test(err.message),
  );
  assert.deepEqual(deadLetterFromJob(await qm.getJob(DEAD_LETTER_QUEUE, copies[0]!))?.originalData, { n: 1 });
  const result = await qm.redriveDeadLetters(DEAD_LETTER_QUEUE, { jobIds: [copies[0]!], data: { n: 10 } });
  assert.deepEqual(result.queues[queue], { count: 1, retried: 1, added: 0, unchanged: 0 });
  const again = await qm.getJob(queue, jobs[0]!.id);
  assert.deepEqual([again.state, again.data], ["waiting", { n: 10 }]);
  assert.deepEqual((await qm.getJob(queue, jobs[1]!.id)).data, { n: 2 });
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

it("lists a dead-letter queue's copies as what they say about the failed jobs", async () => {
  const queue = queueName("dead");
  const dlq = queueName("dead-dlq");
  await qm.registerQueue(dlq);
  await qm.registerQueue(queue, { deadLetterQueue: dlq });
  const json = await qm.addJob(queue, "charge", { amount: 5 }, { attempts: 2, backoff: { type: "fixed", delay: 1 } });
  const bytes = await qm.addJob(queue, "blob", new Uint8Array([0, 1, 254]));
  const stranger = await qm.addJob(dlq, "not-a-copy", { n: 1 }); // added directly: left out of the list
  const w = await worker({ processors: { [queue]: async (job) => Promise.reject(new Error(`no ${job.name}`)) } });
  try {
    for (const job of [json, bytes]) {
      assert.equal((await qm.waitForJob(queue, job.id, { timeoutMs: 15_000 })).state, "failed");
    }
  } finally {
    await w.shutdown();
  }
  await eventually(async () => (await qm.listDeadLetters(dlq)).items.length === 2, "both copies written");
  const page = await qm.listDeadLetters(dlq, { pageSize: 10 });
  assert.equal(page.nextPageToken, "");
  assert.equal(page.totalSize, 3); // the state's jobs, copies or not
  const byName = Object.fromEntries(page.items.map((d) => [d.originalName, d]));
  const charge = byName["charge"]!;
  assert.deepEqual(
    { ...charge, deadAt: undefined },
    {
      id: `${queue}:${json.id}`,
      state: "waiting",
      originalQueue: queue,
      originalJobId: json.id,
      originalName: "charge",
      originalData: { amount: 5 },
      originalContentType: "application/json",
      failureReason: charge.failureReason,
      attemptsMade: 2,
      deadAt: undefined,
    },
  );
  assert.match(charge.failureReason, /no charge/);
  assert.ok(charge.deadAt instanceof Date);
  const blob = byName["blob"]!;
  assert.deepEqual([blob.originalData, blob.originalContentType], [new Uint8Array([0, 1, 254]), "application/octet-stream"]);
  assert.equal(deadLetterFromJob(await qm.getJob(dlq, stranger.id)), undefined);
  assert.deepEqual((await qm.listDeadLetters(dlq, { state: "failed" })).items, []);
  // What listDeadLetters names, redriveDeadLetters takes.
  const sent = await qm.redriveDeadLetters(dlq, { jobIds: [charge.id] });
  assert.equal(sent.count, 1);
  await assert.rejects(qm.listDeadLetters(queueName("nowhere")), NotFoundError);
});
