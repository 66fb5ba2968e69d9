/** A worker process killed mid-job (SIGKILL): its job goes back to waiting and another worker completes it. */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import { after, before, it } from "node:test";
import type { QueueManager } from "../src/index.js";
import { address, client, queueName, worker } from "./helpers.js";

const CRASH_WORKER = fileURLToPath(new URL("./fixtures/crash-worker.js", import.meta.url));

let qm: QueueManager;

before(() => {
  qm = client();
});

after(async () => {
  await qm.shutdown();
});

it("recovers the job of a worker killed mid-job and completes it on another worker", async () => {
  const name = queueName("crash");
  await qm.registerQueue(name);
  const job = await qm.addJob(name, "survives", { n: 1 });
  const child = spawn(process.execPath, [CRASH_WORKER, address(), name], { stdio: ["ignore", "pipe", "inherit"] });
  try {
    let output = "";
    const started = new Promise<string>((resolve, reject) => {
      child.stdout.setEncoding("utf8");
      child.stdout.on("data", (chunk: string) => {
        output += chunk;
        const match = /started (\S+)\n/.exec(output);
        if (match) {
          resolve(match[1]!);
        }
      });
      child.on("exit", (code) => reject(new Error(`the crash worker exited (${code}) before starting the job`)));
    });
    assert.equal(await started, job.id);
    assert.equal((await qm.getJob(name, job.id)).state, "active");
    const exited = once(child, "exit");
    child.kill("SIGKILL");
    assert.deepEqual((await exited)[1], "SIGKILL");
    const rescuer = await worker({
      processors: { [name]: async (j) => ({ redelivery: j.redelivery, stalled: j.stalledCount, data: j.data }) },
    });
    try {
      const done = await qm.waitForJob(name, job.id, { timeoutMs: 20_000 });
      assert.equal(done.state, "completed");
      assert.deepEqual(done.result, { redelivery: true, stalled: 1, data: { n: 1 } });
    } finally {
      await rescuer.shutdown();
    }
  } finally {
    child.kill("SIGKILL");
  }
});
