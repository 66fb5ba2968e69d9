/** A queue's job events (watchJobEvents) against the live server: order, filters, ready, ending, refusals. */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import {
  InvalidArgumentError,
  NotFoundError,
  QueueManagerError,
  type JobEvent,
  type JobEventStream,
  type JobEventType,
  type QueueManager,
} from "../src/index.js";
import { client, deferred, queueName, worker } from "./helpers.js";

const WAIT_MS = 20_000; // a generous bound for anything a test awaits

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

/** The stream's events until `done` says the list is complete; fails after WAIT_MS or if the stream ends. */
async function collect(stream: JobEventStream, done: (seen: JobEvent[]) => boolean): Promise<JobEvent[]> {
  const seen: JobEvent[] = [];
  const timer = setTimeout(() => stream.close(), WAIT_MS);
  try {
    for await (const event of stream) {
      seen.push(event);
      if (done(seen)) {
        return seen;
      }
    }
  } finally {
    clearTimeout(timer);
  }
  throw new Error(`the stream ended (or ${WAIT_MS} ms passed) after ${JSON.stringify(seen)}`);
}

/** How a collection ended: the message it failed with (it never completes when nothing can satisfy it). */
function endOf(collecting: Promise<JobEvent[]>): Promise<string> {
  return collecting.then(
    (seen) => `collected ${seen.length}`,
    (err: Error) => err.message,
  );
}

/** Whether every one of `ids` completed or failed for good. */
function finished(ids: string[]): (seen: JobEvent[]) => boolean {
  return (seen) => ids.every((id) => seen.some((e) => e.jobId === id && (e.type === "completed" || e.type === "failed")));
}

function perJob(seen: JobEvent[], jobId: string): [JobEventType | undefined, number][] {
  return seen.filter((e) => e.jobId === jobId).map((e) => [e.type, e.attempt]);
}

/**
 * Adds a job that completes (reporting progress, then waiting for `gate`) and one that fails on both its
 * attempts; runs them.
 */
async function runTwoJobs(queue: string, gate: Promise<void> = Promise.resolve()) {
  const good = await qm.addJob(queue, "good", {});
  const bad = await qm.addJob(queue, "bad", {}, { attempts: 2 });
  const w = await worker({
    processors: {
      [queue]: async (job, ctx) => {
        if (job.name === "bad") {
          throw new Error(`no luck on attempt ${job.attemptsMade + 1}`);
        }
        ctx.updateProgress({ step: "half" });
        await gate; // the progress is seen before the completion is sent
        return "ok";
      },
    },
  });
  return { good: good.id, bad: bad.id, worker: w };
}

describe("job events", () => {
  it("streams a job's events in order, decoded, once the watch is ready", async () => {
    const name = await freshQueue("ev-order");
    const events = qm.watchJobEvents(name);
    await events.ready();
    const gate = deferred();
    const { good, bad, worker: w } = await runTwoJobs(name, gate.promise);
    try {
      const seen = await collect(events, (s) => {
        if (s.at(-1)?.type === "progress") gate.resolve();
        return finished([good, bad])(s);
      });
      assert.deepEqual(perJob(seen, good), [["added", 0], ["active", 1], ["progress", 0], ["completed", 1]]);
      assert.deepEqual(perJob(seen, bad), [["added", 0], ["active", 1], ["retrying", 1], ["active", 2], ["failed", 2]]);
      const retrying = seen.find((e) => e.jobId === bad && e.type === "retrying")!;
      const failed = seen.find((e) => e.jobId === bad && e.type === "failed")!;
      assert.match(retrying.failedReason, /no luck on attempt 1$/);
      assert.ok(retrying.runAt instanceof Date);
      assert.match(failed.failedReason, /no luck on attempt 2$/);
      // Progress comes back as the JSON value the processor reported.
      assert.deepEqual(seen.find((e) => e.type === "progress")?.progress, { step: "half" });
      assert.equal(seen.find((e) => e.type === "added")?.progress, undefined);
      assert.ok(seen.every((e) => e.queueName === name && e.time instanceof Date));
      assert.deepEqual(new Set(seen.filter((e) => e.jobId === bad).map((e) => e.jobName)), new Set(["bad"]));
      const times = seen.filter((e) => e.jobId === bad).map((e) => e.time!.getTime());
      assert.deepEqual(times, [...times].sort((a, b) => a - b));
    } finally {
      events.close();
      await w.shutdown();
    }
  });

  it("sends only the types and job names asked for (types in either case)", async () => {
    const name = await freshQueue("ev-filter");
    const ends = qm.watchJobEvents(name, { types: ["completed", "FAILED"] });
    const named = qm.watchJobEvents(name, { jobNames: "bad" });
    await Promise.all([ends.ready(), named.ready()]);
    const { good, bad, worker: w } = await runTwoJobs(name);
    try {
      const seen = await collect(ends, finished([good, bad]));
      assert.deepEqual(
        seen.map((e) => [e.jobId, e.type]).sort((a, b) => Number(a[0] !== good) - Number(b[0] !== good)),
        [
          [good, "completed"],
          [bad, "failed"],
        ],
      );
      const ofBad = await collect(named, (s) => s.at(-1)?.type === "failed");
      assert.deepEqual(ofBad.map((e) => e.type), ["added", "active", "retrying", "active", "failed"]);
    } finally {
      ends.close();
      named.close();
      await w.shutdown();
    }
  });

  it("gives a delayed add's run time, and a removal's event", async () => {
    const name = await freshQueue("ev-delayed");
    const events = qm.watchJobEvents(name, { types: ["added", "removed"] });
    await events.ready();
    const job = await qm.addJob(name, "later", null, { delay: 60_000 });
    await qm.removeJob(name, job.id);
    const [added, removed] = await collect(events, (s) => s.length === 2);
    events.close();
    assert.equal(added?.type, "added");
    assert.equal(added?.jobName, "later");
    assert.ok(added?.runAt && added.runAt.getTime() >= (job.createdAt?.getTime() ?? 0) + 59_000);
    assert.deepEqual([removed?.type, removed?.jobId, removed?.runAt], ["removed", job.id, undefined]);
  });

  it("ends quietly when closed, when its signal fires, when the loop is left and at shutdown", async () => {
    const name = await freshQueue("ev-end");
    // close() while the loop waits for an event: the loop ends with no error.
    const closed = qm.watchJobEvents(name);
    await closed.ready();
    const loop = endOf(collect(closed, () => false));
    closed.close();
    assert.match(await loop, /the stream ended/);
    // The caller's signal does the same; one fired before the call ends it at once.
    const controller = new AbortController();
    const signalled = qm.watchJobEvents(name, { signal: controller.signal });
    await signalled.ready();
    const waiting = endOf(collect(signalled, () => false));
    controller.abort();
    assert.match(await waiting, /the stream ended/);
    assert.equal(qm.watchJobEvents(name, { signal: AbortSignal.abort() }).closed, true);
    // ready() of a stream closed before the server answered says so.
    const early = qm.watchJobEvents(name);
    early.close();
    await assert.rejects(early.ready(), (err: unknown) => err instanceof QueueManagerError && err.codeName === "CANCELLED");
    // Leaving the loop ends the call; a stream is iterated once.
    const left = qm.watchJobEvents(name);
    await left.ready();
    await qm.addJob(name, "one", null);
    await collect(left, () => true);
    assert.equal(left.closed, true);
    assert.throws(() => left[Symbol.asyncIterator](), /iterated once/);
    // shutdown ends the streams still open, their loops with no error.
    const other = client();
    const open = other.watchJobEvents(name);
    await open.ready();
    const running = endOf(collect(open, () => false));
    await other.shutdown();
    assert.match(await running, /the stream ended/);
    assert.equal(open.closed, true);
  });

  it("refuses bad requests before the call, and passes on the server's refusals", async () => {
    assert.throws(() => qm.watchJobEvents("q", { types: ["finished" as JobEventType] }), {
      name: "RangeError",
      message: /unknown job event type "finished": use one of added, waiting, active/,
    });
    assert.throws(() => qm.watchJobEvents("q", { jobNames: ["ok", ""] }), /jobNames must be non-empty strings, got ""/);
    assert.throws(() => qm.watchJobEvents("no:such{queue}"), /queue name "no:such\{queue\}" must be 1 to 100 letters/);
    assert.throws(() => qm.watchJobEvents("q", { type: "added" } as never), /unknown key\(s\) type; known: types, jobNames, signal/);
    const missing = qm.watchJobEvents("nowhere-at-all");
    await assert.rejects(missing.ready(), (err: unknown) => {
      assert.ok(err instanceof NotFoundError);
      assert.match(err.message, /queue 'nowhere-at-all' is not registered/);
      return true;
    });
    await assert.rejects(collect(missing, () => true), NotFoundError); // iterating says the same
    const name = await freshQueue("ev-refused");
    const tooMany = qm.watchJobEvents(name, { jobNames: Array.from({ length: 101 }, (_, i) => `n${i}`) });
    await assert.rejects(tooMany.ready(), InvalidArgumentError);
  });
});
