/** A job event watcher that falls behind (the server runs with a buffer of 20 events): it ends, others go on. */
import assert from "node:assert/strict";
import { after, before, it } from "node:test";
import { ResourceExhaustedError, type JobEvent, type QueueManager } from "../src/index.js";
import { client, queueName } from "./helpers.js";

let qm: QueueManager;

before(() => {
  qm = client();
});

after(async () => {
  await qm.shutdown();
});

it("ends a watcher that fell behind with ResourceExhaustedError; a filtered one goes on", async () => {
  const name = queueName("ev-burst");
  await qm.registerQueue(name);
  const slow = qm.watchJobEvents(name);
  const other = qm.watchJobEvents(name, { types: "removed" });
  await Promise.all([slow.ready(), other.ready()]);
  await qm.addBulk(name, Array.from({ length: 50 }, (_, i) => ({ name: "n", data: { i } })));
  await assert.rejects(
    (async () => {
      for await (const _ of slow) {
        // the burst does not fit the buffer: the stream ends before any of it is sent
      }
    })(),
    (err: unknown) => {
      assert.ok(err instanceof ResourceExhaustedError, String(err));
      assert.match(err.message, /events dropped: the watcher fell behind by 50 /);
      return true;
    },
  );
  const job = await qm.addJob(name, "gone", {});
  await qm.removeJob(name, job.id);
  let removed: JobEvent | undefined;
  for await (const event of other) {
    removed = event;
    break;
  }
  assert.deepEqual([removed?.type, removed?.jobId], ["removed", job.id]);
});
