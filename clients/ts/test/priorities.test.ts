/** Priority bounds (registered, read back, refused, and moving a job ahead) and per-level metrics. */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { JobPriority, NotFoundError, type QueueManager } from "../src/index.js";
import { client, queueName } from "./helpers.js";

let qm: QueueManager;

before(() => {
  qm = client();
});

after(async () => {
  await qm.shutdown();
});

/** Resolves once `check` answers true; fails after `timeoutMs`, with what it last saw. */
async function until(check: () => Promise<boolean>, what: () => string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    assert.ok(Date.now() < deadline, `not within ${timeoutMs} ms: ${what()}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

describe("priority bounds", () => {
  it("registers bounds given by name, number or enum and reads them back by level, HIGH first", async () => {
    const name = queueName("bounds");
    const queue = await qm.registerQueue(name, {
      priorityBounds: { background: 300_000, 2: 1_500, [JobPriority.LOW]: 60_000 },
    });
    const expected = { high: 1_500, low: 60_000, background: 300_000 };
    assert.deepEqual(queue.config.priorityBounds, expected);
    const read = (await qm.getQueue(name)).config.priorityBounds;
    assert.deepEqual(read, expected);
    assert.deepEqual(Object.keys(read), ["high", "low", "background"]);
    const fromMap = await qm.registerQueue(name, { priorityBounds: new Map([["NORMAL", 2_000]]) });
    assert.deepEqual(fromMap.config.priorityBounds, { normal: 2_000 });
    // register replaces the whole config: no bounds is strict priority again.
    assert.deepEqual((await qm.registerQueue(name)).config.priorityBounds, {});
  });

  it("refuses bad bounds before the call, naming the entry", async () => {
    const name = queueName("bad-bounds");
    const refused: [unknown, new (...args: never[]) => Error, RegExp][] = [
      [{ critical: 5_000 }, RangeError, /CRITICAL jobs run first already/],
      [{ background: 60 }, RangeError, /priorityBounds\.background is 60 ms: a bound is from 1 second to 30 days/],
      [{ low: 31 * 24 * 3600 * 1000 }, RangeError, /priorityBounds\.low is 2678400000 ms/],
      [{ background: 5_000, 5: 6_000 }, RangeError, /background is given twice/],
      [{ urgent: 5_000 }, RangeError, /a priorityBounds level must be one of critical, high, normal, low, background/],
      [{ low: -1 }, RangeError, /priorityBounds\.low must be a number of milliseconds/],
      [{ low: "60s" }, RangeError, /priorityBounds\.low must be a number of milliseconds/],
      [[["low", 5_000]], TypeError, /priorityBounds must be an object of levels to milliseconds/],
      [null, TypeError, /not null/],
    ];
    for (const [bounds, kind, words] of refused) {
      const err = await qm.registerQueue(name, { priorityBounds: bounds as never }).catch((e: unknown) => e);
      assert.ok(err instanceof kind, `${JSON.stringify(bounds)}: ${String(err)}`);
      assert.match((err as Error).message, words);
    }
    await assert.rejects(qm.getQueue(name), NotFoundError); // nothing was sent
  });

  it("moves a background job that has waited its bound ahead of a waiting high job", async () => {
    const bounded = queueName("bounded");
    const strict = queueName("strict");
    await qm.registerQueue(bounded, { priorityBounds: { background: 1_000 } });
    await qm.registerQueue(strict);
    const order = async (queue: string) => (await qm.listJobs(queue, "waiting")).items.map((j) => j.name);
    for (const queue of [bounded, strict]) {
      await qm.addJob(queue, "old-background", null, { priority: "background" });
      await qm.addJob(queue, "high", null, { priority: JobPriority.HIGH });
      assert.deepEqual(await order(queue), ["high", "old-background"]);
    }
    let seen: string[] = [];
    // Listed in the order they run: the server's sweep (every second) moves it after its 1 s bound.
    await until(async () => (seen = await order(bounded))[0] === "old-background", () => seen.join(","));
    assert.deepEqual(await order(strict), ["high", "old-background"]);
    const moved = (await qm.listJobs(bounded, "waiting")).items[0]!;
    assert.equal(moved.priority, JobPriority.BACKGROUND); // a moved job keeps its priority
  });
});

describe("per-level metrics", () => {
  it("counts the ready jobs of every level, CRITICAL first, with the oldest one's wait", async () => {
    const name = queueName("levels");
    await qm.registerQueue(name);
    await qm.addJob(name, "c", null, { priority: "critical" });
    await qm.addJob(name, "n1", null);
    await qm.addJob(name, "n2", null);
    await qm.addJob(name, "b", null, { priority: "background" });
    const metrics = await qm.getQueueMetrics(name);
    assert.deepEqual(
      metrics.levels.map((l) => [l.priority, l.waiting]),
      [
        [JobPriority.CRITICAL, 1],
        [JobPriority.HIGH, 0],
        [JobPriority.NORMAL, 2],
        [JobPriority.LOW, 0],
        [JobPriority.BACKGROUND, 1],
      ],
    );
    for (const level of metrics.levels) {
      if (level.waiting === 0) {
        assert.equal(level.oldestWaitingAge, undefined);
      } else {
        assert.ok(typeof level.oldestWaitingAge === "number" && level.oldestWaitingAge >= 0, String(level.oldestWaitingAge));
      }
    }
    const oldest = Math.max(...metrics.levels.map((l) => l.oldestWaitingAge ?? 0));
    assert.equal(metrics.oldestWaitingAge, oldest);

    // A paused queue's ready jobs count too; the metrics stream carries the levels.
    await qm.pauseQueue(name);
    for await (const snapshot of qm.watchMetrics(name, { intervalMs: 100 })) {
      assert.deepEqual(snapshot.metrics[0]!.levels.map((l) => l.waiting), [1, 0, 2, 0, 1]);
      break;
    }
  });
});
