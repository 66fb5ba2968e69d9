/**
 * The server under test goes away (tests/test_client_ts.py stops it when this file prints "QM-STEP
 * stop-server", then starts another on the same address, the same Redis): the worker is sent DRAIN and
 * finishes its short job; the server ends the stream after its grace (2 s) with the long job still running,
 * and the worker reconnects with backoff to the new server, which takes the long job's lease over (no
 * stall, no second run) and then hands the worker new jobs.
 */
import assert from "node:assert/strict";
import { it } from "node:test";
import type { ActiveJob } from "../src/index.js";
import { client, deferred, memoryLogger, nextEvent, queueName, worker } from "./helpers.js";

it("finishes its job on DRAIN, then reconnects to the next server and takes jobs from it", async () => {
  const qm = client();
  const name = queueName("drain");
  await qm.registerQueue(name);
  const started = deferred<ActiveJob>();
  const longStarted = deferred();
  const runs: string[] = [];
  const logger = memoryLogger();
  const w = await worker({
    logger,
    reconnect: { initialDelayMs: 50, maxDelayMs: 500 },
    processors: {
      [name]: async (job) => {
        runs.push(job.name);
        if (job.name === "outlasts-grace") {
          longStarted.resolve();
          await new Promise((resolve) => setTimeout(resolve, 3_000));
          return "finished on the next server";
        }
        if (job.name === "during-drain") {
          started.resolve(job);
          await new Promise((resolve) => setTimeout(resolve, 500));
          return "finished during the drain";
        }
        return `taken from ${w.serverId}`;
      },
    },
  });
  try {
    const firstServer = w.serverId;
    const long = await qm.addJob(name, "outlasts-grace", null);
    await longStarted.promise;
    const job = await qm.addJob(name, "during-drain", null);
    await started.promise;
    const disconnected = nextEvent<[unknown]>(w, "disconnected", () => true, 60_000);
    const reconnected = nextEvent<[string]>(w, "connected", (serverId) => serverId !== firstServer, 60_000);
    console.log("QM-STEP stop-server");
    // The server ended the stream cleanly, leaving the long job's lease held for the worker's next stream.
    const [error] = await disconnected;
    assert.equal(w.runningCount, 1, "the long job runs on while the worker reconnects");
    assert.equal(error, undefined);
    const [secondServer] = await reconnected;
    assert.ok(logger.lines.some((line) => line.includes("the server asks to drain")), logger.lines.join("\n"));
    const drained = await qm.getJob(name, job.id);
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
    assert.deepEqual(runs, ["outlasts-grace", "during-drain", "after-restart"]);
  } finally {
    await w.shutdown();
    await qm.shutdown();
  }
});
