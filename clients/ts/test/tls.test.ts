/**
 * A server on TLS that requires client certificates (tests/test_client_ts.py makes the certificates):
 * the TLS options, the QM_TLS_* environment, and the refusal of plaintext and of a wrong CA.
 */
import assert from "node:assert/strict";
import { it } from "node:test";
import { QueueManager, QueueManagerError } from "../src/index.js";
import { address, queueName, worker } from "./helpers.js";

function path(name: string): string {
  const value = process.env[`QM_TEST_TLS_${name.toUpperCase()}`];
  assert.ok(value, `QM_TEST_TLS_${name.toUpperCase()} is not set`);
  return value;
}

const mutual = () => ({ ca: path("ca"), cert: path("cert"), key: path("key") });

it("refuses plaintext, a wrong CA and a missing client certificate as UNAVAILABLE", async () => {
  for (const tls of [false, { ca: path("other_ca"), cert: path("cert"), key: path("key") }, { ca: path("ca") }]) {
    const qm = new QueueManager({ address: address(), token: null, tls, timeoutMs: 5_000 });
    const err = await qm.listQueues().catch((e: unknown) => e);
    await qm.shutdown();
    assert.ok(err instanceof QueueManagerError, String(err));
    assert.equal(err.codeName, "UNAVAILABLE", `${JSON.stringify(tls)}: ${err.toString()}`);
  }
});

it("adds and runs a job over mutual TLS, from the options and from QM_TLS_*", async () => {
  const name = queueName("mtls");
  const qm = new QueueManager({ address: address(), token: null, tls: mutual() });
  await qm.registerQueue(name);
  Object.assign(process.env, { QM_TLS_CA: path("ca"), QM_TLS_CERT: path("cert"), QM_TLS_KEY: path("key") });
  const fromEnv = new QueueManager({ address: address(), token: null });
  for (const key of ["QM_TLS_CA", "QM_TLS_CERT", "QM_TLS_KEY"]) {
    delete process.env[key];
  }
  const w = await worker({ tls: mutual(), processors: { [name]: async () => "over mTLS" } });
  try {
    const job = await fromEnv.addJob(name, "secure", null);
    const done = await qm.waitForJob(name, job.id, { timeoutMs: 15_000 });
    assert.equal(done.result, "over mTLS");
  } finally {
    await w.shutdown();
    await fromEnv.shutdown();
    await qm.shutdown();
  }
});
