/**
 * The server goes away in the middle of a burst of adds (tests/test_client_ts.py stops it when this file
 * prints "QM-STEP stop-server", then starts another on the same address and Redis). Every caller gets its
 * job or an error, none hangs; every job a caller got is stored; and the adds after the restart open a new
 * stream and succeed. A cut may cost no caller an error: adds whose message had not left go out again on the
 * next stream, and with the next server up at once that stream opens at the first try.
 */
import assert from "node:assert/strict";
import { it } from "node:test";
import { QueueManagerError, type Job } from "../src/index.js";
import { client, queueName } from "./helpers.js";
import { WireCounter } from "./wire.js";

const IN_FLIGHT = 50;
// The whole burst, restart included, ends well within this (a caller left hanging fails the test here).
const DEADLINE_MS = 60_000;

it("gives every caller of a burst cut by a server restart its job or an error, then adds on a new stream", async () => {
  const wire = new WireCounter();
  const qm = client({ interceptors: [wire.interceptor] });
  const name = queueName("restart");
  await qm.registerQueue(name);
  const jobs: Job[] = [];
  const errors: QueueManagerError[] = [];
  let calls = 0;
  let stepped = false;
  let streamsAtStep = 0;
  let recovered = false; // an add succeeded on a stream opened after the cut: the next server took it
  async function producer(): Promise<void> {
    while (!recovered) {
      calls += 1;
      try {
        jobs.push(await qm.addJob(name, "burst", { n: calls }));
        recovered = stepped && wire.streams > streamsAtStep;
      } catch (err) {
        assert.ok(err instanceof QueueManagerError, `not a QueueManagerError: ${String(err)}`);
        errors.push(err);
        // While the next server starts, the adds fail at once (connection refused): do not spin.
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      if (!stepped && jobs.length >= 500) {
        stepped = true;
        streamsAtStep = wire.streams;
        console.log("QM-STEP stop-server");
      }
    }
  }
  try {
    let timer: NodeJS.Timeout | undefined;
    const hung = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`callers still waiting after ${DEADLINE_MS} ms (${calls} calls, ${jobs.length} jobs, ${errors.length} errors)`)), DEADLINE_MS);
    });
    try {
      await Promise.race([Promise.all(Array.from({ length: IN_FLIGHT }, producer)), hung]);
    } finally {
      clearTimeout(timer);
    }
    // Shown by the pytest when the test fails.
    console.log(`calls ${calls} jobs ${jobs.length} errors ${errors.length} streams ${wire.streams} messages ${wire.messages}`);
    assert.equal(jobs.length + errors.length, calls);
    assert.ok(recovered);
    const codes = new Set(errors.map((e) => e.codeName));
    assert.ok([...codes].every((c) => c === "UNAVAILABLE"), `errors: ${[...codes].join(", ")}: ${errors[0]?.message}`);
    assert.ok(wire.streams >= 2, `${wire.streams} streams`);
    // Every job a caller got is stored, on the next server too.
    const stored = new Set<string>();
    let pageToken = "";
    do {
      const page = await qm.listJobs(name, "waiting", { pageSize: 1_000, pageToken });
      page.items.forEach((j) => stored.add(j.id));
      pageToken = page.nextPageToken;
    } while (pageToken);
    const missing = jobs.filter((j) => !stored.has(j.id));
    assert.deepEqual(missing, []);
    assert.equal((await qm.addJob(name, "after")).name, "after");
  } finally {
    await qm.shutdown();
  }
});
