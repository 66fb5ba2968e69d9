/**
 * Fairness groups against the live server: turns between groups (priority first), a group's concurrency
 * limit seen from a worker, ListGroups / SetGroupLimits round trips, a paused group held while another runs,
 * and bad groups refused with the field.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { InvalidArgumentError, JobPriority, NotFoundError, type ActiveJob, type QueueManager } from "../src/index.js";
import { client, deferred, queueName, worker } from "./helpers.js";

let qm: QueueManager;

before(() => {
  qm = client();
});

after(async () => {
  await qm.shutdown();
});

/** Waits for every job to finish; fails naming the first that did not complete. */
async function allCompleted(queue: string, ids: string[]): Promise<void> {
  for (const id of ids) {
    const job = await qm.waitForJob(queue, id, { timeoutMs: 20_000 });
    assert.equal(job.state, "completed", `${job.name} ended ${String(job.state)}: ${job.failedReason}`);
  }
}

describe("turns", () => {
  it("runs each level's jobs without a group, then its groups one job each; the processor sees the group", async () => {
    const name = queueName("turns");
    await qm.registerQueue(name);
    // A flood of one group first (on the bulk stream), then a few jobs of another, one without a group, and
    // a HIGH job of a third group added last.
    const flood = [0, 1, 2, 3, 4].map((i) => ({ name: `a${i}`, options: { group: "a" } }));
    const ids = await qm.addBulk(name, flood);
    for (const i of [0, 1]) {
      const job = await qm.addJob(name, `b${i}`, null, { group: "b" });
      assert.equal(job.group, "b"); // the add's answer carries the group
      ids.push(job.id);
    }
    ids.push((await qm.addJob(name, "plain")).id);
    const urgent = await qm.addJob(name, "urgent", null, { group: "c", priority: JobPriority.HIGH });
    ids.push(urgent.id);
    assert.equal((await qm.getJob(name, urgent.id)).group, "c");
    assert.equal((await qm.getJob(name, ids[0]!)).group, "a");
    assert.equal((await qm.getJob(name, ids[7]!)).group, "");

    const runs: string[] = [];
    const all = deferred();
    const w = await worker({
      concurrency: 1,
      processors: {
        [name]: async (job: ActiveJob) => {
          runs.push(`${job.name}/${job.group}`);
          if (runs.length === ids.length) {
            all.resolve();
          }
        },
      },
    });
    try {
      await all.promise;
      // HIGH first (its group's only job); at NORMAL the job without a group, then a and b in turns until b
      // runs out.
      assert.deepEqual(runs, ["urgent/c", "plain/", "a0/a", "b0/b", "a1/a", "b1/b", "a2/a", "a3/a", "a4/a"]);
      await allCompleted(name, ids);
    } finally {
      await w.shutdown();
    }
  });
});

describe("per-group limits", () => {
  it("holds a group at its concurrency limit while the worker has slots free; a raised one lets one more start", async () => {
    const name = queueName("group-limit");
    const queue = await qm.registerQueue(name, { groupLimits: { concurrency: 2 } });
    assert.deepEqual(queue.config.groupLimits, { concurrency: 2, rateLimit: undefined, maxSize: 0 });
    const ids: string[] = [];
    for (const i of [0, 1, 2, 3, 4]) {
      ids.push((await qm.addJob(name, `a${i}`, null, { group: "a" })).id);
    }
    for (const i of [0, 1]) {
      ids.push((await qm.addJob(name, `b${i}`, null, { group: "b" })).id);
    }
    // Each run holds its slot until the test lets one of its group end; the worker could run six at once.
    const releases: Record<string, (() => void)[]> = { a: [], b: [] };
    const running: Record<string, number> = { a: 0, b: 0 };
    const most: Record<string, number> = { a: 0, b: 0 };
    const started: string[] = [];
    let waiter: { count: number; done: () => void } | undefined;
    let free = false;
    const starts = (count: number) => {
      const seen = deferred();
      waiter = { count, done: seen.resolve };
      if (started.length >= count) {
        seen.resolve();
      }
      return seen.promise;
    };
    const release = (group: string) => {
      const next = releases[group]!.shift();
      assert.ok(next, `no run of ${group} to release`);
      next();
    };
    const w = await worker({
      concurrency: 6,
      processors: {
        [name]: async (job) => {
          running[job.group]! += 1;
          most[job.group] = Math.max(most[job.group]!, running[job.group]!);
          const gate = deferred();
          releases[job.group]!.push(gate.resolve);
          started.push(job.group);
          if (waiter && started.length >= waiter.count) {
            waiter.done();
          }
          if (!free) {
            await gate.promise;
          }
          running[job.group]! -= 1;
        },
      },
    });
    try {
      await starts(4);
      assert.deepEqual([...started].sort(), ["a", "a", "b", "b"]);
      // Two of a's jobs run and three wait, though the worker has two slots free: the limit holds them.
      let page = await qm.listGroups(name);
      assert.equal(page.totalSize, 2);
      assert.deepEqual(page.items, [
        { group: "a", waiting: 3, active: 2, limits: { concurrency: 2, rateLimit: undefined, maxSize: 0 }, customLimits: false, paused: false },
        { group: "b", waiting: 0, active: 2, limits: { concurrency: 2, rateLimit: undefined, maxSize: 0 }, customLimits: false, paused: false },
      ]);
      // One of a's runs ends: the next of a's jobs takes its place.
      release("a");
      await starts(5);
      assert.equal(started[4], "a");
      const mostBefore = most.a;
      // A limit of a's own, raised while two of its runs are held: one more of its jobs starts at once.
      const raised = await qm.setGroupLimits(name, "a", { concurrency: 3 });
      assert.deepEqual(raised, {
        group: "a",
        waiting: 2,
        active: 2,
        limits: { concurrency: 3, rateLimit: undefined, maxSize: 0 },
        customLimits: true,
        paused: false,
      });
      await starts(6);
      assert.equal(started[5], "a");
      // The rest run as they come.
      free = true;
      for (const group of ["a", "b"]) {
        while (releases[group]!.length) {
          release(group);
        }
      }
      await allCompleted(name, ids);
      assert.equal(mostBefore, 2, "a's runs at once under the queue's limit");
      assert.deepEqual(most, { a: 3, b: 2 });
      // A group with nothing left is forgotten, unless it has limits of its own.
      page = await qm.listGroups(name);
      assert.deepEqual(
        page.items.map((g) => [g.group, g.waiting, g.active, g.customLimits]),
        [["a", 0, 0, true]],
      );
    } finally {
      await w.shutdown();
    }
  });
});

describe("listing and limits", () => {
  it("registers group limits, pages the groups by name, sets and clears a group's own limits", async () => {
    const name = queueName("groups");
    const limits = { concurrency: 3, rateLimit: { max: 5, duration: 1_000, burst: 0 }, maxSize: 0 };
    assert.deepEqual((await qm.registerQueue(name, { groupLimits: limits })).config.groupLimits, limits);
    assert.deepEqual((await qm.getQueue(name)).config.groupLimits, limits);
    const tenant = "tenant/1 é 🚀";
    for (const group of ["b", tenant, "a", "c"]) {
      assert.equal((await qm.addJob(name, "j", null, { group })).group, group);
    }
    await qm.addJob(name, "no group");

    // Two pages of two, by name (code points: the emoji's group last); the queue's limits apply to each.
    const first = await qm.listGroups(name, { pageSize: 2 });
    assert.equal(first.totalSize, 4);
    assert.notEqual(first.nextPageToken, "");
    const second = await qm.listGroups(name, { pageSize: 2, pageToken: first.nextPageToken });
    assert.equal(second.nextPageToken, "");
    const groups = [...first.items, ...second.items];
    assert.deepEqual(
      groups.map((g) => g.group),
      ["a", "b", "c", tenant],
    );
    for (const g of groups) {
      assert.deepEqual(g, { group: g.group, waiting: 1, active: 0, limits, customLimits: false, paused: false });
    }

    // A group's own limits replace the queue's; {} lifts them all; a group with limits is known while idle.
    const own = await qm.setGroupLimits(name, "b", { concurrency: 7 });
    const ownLimits = { concurrency: 7, rateLimit: undefined, maxSize: 0 };
    assert.deepEqual(own, { group: "b", waiting: 1, active: 0, limits: ownLimits, customLimits: true, paused: false });
    const idle = await qm.setGroupLimits(name, "idle", {});
    const none = { concurrency: 0, rateLimit: undefined, maxSize: 0 };
    assert.deepEqual(idle, { group: "idle", waiting: 0, active: 0, limits: none, customLimits: true, paused: false });
    const rated = await qm.setGroupLimits(name, tenant, { rateLimit: { max: 2, duration: 60_000 } });
    assert.deepEqual(rated.limits, { concurrency: 0, rateLimit: { max: 2, duration: 60_000, burst: 0 }, maxSize: 0 });
    const page = await qm.listGroups(name);
    assert.equal(page.totalSize, 5);
    assert.deepEqual(
      page.items.map((g) => [g.group, g.customLimits]),
      [
        ["a", false],
        ["b", true],
        ["c", false],
        ["idle", true],
        [tenant, true],
      ],
    );
    const metrics = await qm.getQueueMetrics(name);
    assert.equal(metrics.groups, 5);
    assert.equal(metrics.waiting, 5);
    for await (const snapshot of qm.watchMetrics(name, { intervalMs: 100 })) {
      assert.equal(snapshot.metrics[0]!.groups, 5);
      break;
    }

    // Cleared, the queue's limits apply again, and an idle group is forgotten.
    const idleCleared = await qm.clearGroupLimits(name, "idle");
    assert.deepEqual(idleCleared, { group: "idle", waiting: 0, active: 0, limits, customLimits: false, paused: false });
    const bCleared = await qm.clearGroupLimits(name, "b");
    assert.deepEqual(bCleared, { group: "b", waiting: 1, active: 0, limits, customLimits: false, paused: false });
    assert.equal((await qm.listGroups(name)).totalSize, 4);
    assert.equal((await qm.getQueueMetrics(name)).groups, 4);

    // registerQueue replaces the whole config: without group limits, the queue has none.
    assert.equal((await qm.registerQueue(name, { disableDeadLetter: true })).config.groupLimits, undefined);
    assert.deepEqual((await qm.listGroups(name)).items[0]!.limits, { concurrency: 0, rateLimit: undefined, maxSize: 0 });
  });
});

describe("pause and resume", () => {
  it("holds a paused group's jobs while another group's run, and runs them once it is resumed", async () => {
    const name = queueName("group-pause");
    await qm.registerQueue(name);
    // Paused before it has jobs: known, idle and paused; pausing again changes nothing.
    const none = { concurrency: 0, rateLimit: undefined, maxSize: 0 };
    const idle = { group: "slow", waiting: 0, active: 0, limits: none, customLimits: false, paused: true };
    assert.deepEqual(await qm.pauseGroup(name, "slow"), idle);
    assert.deepEqual(await qm.pauseGroup(name, "slow"), idle);
    const slow = await qm.addBulk(name, [0, 1].map((i) => ({ name: `s${i}`, options: { group: "slow" } })));
    const fast = await qm.addBulk(name, [0, 1].map((i) => ({ name: `f${i}`, options: { group: "fast" } })));

    const runs: string[] = [];
    const w = await worker({ concurrency: 1, processors: { [name]: async (job: ActiveJob) => void runs.push(job.name) } });
    try {
      // The groups take turns: unpaused, a "slow" job would have run before the second "fast" one.
      await allCompleted(name, fast);
      assert.deepEqual(runs, ["f0", "f1"]);
      for (const id of slow) {
        assert.equal((await qm.getJob(name, id)).state, "waiting");
      }
      const page = await qm.listGroups(name);
      assert.deepEqual(
        page.items.map((g) => [g.group, g.waiting, g.paused]),
        [["slow", 2, true]], // "fast", idle, is forgotten
      );
      assert.equal((await qm.getQueueMetrics(name)).groupsPaused, 1);
      const resumed = await qm.resumeGroup(name, "slow");
      assert.deepEqual([resumed.group, resumed.waiting, resumed.paused], ["slow", 2, false]);
      assert.equal((await qm.getQueueMetrics(name)).groupsPaused, 0);
      await allCompleted(name, slow);
      assert.deepEqual(runs, ["f0", "f1", "s0", "s1"]);
      assert.equal((await qm.resumeGroup(name, "slow")).paused, false); // resuming again changes nothing
    } finally {
      await w.shutdown();
    }
  });
});

describe("bad groups", () => {
  it("refuses a bad group before the call, naming the field, and relays the server's refusals", async () => {
    const name = queueName("bad-groups");
    await qm.registerQueue(name);
    // The limit counts characters (code points) as the server does, not UTF-16 units or bytes.
    const longest = "é".repeat(127) + "🚀";
    assert.equal((await qm.addJob(name, "longest", null, { group: longest })).group, longest);

    const refusedJobs: [unknown, new (...args: never[]) => Error, RegExp][] = [
      [longest + "é", RangeError, /^job\.options\.group must be 1 to 128 characters, got 129$/],
      ["", RangeError, /^job\.options\.group must be 1 to 128 characters, got 0$/],
      ["a\nb", RangeError, /^job\.options\.group "a\\nb" must not contain control characters \(found U\+000A\)$/],
      ["a\u2028b", RangeError, /must not contain control characters \(found U\+2028\)$/],
      ["tab\there", RangeError, /\(found U\+0009\)/],
      ["del\u007f", RangeError, /\(found U\+007F\)/],
      ["nul\u0000", RangeError, /\(found U\+0000\)/],
      ["half\ud83d", RangeError, /must not contain a lone surrogate \(U\+D83D\), which is not Unicode text/],
      [42, TypeError, /^job\.options\.group must be a string, not number$/],
    ];
    for (const [group, kind, words] of refusedJobs) {
      const err = await qm.addJob(name, "j", null, { group: group as string }).catch((e: unknown) => e);
      assert.ok(err instanceof kind, `${JSON.stringify(group)}: ${String(err)}`);
      assert.match((err as Error).message, words);
    }
    const chained = { chainTo: [{ queueName: name, jobName: "next", options: { group: "x\ny" } }] };
    await assert.rejects(
      qm.addJob(name, "j", null, chained),
      /job\.options\.chainTo\[0\]\.options\.group "x\\ny" must not contain/,
    );
    await assert.rejects(
      qm.addBulk(name, [{ name: "ok" }, { name: "j", options: { group: "" } }]),
      /jobs\[1\]\.options\.group must be 1 to 128/,
    );
    await assert.rejects(qm.setGroupLimits(name, "", {}), /^RangeError: group must be 1 to 128 characters, got 0$/);
    await assert.rejects(
      qm.clearGroupLimits(name, "a\u0000"),
      /group "a\\u0000" must not contain control characters \(found U\+0000\)/,
    );
    await assert.rejects(
      qm.setGroupLimits(name, "g", { concurency: 2 } as never),
      /limits has unknown key\(s\) concurency; known: concurrency, rateLimit, maxSize/,
    );
    await assert.rejects(
      qm.setGroupLimits(name, "g", { concurrency: -1 }),
      /limits\.concurrency must be a whole number of at least 0, got -1/,
    );
    await assert.rejects(
      qm.setGroupLimits(name, "g", { rateLimit: { max: 5, duration: 0 } }),
      /limits\.rateLimit\.duration must be more than 0 ms when max is set, got 0/,
    );
    await assert.rejects(
      qm.registerQueue(name, { groupLimits: null as never }),
      /^TypeError: groupLimits must be an object \{ concurrency, rateLimit, maxSize \}, not null$/,
    );
    await assert.rejects(
      qm.registerQueue(name, { groupLimits: { rateLimit: { max: 1.5, duration: 1_000 } } }),
      /groupLimits\.rateLimit\.max must be a whole number of at least 0, got 1\.5/,
    );

    // The server's refusals: INVALID_ARGUMENT naming the field, NOT_FOUND for a queue it does not know.
    const inDefaults = await qm.registerQueue(name, { defaultJobOptions: { group: "a" } }).catch((e: unknown) => e);
    assert.ok(inDefaults instanceof InvalidArgumentError, String(inDefaults));
    assert.match(inDefaults.message, /config\.default_job_options\.group/);
    await assert.rejects(qm.listGroups(`${name}-none`), NotFoundError);
    await assert.rejects(qm.setGroupLimits(`${name}-none`, "g", { concurrency: 1 }), NotFoundError);
    await assert.rejects(qm.pauseGroup(`${name}-none`, "g"), NotFoundError);
    await assert.rejects(qm.resumeGroup(`${name}-none`, "g"), NotFoundError);
    await assert.rejects(qm.pauseGroup(name, ""), /^RangeError: group must be 1 to 128 characters, got 0$/);
    await assert.rejects(qm.resumeGroup(name, 7 as never), /^TypeError: group must be a string, not number$/);
    await assert.rejects(qm.listGroups(name, { pageSize: 1_001 }), InvalidArgumentError);

    // Only the job with the longest group was added, and no group was made.
    const page = await qm.listGroups(name);
    assert.deepEqual(
      page.items.map((g) => [g.group, g.waiting, g.customLimits]),
      [[longest, 1, false]],
    );
  });
});
