/**
 * The TypeScript conformance worker: the kit's processor contract (conformance/README.md) on this client.
 *
 * Run by the harness as `node clients/ts/dist/conformance/worker.js` with QM_CONFORMANCE_ADDRESS,
 * QM_CONFORMANCE_QUEUE and QM_CONFORMANCE_CONCURRENCY set; stops gracefully on SIGTERM.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { Worker, type ActiveJob, type JobContext } from "../src/index.js";

type Data = { message?: string; times?: number; ms?: number; steps?: unknown[]; step?: number };

/** Does what the job's name says, with its data (a JSON object). */
async function processJob(job: ActiveJob, ctx: JobContext): Promise<unknown> {
  const data = (job.data ?? {}) as Data;
  switch (job.name) {
    case "echo":
      return job.data;
    case "fail":
      // Fails the first `times` attempts (every attempt without it), then succeeds.
      if (data.times === undefined || job.attemptsMade < data.times) {
        throw new Error(data.message ?? "failed");
      }
      return { attempts: job.attemptsMade + 1 };
    case "sleep":
      await sleep(data.ms ?? 0, undefined, { signal: ctx.signal }); // a cancel aborts the signal
      return { slept: data.ms ?? 0 };
    case "progress":
      for (const step of data.steps ?? []) {
        ctx.updateProgress(step);
      }
      return { steps: (data.steps ?? []).length };
    case "checkpoint":
      if ((data.step ?? 0) === 0) {
        await ctx.updateData({ step: 1 });
        throw new Error("checkpointed at step 1");
      }
      return { resumed_at: data.step };
    default:
      throw new Error(`unknown job name ${JSON.stringify(job.name)}`);
  }
}

const queue = process.env["QM_CONFORMANCE_QUEUE"]!;
const worker = new Worker({
  address: process.env["QM_CONFORMANCE_ADDRESS"]!,
  concurrency: Number(process.env["QM_CONFORMANCE_CONCURRENCY"] ?? "2"),
  processors: { [queue]: processJob },
  shutdownGraceMs: 10_000,
});
worker.start();
for (const signal of ["SIGTERM", "SIGINT"] as const) {
  process.once(signal, () => {
    void worker.shutdown().then(() => process.exit(0));
  });
}
