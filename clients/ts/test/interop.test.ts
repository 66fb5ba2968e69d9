/**
 * Tracing across languages, driven by tests/test_client_ts.py (which sets the environment): a job that a
 * traced Python client added is run here by a traced worker whose span continues the Python trace; and a
 * job this client adds traced is printed (`QM-TRACE queue job-id trace-id span-id`) for the Python worker to
 * run under this client's span.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { SpanKind } from "@opentelemetry/api";
import type { ActiveJob } from "../src/index.js";
import { client, nextEvent, worker } from "./helpers.js";
import { recordingProvider } from "./spans.js";

const env = process.env;

describe("tracing across languages", () => {
  it("continues the trace of a job the Python client added", { skip: !env.QM_TEST_PY_QUEUE }, async () => {
    const queue = env.QM_TEST_PY_QUEUE!;
    const { provider, recorder } = recordingProvider();
    const w = await worker({ processors: { [queue]: async () => "ran in node" }, tracerProvider: provider });
    try {
      await nextEvent<[ActiveJob]>(w, "completed", (job) => job.id === env.QM_TEST_PY_JOB);
      const [run] = await recorder.spans(`${queue} process`, 1);
      assert.equal(run!.kind, SpanKind.CONSUMER);
      assert.equal(run!.spanContext().traceId, env.QM_TEST_PY_TRACE_ID);
      assert.equal(run!.parentSpanContext?.spanId, env.QM_TEST_PY_SPAN_ID);
      assert.equal(run!.parentSpanContext?.isRemote, true);
      assert.equal(run!.attributes["messaging.message.id"], env.QM_TEST_PY_JOB);
    } finally {
      await w.shutdown();
    }
  });

  it("adds a traced job for the Python worker", { skip: !env.QM_TEST_TS_QUEUE }, async () => {
    const queue = env.QM_TEST_TS_QUEUE!;
    const { provider, recorder } = recordingProvider();
    const qm = client({ tracerProvider: provider });
    try {
      const job = await qm.addJob(queue, "from-node", { n: 1 });
      const [publish] = await recorder.spans(`${queue} publish`, 1);
      const { traceId, spanId } = publish!.spanContext();
      assert.equal(job.metadata.attributes.traceparent, `00-${traceId}-${spanId}-01`);
      console.log(`QM-TRACE ${queue} ${job.id} ${traceId} ${spanId}`);
    } finally {
      await qm.shutdown();
    }
  });
});
