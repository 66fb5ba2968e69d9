/** The producer and admin API against the live server: queues, jobs and their options, errors, workflows. */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import {
  FailedPreconditionError,
  InvalidArgumentError,
  JobPriority,
  NotFoundError,
  QueueManagerError,
  Worker,
  type ActiveJob,
  type QueueManager,
  when,
  whenError,
} from "../src/index.js";
import { client, nextEvent, queueName, worker } from "./helpers.js";

let qm: QueueManager;

before(() => {
  qm = client();
});

after(async () => {
  await qm.shutdown();
});

describe("queues", () => {
  it("registers a queue with its settings and reads it back", async () => {
    const name = queueName("settings");
    const queue = await qm.registerQueue(name, {
      rateLimit: { max: 50, duration: 1000 },
      defaultJobOptions: { attempts: 4, priority: "low" },
      completedRetention: { age: 60_000, count: 10 },
      disableDeadLetter: true,
      concurrency: 3,
    });
    assert.equal(queue.name, name);
    assert.deepEqual(queue.config.rateLimit, { max: 50, duration: 1000, burst: 0 });
    assert.equal(queue.config.defaultAttempts, 4);
    assert.equal(queue.config.defaultPriority, JobPriority.LOW);
    assert.deepEqual(queue.config.completedRetention, { remove: false, age: 60_000, count: 10 });
    assert.equal(queue.config.disableDeadLetter, true);
    assert.equal(queue.config.concurrency, 3);
    assert.ok((await qm.listQueues()).some((q) => q.name === name));
    const job = await qm.addJob(name, "defaulted", { a: 1 });
    assert.equal(job.maxAttempts, 4);
    assert.equal(job.priority, JobPriority.LOW);
  });

  it("pauses and resumes a queue, and metrics count its jobs", async () => {
    const name = queueName("pause");
    await qm.registerQueue(name);
    assert.equal((await qm.pauseQueue(name)).paused, true);
    const job = await qm.addJob(name, "held", null);
    assert.equal(job.state, "paused");
    let metrics = await qm.getQueueMetrics(name);
    assert.equal(metrics.isPaused, true);
    assert.equal(metrics.paused, 1);
    assert.equal(metrics.addedTotal, 1);
    assert.ok(metrics.memoryBytes > 0, `the queue's keys and its job hold memory: ${metrics.memoryBytes}`);
    assert.equal((await qm.resumeQueue(name)).paused, false);
    metrics = await qm.getQueueMetrics(name);
    assert.equal(metrics.waiting, 1);
    assert.equal((await qm.getJob(name, job.id)).state, "waiting");
  });

  it("cleans, drains and obliterates", async () => {
    const name = queueName("clean");
    await qm.registerQueue(name);
    const a = await qm.addJob(name, "a", 1);
    await qm.addJob(name, "b", 2);
    await qm.addJob(name, "later", 3, { delay: 60_000 });
    assert.equal(await qm.cleanQueue(name, 0, "waiting", 1), 1);
    await assert.rejects(qm.getJob(name, a.id), NotFoundError);
    assert.equal(await qm.drainQueue(name, true), 2);
    assert.equal(await qm.obliterateQueue(name), 0);
    await assert.rejects(qm.getQueue(name), NotFoundError);
  });
});

describe("metrics stream", () => {
  it("streams snapshots at once and every interval, with the workers when asked", async () => {
    const name = queueName("watch");
    await qm.registerQueue(name);
    await qm.addJob(name, "first", null);
    const other = queueName("watch-other");
    await qm.registerQueue(other);
    const w = await worker({ processors: { [other]: async () => null } });
    const seen: number[] = [];
    let workers: string[] = [];
    let time: Date | undefined;
    try {
      for await (const snapshot of qm.watchMetrics(name, { intervalMs: 100, includeWorkers: true })) {
        assert.deepEqual(snapshot.metrics.map((m) => m.queueName), [name]);
        seen.push(snapshot.metrics[0].waiting);
        workers = snapshot.workers.map((info) => info.workerId);
        time = snapshot.time;
        if (seen.length === 1) {
          await qm.addJob(name, "second", null); // the next snapshots count it
        } else if (snapshot.metrics[0].waiting === 2) {
          break; // leaving the loop ends the call
        }
        assert.ok(seen.length < 100, `the second job was never counted: ${seen.join(",")}`);
      }
    } finally {
      await w.shutdown();
    }
    assert.equal(seen[0], 1);
    assert.equal(seen.at(-1), 2);
    assert.ok(workers.includes(w.workerId), workers.join(","));
    assert.ok(time instanceof Date && Math.abs(time.getTime() - Date.now()) < 60_000, String(time));
  });

  it("maps an unknown queue and a bad interval; the caller's signal ends the stream quietly", async () => {
    const first = async (it: AsyncIterable<unknown>) => {
      for await (const item of it) {
        return item;
      }
      return undefined;
    };
    const missing = queueName("missing");
    await assert.rejects(first(qm.watchMetrics([missing])), (err: unknown) => err instanceof NotFoundError && err.message.includes(missing));
    const name = queueName("watch-interval");
    await qm.registerQueue(name);
    await assert.rejects(first(qm.watchMetrics(name, { intervalMs: 50 })), InvalidArgumentError);
    await assert.rejects(first(qm.watchMetrics(name, { intervalMs: -1 })), RangeError);
    const stop = new AbortController();
    const got: unknown[] = [];
    for await (const snapshot of qm.watchMetrics(undefined, { intervalMs: 100, signal: stop.signal })) {
      got.push(snapshot);
      stop.abort();
    }
    assert.equal(got.length, 1);
  });
});

describe("jobs", () => {
  let name: string;
  before(async () => {
    name = queueName("jobs");
    await qm.registerQueue(name);
  });

  it("adds a job with every option and reads them back", async () => {
    const job = await qm.addJob(
      name,
      "send-email",
      { to: "a@example.com", n: [1, 2, 3] },
      {
        priority: JobPriority.HIGH,
        attempts: 5,
        backoff: { type: "exponential", delay: 250, jitter: 0.5, maxDelay: 10_000 },
        jobId: "order-42",
        metadata: { correlationId: "req-1", tags: ["a", "b"], attributes: { tenant: "t1" } },
        removeOnComplete: { age: 3_600_000, count: 5 },
        removeOnFail: 7,
        timeout: 30_000,
        maxStalled: 2,
      },
    );
    assert.equal(job.id, "order-42");
    assert.equal(job.state, "waiting");
    assert.equal(job.priority, JobPriority.HIGH);
    assert.equal(job.maxAttempts, 5);
    assert.deepEqual(job.data, { to: "a@example.com", n: [1, 2, 3] });
    assert.deepEqual(job.metadata, { correlationId: "req-1", tags: ["a", "b"], attributes: { tenant: "t1" } });
    const stored = await qm.getJob(name, "order-42");
    assert.deepEqual(stored.data, job.data);
    assert.equal(stored.maxAttempts, 5);
    // The same jobId again returns the existing job, unchanged, and says it found it.
    const again = await qm.addJob(name, "send-email", { other: true }, { jobId: "order-42" });
    assert.deepEqual(again.data, job.data);
    assert.equal(job.created, true);
    assert.equal(again.created, false);
    assert.equal(stored.created, undefined);
  });

  it("takes a backoff without a type as a fixed one", async () => {
    const job = await qm.addJob(name, "untyped", null, { attempts: 2, backoff: { delay: 1500 } });
    const stored = await qm.getJob(name, job.id);
    assert.equal(stored.maxAttempts, 2);
  });

  it("says whether an add created its job: a plain add, a jobId and a dedup key taken", async () => {
    const plain = await qm.addJob(name, "plain", { n: 1 }); // answered briefly (convert.createdJob)
    assert.deepEqual([plain.created, plain.replaced], [true, false]);
    const keyed = await qm.addJob(name, "keyed", null, { dedup: { key: "created-k" } });
    const held = await qm.addJob(name, "keyed-again", null, { dedup: { key: "created-k" } });
    assert.deepEqual([keyed.created, held.created, held.id, held.name], [true, false, keyed.id, "keyed"]);
  });

  it("expires a job not started in time: cancelled, never run", async () => {
    const expiring = queueName("expiry");
    await qm.registerQueue(expiring);
    const late = await qm.addJob(expiring, "quote", null, { expireAfter: 100 });
    assert.ok(late.expiresAt !== undefined && late.createdAt !== undefined);
    assert.equal(late.expiresAt.getTime() - late.createdAt.getTime(), 100);
    await new Promise((resolve) => setTimeout(resolve, late.expiresAt!.getTime() - Date.now() + 50));
    const ran: string[] = [];
    const w = await worker({
      processors: {
        [expiring]: async (job) => {
          ran.push(job.id);
          return null;
        },
      },
    });
    try {
      const gone = await qm.waitForJob(expiring, late.id, { timeoutMs: 30_000 });
      assert.equal(gone.state, "cancelled");
      assert.match(gone.cancelReason, /^expired: not started within 100ms of being ready \(at /);
      assert.deepEqual(ran, []);
    } finally {
      await w.shutdown();
    }
    await assert.rejects(qm.addJob(expiring, "quote", null, { expireAfter: 0 }), InvalidArgumentError);
  });

  it("keeps bytes as bytes and a delay as a run time", async () => {
    const bytes = new Uint8Array([0, 1, 2, 255]);
    const raw = await qm.getJob(name, (await qm.addJob(name, "raw", bytes)).id);
    assert.deepEqual(raw.data, bytes);
    const before = Date.now();
    const delayed = await qm.addJob(name, "later", null, { delay: 60_000 });
    assert.equal(delayed.state, "delayed");
    assert.ok(delayed.runAt !== undefined && delayed.runAt.getTime() >= before + 59_000);
    const promoted = await qm.promoteJob(name, delayed.id);
    assert.equal(promoted.state, "waiting");
    const changed = await qm.changeJobPriority(name, promoted.id, "critical");
    assert.equal(changed.priority, JobPriority.CRITICAL);
  });

  it("reschedules a delayed job, delays a waiting one, and refuses a finished one", async () => {
    const before = Date.now();
    const delayed = await qm.addJob(name, "resched", null, { delay: 60_000, group: "tenant-r" });
    const later = await qm.rescheduleJob(name, delayed.id, { delay: 3_600_000 });
    assert.equal(later.state, "delayed");
    assert.ok(later.runAt !== undefined && later.runAt.getTime() >= before + 3_599_000);
    const at = new Date(Date.now() + 7_200_000);
    assert.equal((await qm.rescheduleJob(name, delayed.id, { runAt: at })).runAt?.getTime(), at.getTime());
    assert.equal((await qm.rescheduleJob(name, delayed.id, { delay: 0 })).state, "waiting"); // due now
    const again = await qm.rescheduleJob(name, delayed.id, { delay: 60_000 }); // a waiting job: delayed
    assert.deepEqual([again.state, again.group], ["delayed", "tenant-r"]);
    await assert.rejects(qm.rescheduleJob(name, delayed.id, {}), RangeError);
    await assert.rejects(qm.rescheduleJob(name, delayed.id, { delay: 1, runAt: at }), RangeError);
    await assert.rejects(qm.rescheduleJob(name, "no-such-job", { delay: 1 }), NotFoundError);
    await qm.cancelJob(name, delayed.id);
    await assert.rejects(qm.rescheduleJob(name, delayed.id, { delay: 1 }), (err: unknown) => {
      assert.ok(err instanceof FailedPreconditionError);
      assert.match(err.message, /is cancelled; only a waiting or delayed job can be rescheduled/);
      return true;
    });
  });

  it("updates the data of a job that has not finished, and refuses a finished one", async () => {
    const delayed = await qm.addJob(name, "fix-me", { to: "old" }, { delay: 60_000 });
    const changed = await qm.updateJobData(name, delayed.id, { to: "new" });
    assert.equal(changed.state, "delayed");
    assert.deepEqual(changed.data, { to: "new" });
    assert.deepEqual((await qm.getJob(name, delayed.id)).data, { to: "new" });
    await qm.cancelJob(name, delayed.id);
    await assert.rejects(qm.updateJobData(name, delayed.id, 1), (err: unknown) => {
      assert.ok(err instanceof FailedPreconditionError);
      assert.match(err.message, /is cancelled/);
      return true;
    });
  });

  it("deduplicates by key", async () => {
    const first = await qm.addJob(name, "dedup", 1, { dedup: { key: "k1", ttl: 60_000 } });
    const second = await qm.addJob(name, "dedup", 2, { dedup: "k1" });
    assert.equal(second.id, first.id);
  });

  it("replaces a pending job's data with dedup mode replace, and refuses a bad mode", async () => {
    const debounce = { delay: 60_000, dedup: { key: "doc", ttl: 60_000, mode: "replace" as const } };
    const first = await qm.addJob(name, "reindex", { n: 1 }, debounce);
    assert.equal(first.state, "delayed");
    const second = await qm.addJob(name, "again", { n: 2 }, debounce);
    assert.equal(second.id, first.id);
    // The add's disposition: the first created the job, the second replaced its name and data.
    assert.deepEqual([first.created, first.replaced, second.created, second.replaced], [true, false, false, true]);
    assert.equal(second.name, "again");
    assert.deepEqual(second.data, { n: 2 });
    const ids = await qm.addBulk(name, [3, 4].map((n) => ({ name: "b", data: { n }, options: debounce })));
    assert.deepEqual(ids, [first.id, first.id]);
    assert.deepEqual((await qm.getJob(name, first.id)).data, { n: 4 });
    const kept = await qm.addJob(name, "x", 5, { dedup: { key: "doc", ttl: 60_000, mode: "extend" } });
    assert.equal(kept.id, first.id);
    assert.deepEqual(kept.data, { n: 4 });
    assert.deepEqual([kept.created, kept.replaced], [false, false]); // "extend" leaves the holder as it is
    assert.equal((await qm.getJob(name, first.id)).replaced, undefined); // set on add answers only
    await assert.rejects(
      // @ts-expect-error: a mode the type does not allow, as plain JavaScript could send it
      qm.addJob(name, "x", 1, { dedup: { key: "k", mode: "latest" } }),
      /dedup\.mode must be one of keep_first, extend, replace, got "latest"/,
    );
    await assert.rejects(
      qm.addJob(name, "x", 1, { dedup: { key: "k", mode: "extend" } }),
      /"extend" restarts the ttl at each duplicate: give job\.options\.dedup\.ttl/,
    );
  });

  it("lists jobs a page at a time", async () => {
    const q = queueName("list");
    await qm.registerQueue(q);
    await qm.addBulk(q, Array.from({ length: 5 }, (_, i) => ({ name: "n", data: i })));
    const page = await qm.listJobs(q, "waiting", { pageSize: 3 });
    assert.equal(page.items.length, 3);
    assert.equal(page.totalSize, 5);
    assert.deepEqual(page.items.map((j) => j.data), [0, 1, 2]);
    const rest = await qm.listJobs(q, "waiting", { pageSize: 3, pageToken: page.nextPageToken });
    assert.deepEqual(rest.items.map((j) => j.data), [3, 4]);
    assert.equal(rest.nextPageToken, "");
  });

  it("adds a bulk whose jobs together are over the transport's 16 MiB message limit", async () => {
    const q = queueName("bulk-big");
    await qm.registerQueue(q);
    // 17 jobs of about 1 MB each: each is under the payload limit, all of them are over one message's limit.
    const data = "a".repeat(1_000_000);
    const ids = await qm.addBulk(q, Array.from({ length: 17 }, () => ({ name: "big", data })));
    assert.equal(ids.length, 17);
    assert.equal(((await qm.getJob(q, ids[16]!)).data as string).length, 1_000_000);
    await qm.obliterateQueue(q, true);
  });

  it("cancels a waiting job, retries it, and removes it", async () => {
    const job = await qm.addJob(name, "to-cancel", null);
    const cancelled = await qm.cancelJob(name, job.id, "not needed");
    assert.equal(cancelled.state, "cancelled");
    assert.equal(cancelled.cancelReason, "not needed");
    const retried = await qm.retryJob(name, job.id);
    assert.equal(retried.state, "waiting");
    assert.equal(await qm.removeJob(name, job.id), "waiting");
  });
});

describe("errors", () => {
  it("maps NOT_FOUND with the server's message", async () => {
    const missing = queueName("missing");
    const err = await qm.addJob(missing, "x", null).catch((e: unknown) => e);
    assert.ok(err instanceof NotFoundError, String(err));
    assert.ok(err instanceof QueueManagerError);
    assert.equal(err.code, 5);
    assert.equal(err.codeName, "NOT_FOUND");
    assert.match(err.message, new RegExp(`queue '${missing}' is not registered`));
  });

  it("maps INVALID_ARGUMENT with the field the server names", async () => {
    const name = queueName("bad");
    await qm.registerQueue(name);
    const err = await qm.addJob(name, "x", null, { jobId: "a b" }).catch((e: unknown) => e);
    assert.ok(err instanceof InvalidArgumentError, String(err));
    assert.match(err.message, /^job\.options\.job_id: /);
    const badName = await qm.registerQueue("no{braces}").catch((e: unknown) => e);
    assert.ok(badName instanceof InvalidArgumentError, String(badName));
    assert.match(badName.message, /name/);
  });

  it("maps FAILED_PRECONDITION", async () => {
    const name = queueName("pre");
    await qm.registerQueue(name);
    const job = await qm.addJob(name, "x", null);
    const err = await qm.retryJob(name, job.id).catch((e: unknown) => e);
    assert.ok(err instanceof FailedPreconditionError, String(err));
  });

  it("refuses bad options before sending", async () => {
    const name = queueName("local");
    await assert.rejects(qm.addJob(name, "x", null, { delay: -1 }), RangeError);
    await assert.rejects(qm.addJob(name, "x", null, { priority: "urgent" as never }), /priority must be one of/);
    await assert.rejects(qm.addJob(name, "x", null, { retries: 3 } as never), /unknown option\(s\) retries/);
    await assert.rejects(qm.addJob(name, "x", 10n), /not JSON-serialisable/);
  });

  it("refuses a misspelt key of a queue config or of a call's options, changing nothing", async () => {
    // A misspelt address would dial localhost:50051; a misspelt concurrency would give 10 slots.
    assert.throws(() => client({ adress: "127.0.0.1:1" } as never), /QueueManager options has unknown key\(s\) adress/);
    const processors = { q: async () => null };
    assert.throws(() => new Worker({ processors, concurency: 2 } as never), /Worker options has unknown key\(s\) concurency/);
    const name = queueName("misspelt");
    // registerQueue replaces the whole config: a misspelt limit would register the queue without it.
    await assert.rejects(qm.registerQueue(name, { maxsize: 5 } as never), /queue config has unknown key\(s\) maxsize/);
    await assert.rejects(qm.getQueue(name), NotFoundError);
    const keep = { completedRetention: { agee: 60_000 } } as never;
    await assert.rejects(qm.registerQueue(name, keep), /completedRetention has unknown key\(s\) agee/);
    const windows = { maintenanceWindows: [{ cron: "0 2 * * *", duration: 60_000 }] } as never;
    await assert.rejects(qm.registerQueue(name, windows), /maintenanceWindows\[0\] has unknown key\(s\) duration/);
    await qm.registerQueue(name);
    // A pause meant to lift by itself would last until resumed.
    await assert.rejects(qm.pauseQueue(name, { resumeAfter: 1_000 } as never), /pauseQueue options has unknown key\(s\) resumeAfter/);
    assert.equal((await qm.getQueue(name)).paused, false);
    await assert.rejects(qm.pauseGroup(name, "g", { until: new Date() } as never), /pauseGroup options has unknown key\(s\) until/);
    await assert.rejects(qm.waitForJob(name, "j", { timeout: 1_000 } as never), /waitForJob options has unknown key\(s\) timeout/);
    await assert.rejects(qm.fetchJobs(name, { max: 5 } as never), /fetchJobs options has unknown key\(s\) max/);
    await assert.rejects(qm.listGroups(name, { page_size: 5 } as never), /listGroups options has unknown key\(s\) page_size/);
    await assert.rejects(qm.listDeadLetters(name, { size: 5 } as never), /listDeadLetters options has unknown key\(s\) size/);
    await assert.rejects(qm.getQueueMetrics(name, { history: true } as never), /getQueueMetrics options has unknown key\(s\) history/);
    await assert.rejects(qm.retryJob(name, "j", { dat: 1 } as never), /retryJob options has unknown key\(s\) dat/);
    const flow = { steps: [{ queueName: name, jobName: "a" }] };
    await assert.rejects(qm.executeWorkflow(flow, { runid: "r1" } as never), /executeWorkflow options has unknown key\(s\) runid/);
    assert.equal((await qm.getQueueMetrics(name)).waiting, 0);
    const watch = qm.watchMetrics(name, { interval: 500 } as never);
    await assert.rejects(watch.next(), /watchMetrics options has unknown key\(s\) interval/);
  });

  it("says UNAVAILABLE when no server listens", async () => {
    const nowhere = client({ address: "127.0.0.1:1", timeoutMs: 5_000 });
    const err = await nowhere.listQueues().catch((e: unknown) => e);
    await nowhere.shutdown();
    assert.ok(err instanceof QueueManagerError, String(err));
    assert.equal(err.codeName, "UNAVAILABLE");
  });
});

describe("workflows and schedules", () => {
  it("runs a workflow to completion and reads every step", async () => {
    const name = queueName("flow");
    await qm.registerQueue(name);
    const w = await worker({ processors: { [name]: async (job) => ({ step: job.name, parents: job.parents.map((p) => p.result) }) } });
    try {
      const loaded = nextEvent<[ActiveJob]>(w, "completed", (job) => job.name === "load");
      const runId = await qm.executeWorkflow({
        name: "etl",
        steps: [
          { key: "extract", queueName: name, jobName: "extract", data: 1, onSuccess: [{ key: "load", queueName: name, jobName: "load" }] },
        ],
        metadata: { createdBy: "ts-test" },
      });
      const [loadJob] = await loaded;
      assert.equal(loadJob.workflow?.runId, runId);
      assert.equal(loadJob.parents[0]?.stepKey, "extract");
      await qm.waitForJob(name, loadJob.id, { timeoutMs: 10_000 });
      const run = await qm.getWorkflow(runId);
      assert.equal(run.state, "completed");
      assert.equal(run.metadata.createdBy, "ts-test");
      const load = run.steps.find((s) => s.key === "load");
      assert.equal(load?.branch, "onSuccess");
      assert.equal(load?.state, "completed");
      assert.deepEqual(load?.result, { step: "load", parents: [{ step: "extract", parents: [] }] });
      await assert.rejects(qm.getWorkflow("no-such-run"), NotFoundError);
    } finally {
      await w.shutdown();
    }
  });

  it("skips a step whose runIf does not hold, with the reason, and runs its sibling", async () => {
    const name = queueName("cond-flow");
    await qm.registerQueue(name);
    const ran: string[] = [];
    const w = await worker({
      processors: {
        [name]: async (job) => {
          ran.push(job.name);
          return job.name === "validate" ? { total: 42 } : null;
        },
      },
    });
    try {
      const held = nextEvent<[ActiveJob]>(w, "completed", (job) => job.name === "hold");
      const runId = await qm.executeWorkflow({
        steps: [
          {
            key: "validate",
            queueName: name,
            jobName: "validate",
            onSuccess: [
              { key: "ship", queueName: name, jobName: "ship", runIf: [when("validate", "total", ">", 100)] },
              { key: "hold", queueName: name, jobName: "hold", runIf: [{ path: "total", operator: "in", value: [42] }] },
            ],
          },
        ],
      });
      const [holdJob] = await held;
      await qm.waitForJob(name, holdJob.id, { timeoutMs: 10_000 });
      let run = await qm.getWorkflow(runId);
      for (let i = 0; i < 500 && run.state === "running"; i++) {
        await new Promise((resolve) => setTimeout(resolve, 20)); // the outcome reaches the run after its job
        run = await qm.getWorkflow(runId);
      }
      assert.equal(run.state, "completed");
      const ship = run.steps.find((s) => s.key === "ship");
      assert.equal(ship?.state, "skipped");
      assert.equal(ship?.error, "run_if: validate.total > 100 is false (42)");
      assert.deepEqual(ran.sort(), ["hold", "validate"]);
      const bad = { steps: [{ queueName: name, jobName: "a", onSuccess: [{ queueName: name, jobName: "b", runIf: [when("nope", "x", "exists")] }] }] };
      await assert.rejects(qm.executeWorkflow(bad), InvalidArgumentError);
      const extra = { steps: [{ queueName: name, jobName: "a", runIf: [when("", "x", "exists", 1)] }] };
      await assert.rejects(async () => qm.executeWorkflow(extra), /takes no value/);
      const pathed = { steps: [{ queueName: name, jobName: "a", runIf: [{ ...whenError("", "exists"), path: "x" }] }] };
      await assert.rejects(async () => qm.executeWorkflow(pathed), /leave the path empty/);
    } finally {
      await w.shutdown();
    }
  });

  it("runs a failure-branch step only when its parent's error matches its runIf", async () => {
    const name = queueName("error-flow");
    await qm.registerQueue(name);
    const ran: string[] = [];
    const w = await worker({
      processors: {
        [name]: async (job) => {
          ran.push(job.name);
          if (job.name === "charge") throw new Error("card declined");
          return null;
        },
      },
    });
    try {
      const told = nextEvent<[ActiveJob]>(w, "completed", (job) => job.name === "tell");
      const runId = await qm.executeWorkflow({
        steps: [
          {
            key: "charge",
            queueName: name,
            jobName: "charge",
            onFailure: [
              { key: "tell", queueName: name, jobName: "tell", runIf: [whenError("", "contains", "declined")] },
              { key: "page", queueName: name, jobName: "page", runIf: [whenError("charge", "contains", "timeout")] },
            ],
          },
        ],
      });
      await told;
      let run = await qm.getWorkflow(runId);
      for (let i = 0; i < 500 && run.state === "running"; i++) {
        await new Promise((resolve) => setTimeout(resolve, 20)); // the outcome reaches the run after its job
        run = await qm.getWorkflow(runId);
      }
      const page = run.steps.find((s) => s.key === "page");
      assert.equal(page?.state, "skipped");
      assert.match(page?.error ?? "", /^run_if: the error of charge contains "timeout" is false \(/);
      assert.deepEqual(ran.sort(), ["charge", "tell"]);
    } finally {
      await w.shutdown();
    }
  });

  it("retries a failed run: the failed step runs again and its success branch follows", async () => {
    const name = queueName("retry-flow");
    await qm.registerQueue(name);
    let failures = 0;
    const w = await worker({
      processors: {
        [name]: async (job) => {
          if (job.name === "charge" && failures++ === 0) throw new Error("card declined");
          return job.name;
        },
      },
    });
    const settled = async (runId: string): Promise<string | undefined> => {
      for (let i = 0; i < 1000; i++) {
        const run = await qm.getWorkflow(runId);
        if (run.state !== "running") return run.state;
        await new Promise((resolve) => setTimeout(resolve, 20)); // the outcome reaches the run after its job
      }
      throw new Error(`run ${runId} still running`);
    };
    try {
      const runId = await qm.executeWorkflow({
        steps: [
          {
            key: "charge",
            queueName: name,
            jobName: "charge",
            options: { attempts: 1 },
            onSuccess: [{ key: "ship", queueName: name, jobName: "ship" }],
          },
        ],
      });
      assert.equal(await settled(runId), "failed");
      const retried = await qm.retryWorkflow(runId);
      assert.notEqual(retried.state, "failed"); // running (or completed already, with a fast worker)
      assert.equal(await settled(runId), "completed");
      const run = await qm.getWorkflow(runId);
      assert.deepEqual(
        run.steps.map((s) => [s.key, s.state]),
        [
          ["charge", "completed"],
          ["ship", "completed"],
        ],
      );
      await assert.rejects(qm.retryWorkflow(runId), FailedPreconditionError);
      await assert.rejects(qm.retryWorkflow("no-such-run"), NotFoundError);
    } finally {
      await w.shutdown();
    }
  });

  it("creates, reads, lists and deletes a schedule", async () => {
    const name = queueName("sched");
    await qm.registerQueue(name);
    const made = await qm.upsertSchedule({ id: "nightly", queueName: name, cron: "0 3 * * *", job: { name: "report", data: { full: true } } });
    assert.equal(made.cron, "0 3 * * *");
    assert.ok(made.nextRunTime instanceof Date);
    assert.deepEqual((await qm.getSchedule(name, "nightly")).job, { name: "report", data: { full: true } });
    assert.deepEqual((await qm.listSchedules(name)).map((s) => s.id), ["nightly"]);
    await qm.deleteSchedule(name, "nightly");
    await assert.rejects(qm.getSchedule(name, "nightly"), NotFoundError);
  });
});
