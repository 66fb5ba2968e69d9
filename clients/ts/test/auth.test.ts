/**
 * A server that requires tokens (tests/test_client_ts.py writes its token file): the bearer token from the
 * options or from QM_TOKEN, and the statuses of a missing or insufficient token.
 */
import assert from "node:assert/strict";
import { it } from "node:test";
import { PermissionDeniedError, QueueManager, UnauthenticatedError } from "../src/index.js";
import { address, client, queueName, worker } from "./helpers.js";

function token(name: string): string {
  const value = process.env[`QM_TEST_TOKEN_${name.toUpperCase()}`];
  assert.ok(value, `QM_TEST_TOKEN_${name.toUpperCase()} is not set`);
  return value;
}

it("refuses calls without a token, or with an unknown one", async () => {
  for (const t of [null, "not-a-token"]) {
    const qm = client({ token: t });
    const err = await qm.listQueues().catch((e: unknown) => e);
    await qm.shutdown();
    assert.ok(err instanceof UnauthenticatedError, String(err));
  }
});

it("sends the token of the options, or of QM_TOKEN, on unary calls and the worker stream", async () => {
  const name = queueName("ts-auth");
  const admin = client({ token: token("admin") });
  await admin.registerQueue(name);
  process.env.QM_TOKEN = token("admin");
  const fromEnv = new QueueManager({ address: address() });
  delete process.env.QM_TOKEN;
  const job = await fromEnv.addJob(name, "authorised", 7);
  const w = await worker({ token: token("admin"), processors: { [name]: async (j) => (j.data as number) * 6 } });
  try {
    const done = await fromEnv.waitForJob(name, job.id, { timeoutMs: 15_000 });
    assert.equal(done.result, 42);
  } finally {
    await w.shutdown();
    await fromEnv.shutdown();
    await admin.shutdown();
  }
});

it("says which queues a producer token does not cover", async () => {
  const producer = client({ token: token("producer") });
  try {
    const err = await producer.addJob(queueName("other"), "x", null).catch((e: unknown) => e);
    assert.ok(err instanceof PermissionDeniedError, String(err));
    assert.match(err.message, /other-/);
    const refused = await producer.registerQueue(queueName("ts-auth")).catch((e: unknown) => e);
    assert.ok(refused instanceof PermissionDeniedError, String(refused));
  } finally {
    await producer.shutdown();
  }
});
