/**
 * The server under test goes away (tests/test_client_ts.py stops it when this file prints "QM-STEP
 * stop-server", then starts another on the same address, the same Redis). Two workers get DRAIN: `w` runs a
 * long job past the server's grace (3 s), so the server holds every stream open until the grace ends; `quick`
 * finishes its short job and half-closes at once, so its stream ends well before the grace does (a worker
 * that ignored DRAIN would keep its stream until the server ended it with the others). Both reconnect with
 * backoff to the new server, which takes the long job's lease over (no stall, no second run) and then hands
 * the workers new jobs.
 */
import assert from "node:assert/strict";
import { it } from "node:test";
import type { ActiveJob } from "../src/index.js";
import { client, deferred, memoryLogger, nextEvent, queueName, worker } from "./helpers.js";

// Under the server's grace (3 s, set by the pytest) minus the short job (0.5 s): a gap a worker that waits
// for the server to end its stream cannot show, since the server ends all the streams together.
const HALF_CLOSE_LEAD_MS = 1_500;

it("finishes its job on DRAIN, half-closes, then reconnects to the next server and takes jobs from it", async () => {
  const qm = client();
  const name = queueName("drain");
  const quickName = queueName("drain-quick");
  await qm.registerQueue(name);
  await qm.registerQueue(quickName);
  const started = deferred<ActiveJob>();
  const longStarted = deferred();
  const runs: string[] = [];
  const logger = memoryLogger();
  const quickLogger = memoryLogger();
  const w = await worker({
    logger,
    reconnect: { initialDelayMs: 50, maxDelayMs: 500 },
    processors: {
      [name]: async (job) => {
        runs.push(job.name);
        if (job.name === "outlasts-grace") {
          longStarted.resolve();
          await new Promise((resolve) => setTimeout(resolve, 4_500));
          return "finished on the next server";
        }
        return `taken from ${w.serverId}`;
      },
    },
  });
  const quick = await worker({
    logger: quickLogger,
    reconnect: { initialDelayMs: 50, maxDelayMs: 500 },
    processors: {
      [quickName]: async (job) => {
        if (job.name === "during-drain") {
          started.resolve(job);
          await new Promise((resolve) => setTimeout(resolve, 500));
          return "finished during the drain";
        }
        return `taken from ${quick.serverId}`;
      },
    },
  });
  try {
    const firstServer = w.serverId;
    const long = await qm.addJob(name, "outlasts-grace", null);
    await longStarted.promise;
    const job = await qm.addJob(quickName, "during-drain", null);
    await started.promise;
    const disconnected = nextEvent<[unknown]>(w, "disconnected", () => true, 60_000);
    const quickDisconnected = nextEvent<[unknown]>(quick, "disconnected", () => true, 60_000);
    const reconnected = nextEvent<[string]>(w, "connected", (serverId) => serverId !== firstServer, 60_000);
    const quickReconnected = nextEvent<[string]>(quick, "connected", (serverId) => serverId !== firstServer, 60_000);
    console.log("QM-STEP stop-server");
    const [quickError] = await quickDisconnected;
    const quickEndedAt = performance.now();
    assert.equal(quickError, undefined);
    assert.equal(w.connected, true, "the long job's worker still holds its stream");
    // The server ended the stream cleanly, leaving the long job's lease held for the worker's next stream.
    const [error] = await disconnected;
    const endedAt = performance.now();
    assert.equal(error, undefined);
    assert.ok(
      endedAt - quickEndedAt >= HALF_CLOSE_LEAD_MS,
      `the drained worker's stream ended only ${Math.round(endedAt - quickEndedAt)} ms before the server ended the others`,
    );
    assert.equal(w.runningCount, 1, "the long job runs on while the worker reconnects");
    const [secondServer] = await reconnected;
    assert.ok(logger.lines.some((line) => line.includes("the server asks to drain")), logger.lines.join("\n"));
    assert.ok(quickLogger.lines.some((line) => line.includes("the server asks to drain")), quickLogger.lines.join("\n"));
    const drained = await qm.getJob(quickName, job.id);
    assert.equal(drained.state, "completed");
    assert.equal(drained.result, "finished during the drain");
    assert.equal(drained.stalledCount, 0);
    const carried = await qm.waitForJob(name, long.id, { timeoutMs: 15_000 });
    assert.equal(carried.state, "completed");
    assert.equal(carried.result, "finished on the next server");
    assert.equal(carried.stalledCount, 0);
    const after = await qm.addJob(name, "after-restart", null);
    const done = await qm.waitForJob(name, after.id, { timeoutMs: 15_000 });
    assert.equal(done.result, `taken from ${secondServer}`);
    assert.deepEqual(runs, ["outlasts-grace", "after-restart"]);
    const [quickSecond] = await quickReconnected;
    const quickAfter = await qm.addJob(quickName, "after-restart", null);
    const quickDone = await qm.waitForJob(quickName, quickAfter.id, { timeoutMs: 15_000 });
    assert.equal(quickDone.result, `taken from ${quickSecond}`);
  } finally {
    await Promise.all([w.shutdown(), quick.shutdown()]);
    await qm.shutdown();
  }
});
