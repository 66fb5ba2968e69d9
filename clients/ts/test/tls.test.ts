/**
 * A server on TLS that requires client certificates (tests/test_client_ts.py makes the certificates):
 * the TLS options, the QM_TLS_* environment, and the refusal of plaintext and of a wrong CA.
 */
import assert from "node:assert/strict";
import { it } from "node:test";
import { QueueManager, QueueManagerError, type TlsOptions } from "../src/index.js";
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

it("says which setting to change when the TLS handshake is refused", async () => {
  // Node's own words name OpenSSL's reason ("unable to verify the first certificate", a stream closed with
  // CANCEL), not the setting: each refusal now says which one, as the Python client's do.
  const closed = "if the server uses TLS, give the CA bundle that signed its certificate (QM_TLS_CA, tls.ca); if it requires mutual TLS, also a client certificate its CA signed (QM_TLS_CERT and QM_TLS_KEY";
  const plaintext = process.env.QM_TEST_PLAIN_ADDRESS;
  assert.ok(plaintext, "QM_TEST_PLAIN_ADDRESS is not set");
  const cases: [string, string, TlsOptions | false, string][] = [
    ["plaintext", address(), false, closed],
    ["another CA", address(), { ...mutual(), ca: path("other_ca") }, "not signed by the CA bundle given (QM_TLS_CA, tls.ca)"],
    ["another name", address(), { ...mutual(), serverName: "elsewhere.example" }, "or set QM_TLS_SERVER_NAME (tls.serverName)"],
    ["no client certificate", address(), { ca: path("ca") }, closed],
    ["a client certificate of another CA", address(), { ca: path("ca"), cert: path("rogue_cert"), key: path("rogue_key") }, closed],
    ["TLS to a plaintext port", plaintext, { ca: path("ca") }, "the server does not use TLS on this port: connect without TLS"],
  ];
  for (const [what, at, tls, says] of cases) {
    const qm = new QueueManager({ address: at, token: null, tls, timeoutMs: 5_000 });
    const err = await qm.listQueues().catch((e: unknown) => e);
    await qm.shutdown();
    assert.ok(err instanceof QueueManagerError, String(err));
    assert.equal(err.codeName, "UNAVAILABLE", `${what}: ${err.toString()}`);
    assert.ok(err.message.includes(says), `${what}: ${err.message}`);
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
