/** Finding jobs by filter and the bulk actions (retryJobs, cancelJobs, removeJobs) against the live server. */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { InvalidArgumentError, type JobOptions, type JobState, type QueueManager } from "../src/index.js";
import { aborted, client, deferred, queueName, worker } from "./helpers.js";

let qm: QueueManager;

before(() => {
  qm = client();
});

after(async () => {
  await qm.shutdown();
});

/** A fresh queue with five waiting jobs: two send-email of group acme (one tagged vip), a send-sms tagged vip, two reports. */
async function seed(): Promise<{ queue: string; ids: Record<string, string> }> {
  const queue = queueName("filters");
  await qm.registerQueue(queue, { disableDeadLetter: true });
  const specs: Record<string, [string, JobOptions]> = {
    e1: ["send-email", { group: "acme", metadata: { tags: ["vip"], correlationId: "r1" } }],
    e2: ["send-email", { group: "acme" }],
    s1: ["send-sms", { metadata: { tags: ["vip"] } }],
    r1: ["report", { metadata: { correlationId: "r1" } }],
    r2: ["report", {}],
  };
  const ids: Record<string, string> = {};
  for (const [key, [name, options]] of Object.entries(specs)) {
    ids[key] = (await qm.addJob(queue, name, null, options)).id;
  }
  return { queue, ids };
}

/** The ids of a queue's jobs in one state that match `filter`, following the tokens to the end. */
async function idsOf(queue: string, state: JobState, filter: Parameters<QueueManager["listJobs"]>[2] = {}): Promise<string[]> {
  const ids: string[] = [];
  let pageToken = "";
  do {
    const page = await qm.listJobs(queue, state, { ...filter, pageToken });
    ids.push(...page.items.map((j) => j.id));
    pageToken = page.nextPageToken;
  } while (pageToken);
  return ids.sort();
}

// Jobs of a state one filtered call reads at most (the server's engine/search.py SCAN_BUDGET).
const SCAN_BUDGET = 4000;

const sorted = (...ids: (string | undefined)[]) => (ids as string[]).sort();

describe("filters", () => {
  it("lists the jobs that match every condition given", async () => {
    const { queue, ids } = await seed();
    const page = await qm.listJobs(queue, "waiting", { name: "send-*" });
    assert.deepEqual(page.items.map((j) => j.id).sort(), sorted(ids.e1, ids.e2, ids.s1));
    assert.equal(page.nextPageToken, "");
    assert.equal(page.totalSize, 5); // the state's jobs, matching or not
    assert.deepEqual(await idsOf(queue, "waiting", { name: "send-*", group: "acme", tag: "vip" }), [ids.e1]);
    assert.deepEqual(await idsOf(queue, "waiting", { correlationId: "r1" }), sorted(ids.e1, ids.r1));
    assert.deepEqual(await idsOf(queue, "waiting", { name: "report" }), sorted(ids.r1, ids.r2));
    const hour = 3_600_000;
    const now = Date.now();
    const around = { createdAfter: new Date(now - hour), createdBefore: new Date(now + hour) };
    assert.equal((await idsOf(queue, "waiting", around)).length, 5);
    assert.deepEqual(await idsOf(queue, "waiting", { createdAfter: new Date(now + hour) }), []);
    // Filtered pages keep the order and the page size.
    const first = await qm.listJobs(queue, "waiting", { name: "send-*", pageSize: 2 });
    assert.equal(first.items.length, 2);
    assert.ok(first.nextPageToken);
  });

  it("counts the matches on the server, following the tokens", async () => {
    const { queue } = await seed();
    assert.deepEqual(await qm.countJobs(queue, "waiting", { name: "send-*" }), { count: 3, nextPageToken: "", calls: 1, complete: true });
    assert.equal((await qm.countJobs(queue, "waiting", { tag: "vip", correlationId: "r1" })).count, 1);
    assert.equal((await qm.countJobs(queue, "waiting")).count, 5);
    assert.equal((await qm.countJobs(queue, "failed", { name: "report" })).count, 0);
    const refused: [() => Promise<unknown>, RegExp][] = [
      [() => qm.countJobs(queue, "waiting", { maxCalls: 0 }), /maxCalls must be a whole number of at least 1/],
      [() => qm.countJobs(queue, "waiting", { maxCalls: 1.5 }), /maxCalls must be a whole number of at least 1/],
      [() => qm.countJobs(queue, "waiting", { name: "a*b" }), /'\*' may only end a name/],
      [() => qm.countJobs(queue, "waiting", { pageSize: 5 } as never), /unknown key\(s\) pageSize/],
      [() => qm.countJobs(queue, "finished" as JobState), /state must be one of waiting/],
    ];
    for (const [call, message] of refused) {
      await assert.rejects(call, message);
    }
    await assert.rejects(qm.countJobs(queue, "waiting", { name: "x", pageToken: "not-a-token" }), InvalidArgumentError);
  });

  it("a count stopped by maxCalls gives the token to go on", async () => {
    const queue = queueName("filters-count");
    await qm.registerQueue(queue, { disableDeadLetter: true });
    const n = SCAN_BUDGET + 10;
    await qm.addBulk(queue, Array.from({ length: n }, () => ({ name: "x", data: null })));
    const part = await qm.countJobs(queue, "waiting", { name: "x", maxCalls: 1 });
    assert.deepEqual([part.count, part.calls, part.complete], [SCAN_BUDGET, 1, false]);
    assert.ok(part.nextPageToken);
    const rest = await qm.countJobs(queue, "waiting", { name: "x", pageToken: part.nextPageToken });
    assert.deepEqual([rest.count, rest.complete, rest.nextPageToken], [10, true, ""]);
    assert.equal((await qm.countJobs(queue, "waiting", { name: "x" })).count, n);
  });

  it("cancels, retries and removes what matches, a bounded number per call", async () => {
    const { queue, ids } = await seed();
    const first = await qm.cancelJobs(queue, "waiting", { tag: "vip", limit: 1, reason: "dup" });
    assert.equal(first.count, 1);
    assert.equal(first.requested, 0);
    assert.ok(first.nextPageToken);
    const rest = await qm.cancelJobs(queue, "waiting", { tag: "vip", pageToken: first.nextPageToken, reason: "dup" });
    assert.deepEqual(rest, { count: 1, nextPageToken: "", requested: 0 });
    assert.equal((await qm.getJob(queue, ids.s1!)).cancelReason, "dup");
    assert.deepEqual(await idsOf(queue, "cancelled"), sorted(ids.e1, ids.s1));
    assert.deepEqual(await qm.retryJobs(queue, "cancelled", { name: "send-sms" }), { count: 1, nextPageToken: "", requested: 0 });
    assert.deepEqual(await qm.removeJobs(queue, "waiting", { name: "report" }), { count: 2, nextPageToken: "", requested: 0 });
    assert.deepEqual(await idsOf(queue, "waiting"), sorted(ids.e2, ids.s1));
    // retryJobs of failed jobs (its default state), by group.
    const failed = queueName("filters-failed");
    await qm.registerQueue(failed, { disableDeadLetter: true });
    const mine = await qm.addJob(failed, "f", null, { group: "mine" });
    const theirs = await qm.addJob(failed, "f", null, { group: "theirs" });
    const w = await worker({ processors: { [failed]: async () => Promise.reject(new Error("boom")) } });
    try {
      for (const job of [mine, theirs]) {
        assert.equal((await qm.waitForJob(failed, job.id, { timeoutMs: 15_000 })).state, "failed");
      }
    } finally {
      await w.shutdown();
    }
    assert.deepEqual(await qm.retryJobs(failed, undefined, { group: "mine" }), { count: 1, nextPageToken: "", requested: 0 });
    assert.equal((await qm.getJob(failed, mine.id)).state, "waiting");
    assert.equal((await qm.getJob(failed, theirs.id)).state, "failed");
  });

  it("asks the workers of matching active jobs to stop them", async () => {
    const queue = queueName("filters-active");
    await qm.registerQueue(queue);
    const started = deferred();
    const w = await worker({
      processors: {
        [queue]: async (_job, ctx) => {
          started.resolve();
          await aborted(ctx.signal, 20_000);
          return "stopped";
        },
      },
    });
    try {
      const job = await qm.addJob(queue, "long", null, { metadata: { correlationId: "batch-7" } });
      await started.promise;
      const result = await qm.cancelJobs(queue, "active", { correlationId: "batch-7", reason: "batch dropped" });
      assert.deepEqual(result, { count: 0, nextPageToken: "", requested: 1 });
      const done = await qm.waitForJob(queue, job.id, { timeoutMs: 15_000 });
      assert.equal(done.state, "cancelled");
      assert.equal(done.cancelReason, "batch dropped");
    } finally {
      await w.shutdown();
    }
  });

  it("refuses bad filters and options before the call, and passes on the server's refusals", async () => {
    const { queue } = await seed();
    const refused: [() => Promise<unknown>, RegExp][] = [
      [() => qm.listJobs(queue, "waiting", { tag: "" }), /tag is empty; leave it out to match every job/],
      [() => qm.listJobs(queue, "waiting", { group: "  " }), /group is empty/],
      [() => qm.removeJobs(queue, "waiting", { name: "se*nd" }), /'\*' may only end a name/],
      [() => qm.cancelJobs(queue, "waiting", { name: "*" }), /matches every name; leave it out/],
      [
        () => qm.listJobs(queue, "waiting", { createdAfter: new Date(2030, 0, 2), createdBefore: new Date(2030, 0, 1) }),
        /is not before createdBefore/,
      ],
      [() => qm.listJobs(queue, "waiting", { createdAfter: new Date("yesterday") }), /createdAfter must be a valid Date/],
      [() => qm.cancelJobs(queue, "waiting", { limit: 5000 }), /limit must be a whole number from 1 to 1000/],
      [() => qm.removeJobs(queue, "waiting", { limit: 1.5 }), /limit must be/],
      [() => qm.retryJobs(queue, "waiting" as "failed"), /state must be "failed" or "cancelled", got "waiting"/],
      [() => qm.removeJobs(queue, "waiting", { nmae: "report" } as never), /unknown key\(s\) nmae; known: name, group/],
      [() => qm.listJobs(queue, "waiting", { pageSize: 5000 }), /pageSize must be a whole number from 1 to 1000/],
      [() => qm.listJobs(queue, "finished" as JobState), /state must be one of waiting/],
      [() => qm.cancelJobs("bad/queue", "waiting"), /queue name "bad\/queue" must be 1 to 100 letters/],
      [() => qm.listJobs(queue, "waiting", { tag: 7 as never }), /tag must be a string, not number/],
    ];
    for (const [call, message] of refused) {
      await assert.rejects(call, message);
    }
    // Nothing was sent: the five jobs are all there, waiting.
    assert.equal((await idsOf(queue, "waiting")).length, 5);
    await assert.rejects(qm.removeJobs(queue, "active"), (err: unknown) => err instanceof InvalidArgumentError && /ACTIVE/.test(err.message));
    await assert.rejects(qm.cancelJobs(queue, "completed"), InvalidArgumentError);
    await assert.rejects(qm.listJobs(queue, "waiting", { name: "x", pageToken: "not-a-token" }), InvalidArgumentError);
  });
});
