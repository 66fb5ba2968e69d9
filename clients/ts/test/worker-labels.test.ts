/**
 * Routing by worker labels against the live server: `JobOptions.workerLabels` reaches the server (the job
 * reads them back, its routing group is listed), the job runs only on a worker whose labels hold them while
 * a worker without them takes the plain jobs, and bad labels are refused before the call.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type ActiveJob, type QueueManager } from "../src/index.js";
import { client, deferred, queueName, worker } from "./helpers.js";

let qm: QueueManager;

before(() => {
  qm = client();
});

after(async () => {
  await qm.shutdown();
});

describe("worker labels", () => {
  it("are stored, listed as the routing group, and send the job to the matching worker only", async () => {
    const name = queueName("labels");
    await qm.registerQueue(name);
    const routed = await qm.addJob(name, "render", null, { workerLabels: { region: "eu", gpu: "a100" } });
    assert.deepEqual(routed.workerLabels, { gpu: "a100", region: "eu" });
    assert.equal(routed.group, "");
    assert.deepEqual((await qm.getJob(name, routed.id)).workerLabels, { gpu: "a100", region: "eu" });
    const groups = await qm.listGroups(name);
    assert.deepEqual(
      groups.items.map((g) => [g.group, g.waiting]),
      [["labels:gpu=a100,region=eu", 1]],
    );

    const ranOn = new Map<string, string>();
    const done = deferred();
    const processor = (who: string) => async (job: ActiveJob) => {
      ranOn.set(job.name, who);
      if (ranOn.size === 2) done.resolve();
    };
    // The worker without the labels connects first and has free slots: it takes the plain job only.
    const plain = await worker({ concurrency: 4, processors: { [name]: processor("plain") } });
    await qm.addJob(name, "plain-job");
    const gpu = await worker({
      concurrency: 4,
      labels: { gpu: "a100", region: "eu", zone: "b" },
      processors: { [name]: processor("gpu") },
    });
    try {
      await done.promise;
      assert.equal(ranOn.get("render"), "gpu");
      assert.equal(ranOn.get("plain-job"), "plain");
    } finally {
      await plain.shutdown();
      await gpu.shutdown();
    }
  });

  it("refuses bad labels and labels with a group, naming the option", async () => {
    const name = queueName("labels-bad");
    await qm.registerQueue(name);
    await assert.rejects(qm.addJob(name, "j", null, { workerLabels: { "a=b": "x" } }), /workerLabels key "a=b"/);
    await assert.rejects(qm.addJob(name, "j", null, { workerLabels: { a: "x,y" } }), /workerLabels\["a"\]/);
    await assert.rejects(
      qm.addJob(name, "j", null, { workerLabels: { a: "x" }, group: "tenant" }),
      /cannot be given together/,
    );
    await assert.rejects(qm.addJob(name, "j", null, { group: "labels:a=x" }), /must not start with "labels:"/);
  });
});
