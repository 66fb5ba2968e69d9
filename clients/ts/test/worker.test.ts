/** The stream worker against the live server: outcomes, retries, order, delays, bulk, cancel, shutdown. */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import {
  batch,
  DelayedError,
  JobAbortedError,
  JobPriority,
  RateLimitedError,
  UnrecoverableError,
  type ActiveJob,
  type QueueManager,
} from "../src/index.js";
import { aborted, client, deferred, nextEvent, queueName, worker } from "./helpers.js";
import { TcpProxy } from "./proxy.js";

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

describe("outcomes", () => {
  it("completes a job with the processor's result, progress and log lines", async () => {
    const name = await freshQueue("complete");
    const w = await worker({
      processors: {
        [name]: async (job, ctx) => {
          ctx.log(`working on ${job.id}`);
          ctx.updateProgress({ done: 50 });
          return { doubled: (job.data as { n: number }).n * 2, attempt: job.attemptsMade + 1 };
        },
      },
      labels: { role: "test" },
    });
    try {
      const listed = (await qm.listWorkers(name)).find((info) => info.workerId === w.workerId);
      assert.equal(listed?.language, "typescript");
      assert.equal(listed?.labels.role, "test");
      const job = await qm.addJob(name, "double", { n: 21 });
      const done = await qm.waitForJob(name, job.id, { timeoutMs: 15_000 });
      assert.equal(done.state, "completed");
      assert.deepEqual(done.result, { doubled: 42, attempt: 1 });
      assert.deepEqual(done.progress, { done: 50 });
      assert.deepEqual(done.logs.map((l) => l.message), [`working on ${job.id}`]);
      assert.equal(done.attemptsMade, 1);
    } finally {
      await w.shutdown();
    }
  });

  it("retries a failing job, then fails it for good with the last error", async () => {
    const name = await freshQueue("retry");
    const runs: string[] = [];
    const w = await worker({
      processors: {
        [name]: async (job) => {
          runs.push(`${job.name} ${job.attemptsMade + 1}`);
          if (job.name === "fatal") {
            throw new UnrecoverableError("bad input");
          }
          throw new Error(`boom ${job.attemptsMade + 1}`);
        },
      },
    });
    try {
      const job = await qm.addJob(name, "flaky", null, { attempts: 3, backoff: { type: "fixed", delay: 20 } });
      const done = await qm.waitForJob(name, job.id, { timeoutMs: 15_000 });
      assert.equal(done.state, "failed");
      assert.deepEqual(runs, ["flaky 1", "flaky 2", "flaky 3"]);
      assert.equal(done.attemptsMade, 3);
      assert.equal(done.failedReason, "boom 3");
      assert.match(done.stacktrace, /Error: boom 3/);
      // UnrecoverableError skips the attempts left.
      const fatal = await qm.addJob(name, "fatal", null, { attempts: 5 });
      const failed = await qm.waitForJob(name, fatal.id, { timeoutMs: 15_000 });
      assert.equal(failed.state, "failed");
      assert.equal(failed.failedReason, "bad input");
      assert.equal(failed.attemptsMade, 1);
      assert.deepEqual(runs.slice(3), ["fatal 1"]);
    } finally {
      await w.shutdown();
    }
  });

  it("sleeps between steps with DelayedError: no attempt used, the checkpoint written with the delay", async () => {
    const name = await freshQueue("sleep");
    const runs: [unknown, number, number][] = [];
    const w = await worker({
      processors: {
        [name]: async (job) => {
          runs.push([job.data, job.attemptsMade, Date.now()]);
          const step = (job.data as { step: number }).step;
          if (step === 1) {
            throw new DelayedError(300, { step: 2 });
          }
          if (runs.length === 2) {
            throw new DelayedError(0); // data kept
          }
          return { steps: runs.length };
        },
      },
    });
    try {
      const job = await qm.addJob(name, "steps", { step: 1 }, { attempts: 1 });
      const done = await qm.waitForJob(name, job.id, { timeoutMs: 15_000 });
      assert.equal(done.state, "completed");
      assert.deepEqual(done.result, { steps: 3 });
      assert.equal(done.attemptsMade, 1);
      assert.deepEqual(runs.map(([data, attempts]) => [data, attempts]), [
        [{ step: 1 }, 0],
        [{ step: 2 }, 0],
        [{ step: 2 }, 0],
      ]);
      assert.ok(runs[1]![2] - runs[0]![2] >= 290);
      assert.throws(() => new DelayedError(-1), /delayMs must be a number of milliseconds of at least 0/);
    } finally {
      await w.shutdown();
    }
  });

  it("hands jobs to a batch handler, each job keeping its own outcome", async () => {
    const name = await freshQueue("batch");
    const calls: string[][] = [];
    const w = await worker({
      concurrency: 10,
      processors: {
        [name]: batch(
          async (items) => {
            calls.push(items.map(({ job }) => job.id));
            return items.map(({ job }) => {
              const i = (job.data as { i: number }).i;
              return i === 4 ? new Error("bad row 4") : i * 10;
            });
          },
          { size: 3, waitMs: 30_000 },
        ),
      },
    });
    try {
      const ids = await qm.addBulk(name, [0, 1, 2, 3, 4, 5].map((i) => ({ name: "row", data: { i }, options: { attempts: 1 } })));
      const done = await Promise.all(ids.map((id) => qm.waitForJob(name, id, { timeoutMs: 15_000 })));
      // waitMs is 30 s: only full batches could have left by now.
      assert.deepEqual(calls.map((c) => c.length), [3, 3]);
      assert.deepEqual(done.map((j) => j.state), ["completed", "completed", "completed", "completed", "failed", "completed"]);
      assert.deepEqual(done.map((j) => j.result), [0, 10, 20, 30, undefined, 50]);
      assert.equal(done[4]!.failedReason, "bad row 4");
      assert.throws(() => batch(async () => undefined, { size: 0 }), /size must be an integer from 1 to 100000, got 0/);
    } finally {
      await w.shutdown();
    }
  });

  it("saves a checkpoint with ctx.updateData: the next attempt starts from it", async () => {
    const name = await freshQueue("checkpoint");
    const seen: unknown[] = [];
    const w = await worker({
      processors: {
        [name]: async (job, ctx) => {
          seen.push(job.data);
          let step = (job.data as { step: number }).step;
          while (step < 3) {
            step += 1;
            await ctx.updateData({ file: "a.csv", step });
            assert.deepEqual(job.data, { file: "a.csv", step }); // job.data reads the saved value
            if (job.attemptsMade === 0 && step === 2) {
              throw new Error("crashed after step 2");
            }
          }
          await assert.rejects(ctx.updateData({ big: 1n }), TypeError); // not JSON: refused before sending
          return `done from step ${(seen.at(-1) as { step: number }).step}`;
        },
      },
    });
    try {
      const job = await qm.addJob(name, "import", { file: "a.csv", step: 0 }, { attempts: 2 });
      const done = await qm.waitForJob(name, job.id, { timeoutMs: 15_000 });
      assert.equal(done.state, "completed");
      assert.deepEqual(seen, [
        { file: "a.csv", step: 0 },
        { file: "a.csv", step: 2 },
      ]);
      assert.equal(done.result, "done from step 2");
      assert.deepEqual(done.data, { file: "a.csv", step: 3 });
    } finally {
      await w.shutdown();
    }
  });

  it("sends a rate-limited job back without using an attempt", async () => {
    const name = await freshQueue("ratelimited");
    let runs = 0;
    const w = await worker({
      processors: {
        [name]: async () => {
          runs += 1;
          if (runs === 1) {
            throw new RateLimitedError(100, "429 from downstream");
          }
          return "second time lucky";
        },
      },
    });
    try {
      const job = await qm.addJob(name, "limited", null, { attempts: 1 });
      const done = await qm.waitForJob(name, job.id, { timeoutMs: 15_000 });
      assert.equal(done.state, "completed");
      assert.equal(done.result, "second time lucky");
      assert.equal(runs, 2);
    } finally {
      await w.shutdown();
    }
  });
});

describe("timeout", () => {
  it("fires the AbortSignal of a run past its timeout; the attempt fails and is retried", async () => {
    const name = await freshQueue("timeout");
    const reasons: unknown[] = [];
    const w = await worker({
      processors: {
        [name]: async (job, ctx) => {
          if (job.name === "recovers" && job.attemptsMade > 0) {
            return "second run";
          }
          // Hangs until told to stop: the worker's own timer ("timeout") or the server's CANCEL_JOB
          // ("cancelled"), whichever comes first at the deadline.
          reasons.push(await aborted(ctx.signal, 15_000));
          return "too late";
        },
      },
    });
    try {
      const hangs = await qm.addJob(name, "hangs", null, { timeout: 200, attempts: 1 });
      const failed = await qm.waitForJob(name, hangs.id, { timeoutMs: 15_000 });
      assert.equal(failed.state, "failed");
      assert.equal(failed.failedReason, "job timed out after 0.2s");
      assert.equal(failed.attemptsMade, 1);
      assert.equal(failed.result, undefined);
      const recovers = await qm.addJob(name, "recovers", null, { timeout: 200, attempts: 2, backoff: { type: "fixed", delay: 200 } });
      const done = await qm.waitForJob(name, recovers.id, { timeoutMs: 15_000 });
      assert.equal(done.state, "completed");
      assert.equal(done.result, "second run");
      assert.equal(done.attemptsMade, 2);
      assert.equal(reasons.length, 2);
      for (const why of reasons) {
        assert.ok(why instanceof JobAbortedError, `signal reason: ${String(why)}`);
        assert.ok(why.kind === "timeout" || why.kind === "cancelled", why.kind);
      }
    } finally {
      await w.shutdown();
    }
  });
});

describe("order and timing", () => {
  it("runs waiting jobs by priority, FIFO within a level", async () => {
    const name = await freshQueue("priority");
    await qm.pauseQueue(name);
    const plan: [string, JobPriority][] = [
      ["low-1", JobPriority.LOW],
      ["normal-1", JobPriority.NORMAL],
      ["critical-1", JobPriority.CRITICAL],
      ["background-1", JobPriority.BACKGROUND],
      ["high-1", JobPriority.HIGH],
      ["normal-2", JobPriority.NORMAL],
      ["critical-2", JobPriority.CRITICAL],
    ];
    for (const [label, priority] of plan) {
      await qm.addJob(name, label, null, { priority });
    }
    const order: string[] = [];
    const all = deferred();
    const w = await worker({
      concurrency: 1,
      processors: {
        [name]: async (job) => {
          order.push(job.name);
          if (order.length === plan.length) {
            all.resolve();
          }
        },
      },
    });
    try {
      await qm.resumeQueue(name);
      await all.promise;
      assert.deepEqual(order, ["critical-1", "critical-2", "high-1", "normal-1", "normal-2", "low-1", "background-1"]);
    } finally {
      await w.shutdown();
    }
  });

  it("runs a delayed job no earlier than its delay", async () => {
    const name = await freshQueue("delayed");
    const w = await worker({ processors: { [name]: async (job) => job.data } });
    try {
      const job = await qm.addJob(name, "later", "hello", { delay: 700 });
      assert.equal(job.state, "delayed");
      const done = await qm.waitForJob(name, job.id, { timeoutMs: 15_000 });
      assert.equal(done.state, "completed");
      assert.equal(done.result, "hello");
      const waited = done.processedAt!.getTime() - done.createdAt!.getTime();
      assert.ok(waited >= 690, `started ${waited} ms after the add`);
    } finally {
      await w.shutdown();
    }
  });

  it("processes 1,000 bulk-added jobs exactly once", async () => {
    const name = await freshQueue("bulk");
    const seen = new Map<string, number>();
    const all = deferred();
    const w = await worker({
      concurrency: 50,
      processors: {
        [name]: async (job) => {
          seen.set(job.id, (seen.get(job.id) ?? 0) + 1);
          if (seen.size === 1000) {
            all.resolve();
          }
          return job.data;
        },
      },
    });
    const ids = await qm.addBulk(name, Array.from({ length: 1000 }, (_, i) => ({ name: "bulk", data: i })));
    assert.equal(ids.length, 1000);
    assert.equal(new Set(ids).size, 1000);
    await all.promise;
    await w.shutdown(); // flushes the last outcomes and waits until the server recorded them
    assert.deepEqual([...seen.keys()].sort(), [...ids].sort());
    assert.deepEqual([...new Set(seen.values())], [1]);
    const metrics = await qm.getQueueMetrics(name);
    assert.equal(metrics.completed, 1000);
    assert.equal(metrics.waiting + metrics.active + metrics.failed, 0);
  });
});

describe("cancel and shutdown", () => {
  it("fires the AbortSignal of a running job that is cancelled, which then ends cancelled", async () => {
    const name = await freshQueue("cancel");
    const started = deferred<ActiveJob>();
    const reason = deferred<unknown>();
    const w = await worker({
      processors: {
        [name]: async (job, ctx) => {
          started.resolve(job);
          reason.resolve(await aborted(ctx.signal, 15_000));
          return "finished anyway";
        },
      },
    });
    try {
      const job = await qm.addJob(name, "long", null);
      await started.promise;
      const asked = await qm.cancelJob(name, job.id, "stop it");
      assert.equal(asked.cancelRequested, true);
      const why = await reason.promise;
      assert.ok(why instanceof JobAbortedError, `signal reason: ${String(why)}`);
      assert.equal(why.kind, "cancelled");
      assert.match(why.message, /stop it/);
      const done = await qm.waitForJob(name, job.id, { timeoutMs: 15_000 });
      assert.equal(done.state, "cancelled");
      assert.equal(done.result, undefined);
    } finally {
      await w.shutdown();
    }
  });

  it("finishes running jobs on a graceful shutdown", async () => {
    const name = await freshQueue("graceful");
    const started = deferred();
    const release = deferred();
    const w = await worker({
      processors: {
        [name]: async () => {
          started.resolve();
          await release.promise;
          return "done before closing";
        },
      },
    });
    const job = await qm.addJob(name, "slow", null);
    await started.promise;
    const closing = w.shutdown(15_000);
    const later = await qm.addJob(name, "after-stop", null);
    setTimeout(() => release.resolve(), 200);
    await closing;
    const done = await qm.getJob(name, job.id);
    assert.equal(done.state, "completed");
    assert.equal(done.result, "done before closing");
    // Nothing started after the stop: the later job still waits for another worker.
    assert.equal((await qm.getJob(name, later.id)).state, "waiting");
  });

  it("abandons jobs still running after the grace, which another worker then runs", async () => {
    const name = await freshQueue("abandon");
    const started = deferred();
    const reason = deferred<unknown>();
    const stuck = await worker({
      processors: {
        [name]: async (_job, ctx) => {
          started.resolve();
          reason.resolve(await aborted(ctx.signal, 15_000));
          await new Promise(() => {}); // ignores its signal: never ends
        },
      },
    });
    const job = await qm.addJob(name, "stuck", null);
    await started.promise;
    await stuck.shutdown(200);
    const why = await reason.promise;
    assert.ok(why instanceof JobAbortedError && why.kind === "shutdown", String(why));
    const rescuer = await worker({ processors: { [name]: async (j) => `rescued ${j.stalledCount}` } });
    try {
      const done = await qm.waitForJob(name, job.id, { timeoutMs: 15_000 });
      assert.equal(done.state, "completed");
      assert.equal(done.result, "rescued 1");
    } finally {
      await rescuer.shutdown();
    }
  });

  it("reconnects after the connection is cut; the interrupted run loses its lease and the job runs again", async () => {
    const name = await freshQueue("reconnect");
    const proxy = await TcpProxy.start(process.env.QM_TEST_ADDRESS!);
    const firstStarted = deferred();
    const firstReason = deferred<unknown>();
    const w = await worker({
      address: proxy.address,
      reconnect: { initialDelayMs: 50, maxDelayMs: 200 },
      processors: {
        [name]: async (job, ctx) => {
          if (!job.redelivery) {
            firstStarted.resolve();
            firstReason.resolve(await aborted(ctx.signal, 15_000));
            return "first run";
          }
          return `second run (stalled ${job.stalledCount})`;
        },
      },
    });
    try {
      const job = await qm.addJob(name, "interrupted", null);
      await firstStarted.promise;
      const reconnected = nextEvent(w, "connected");
      proxy.cut();
      await reconnected;
      const why = await firstReason.promise;
      assert.ok(why instanceof JobAbortedError && why.kind === "lease-lost", String(why));
      const done = await qm.waitForJob(name, job.id, { timeoutMs: 15_000 });
      assert.equal(done.state, "completed");
      assert.equal(done.result, "second run (stalled 1)");
    } finally {
      await w.shutdown();
      await proxy.close();
    }
  });
});
