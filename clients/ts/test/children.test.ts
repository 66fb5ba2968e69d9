/**
 * Children added at run time against the live server: `ctx.waitForChildren` adds the children, parks the job
 * (delayed, no due time, no slot held, nothing reported for the run) and the job runs again with their
 * outcomes in `job.children`; a refused call comes back to the processor, whose run goes on.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { InvalidArgumentError, WaitingForChildrenError, type ActiveJob, type JobContext, type QueueManager } from "../src/index.js";
import { client, deferred, queueName, until, worker } from "./helpers.js";

let qm: QueueManager;

before(() => {
  qm = client();
});

after(async () => {
  await qm.shutdown();
});

async function freshQueue(prefix: string): Promise<string> {
  const name = queueName(prefix);
  await qm.registerQueue(name);
  return name;
}

describe("waitForChildren", () => {
  it("adds three children, parks the job, and runs it again to sum their results", async () => {
    const files = await freshQueue("files");
    const chunks = await freshQueue("chunks");
    const runs: unknown[] = [];
    const failed: unknown[] = [];
    let waiting: WaitingForChildrenError | undefined;
    const childStarted = deferred();
    const release = deferred();
    // One slot: the children can run only if the parked parent holds none.
    const w = await worker({
      concurrency: 1,
      processors: {
        [files]: async (job: ActiveJob, ctx: JobContext) => {
          runs.push(job.data);
          if (job.children.length === 0) {
            try {
              await ctx.waitForChildren(
                [1, 2, 3].map((n) => ({ queueName: chunks, name: "square", data: { n } })),
                { data: { step: "combine" } },
              );
            } catch (err) {
              waiting = err as WaitingForChildrenError;
              throw err;
            }
            assert.fail("waitForChildren returns only by rejecting");
          }
          return {
            sum: job.children.reduce((total, c) => total + (c.result as number), 0),
            states: job.children.map((c) => c.state),
          };
        },
        [chunks]: async (job: ActiveJob) => {
          childStarted.resolve();
          await release.promise;
          return (job.data as { n: number }).n ** 2;
        },
      },
    });
    w.on("failed", (job: ActiveJob, err: unknown) => failed.push([job.queueName, err]));
    try {
      const parent = await qm.addJob(files, "split", { step: "split" }, { attempts: 1 });
      await childStarted.promise;

      // Parked: delayed with no due time, its checkpoint written, its children listed as not finished. A child
      // can start before the call's answer reaches the parent's processor: wait for that too.
      await until(() => waiting !== undefined);
      assert.ok(waiting instanceof WaitingForChildrenError);
      assert.equal(waiting.pending, 3);
      const parked = await qm.getJob(files, parent.id);
      assert.equal(parked.state, "delayed");
      assert.equal(parked.runAt, undefined);
      assert.deepEqual(parked.data, { step: "combine" });
      assert.equal(parked.attemptsMade, 0);
      assert.equal(parked.childrenPending, 3);
      assert.deepEqual(
        parked.childJobs.map((c) => [c.queueName, c.jobId, c.state]),
        waiting.children.map((c) => [chunks, c.jobId, undefined]),
      );
      // Each child's state now, from the same getJob: the one slot runs the first, the others wait.
      assert.deepEqual(
        parked.childJobs.map((c) => c.currentState),
        ["active", "waiting", "waiting"],
      );

      release.resolve();
      const done = await qm.waitForJob(files, parent.id, { timeoutMs: 15_000 });
      assert.equal(done.state, "completed");
      assert.deepEqual(done.result, { sum: 1 + 4 + 9, states: ["completed", "completed", "completed"] });
      assert.equal(done.attemptsMade, 1);
      assert.equal(done.childrenPending, 0);
      assert.deepEqual(
        done.childJobs.map((c) => [c.jobId, c.result, c.truncated, c.failedReason]),
        waiting.children.map((c, i) => [c.jobId, (i + 1) ** 2, false, ""]),
      );
      assert.deepEqual(runs, [{ step: "split" }, { step: "combine" }]);
      // The parked run reported nothing: no failure (a report would be refused as a lost lease).
      assert.deepEqual(failed, []);
    } finally {
      await w.shutdown();
    }
  });

  it("waits for the existing job a child names by its jobId instead of adding one", async () => {
    const parents = await freshQueue("named-parent");
    const kids = await freshQueue("named-kids");
    const existing = await qm.addJob(kids, "existing", { n: 4 }, { jobId: "report-1" });
    const w = await worker({
      processors: {
        [parents]: async (job: ActiveJob, ctx: JobContext) => {
          if (job.children.length === 0) {
            await ctx.waitForChildren([{ queueName: kids, name: "ignored", data: { n: 100 }, options: { jobId: "report-1" } }]);
          }
          return job.children.map((c) => [c.jobId, c.result]);
        },
        [kids]: async (job: ActiveJob) => (job.data as { n: number }).n * 10,
      },
    });
    try {
      const parent = await qm.addJob(parents, "parent", null, { attempts: 1 });
      const done = await qm.waitForJob(parents, parent.id, { timeoutMs: 15_000 });
      assert.equal(done.state, "completed");
      assert.deepEqual(done.result, [[existing.id, 40]]);
      // The existing job as it was (it may have finished before the parent named it: it counted at once).
      const child = await qm.getJob(kids, "report-1");
      assert.deepEqual(child.data, { n: 4 });
    } finally {
      await w.shutdown();
    }
  });

  it("runs the job again once a child it waits for is removed, showing the child removed", async () => {
    const parents = await freshQueue("removed-parent");
    const kids = await freshQueue("removed-kids"); // no processor: the child waits until removed
    const parked = deferred();
    const w = await worker({
      processors: {
        [parents]: async (job: ActiveJob, ctx: JobContext) => {
          if (job.children.length === 0) {
            try {
              await ctx.waitForChildren([{ queueName: kids, name: "gone", options: { jobId: "gone" } }]);
            } finally {
              parked.resolve();
            }
          }
          return job.children.map((c) => [c.jobId, c.removed, c.state ?? null, c.failedReason]);
        },
      },
    });
    try {
      const parent = await qm.addJob(parents, "parent", null, { attempts: 1 });
      await parked.promise;
      await qm.removeJob(kids, "gone");
      const done = await qm.waitForJob(parents, parent.id, { timeoutMs: 15_000 });
      assert.equal(done.state, "completed");
      assert.deepEqual(done.result, [["gone", true, null, "removed by RemoveJob"]]);
      assert.deepEqual(done.childJobs.map((c) => c.removed), [true]);
    } finally {
      await w.shutdown();
    }
  });

  it("hands a refusal back to the processor, whose run goes on and completes", async () => {
    const name = await freshQueue("refused");
    const w = await worker({
      processors: {
        [name]: async (_job: ActiveJob, ctx: JobContext) => {
          try {
            await ctx.waitForChildren([{ queueName: queueName("unregistered"), name: "child" }]);
          } catch (err) {
            assert.ok(err instanceof InvalidArgumentError, String(err));
            return { refused: err.codeName };
          }
          assert.fail("a child in an unregistered queue must be refused");
        },
      },
    });
    try {
      const job = await qm.addJob(name, "parent", null, { attempts: 1 });
      const done = await qm.waitForJob(name, job.id, { timeoutMs: 15_000 });
      assert.equal(done.state, "completed");
      assert.deepEqual(done.result, { refused: "INVALID_ARGUMENT" });
      assert.deepEqual(done.childJobs, []);
      assert.equal(done.childrenPending, 0);
    } finally {
      await w.shutdown();
    }
  });

  it("refuses malformed children before anything is sent", async () => {
    const name = await freshQueue("malformed");
    const seen = deferred<unknown[]>();
    const w = await worker({
      processors: {
        [name]: async (_job: ActiveJob, ctx: JobContext) => {
          const errors = await Promise.all([
            ctx.waitForChildren([{ queueName: "bad:name", name: "c" }]).catch((e: unknown) => e),
            ctx.waitForChildren([{ queueName: name, name: "c", jobId: "x" } as never]).catch((e: unknown) => e),
            ctx.waitForChildren({} as never).catch((e: unknown) => e),
          ]);
          seen.resolve(errors);
          return null;
        },
      },
    });
    try {
      await qm.addJob(name, "parent");
      const [badQueue, unknownKey, notArray] = await seen.promise;
      assert.match(String(badQueue), /children\[0\]\.queueName "bad:name"/);
      assert.match(String(unknownKey), /children\[0\] has unknown key\(s\) jobId/);
      assert.match(String(notArray), /children must be an array/);
    } finally {
      await w.shutdown();
    }
  });
});
