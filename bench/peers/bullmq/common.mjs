// Shared pieces of the BullMQ peer: argument parsing, the wall clock in ns, and the same per-job
// records as bench/recorder.py (`<tag>-<pid>.ids` lines and a `<tag>-<pid>.stat` JSON every 100 ms).
import { appendFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export function parseArgs(argv) {
  const out = { _: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a.startsWith("--")) {
      out[a.slice(2)] = argv[i + 1];
      i++;
    } else {
      out._.push(a);
    }
  }
  return out;
}

export function connection(args) {
  // maxRetriesPerRequest null: required by BullMQ workers (blocking commands).
  return { host: "127.0.0.1", port: Number(args["redis-port"]), maxRetriesPerRequest: null };
}

const originUs = BigInt(Math.floor(performance.timeOrigin * 1000));

// Wall clock in ns as a BigInt (performance.now() keeps it monotonic within the process).
export function nowNs() {
  return originUs * 1000n + BigInt(Math.floor(performance.now() * 1e6));
}

export function cpuSeconds() {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

export class Recorder {
  constructor(outDir, tag) {
    this.idsPath = join(outDir, `${tag}-${process.pid}.ids`);
    this.statPath = join(outDir, `${tag}-${process.pid}.stat`);
    this.lines = [];
    this.written = 0;
    this.firstNs = 0n;
    this.lastNs = 0n;
    this.cpuFirst = 0;
    this.timer = null;
  }

  started() {
    const now = nowNs();
    if (this.firstNs === 0n) {
      this.firstNs = now;
      this.cpuFirst = cpuSeconds();
    }
    return now;
  }

  done(id) {
    this.lines.push(String(id));
    this.lastNs = nowNs();
  }

  latency(id, startedNs, stampNs, warm) {
    this.lines.push(`${id} ${startedNs - stampNs} ${warm ? 1 : 0}`);
    this.lastNs = nowNs();
  }

  flush() {
    const end = this.lines.length;
    if (end > this.written) {
      appendFileSync(this.idsPath, this.lines.slice(this.written, end).join("\n") + "\n");
      this.written = end;
    }
    const stat = {
      count: end,
      side: 0,
      first_ns: String(this.firstNs),
      last_ns: String(this.lastNs),
      cpu_s: this.firstNs === 0n ? 0 : cpuSeconds() - this.cpuFirst,
      pid: process.pid,
    };
    writeFileSync(this.statPath + ".tmp", JSON.stringify(stat));
    renameSync(this.statPath + ".tmp", this.statPath);
  }

  startFlusher(intervalMs = 100) {
    this.flush();
    this.timer = setInterval(() => this.flush(), intervalMs);
  }

  close() {
    if (this.timer) clearInterval(this.timer);
    this.flush();
  }
}
