/**
 * Concurrent `addJob` calls share the messages of one AddJobStream (src/adds.ts), against the live server: what
 * goes on the wire is counted by an interceptor (test/wire.ts).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { InvalidArgumentError, JobPriority, NotFoundError, type Job } from "../src/index.js";
import { client, nextEvent, queueName } from "./helpers.js";
import { WireCounter } from "./wire.js";

/** Every job of a queue in one state, all pages. */
async function allIds(qm: ReturnType<typeof client>, name: string): Promise<Set<string>> {
  const ids = new Set<string>();
  let pageToken = "";
  do {
    const page = await qm.listJobs(name, "waiting", { pageSize: 200, pageToken });
    page.items.forEach((j) => ids.add(j.id));
    pageToken = page.nextPageToken;
  } while (pageToken);
  return ids;
}

describe("concurrent adds", () => {
  it("500 concurrent adds resolve with distinct jobs, all stored, in fewer stream messages than adds", async () => {
    const wire = new WireCounter();
    const qm = client({ interceptors: [wire.interceptor] });
    try {
      const name = queueName("burst");
      await qm.registerQueue(name);
      const jobs = await Promise.all(Array.from({ length: 500 }, (_, i) => qm.addJob(name, "burst", { i })));
      const ids = new Set(jobs.map((j) => j.id));
      assert.equal(ids.size, 500);
      jobs.forEach((job, i) => {
        assert.equal(job.queueName, name);
        assert.deepEqual(job.data, { i });
        assert.equal(job.state, "waiting");
      });
      assert.deepEqual(await allIds(qm, name), ids);
      assert.equal(wire.adds, 500);
      assert.equal(wire.unary.get("AddJob") ?? 0, 0);
      assert.equal(wire.streams, 1);
      assert.ok(wire.messages < 500, `${wire.messages} stream messages for 500 adds`);
    } finally {
      await qm.shutdown();
    }
  });

  it("one invalid add among concurrent valid ones fails alone with INVALID_ARGUMENT", async () => {
    const wire = new WireCounter();
    const qm = client({ interceptors: [wire.interceptor] });
    try {
      const name = queueName("one-bad");
      await qm.registerQueue(name);
      const adds = Array.from({ length: 100 }, (_, i) =>
        i === 50 ? qm.addJob("not a queue name!", "bad", { i }) : qm.addJob(name, "good", { i }),
      );
      const settled = await Promise.allSettled(adds);
      settled.forEach((s, i) => {
        if (i === 50) {
          assert.equal(s.status, "rejected");
          const err = (s as PromiseRejectedResult).reason as InvalidArgumentError;
          assert.ok(err instanceof InvalidArgumentError, String(err));
          assert.equal(err.code, Code.InvalidArgument);
          assert.match(err.message, /not a valid queue name/);
        } else {
          assert.equal(s.status, "fulfilled", String((s as PromiseRejectedResult).reason));
        }
      });
      assert.equal((await allIds(qm, name)).size, 99);
      assert.equal(wire.adds, 100);
      assert.ok(wire.messages < 100, `the bad add shared a message: ${wire.messages} messages for 100 adds`);
      // Unknown queue: its own status, the others untouched.
      const [missing, fine] = await Promise.allSettled([qm.addJob(queueName("nowhere"), "x"), qm.addJob(name, "y")]);
      assert.ok(missing.status === "rejected" && missing.reason instanceof NotFoundError);
      assert.equal(fine.status, "fulfilled");
    } finally {
      await qm.shutdown();
    }
  });

  it("a lone add goes out at once in a message of its own", async () => {
    const wire = new WireCounter();
    const qm = client({ interceptors: [wire.interceptor] });
    try {
      const name = queueName("lone");
      await qm.registerQueue(name);
      await qm.addJob(name, "warm-up"); // opens the stream
      const [messages, adds] = [wire.messages, wire.adds];
      const began = performance.now();
      const job = await qm.addJob(name, "alone", { n: 1 });
      const took = performance.now() - began;
      assert.equal(job.name, "alone");
      assert.equal(wire.messages - messages, 1);
      assert.equal(wire.adds - adds, 1);
      // No linger: a loopback round trip, far under this generous bound even on a loaded machine.
      assert.ok(took < 1_000, `a lone add took ${took.toFixed(1)} ms`);
    } finally {
      await qm.shutdown();
    }
  });

  it("a job answered briefly reads as the server's own copy; one with options comes back whole", async () => {
    const qm = client();
    try {
      const name = queueName("brief");
      await qm.registerQueue(name);
      const [plain, bytes, none, withOptions] = await Promise.all([
        qm.addJob(name, "plain", { a: [1, "x"] }),
        qm.addJob(name, "bytes", new Uint8Array([1, 2, 3])),
        qm.addJob(name, "none"),
        qm.addJob(name, "options", { b: 2 }, { priority: "high", attempts: 3, jobId: queueName("id") }),
      ]);
      for (const job of [plain, bytes, none, withOptions]) {
        assert.deepEqual(job, { ...(await qm.getJob(name, job.id)), created: true, replaced: false });
      }
      assert.equal(withOptions.priority, JobPriority.HIGH);
      assert.equal(withOptions.maxAttempts, 3);
      await qm.pauseQueue(name);
      const paused = await qm.addJob(name, "paused");
      assert.equal(paused.state, "paused");
      assert.deepEqual(paused, { ...(await qm.getJob(name, paused.id)), created: true, replaced: false });
    } finally {
      await qm.shutdown();
    }
  });

  it("an idle stream is half-closed, and the next add opens another", async () => {
    const wire = new WireCounter();
    const qm = client({ interceptors: [wire.interceptor] });
    try {
      const name = queueName("idle");
      await qm.registerQueue(name);
      const halfClosed = nextEvent(wire, "halfClosed");
      await qm.addJob(name, "first");
      await halfClosed; // within the idle time (1 s), well under nextEvent's 20 s
      await nextEvent(wire, "ended");
      const job: Job = await qm.addJob(name, "second");
      assert.equal(job.name, "second");
      assert.equal(wire.streams, 2);
    } finally {
      await qm.shutdown();
    }
  });

  it("shutdown lets the adds under way finish, then ends the stream cleanly", async () => {
    const wire = new WireCounter();
    const qm = client({ interceptors: [wire.interceptor] });
    const name = queueName("close");
    await qm.registerQueue(name);
    const adds = Array.from({ length: 200 }, (_, i) => qm.addJob(name, "late", { i }));
    await qm.shutdown();
    const jobs = await Promise.all(adds);
    assert.equal(new Set(jobs.map((j) => j.id)).size, 200);
    assert.equal(wire.halfClosed, 1);
    assert.equal(wire.endedCleanly, 1);
  });

  it("falls back to unary AddJob calls when the server lacks AddJobStream", async () => {
    // An older server answers UNIMPLEMENTED before reading anything: this interceptor answers so for it.
    const older: Interceptor = (next) => async (req) => {
      if (req.method.name === "AddJobStream") {
        throw new ConnectError("method not found", Code.Unimplemented);
      }
      return next(req);
    };
    const wire = new WireCounter();
    const qm = client({ interceptors: [wire.interceptor, older] });
    try {
      const name = queueName("older");
      await qm.registerQueue(name);
      const jobs = await Promise.all(Array.from({ length: 20 }, (_, i) => qm.addJob(name, "unary", { i })));
      assert.equal(new Set(jobs.map((j) => j.id)).size, 20);
      assert.equal(wire.unary.get("AddJob"), 20);
      assert.equal(wire.streams, 1); // tried once, then unary calls only
      assert.equal((await qm.addJob(name, "after")).name, "after");
      assert.equal(wire.streams, 1);
    } finally {
      await qm.shutdown();
    }
  });
});
