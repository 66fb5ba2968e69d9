// BullMQ benchmark worker: node worker.mjs --redis-port P --queue Q --mode noop|latency --concurrency N
//   --out-dir D --ready-file F --max-seconds S
// One Worker (BullMQ's documented way to process jobs), an async no-op processor; every job recorded by
// its id (common.mjs Recorder). Exits on SIGTERM, after --max-seconds, or when its parent goes away.
import { Worker } from "bullmq";
import { writeFileSync } from "node:fs";
import { Recorder, connection, parseArgs } from "./common.mjs";

const args = parseArgs(process.argv.slice(2));
const rec = new Recorder(args["out-dir"], args.tag || "w");
const latency = args.mode === "latency";

const processor = latency
  ? async (job) => {
      const started = rec.started();
      rec.latency(job.id, started, BigInt(job.data.t), Boolean(job.data.w));
    }
  : async (job) => {
      rec.started();
      rec.done(job.id);
    };

const worker = new Worker(args.queue, processor, {
  connection: connection(args),
  concurrency: Number(args.concurrency || 200),
  autorun: true,
});
worker.on("error", (err) => console.error("worker error", err));

rec.startFlusher();
const parent = process.ppid;
const deadline = Date.now() + Number(args["max-seconds"] || 600) * 1000;
let stopping = false;

async function stop(code) {
  if (stopping) return;
  stopping = true;
  try {
    await Promise.race([worker.close(), new Promise((r) => setTimeout(r, 10000))]);
  } finally {
    rec.close();
    process.exit(code);
  }
}

process.on("SIGTERM", () => stop(0));
process.on("SIGINT", () => stop(0));
setInterval(() => {
  if (process.ppid !== parent || Date.now() > deadline) stop(0);
}, 1000);

await worker.waitUntilReady();
writeFileSync(args["ready-file"], String(process.pid));
