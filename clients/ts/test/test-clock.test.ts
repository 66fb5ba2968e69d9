/**
 * A test server's clock from TypeScript (`qm test-server`, docs/testing.md): a delayed job waits until the
 * clock is moved past its time, a retry's backoff passes at once, the clock reads what was moved, a negative
 * move is refused before any call, and a server on real time refuses with FailedPreconditionError.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { FailedPreconditionError, QueueManager, type ActiveJob } from "../src/index.js";
import { client, queueName, worker } from "./helpers.js";

const HOUR = 3_600_000;
let qm: QueueManager;

before(() => {
  qm = client();
});

after(async () => {
  await qm.shutdown();
});

describe("test clock", () => {
  it("moves a delayed job to waiting once advanced past its time, and reads the moved clock", async () => {
    const name = queueName("clock-delay");
    await qm.registerQueue(name);
    const before = await qm.testClockNow();
    const job = await qm.addJob(name, "remind", { to: "a@example.com" }, { delay: 24 * HOUR });
    await qm.advanceTestClock(23 * HOUR);
    assert.equal((await qm.getJob(name, job.id)).state, "delayed");
    const now = await qm.advanceTestClock(HOUR);
    assert.equal((await qm.getJob(name, job.id)).state, "waiting");
    const moved = now.getTime() - before.getTime();
    assert.ok(moved >= 24 * HOUR && moved < 24 * HOUR + 60_000, `clock moved ${moved} ms`);
    assert.ok((await qm.testClockNow()).getTime() >= now.getTime());
  });

  it("lets a retry's backoff pass at once for a connected worker", async () => {
    const name = queueName("clock-retry");
    await qm.registerQueue(name);
    const attempts: number[] = [];
    const w = await worker({
      concurrency: 1,
      processors: {
        [name]: async (job: ActiveJob) => {
          attempts.push(job.attemptsMade);
          if (attempts.length === 1) throw new Error("first attempt fails");
          return "done";
        },
      },
    });
    const events = qm.watchJobEvents(name);
    try {
      await events.ready();
      const job = await qm.addJob(name, "flaky", null, { attempts: 2, backoff: { type: "fixed", delay: 10 * 60_000 } });
      // The first attempt fails and the retry waits its 10-minute backoff.
      for await (const event of events) {
        if (event.jobId === job.id && event.type === "retrying") break;
      }
      assert.equal((await qm.getJob(name, job.id)).state, "delayed");
      await qm.advanceTestClock(10 * 60_000);
      const done = await qm.waitForJob(name, job.id, { timeoutMs: 20_000 });
      assert.equal(done.state, "completed");
      assert.equal(attempts.length, 2);
    } finally {
      events.close();
      await w.shutdown();
    }
  });

  it("refuses a negative move before any call", async () => {
    await assert.rejects(qm.advanceTestClock(-1), RangeError);
  });

  it("is refused by a server on real time", async () => {
    const realTime = new QueueManager({ address: process.env.QM_TEST_REALTIME_ADDRESS, token: null });
    try {
      await assert.rejects(qm.advanceTestClock(0).then(() => realTime.advanceTestClock(HOUR)), (err: unknown) => {
        assert.ok(err instanceof FailedPreconditionError, String(err));
        assert.match(err.message, /real time.*qm test-server/);
        return true;
      });
      await assert.rejects(realTime.testClockNow(), FailedPreconditionError);
    } finally {
      await realTime.shutdown();
    }
  });
});
