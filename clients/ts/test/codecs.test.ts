/**
 * Payload codecs (codecs.ts): the golden vectors all three clients decode (tests/codec_vectors.json), tampering
 * and unknown keys refused with the key id, the compression threshold, and through the server: data and
 * results stored encoded, plain payloads passing through, key rotation, a worker without the key failing the
 * job for good, result conditions refused. The cross-language cases run when tests/test_client_ts.py sets their
 * environment (a job the Python client encrypted; a job for the Python worker).
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { create, fromJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { decodePayload } from "../src/convert.js";
import { PayloadSchema } from "../src/gen/queue_manager/v1/types_pb.js";
import { AesGcmCodec, CodecChain, codecsFromEnv, EncodedPayload, GzipCodec, NotFoundError, PayloadCodecError, when, whenError } from "../src/index.js";
import { client, nextEvent, queueName, worker } from "./helpers.js";

interface Vector {
  name: string;
  content_type: string;
  raw: string;
  inner?: string;
  plain?: string;
  error?: string;
}
const VECTORS = JSON.parse(readFileSync(new URL("../../../../tests/codec_vectors.json", import.meta.url), "utf8")) as {
  keys: Record<string, string>;
  decode: Vector[];
  refuse: Vector[];
};
const K1 = Uint8Array.from({ length: 32 }, (_, i) => i);
const K2 = randomBytes(32);
const env = process.env;

function payload(raw: Uint8Array, contentType = "application/json") {
  return create(PayloadSchema, { body: { case: "raw", value: raw }, contentType });
}

function rawOf(p: ReturnType<typeof payload>): Uint8Array {
  assert.equal(p.body.case, "raw");
  return p.body.value as Uint8Array;
}

describe("payload codecs", () => {
  it("decodes the golden vectors and refuses the bad ones naming the key", () => {
    const chain = new CodecChain([new AesGcmCodec(VECTORS.keys, "k1")]); // keys as base64 text
    for (const v of VECTORS.decode) {
      const p = payload(Buffer.from(v.raw, "base64"), v.content_type);
      chain.decode(p);
      assert.deepEqual(Buffer.from(rawOf(p)), Buffer.from(v.plain!, "base64"), v.name);
      assert.equal(p.contentType, v.inner, v.name);
    }
    for (const v of VECTORS.refuse) {
      assert.throws(() => chain.decode(payload(Buffer.from(v.raw, "base64"), v.content_type)), (err: Error) => {
        assert.ok(err instanceof PayloadCodecError, v.name);
        assert.ok(err.message.includes(v.error!), `${v.name}: ${err.message}`);
        return true;
      });
    }
  });

  it("binds the content type, uses a fresh nonce, and refuses a flipped byte", () => {
    const chain = new CodecChain([new AesGcmCodec({ k1: K1 })]);
    const [a, b] = [payload(Buffer.from('{"a":1}')), payload(Buffer.from('{"a":1}'))];
    chain.encode(a);
    chain.encode(b);
    assert.equal(a.contentType, "application/vnd.qm.encoded; v=1; codecs=aes-256-gcm; kid=k1; inner=application/json");
    assert.notDeepEqual(rawOf(a).subarray(0, 12), rawOf(b).subarray(0, 12));
    assert.equal(rawOf(a).length, 12 + 7 + 16);
    const flipped = Buffer.from(rawOf(a));
    flipped[20]! ^= 1;
    assert.throws(() => chain.decode(payload(flipped, a.contentType)), /under key id 'k1' failed authentication/);
    chain.decode(a);
    assert.equal(Buffer.from(rawOf(a)).toString(), '{"a":1}');
  });

  it("compresses only from its threshold and only when that saves bytes", () => {
    const chain = new CodecChain([new GzipCodec({ minSize: 100 })]);
    const small = payload(Buffer.alloc(99, "x"));
    const big = payload(Buffer.alloc(100, "x"));
    const noise = payload(randomBytes(4000), "image/png");
    for (const p of [small, big, noise]) chain.encode(p);
    assert.equal(small.contentType, "application/json");
    assert.equal(big.contentType, "application/vnd.qm.encoded; v=1; codecs=gzip; inner=application/json");
    assert.ok(rawOf(big).length < 100);
    assert.equal(noise.contentType, "image/png");
    chain.decode(big);
    assert.equal(Buffer.from(rawOf(big)).toString(), "x".repeat(100));
  });

  it("refuses bad keys and environment settings with what to fix", () => {
    assert.throws(() => new AesGcmCodec({ k1: Buffer.alloc(5) }), /key 'k1' must be 32 bytes/);
    assert.throws(() => new AesGcmCodec({ k1: "not base64!" }), /key 'k1' is not valid base64/);
    assert.throws(() => new AesGcmCodec({ k1: K1, k2: K2 }), /say which is active/);
    assert.throws(() => new CodecChain([new AesGcmCodec({ k1: K1 }), new GzipCodec()]), /before AesGcmCodec/);
    const keys = `k1:${Buffer.from(K1).toString("base64")},k2:${K2.toString("base64")}`;
    const [gz, aes] = codecsFromEnv({ QM_CODEC_KEYS: keys, QM_CODEC_ACTIVE_KEY: "k2", QM_CODEC_GZIP_MIN_SIZE: "512" });
    assert.ok(gz instanceof GzipCodec && gz.minSize === 512);
    assert.ok(aes instanceof AesGcmCodec && aes.active === "k2");
    assert.deepEqual(aes.keyIds, ["k1", "k2"]);
    assert.throws(() => codecsFromEnv({ QM_CODEC_KEYS: keys }), /QM_CODEC_KEYS \/ QM_CODEC_ACTIVE_KEY/);
  });

  it("stores data and results encoded, and reads them decoded", async () => {
    const queue = queueName("codec-ts");
    const sealed = client({ codecs: [new GzipCodec({ minSize: 64 }), new AesGcmCodec({ k1: K1 })] });
    const plain = client({ codecs: [] });
    const data = { card: "4111 1111 1111 1111", lines: Array(10).fill("x".repeat(30)) };
    await sealed.registerQueue(queue);
    const w = await worker({
      processors: { [queue]: async (job) => ({ charged: (job.data as typeof data).card.slice(-4) }) },
      codecs: [new AesGcmCodec({ k1: K1 })],
    });
    try {
      const job = await sealed.addJob(queue, "charge", data);
      assert.deepEqual(job.data, data);
      const done = await sealed.waitForJob(queue, job.id, { timeoutMs: 20_000 });
      assert.equal(done.state, "completed");
      assert.deepEqual(done.data, data);
      assert.deepEqual(done.result, { charged: "1111" });
      const opaque = await plain.getJob(queue, job.id);
      assert.ok(opaque.data instanceof EncodedPayload);
      assert.deepEqual(opaque.data.codecs, ["gzip", "aes-256-gcm"]);
      assert.ok(opaque.result instanceof EncodedPayload && opaque.result.keyId === "k1");
      // Plain payloads pass through a client with codecs.
      const old = await plain.addJob(queue, "plain", { plain: true }, { delay: 3_600_000 });
      assert.deepEqual((await sealed.getJob(queue, old.id)).data, { plain: true });
    } finally {
      await w.shutdown();
      await sealed.shutdown();
      await plain.shutdown();
    }
  });

  it("reads old payloads after a key rotation and refuses them once the key is dropped", async () => {
    const queue = queueName("codec-rotate");
    const before = client({ codecs: [new AesGcmCodec({ k1: K1 })] });
    const after = client({ codecs: [new AesGcmCodec({ k1: K1, k2: K2 }, "k2")] });
    const retired = client({ codecs: [new AesGcmCodec({ k2: K2 })] });
    const plain = client({ codecs: [] });
    try {
      await before.registerQueue(queue);
      const old = await before.addJob(queue, "old", { v: 1 }, { delay: 3_600_000 });
      const fresh = await after.addJob(queue, "new", { v: 2 }, { delay: 3_600_000 });
      assert.deepEqual((await after.getJob(queue, old.id)).data, { v: 1 });
      const stored = (await plain.getJob(queue, fresh.id)).data;
      assert.ok(stored instanceof EncodedPayload && stored.keyId === "k2");
      await assert.rejects(retired.getJob(queue, old.id), (err: Error) => {
        assert.ok(err instanceof PayloadCodecError);
        assert.match(err.message, /key id 'k1', which this client does not hold/);
        return true;
      });
    } finally {
      await Promise.all([before, after, retired, plain].map((c) => c.shutdown()));
    }
  });

  it("fails a job it cannot decode for good, naming the key", async () => {
    const queue = queueName("codec-wrong-key");
    const sealed = client({ codecs: [new AesGcmCodec({ k1: K1 })] });
    let ran = 0;
    await sealed.registerQueue(queue);
    const w = await worker({
      processors: { [queue]: async () => void ran++ },
      codecs: [new AesGcmCodec({ k2: K2 })],
    });
    try {
      const failed = nextEvent(w, "failed");
      const job = await sealed.addJob(queue, "w", { x: 1 }, { attempts: 3 });
      await failed;
      const done = await sealed.waitForJob(queue, job.id, { timeoutMs: 20_000 });
      assert.equal(done.state, "failed");
      assert.equal(done.attemptsMade, 1);
      assert.equal(ran, 0);
      assert.match(done.failedReason, /^cannot decode the job's payload: the payload is encrypted under key id 'k1'/);
    } finally {
      await w.shutdown();
      await sealed.shutdown();
    }
  });

  it("decodes a dead-letter copy's original data with the codecs", async () => {
    const queue = queueName("codec-dlq");
    const codecs = [new AesGcmCodec({ k1: K1 })];
    const sealed = client({ codecs });
    const plain = client({ codecs: [] });
    await sealed.registerQueue(queue);
    const w = await worker({
      processors: {
        [queue]: async () => {
          throw new Error("no charge");
        },
      },
      codecs,
    });
    try {
      const job = await sealed.addJob(queue, "charge", { order: 7 });
      assert.equal((await sealed.waitForJob(queue, job.id, { timeoutMs: 20_000 })).state, "failed");
      const find = async (qm: typeof sealed) => {
        for (let i = 0; i < 1000; i++) {
          const letter = (await qm.listDeadLetters()).items.find((d) => d.originalJobId === job.id);
          if (letter !== undefined) return letter;
          await new Promise((r) => setTimeout(r, 20));
        }
        throw new Error("no dead-letter copy");
      };
      const letter = await find(sealed);
      assert.deepEqual(letter.originalData, { order: 7 });
      assert.equal(letter.originalContentType, "application/json");
      const opaque = await find(plain);
      assert.ok(opaque.originalData instanceof EncodedPayload && opaque.originalData.keyId === "k1");
    } finally {
      await w.shutdown();
      await sealed.shutdown();
      await plain.shutdown();
    }
  });

  it("decodes the original in every read of a dead-letter copy", async () => {
    const queue = queueName("codec-sunk");
    const codecs = [new AesGcmCodec({ k1: K1 })];
    const sealed = client({ codecs });
    const plain = client({ codecs: [] });
    await sealed.registerQueue(queue);
    const w = await worker({
      processors: {
        [queue]: async () => {
          throw new Error("declined");
        },
      },
      codecs,
    });
    try {
      const job = await sealed.addJob(queue, "charge", { order: 8 });
      const blob = await sealed.addJob(queue, "blob", new Uint8Array([0, 1, 255]));
      const dlq = "dead-letter-queue";
      const copyId = `${queue}:${job.id}`;
      // The copy is written by the hand-off just after the failure: wait for it to be there.
      for (let i = 0; ; i++) {
        const page = await sealed.listJobs(dlq, "waiting", { name: "charge", pageSize: 1000 });
        const found = page.items.find((j) => j.id === copyId);
        if (found !== undefined) {
          // A search result reads the copy decoded.
          assert.deepEqual((found.data as Record<string, unknown>)["original_data"], { order: 8 });
          break;
        }
        assert.ok(i < 1000, "no dead-letter copy");
        await new Promise((r) => setTimeout(r, 20));
      }
      const decoded = (data: unknown) => {
        const copy = data as Record<string, unknown>;
        assert.deepEqual(copy["original_data"], { order: 8 });
        assert.equal(copy["original_content_type"], "application/json");
        assert.equal(copy["original_job_id"], job.id);
      };
      decoded((await sealed.getJob(dlq, copyId)).data);
      decoded((await sealed.cancelJob(dlq, copyId)).data);
      decoded((await sealed.waitForJob(dlq, copyId, { timeoutMs: 20_000 })).data);
      decoded((await sealed.retryJob(dlq, copyId)).data);
      // Bytes come back as base64 of the plain bytes under their own content type.
      assert.equal((await sealed.waitForJob(queue, blob.id, { timeoutMs: 20_000 })).state, "failed");
      for (let i = 0; ; i++) {
        try {
          const copy = (await sealed.getJob(dlq, `${queue}:${blob.id}`)).data as Record<string, unknown>;
          assert.equal(copy["original_data"], Buffer.from([0, 1, 255]).toString("base64"));
          assert.equal(copy["original_content_type"], "application/octet-stream");
          break;
        } catch (err) {
          if (i >= 1000 || !(err instanceof NotFoundError)) throw err;
          await new Promise((r) => setTimeout(r, 20));
        }
      }
      // Without the keys the copy is as the server keeps it: the original still encoded.
      const opaque = (await plain.getJob(dlq, copyId)).data as Record<string, unknown>;
      assert.ok(String(opaque["original_content_type"]).startsWith("application/vnd.qm.encoded; v=1;"));
    } finally {
      await w.shutdown();
      await sealed.shutdown();
      await plain.shutdown();
    }
  });

  it("decodes a copy sent as a JSON value and one Lua rewrote", () => {
    const chain = new CodecChain([new AesGcmCodec({ k1: K1 })]);
    const original = payload(new TextEncoder().encode('{"x":1}'));
    chain.encode(original);
    const copy = { original_queue: "q", original_job_id: "1", original_name: "n", original_data: Buffer.from(rawOf(original)).toString("base64"), original_content_type: original.contentType };
    const asValue = create(PayloadSchema, { body: { case: "json", value: fromJson(ValueSchema, copy) }, contentType: "application/json" });
    chain.decode(asValue);
    assert.deepEqual((decodePayload(asValue) as Record<string, unknown>)["original_data"], { x: 1 });
    // Lua's cjson writes "/" as "\/": the copy a redrive rewrote still decodes.
    const escaped = payload(new TextEncoder().encode(JSON.stringify(copy).replaceAll("/", "\\/")));
    chain.decode(escaped);
    const read = decodePayload(escaped) as Record<string, unknown>;
    assert.deepEqual([read["original_data"], read["original_content_type"]], [{ x: 1 }, "application/json"]);
    const other = payload(new TextEncoder().encode('{"note":"vnd.qm.encoded"}'));
    chain.decode(other);
    assert.equal(new TextDecoder().decode(rawOf(other)), '{"note":"vnd.qm.encoded"}');
    assert.throws(
      () => new CodecChain([new AesGcmCodec({ k2: K2 })]).decode(payload(new TextEncoder().encode(JSON.stringify(copy)))),
      /key id 'k1', which this client does not hold/,
    );
  });

  it("refuses a workflow whose runIf reads an encoded result", async () => {
    const queue = queueName("codec-wf");
    const sealed = client({ codecs: [new AesGcmCodec({ k1: K1 })] });
    const step = (runIf: ReturnType<typeof when>[]) => ({
      name: "wf",
      steps: [{ key: "a", queueName: queue, jobName: "a", onSuccess: [{ key: "b", queueName: queue, jobName: "b", runIf }] }],
    });
    try {
      await sealed.registerQueue(queue);
      await assert.rejects(sealed.executeWorkflow(step([when("a", "ok", "==", true)])), (err: Error) => {
        assert.ok(err instanceof TypeError);
        assert.match(err.message, /step 'b': runIf on a result cannot work with payload codecs/);
        return true;
      });
      assert.ok(await sealed.executeWorkflow(step([whenError("a", "contains", "x")])));
    } finally {
      await sealed.shutdown();
    }
  });

  it("decodes a job the Python client encrypted and returns an encrypted result", { skip: !env.QM_TEST_CODEC_PY_QUEUE }, async () => {
    const queue = env.QM_TEST_CODEC_PY_QUEUE!;
    let seen: unknown;
    const w = await worker({
      processors: {
        [queue]: async (job) => {
          seen = job.data;
          return { from: "node", echo: job.data };
        },
      },
      codecs: codecsFromEnv(),
    });
    try {
      await nextEvent(w, "completed", (job: { id: string }) => job.id === env.QM_TEST_CODEC_PY_JOB);
      assert.deepEqual(seen, { from: "python", secret: "s3cret" });
    } finally {
      await w.shutdown();
    }
  });

  it("adds an encrypted job for the Python worker", { skip: !env.QM_TEST_CODEC_TS_QUEUE }, async () => {
    const queue = env.QM_TEST_CODEC_TS_QUEUE!;
    const qm = client(); // its codecs from QM_CODEC_KEYS
    try {
      const job = await qm.addJob(queue, "from-node", { from: "node", secret: "s3cret" });
      console.log(`QM-CODEC ${queue} ${job.id}`);
    } finally {
      await qm.shutdown();
    }
  });
});
