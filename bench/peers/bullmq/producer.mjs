// BullMQ benchmark producer: node producer.mjs MODE --redis-port P --queue Q [...]; prints one JSON line.
// bulk: --jobs jobs {i: n} with Queue.addBulk (chunks of --chunk); single: --jobs Queue.add calls from
// --inflight concurrent callers; latency: Queue.add at --rate/s for --warmup then --seconds with the wall
// clock in ns in the data; count: prints the waiting count of the queue.
import { Queue } from "bullmq";
import { connection, cpuSeconds, nowNs, parseArgs } from "./common.mjs";

const args = parseArgs(process.argv.slice(2));
const mode = args._[0];
const queue = new Queue(args.queue, { connection: connection(args) });
const jobs = Number(args.jobs || 1000);

function stats(ms, prefix) {
  if (ms.length === 0) return {};
  ms.sort((a, b) => a - b);
  const pick = (q) => ms[Math.min(ms.length, Math.max(1, Math.ceil((q / 100) * ms.length))) - 1];
  const mean = ms.reduce((a, b) => a + b, 0) / ms.length;
  return { [`${prefix}_mean_ms`]: mean, [`${prefix}_p50_ms`]: pick(50), [`${prefix}_p99_ms`]: pick(99) };
}

async function bulk() {
  const chunk = Number(args.chunk || 1000);
  const t0 = performance.now();
  for (let start = 0; start < jobs; start += chunk) {
    const batch = [];
    for (let i = start; i < Math.min(jobs, start + chunk); i++) batch.push({ name: "noop", data: { i } });
    await queue.addBulk(batch);
  }
  return { jobs, seconds: (performance.now() - t0) / 1000 };
}

async function single() {
  const inflight = Number(args.inflight || 50);
  const ms = [];
  let next = 0;
  await queue.add("warm", { i: -1 });
  const t0 = performance.now();
  async function caller() {
    while (next < jobs) {
      const i = next++;
      const t = performance.now();
      await queue.add("noop", { i });
      ms.push(performance.now() - t);
    }
  }
  await Promise.all(Array.from({ length: inflight }, caller));
  return { jobs: ms.length + 1, seconds: (performance.now() - t0) / 1000, ...stats(ms, "call") };
}

async function steady(rate, count, warm, ms) {
  const interval = 1000 / rate;
  const pending = new Set();
  const t0 = performance.now();
  for (let i = 0; i < count; i++) {
    const delay = t0 + i * interval - performance.now();
    if (delay > 0) await new Promise((r) => setTimeout(r, delay));
    const data = { t: String(nowNs()) };
    if (warm) data.w = 1;
    const t = performance.now();
    const p = queue.add("latency", data).then(() => ms.push(performance.now() - t));
    pending.add(p);
    p.finally(() => pending.delete(p));
    if (pending.size >= 256) await Promise.race(pending);
  }
  await Promise.all(pending);
  return count / ((performance.now() - t0) / 1000);
}

async function latency() {
  const rate = Number(args.rate || 500);
  const warm = Math.floor(rate * Number(args.warmup || 1));
  const measured = Math.floor(rate * Number(args.seconds || 10));
  if (warm) await steady(rate, warm, true, []);
  const ms = [];
  const achieved = await steady(rate, measured, false, ms);
  return { jobs: warm + measured, achieved_rate: achieved, ...stats(ms, "add") };
}

async function count() {
  const counts = await queue.getJobCounts("waiting", "paused", "prioritized");
  return { waiting: counts.waiting + counts.paused + counts.prioritized };
}

const modes = { bulk, single, latency, count };
try {
  await queue.waitUntilReady();
  const cpu0 = cpuSeconds();
  const result = await modes[mode]();
  result.cpu_s = cpuSeconds() - cpu0;
  console.log(JSON.stringify(result));
} finally {
  await queue.close();
}
