/**
 * External events against the live server: `ctx.waitForEvent` parks the job (delayed, no slot held, nothing
 * reported for the run), `pushEvent` wakes it and its next run reads `job.event`; a timed wait runs again
 * with `job.eventTimedOut`; a repeated event id changes nothing; bad keys are refused before any call.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { JobPriority, NotFoundError, WaitingForEventError, type ActiveJob, type JobContext, type QueueManager } from "../src/index.js";
import { create } from "@bufbuild/protobuf";
import { WaitForEventResponseSchema } from "../src/gen/queue_manager/v1/external_events_pb.js";
import { JobDeliverySchema } from "../src/gen/queue_manager/v1/worker_service_pb.js";
import { Outbox } from "../src/outbox.js";
import { Runs, type RunsHost } from "../src/worker-runs.js";
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

async function untilState(queue: string, id: string, state: string): Promise<void> {
  const deadline = performance.now() + 20_000;
  while ((await qm.getJob(queue, id)).state !== state) {
    assert.ok(performance.now() < deadline, `job ${id} never reached ${state}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("waitForEvent", () => {
  it("parks the job until pushEvent, whose event the next run reads", async () => {
    const name = await freshQueue("orders");
    const key = `${name}:paid`;
    const runs: unknown[] = [];
    const failed: unknown[] = [];
    let waiting: WaitingForEventError | undefined;
    const w = await worker({
      concurrency: 1,
      processors: {
        [name]: async (job: ActiveJob, ctx: JobContext) => {
          runs.push([job.event?.key, job.event?.data, job.event?.eventId, job.eventTimedOut]);
          if (job.event === undefined) {
            try {
              await ctx.waitForEvent([key, `${name}:cancelled`], { data: { step: "ship" } });
            } catch (err) {
              waiting = err as WaitingForEventError;
              throw err;
            }
            assert.fail("waitForEvent returns only by rejecting");
          }
          return { shipped: (job.event.data as { amount: number }).amount, at: job.event.pushedAt instanceof Date };
        },
      },
    });
    w.on("failed", (job: ActiveJob, err: unknown) => failed.push([job.queueName, err]));
    try {
      const job = await qm.addJob(name, "ship", { step: "wait" }, { attempts: 1 });
      await untilState(name, job.id, "delayed");
      // The server parks the job in the call, before its answer reaches the processor: wait for that too.
      await until(() => waiting !== undefined);
      assert.ok(waiting instanceof WaitingForEventError);
      assert.equal(waiting.until, undefined);
      const parked = await qm.getJob(name, job.id);
      assert.deepEqual(parked.eventWait, { keys: [key, `${name}:cancelled`], until: undefined });
      assert.equal(parked.event, undefined);
      assert.deepEqual(parked.data, { step: "ship" });
      assert.equal(parked.attemptsMade, 0);

      const pushed = await qm.pushEvent(key, { amount: 12 }, { eventId: `${name}-1` });
      assert.deepEqual(pushed.woken, [{ queueName: name, jobId: job.id }]);
      assert.equal(pushed.wokenCount, 1);
      assert.equal(pushed.wokenTruncated, false);
      assert.equal(pushed.duplicate, false);
      assert.deepEqual(pushed.added, []);
      const again = await qm.pushEvent(key, { amount: 99 }, { eventId: `${name}-1` });
      assert.equal(again.duplicate, true);
      assert.deepEqual(again.woken, pushed.woken);

      const done = await qm.waitForJob(name, job.id, { timeoutMs: 15_000 });
      assert.equal(done.state, "completed");
      assert.deepEqual(done.result, { shipped: 12, at: true });
      assert.equal(done.attemptsMade, 1);
      assert.equal(done.event?.key, key);
      assert.deepEqual(runs, [
        [undefined, undefined, undefined, false],
        [key, { amount: 12 }, `${name}-1`, false],
      ]);
      assert.deepEqual(failed, []); // the parked run reported nothing
    } finally {
      await w.shutdown();
    }
  });

  it("runs the job again with eventTimedOut once its timeout passes", async () => {
    const name = await freshQueue("timeout");
    const w = await worker({
      processors: {
        [name]: async (job: ActiveJob, ctx: JobContext) => {
          if (job.eventWait === undefined) {
            await ctx.waitForEvent(`${name}:never`, { timeoutMs: 300 });
          }
          return { timedOut: job.eventTimedOut, event: job.event ?? null };
        },
      },
    });
    try {
      const job = await qm.addJob(name, "w");
      const done = await qm.waitForJob(name, job.id, { timeoutMs: 15_000 });
      assert.deepEqual(done.result, { timedOut: true, event: null });
      assert.ok(done.eventWait?.until instanceof Date);
    } finally {
      await w.shutdown();
    }
  });

  it("adds an event trigger's job for a matching push, and lists and deletes triggers", async () => {
    const name = await freshQueue("triggered");
    const made = await qm.upsertEventTrigger({
      id: name,
      keyPattern: `${name}:*`,
      queueName: name,
      job: { name: "announce", options: { priority: "high" } },
    });
    assert.equal(made.created, true);
    assert.ok(made.trigger.createdAt instanceof Date);
    assert.deepEqual((await qm.listEventTriggers(name)).map((t) => [t.id, t.keyPattern, t.job.name]), [[name, `${name}:*`, "announce"]]);
    const pushed = await qm.pushEvent(`${name}:built`, { sha: "abc" });
    assert.equal(pushed.added.length, 1);
    const job = await qm.getJob(name, pushed.added[0]!.jobId);
    assert.equal(job.name, "announce");
    assert.equal(job.priority, JobPriority.HIGH);
    assert.deepEqual(job.data, { sha: "abc" });
    assert.equal((await qm.deleteEventTrigger(name)).id, name);
    assert.deepEqual((await qm.pushEvent(`${name}:built`)).added, []);
    await assert.rejects(qm.deleteEventTrigger(name), NotFoundError);
    await assert.rejects(qm.upsertEventTrigger({ id: "x", keyPattern: "a*b", queueName: name, job: { name: "j" } }), /'\*' may only end/);
  });

  it("refuses bad keys and options before anything is sent", async () => {
    const name = await freshQueue("malformed");
    const seen = deferred<unknown[]>();
    const w = await worker({
      processors: {
        [name]: async (_job: ActiveJob, ctx: JobContext) => {
          const errors = await Promise.all([
            ctx.waitForEvent([]).catch((e: unknown) => e),
            ctx.waitForEvent("bad\nkey").catch((e: unknown) => e),
            ctx.waitForEvent("k", { timeoutMs: 0 }).catch((e: unknown) => e),
            ctx.waitForEvent("k", { timeout: 5 } as never).catch((e: unknown) => e),
          ]);
          seen.resolve(errors);
          return null;
        },
      },
    });
    try {
      await qm.addJob(name, "w");
      const [none, control, zero, unknownKey] = await seen.promise;
      assert.match(String(none), /1 to 16 event keys/);
      assert.match(String(control), /keys\[0\] .* control characters/);
      assert.match(String(zero), /timeoutMs must be a positive number/);
      assert.match(String(unknownKey), /unknown key\(s\) timeout/);
      await assert.rejects(qm.pushEvent(""), /event key must be 1 to 256 characters/);
    } finally {
      await w.shutdown();
    }
  });
});

describe("a heartbeat crossing the call that parks a run", () => {
  // The worker's runs on their own, the host's WaitForEvent answering once the server's refusal of a heartbeat of
  // the run has come (it crossed the call), then that refusal again after the run ended: both are expected, so
  // nothing is logged and the run is not lost. A run no call parks still loses its lease, with a warning.
  it("is refused without a warning, and a lease really lost still warns", async () => {
    const logged: string[] = [];
    const log = { info: (m: string) => logged.push(`info ${m}`), warn: (m: string) => logged.push(`warn ${m}`), error: (m: string) => logged.push(`error ${m}`) };
    const lease = { $typeName: "queue_manager.v1.LeaseRef", queueName: "q", jobId: "parks", leaseToken: "t1" } as const;
    const ended = deferred<void>();
    let runs: Runs;
    const host: RunsHost = {
      workerId: "w",
      log,
      emit: () => true,
      accepting: () => true,
      wake: () => {},
      updateJobData: async () => {},
      waitForChildren: async () => assert.fail("no children here"),
      waitForEvent: async () => {
        runs.refused(lease, "FAILED_PRECONDITION: the lease is not held"); // while the call is out
        return create(WaitForEventResponseSchema, {});
      },
    };
    const park = async (job: ActiveJob, ctx: JobContext): Promise<void> => {
      if (job.id === "held") {
        await new Promise((resolve) => ctx.signal.addEventListener("abort", resolve)); // runs until stopped
        return;
      }
      try {
        await ctx.waitForEvent("order:paid");
      } finally {
        setImmediate(() => ended.resolve()); // once the run has ended (its promise settled)
      }
    };
    runs = new Runs(host, new Outbox(), new Map([["q", park]]));
    const job = (id: string, leaseToken: string) => ({ job: { queueName: "q", id, name: "x", maxAttempts: 1 }, leaseToken });
    runs.deliver(create(JobDeliverySchema, { jobs: [job("parks", "t1")] }));
    await ended.promise;
    assert.equal(runs.size, 0);
    runs.refused(lease, "FAILED_PRECONDITION: the lease is not held"); // after the run ended
    assert.deepEqual(logged.filter((line) => !line.startsWith("info job q/parks waits for event")), []);

    runs.deliver(create(JobDeliverySchema, { jobs: [job("held", "t2")] }));
    runs.refused({ ...lease, jobId: "held", leaseToken: "t2" }, "FAILED_PRECONDITION: the lease is not held");
    assert.ok(logged.some((line) => line.startsWith("warn job q/held lost its lease")), logged.join("\n"));
  });
});
