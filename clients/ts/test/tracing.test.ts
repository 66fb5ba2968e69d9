/**
 * OpenTelemetry tracing against the live server: PRODUCER spans for adds, CONSUMER spans for runs under
 * them (the context carried in the jobs' metadata attributes), failures, a caller's own trace context, the
 * size rule, and nothing at all without a tracer provider.
 *
 * Each test passes its own provider, except the last, which registers the global one (it can be set once
 * per process): the tests before it check the untraced default.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { SpanKind, SpanStatusCode, propagation, trace, context as otelContext } from "@opentelemetry/api";
import { CompositePropagator, W3CBaggagePropagator, W3CTraceContextPropagator } from "@opentelemetry/core";
import type { ReadableSpan } from "@opentelemetry/sdk-trace-base";
import type { QueueManager } from "../src/index.js";
import { client, memoryLogger, queueName } from "./helpers.js";
import { childOf, recordingProvider } from "./spans.js";

const WAIT = { timeoutMs: 20_000 };
// A caller's own trace context (the W3C specification's example).
const THEIR_TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

let plain: QueueManager; // no tracer provider, none global: tracing off
const traced: QueueManager[] = [];

before(() => {
  plain = client();
});

after(async () => {
  await Promise.all([plain, ...traced].map((qm) => qm.shutdown()));
});

/** A client tracing into its own recorder, with the queues `names` registered. */
async function tracedClient(...names: string[]) {
  const { provider, recorder } = recordingProvider();
  const qm = client({ tracerProvider: provider, concurrency: 4 });
  traced.push(qm);
  for (const name of names) {
    await qm.registerQueue(name);
  }
  return { qm, provider, recorder };
}

describe("tracing off", () => {
  it("adds nothing to jobs without a tracer provider", async () => {
    const name = queueName("untraced");
    await plain.registerQueue(name);
    const job = await plain.addJob(name, "welcome", null);
    const own = { correlationId: "c-1", attributes: { tenant: "acme" } };
    const withMetadata = await plain.addJob(name, "invoice", null, { metadata: own });
    const [bulk] = await plain.addBulk(name, [{ name: "digest" }]);
    assert.deepEqual((await plain.getJob(name, job.id)).metadata, { correlationId: "", tags: [], attributes: {} });
    assert.deepEqual((await plain.getJob(name, withMetadata.id)).metadata.attributes, { tenant: "acme" });
    assert.deepEqual((await plain.getJob(name, bulk!)).metadata.attributes, {});
    assert.deepEqual(own.attributes, { tenant: "acme" }); // the caller's object is left alone
  });
});

describe("producer and consumer spans", () => {
  it("runs a job under its add's span, the processor's own spans under the run's", async () => {
    const name = queueName("emails");
    const { qm, provider, recorder } = await tracedClient(name);
    const app = provider.getTracer("app");
    qm.registerProcessor(name, async () => {
      await app.startActiveSpan("render", async (span) => {
        await Promise.resolve();
        span.end();
      });
      return "sent";
    });
    await qm.startWorkers({ logger: memoryLogger() }); // the workers take the client's tracer provider
    const job = await qm.addJob(name, "welcome", { to: "a@example.com" });
    assert.equal((await qm.waitForJob(name, job.id, WAIT)).state, "completed");

    const [publish] = await recorder.spans(`${name} publish`, 1);
    const [run] = await recorder.spans(`${name} process`, 1);
    const [render] = await recorder.spans("render", 1);
    assert.equal(publish!.kind, SpanKind.PRODUCER);
    assert.equal(run!.kind, SpanKind.CONSUMER);
    assert.ok(childOf(run!, publish!) && childOf(render!, run!));
    assert.deepEqual(publish!.attributes, {
      "messaging.system": "queue_manager",
      "messaging.operation": "publish",
      "messaging.destination.name": name,
      "messaging.message.id": job.id,
    });
    assert.deepEqual(run!.attributes, {
      "messaging.system": "queue_manager",
      "messaging.operation": "process",
      "messaging.destination.name": name,
      "messaging.message.id": job.id,
      "queue_manager.job.name": "welcome",
      "queue_manager.job.attempt": 1,
    });
    assert.equal(run!.status.code, SpanStatusCode.UNSET);
    // The context travelled in the job's metadata: the W3C traceparent of the publish span.
    const { traceId, spanId } = publish!.spanContext();
    assert.equal(job.metadata.attributes.traceparent, `00-${traceId}-${spanId}-01`);
  });

  it("runs each job of a bulk add under the batch's one span", async () => {
    const name = queueName("reports");
    const { qm, recorder } = await tracedClient(name);
    qm.registerProcessor(name, async (job) => job.data);
    await qm.startWorkers({ logger: memoryLogger() });
    // One options object for every job: each job gets the context, the caller's object stays as it was.
    const options = { metadata: { attributes: { tenant: "acme" } } };
    const ids = await qm.addBulk(name, [0, 1, 2, 3, 4].map((i) => ({ name: "daily", data: i, options })));
    for (const id of ids) {
      const done = await qm.waitForJob(name, id, WAIT);
      assert.equal(done.state, "completed");
      assert.deepEqual(Object.keys(done.metadata.attributes).sort(), ["tenant", "traceparent"]);
    }
    assert.deepEqual(options.metadata.attributes, { tenant: "acme" });
    const [publish, ...more] = await recorder.spans(`${name} publish`, 1);
    assert.equal(more.length, 0);
    assert.equal(publish!.attributes["messaging.batch.message_count"], 5);
    const runs = await recorder.spans(`${name} process`, 5);
    assert.ok(runs.every((run) => childOf(run, publish!)));
    assert.deepEqual(runs.map((run) => run.attributes["messaging.message.id"]).sort(), [...ids].sort());
  });

  it("marks each failed run ERROR with the exception", async () => {
    const name = queueName("failing");
    const { qm, recorder } = await tracedClient(name);
    qm.registerProcessor(name, async () => {
      throw new TypeError("smtp refused");
    });
    await qm.startWorkers({ logger: memoryLogger() });
    const job = await qm.addJob(name, "welcome", null, { attempts: 2, backoff: 1 });
    assert.equal((await qm.waitForJob(name, job.id, WAIT)).state, "failed");
    const attempt = (span: ReadableSpan) => span.attributes["queue_manager.job.attempt"] as number;
    const runs = (await recorder.spans(`${name} process`, 2)).sort((a, b) => attempt(a) - attempt(b));
    const [publish] = recorder.named(`${name} publish`);
    assert.deepEqual(runs.map(attempt), [1, 2]);
    for (const run of runs) {
      assert.ok(childOf(run, publish!));
      assert.deepEqual(run.status, { code: SpanStatusCode.ERROR, message: "smtp refused" });
      assert.equal(run.events.length, 1);
      const [event] = run.events;
      assert.equal(event!.name, "exception");
      assert.equal(event!.attributes?.["exception.type"], "TypeError");
      assert.equal(event!.attributes?.["exception.message"], "smtp refused");
    }
  });

  it("keeps a caller's own traceparent, and the run continues that trace", async () => {
    const name = queueName("theirs");
    const { qm, recorder } = await tracedClient(name);
    qm.registerProcessor(name, async () => null);
    await qm.startWorkers({ logger: memoryLogger() });
    const own = { traceparent: THEIR_TRACEPARENT, tenant: "acme" };
    const job = await qm.addJob(name, "welcome", null, { metadata: { attributes: own } });
    assert.deepEqual(job.metadata.attributes, own);
    await qm.waitForJob(name, job.id, WAIT);
    const [run] = await recorder.spans(`${name} process`, 1);
    assert.equal(run!.spanContext().traceId, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert.equal(run!.parentSpanContext?.spanId, "00f067aa0ba902b7");
  });

  it("makes a workflow one trace: every step's run under the workflow's span", async () => {
    const [first, second] = [queueName("steps"), queueName("steps")];
    const { qm, recorder } = await tracedClient(first, second);
    qm.registerProcessor(first, async () => "sent");
    qm.registerProcessor(second, async () => "filed");
    await qm.startWorkers({ logger: memoryLogger() });
    const runId = await qm.executeWorkflow({
      id: "signup",
      steps: [{ key: "welcome", queueName: first, jobName: "welcome", onSuccess: [{ key: "file", queueName: second, jobName: "file" }] }],
      metadata: { correlationId: "req-1" },
    });
    const [publish] = await recorder.spans("workflow signup publish", 1);
    const [one] = await recorder.spans(`${first} process`, 1);
    const [two] = await recorder.spans(`${second} process`, 1);
    assert.equal(publish!.kind, SpanKind.PRODUCER);
    assert.equal(publish!.attributes["queue_manager.workflow.run_id"], runId);
    assert.equal(publish!.attributes["messaging.batch.message_count"], 1);
    assert.ok(childOf(one!, publish!) && childOf(two!, publish!));
    const run = await qm.getWorkflow(runId);
    const step = await qm.getJob(second, run.steps.find((s) => s.key === "file")!.jobId);
    assert.equal(step.metadata.correlationId, "req-1");
    assert.equal(step.metadata.attributes.traceparent, run.metadata.attributes.traceparent);
  });

  it("ends a refused add's span with ERROR", async () => {
    const { qm, recorder } = await tracedClient();
    const missing = queueName("missing");
    await assert.rejects(qm.addJob(missing, "x", null), /is not registered/);
    const [publish] = await recorder.spans(`${missing} publish`, 1);
    assert.equal(publish!.status.code, SpanStatusCode.ERROR);
    assert.equal(publish!.events[0]?.name, "exception");
  });
});

describe("pulled jobs' spans", () => {
  it("gives a pulled run the CONSUMER span a stream run has, under its add's span", async () => {
    const name = queueName("pulled");
    const { qm, provider, recorder } = await tracedClient(name);
    const job = await qm.addJob(name, "resize", { w: 3 });
    const [pulled] = await qm.fetchJobs(name);
    const answer = await pulled!.span(async (span) => {
      assert.ok(span !== undefined);
      provider.getTracer("app").startActiveSpan("work", (work) => work.end());
      await pulled!.complete("ok");
      return 42;
    });
    assert.equal(answer, 42);
    const [publish] = await recorder.spans(`${name} publish`, 1);
    const [run] = await recorder.spans(`${name} process`, 1);
    const [work] = await recorder.spans("work", 1);
    assert.equal(run!.kind, SpanKind.CONSUMER);
    assert.ok(childOf(run!, publish!) && childOf(work!, run!));
    assert.deepEqual(run!.attributes, {
      "messaging.system": "queue_manager",
      "messaging.operation": "process",
      "messaging.destination.name": name,
      "messaging.message.id": job.id,
      "queue_manager.job.name": "resize",
      "queue_manager.job.attempt": 1,
    });
    assert.equal(run!.status.code, SpanStatusCode.UNSET);
  });

  it("ends a pulled run's span ERROR on fail and on an error thrown, and counts its attempt", async () => {
    const name = queueName("pulled-fail");
    const { qm, recorder } = await tracedClient(name);
    await qm.addJob(name, "a", null, { attempts: 2 });
    await qm.addJob(name, "b", null);
    const [first, second] = await qm.fetchJobs(name, { maxJobs: 2 });
    await first!.span(() => first!.fail("disk full"));
    await assert.rejects(
      second!.span(() => {
        throw new RangeError("crashed");
      }),
      /crashed/,
    );
    const byName = (runs: ReadableSpan[]) =>
      [...runs].sort((x, y) => String(x.attributes["queue_manager.job.name"]).localeCompare(String(y.attributes["queue_manager.job.name"])));
    const [failed, crashed] = byName(await recorder.spans(`${name} process`, 2));
    assert.deepEqual(failed!.status, { code: SpanStatusCode.ERROR, message: "disk full" });
    assert.deepEqual(crashed!.status, { code: SpanStatusCode.ERROR, message: "crashed" });
    assert.deepEqual(crashed!.events.map((e) => e.name), ["exception"]);
    await second!.fail("given up", { noRetry: true });
    const [again] = await qm.fetchJobs(name, { waitMs: 10_000 });
    await again!.span(() => again!.complete());
    const runs = await recorder.spans(`${name} process`, 3);
    assert.equal(runs[2]!.attributes["queue_manager.job.attempt"], 2);
  });

  it("runs a pulled job's block with no span when tracing is off", async () => {
    const name = queueName("pulled-plain");
    await plain.registerQueue(name);
    await plain.addJob(name, "x", null);
    const [pulled] = await plain.fetchJobs(name);
    const seen = await pulled!.span(async (span) => {
      await pulled!.complete();
      return span;
    });
    assert.equal(seen, undefined);
  });
});

describe("the global provider and propagator", () => {
  after(() => {
    propagation.disable();
    trace.disable();
  });

  it("traces with the global provider, and leaves out context longer than an attribute may be", async () => {
    const name = queueName("global");
    const { provider, recorder } = recordingProvider();
    const qm = client(); // made before the provider is registered: it reads the provider at its first add
    traced.push(qm);
    trace.setGlobalTracerProvider(provider);
    propagation.setGlobalPropagator(
      new CompositePropagator({ propagators: [new W3CTraceContextPropagator(), new W3CBaggagePropagator()] }),
    );
    await qm.registerQueue(name);
    const small = propagation.setBaggage(otelContext.active(), propagation.createBaggage({ tenant: { value: "acme" } }));
    const job = await otelContext.with(small, () => qm.addJob(name, "welcome", null));
    assert.equal(job.metadata.attributes.baggage, "tenant=acme");
    const [publish] = await recorder.spans(`${name} publish`, 1);
    assert.match(job.metadata.attributes.traceparent ?? "", new RegExp(`^00-${publish!.spanContext().traceId}-`));
    const big = propagation.setBaggage(otelContext.active(), propagation.createBaggage({ blob: { value: "x".repeat(3000) } }));
    const large = await otelContext.with(big, () => qm.addJob(name, "welcome", null));
    assert.ok("traceparent" in large.metadata.attributes);
    assert.ok(!("baggage" in large.metadata.attributes), Object.keys(large.metadata.attributes).join(","));
  });
});
