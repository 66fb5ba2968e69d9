/**
 * Operators' commands (ControlWorker, through `QueueManager.quietWorker` and its kin): the worker obeys
 * QUIET (nothing delivered, its job in hand finishes), RESUME, STOP (its run ends, as after `shutdown`) and
 * SET_CONCURRENCY (more runs at once, or fewer as its runs finish); `listWorkers` shows its state.
 */
import assert from "node:assert/strict";
import { it } from "node:test";
import { FailedPreconditionError, NotFoundError, type ActiveJob } from "../src/index.js";
import { client, deferred, nextEvent, queueName, until, worker } from "./helpers.js";

it("obeys quiet, resume and stop, which listWorkers shows", async () => {
  const qm = client();
  const name = queueName("control");
  await qm.registerQueue(name);
  const held = deferred();
  const release = deferred();
  const ran: string[] = [];
  const w = await worker({
    concurrency: 2,
    processors: {
      [name]: async (job) => {
        ran.push(job.name);
        if (job.name === "held") {
          held.resolve();
          await release.promise;
        }
        return job.name;
      },
    },
  });
  // Listening before the add: a job can be done before its add's answer arrives.
  const completed = (jobName: string) =>
    nextEvent<[ActiveJob, unknown]>(w, "completed", (job) => job.name === jobName, 20_000);
  const stateOf = async () => (await qm.listWorkers(name)).find((x) => x.workerId === w.workerId)?.state;
  const me = (await qm.listWorkers(name)).find((x) => x.workerId === w.workerId);
  assert.ok(me !== undefined && me.uptimeMs >= 0 && me.uptimeMs < 60_000, `uptime ${me?.uptimeMs}`);
  try {
    assert.equal(await stateOf(), "active");
    await qm.addJob(name, "held", null);
    await held.promise;
    const quiet = await qm.quietWorker(w.workerId);
    assert.deepEqual([quiet.state, quiet.changed, quiet.concurrency], ["quiet", true, 2]);
    assert.equal(await stateOf(), "quiet");
    assert.equal((await qm.quietWorker(w.workerId)).changed, false, "quiet already");
    const firstDone = completed("held");
    release.resolve(); // the job in hand finishes while quiet
    await firstDone;
    // A job added while it is quiet goes to another worker, although this one has free slots.
    const other = await worker({ processors: { [name]: async (job) => job.name } });
    const otherDone = nextEvent<[ActiveJob, unknown]>(other, "completed", (job) => job.name === "while-quiet");
    await qm.addJob(name, "while-quiet", null);
    await otherDone;
    await other.shutdown();
    assert.deepEqual(ran, ["held"]);
    const resumed = await qm.resumeWorker(w.workerId);
    assert.equal(resumed.state, "active");
    const afterDone = completed("after-resume");
    await qm.addJob(name, "after-resume", null);
    await afterDone;
    const closed = nextEvent(w, "closed", () => true, 30_000);
    const stopped = await qm.stopWorker(w.workerId);
    assert.equal(stopped.state, "stopping");
    await closed; // its run ended by itself
    assert.equal(w.stoppedByServer, true);
    const listed = await qm.listWorkers(name);
    assert.deepEqual(listed.map((x) => x.workerId), [], "it does not reconnect");
  } finally {
    release.resolve();
    await w.shutdown();
    await qm.shutdown();
  }
});

it("set concurrency raises the runs at once and lowers them as runs finish", async () => {
  const qm = client();
  const name = queueName("resize");
  await qm.registerQueue(name);
  const gates: (() => void)[] = [];
  let running = 0;
  const started: string[] = [];
  const w = await worker({
    concurrency: 1,
    processors: {
      [name]: async (job) => {
        running += 1;
        started.push(job.name);
        w.emit("began", started.length);
        await new Promise<void>((resolve) => gates.push(resolve));
        running -= 1;
      },
    },
  });
  const begun = (n: number) => (started.length >= n ? Promise.resolve() : nextEvent<[number]>(w, "began", (count) => count >= n));
  const settle = () => new Promise((resolve) => setTimeout(resolve, 300)); // to see that nothing more starts
  try {
    await qm.addBulk(name, ["j0", "j1", "j2", "j3", "j4"].map((jobName) => ({ name: jobName, data: null })));
    await begun(1);
    await settle();
    assert.equal(running, 1);
    const raised = await qm.setWorkerConcurrency(w.workerId, 3);
    assert.deepEqual([raised.concurrency, raised.changed, raised.state], [3, true, "active"]);
    await begun(3); // two more start at once
    assert.equal(w.concurrency, 3);
    assert.equal((await qm.listWorkers(name)).find((x) => x.workerId === w.workerId)?.concurrency, 3);
    const lowered = await qm.setWorkerConcurrency(w.workerId, 1);
    assert.equal(lowered.concurrency, 1);
    await until(() => w.concurrency === 1); // the command reached the worker before its runs finish
    for (const open of gates.splice(0)) open(); // the three runs finish: two of their slots are given up
    await begun(4);
    await settle();
    assert.equal(running, 1, "one run at a time after the decrease");
    assert.equal(w.concurrency, 1);
    gates.splice(0).forEach((open) => open());
    await begun(5);
    assert.equal(running, 1);
  } finally {
    const timer = setInterval(() => gates.splice(0).forEach((open) => open()), 20);
    await w.shutdown();
    clearInterval(timer);
    await qm.shutdown();
  }
});

it("refuses bad arguments before the call and names an unknown or stopping worker", async () => {
  const qm = client();
  const name = queueName("control-bad");
  await qm.registerQueue(name);
  const w = await worker({ processors: { [name]: async () => null } });
  try {
    await assert.rejects(qm.quietWorker(""), { name: "TypeError", message: /workerId must be a non-empty string/ });
    await assert.rejects(qm.setWorkerConcurrency(w.workerId, 0), {
      name: "RangeError",
      message: "concurrency must be a whole number from 1 to 100000, got 0",
    });
    await assert.rejects(qm.setWorkerConcurrency(w.workerId, 2.5), RangeError);
    await assert.rejects(qm.quietWorker(`${w.workerId}-gone`), NotFoundError);
    const closed = nextEvent(w, "closed", () => true, 30_000);
    await qm.stopWorker(w.workerId);
    await assert.rejects(qm.quietWorker(w.workerId), (err) => err instanceof FailedPreconditionError || err instanceof NotFoundError);
    await closed;
  } finally {
    await w.shutdown();
    await qm.shutdown();
  }
});
