// Measures concurrent addJob throughput: N adds with K in flight, against a running server. Not a test.
//
//   node clients/ts/scripts/bench-adds.mjs [client module] [address] [adds] [in flight]
//
// The client module defaults to this package's build (dist/src/index.js); give another build's index.js
// (an older commit's) to compare. Prints adds/s and the client's CPU per add.
import { randomBytes } from "node:crypto";
import { pathToFileURL } from "node:url";

const [modulePath = new URL("../dist/src/index.js", import.meta.url).pathname, address = "127.0.0.1:50051"] =
  process.argv.slice(2);
const total = Number(process.argv[4] ?? 20_000);
const inFlight = Number(process.argv[5] ?? 50);

const { QueueManager } = await import(pathToFileURL(modulePath).href);
const qm = new QueueManager({ address, token: null });
const queue = `bench-adds-${randomBytes(4).toString("hex")}`;
await qm.registerQueue(queue);
await qm.addJob(queue, "warm-up", { i: -1 });

let next = 0;
async function producer() {
  while (next < total) {
    next += 1;
    await qm.addJob(queue, "bench", { i: next });
  }
}
const cpu = process.cpuUsage();
const began = performance.now();
await Promise.all(Array.from({ length: inFlight }, producer));
const seconds = (performance.now() - began) / 1000;
const used = process.cpuUsage(cpu);
const cpuPerAdd = (used.user + used.system) / total;
console.log(
  `${total} adds, ${inFlight} in flight: ${Math.round(total / seconds)} adds/s, ` +
    `client CPU ${cpuPerAdd.toFixed(1)} µs/add (${modulePath})`,
);
await qm.obliterateQueue(queue, true);
await qm.shutdown();
