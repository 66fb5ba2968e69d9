/**
 * Operators' commands (ControlWorker, sent here through the generated client): the worker obeys QUIET
 * (nothing delivered, its job in hand finishes), RESUME and STOP (its run ends, as after `shutdown`), and
 * the server refuses SET_CONCURRENCY, which its hello does not list.
 */
import assert from "node:assert/strict";
import { it } from "node:test";
import { createClient } from "@connectrpc/connect";
import type { ActiveJob } from "../src/index.js";
import { QueueService, WorkerControlAction } from "../src/gen/queue_manager/v1/queue_service_pb.js";
import { WorkerState } from "../src/gen/queue_manager/v1/metrics_pb.js";
import { connect } from "../src/transport.js";
import { address, client, deferred, nextEvent, queueName, worker } from "./helpers.js";

it("obeys quiet, resume and stop; set concurrency is refused for it", async () => {
  const qm = client();
  const name = queueName("control");
  await qm.registerQueue(name);
  const connection = connect({ address: address(), token: null });
  const service = createClient(QueueService, connection.transport);
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
  try {
    await qm.addJob(name, "held", null);
    await held.promise;
    const quiet = await service.controlWorker({ workerId: w.workerId, action: WorkerControlAction.QUIET });
    assert.equal(quiet.state, WorkerState.QUIET);
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
    const resumed = await service.controlWorker({ workerId: w.workerId, action: WorkerControlAction.RESUME });
    assert.equal(resumed.state, WorkerState.ACTIVE);
    const afterDone = completed("after-resume");
    await qm.addJob(name, "after-resume", null);
    await afterDone;
    await assert.rejects(
      service.controlWorker({ workerId: w.workerId, action: WorkerControlAction.SET_CONCURRENCY, concurrency: 3 }),
      /does not take set concurrency commands/,
    );
    const closed = nextEvent(w, "closed", () => true, 30_000);
    const stopped = await service.controlWorker({ workerId: w.workerId, action: WorkerControlAction.STOP });
    assert.equal(stopped.state, WorkerState.STOPPING);
    await closed; // its run ended by itself
    assert.equal(w.stoppedByServer, true);
    const listed = await qm.listWorkers(name);
    assert.deepEqual(listed.map((x) => x.workerId), [], "it does not reconnect");
  } finally {
    release.resolve();
    await w.shutdown();
    connection.close();
    await qm.shutdown();
  }
});
