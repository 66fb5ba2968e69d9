/**
 * Client-side payload codecs: job data and results compressed (gzip) and encrypted (AES-256-GCM) before they
 * leave this process, and decoded when they come back; the server stores them byte for byte.
 *
 * A client made with codecs encodes every payload it sends (the data of adds, workflow steps, schedules,
 * retries, redrives and data updates; a worker's results, checkpoints and children) and decodes every payload
 * it reads (jobs, results, parents' and children's outcomes, workflow steps). A payload that is not encoded
 * passes through either way, so producers with and without codecs can share a queue. The wire format is in
 * payload-format.ts and docs/security.md; the Python and Go clients read and write the same. `withCodecs`
 * (codec-client.ts) puts a chain between a client and its calls.
 */
import { create, fromJson, toJson, type JsonValue } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { gunzipSync, gzipSync } from "node:zlib";
import { PayloadSchema, type Payload } from "./gen/queue_manager/v1/types_pb.js";
import { ConditionSource, type WorkflowStep } from "./gen/queue_manager/v1/workflows_pb.js";
import { JSON_CONTENT_TYPE, OCTET_STREAM, valueText } from "./convert.js";
import { QueueManagerError } from "./errors.js";
import { walkPayloads } from "./payload-walk.js";
import { AES_256_GCM, buildContentType, GZIP, isEncoded, KEY_ID, parseContentType, PayloadFormatError } from "./payload-format.js";

const KEY_SIZE = 32; // AES-256
const NONCE_SIZE = 12; // 96 bits, GCM's own size: a random one per payload
const TAG_SIZE = 16;
/** Most bytes a gzip body may inflate to: the server caps a payload's size, but not what it inflates to. */
export const DEFAULT_MAX_INFLATED = 64 * 1024 * 1024;
/**
 * Text every JSON body holding an encoded payload's content type contains (the server's JSON of a dead-letter
 * copy writes it whole, a Lua rewrite of the copy as "application\/vnd..."): a cheap test that spares the parse
 * of every other JSON payload read.
 */
const ENCODED_MARK = Buffer.from("vnd.qm.encoded");

/**
 * A payload that cannot be decoded: under a key id this client does not hold, altered since it was encoded
 * (authentication failed), or not a readable encoded payload. The message names the key id. The call itself
 * succeeded; the code is DATA_LOSS (this client cannot read what the server holds).
 */
export class PayloadCodecError extends QueueManagerError {
  constructor(message: string) {
    super(message, Code.DataLoss);
  }
}

/** Compresses payloads of at least `minSize` bytes with gzip, when that makes them smaller. */
export class GzipCodec {
  readonly name = GZIP;
  readonly minSize: number;
  readonly maxInflated: number;

  /**
   * @param options.minSize Smallest body compressed, in bytes (default 1,024); smaller ones go as they are.
   * @param options.maxInflated Most bytes a body may inflate to when read (default 64 MiB); more is refused.
   */
  constructor(options: { minSize?: number; maxInflated?: number } = {}) {
    this.minSize = options.minSize ?? 1024;
    this.maxInflated = options.maxInflated ?? DEFAULT_MAX_INFLATED;
    if (!Number.isSafeInteger(this.minSize) || this.minSize < 0) {
      throw new RangeError(`minSize must be an integer of at least 0, not ${this.minSize}`);
    }
    if (!Number.isSafeInteger(this.maxInflated) || this.maxInflated < 1) {
      throw new RangeError(`maxInflated must be a positive integer, not ${this.maxInflated}`);
    }
  }

  /** The gzip of `body`, or undefined when it is under the threshold or would not get smaller. */
  compress(body: Uint8Array): Uint8Array | undefined {
    if (body.length < this.minSize) {
      return undefined;
    }
    const packed = gzipSync(body, { level: 6 });
    return packed.length < body.length ? packed : undefined;
  }
}

/** A gzip body's bytes, at most `limit` of them. */
function inflate(body: Uint8Array, limit: number): Uint8Array {
  try {
    return gunzipSync(body, { maxOutputLength: limit });
  } catch (err) {
    if ((err as { code?: string }).code === "ERR_BUFFER_TOO_LARGE") {
      throw new PayloadCodecError(`the payload inflates to more than ${limit.toLocaleString("en-US")} bytes; refused`);
    }
    throw new PayloadCodecError(`the payload's gzip body cannot be read: ${(err as Error).message}`);
  }
}

/**
 * Encrypts payloads with AES-256-GCM under the active key; decrypts them under any key it holds. Each payload
 * gets a random 96-bit nonce; its content type (codecs, key id, inner type) is authenticated with it. Rotate
 * keys by adding the new one and making it active: payloads under the old ids decode while their keys are
 * listed.
 */
export class AesGcmCodec {
  readonly name = AES_256_GCM;
  readonly active: string;
  private readonly keys: Map<string, Buffer>;

  /**
   * @param keys Key id (1-64 of `A-Z a-z 0-9 . _ -`) to its 32-byte key, as bytes or base64 text.
   * @param active The id of the key new payloads are encrypted under; may be left out with one key.
   */
  constructor(keys: Record<string, Uint8Array | string>, active?: string) {
    const ids = Object.keys(keys);
    if (ids.length === 0) {
      throw new RangeError("AesGcmCodec needs at least one key");
    }
    this.keys = new Map(ids.map((id) => [id, keyBytes(id, keys[id]!)]));
    if (active === undefined) {
      if (ids.length !== 1) {
        throw new RangeError(`AesGcmCodec holds ${ids.length} keys: say which is active`);
      }
      active = ids[0]!;
    }
    if (!this.keys.has(active)) {
      throw new RangeError(`the active key id ${JSON.stringify(active)} is not among the keys (${ids.join(", ")})`);
    }
    this.active = active;
  }

  /** The ids of the keys held. */
  get keyIds(): string[] {
    return [...this.keys.keys()];
  }

  /** Nonce, ciphertext and tag of `body` under the active key; `contentType` is the associated data. */
  seal(body: Uint8Array, contentType: string): Uint8Array {
    const nonce = randomBytes(NONCE_SIZE);
    const cipher = createCipheriv("aes-256-gcm", this.keys.get(this.active)!, nonce);
    cipher.setAAD(Buffer.from(contentType, "utf8"));
    return Buffer.concat([nonce, cipher.update(body), cipher.final(), cipher.getAuthTag()]);
  }

  /** Undoes `seal` under key `keyId`, checking that neither the bytes nor the content type changed. */
  open(body: Uint8Array, keyId: string, contentType: string): Uint8Array {
    const key = this.keys.get(keyId);
    if (key === undefined) {
      const held = this.keyIds.map((id) => `'${id}'`).join(", ");
      throw new PayloadCodecError(`the payload is encrypted under key id '${keyId}', which this client does not hold (it holds ${held})`);
    }
    if (body.length < NONCE_SIZE + TAG_SIZE) {
      throw new PayloadCodecError(`the payload under key id '${keyId}' is too short to be AES-GCM`);
    }
    const decipher = createDecipheriv("aes-256-gcm", key, body.subarray(0, NONCE_SIZE));
    decipher.setAAD(Buffer.from(contentType, "utf8"));
    decipher.setAuthTag(body.subarray(body.length - TAG_SIZE));
    try {
      return Buffer.concat([decipher.update(body.subarray(NONCE_SIZE, body.length - TAG_SIZE)), decipher.final()]);
    } catch {
      throw new PayloadCodecError(
        `the payload under key id '${keyId}' failed authentication: it or its content type was altered, or it was ` +
          "encrypted under another key with that id",
      );
    }
  }
}

/** A codec of a chain: `GzipCodec` and `AesGcmCodec`, each at most once, gzip first. */
export type PayloadCodec = GzipCodec | AesGcmCodec;

function keyBytes(id: string, key: Uint8Array | string): Buffer {
  if (!KEY_ID.test(id)) {
    throw new RangeError(`key id ${JSON.stringify(id)} must be 1-64 of A-Z a-z 0-9 . _ -`);
  }
  let bytes: Buffer;
  if (typeof key === "string") {
    const text = key.trim().replace(/-/g, "+").replace(/_/g, "/");
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0) {
      throw new RangeError(`key '${id}' is not valid base64`);
    }
    bytes = Buffer.from(text, "base64");
  } else {
    bytes = Buffer.from(key);
  }
  if (bytes.length !== KEY_SIZE) {
    throw new RangeError(`key '${id}' must be ${KEY_SIZE} bytes (AES-256), not ${bytes.length}`);
  }
  return bytes;
}

/** The codecs of one client, applied to every Payload of the messages it sends and receives. */
export class CodecChain {
  readonly gzip: GzipCodec | undefined;
  readonly aes: AesGcmCodec | undefined;
  readonly codecs: readonly PayloadCodec[];

  /** @param codecs `GzipCodec` and `AesGcmCodec`, each at most once, gzip first. */
  constructor(codecs: readonly PayloadCodec[]) {
    let gzip: GzipCodec | undefined;
    let aes: AesGcmCodec | undefined;
    for (const codec of codecs) {
      if (codec instanceof GzipCodec) {
        if (gzip !== undefined || aes !== undefined) {
          throw new RangeError("codecs: GzipCodec at most once, and before AesGcmCodec");
        }
        gzip = codec;
      } else if (codec instanceof AesGcmCodec) {
        if (aes !== undefined) {
          throw new RangeError("codecs: AesGcmCodec at most once");
        }
        aes = codec;
      } else {
        throw new TypeError("codecs: expected GzipCodec or AesGcmCodec");
      }
    }
    this.gzip = gzip;
    this.aes = aes;
    this.codecs = [...codecs];
  }

  /** Encodes a Payload in place; one already encoded, or unset, is left as it is. */
  encode(payload: Payload): void {
    const body = payload.body;
    if (body.case === undefined || isEncoded(payload.contentType)) {
      return;
    }
    let bytes: Uint8Array;
    let inner: string;
    if (body.case === "json") {
      bytes = new TextEncoder().encode(valueText(body.value));
      inner = JSON_CONTENT_TYPE;
    } else {
      bytes = body.value;
      inner = payload.contentType || OCTET_STREAM;
    }
    const applied: string[] = [];
    const packed = this.gzip?.compress(bytes);
    if (packed !== undefined) {
      bytes = packed;
      applied.push(GZIP);
    }
    if (this.aes !== undefined) {
      applied.push(AES_256_GCM);
    }
    if (applied.length === 0) {
      return;
    }
    const contentType = buildContentType(applied, this.aes?.active ?? "", inner);
    if (this.aes !== undefined) {
      bytes = this.aes.seal(bytes, contentType);
    }
    payload.body = { case: "raw", value: bytes };
    payload.contentType = contentType;
  }

  /**
   * Decodes a Payload in place; one not encoded is left as it is. A dead-letter copy's JSON holding an encoded
   * original (see `decodeCopy`) is rewritten with the original decoded. Throws `PayloadCodecError`.
   */
  decode(payload: Payload): void {
    const contentType = payload.contentType;
    if (payload.body.case === "json" || (payload.body.case === "raw" && isJsonType(contentType))) {
      this.decodeCopy(payload);
      return;
    }
    if (payload.body.case !== "raw" || !isEncoded(contentType)) {
      return;
    }
    let parsed;
    try {
      parsed = parseContentType(contentType);
    } catch (err) {
      throw err instanceof PayloadFormatError ? new PayloadCodecError(err.message) : err;
    }
    let bytes: Uint8Array = payload.body.value;
    for (const name of [...parsed.codecs].reverse()) {
      if (name === AES_256_GCM) {
        if (this.aes === undefined) {
          throw new PayloadCodecError(`the payload is encrypted under key id '${parsed.keyId}'; this client has no AesGcmCodec`);
        }
        bytes = this.aes.open(bytes, parsed.keyId, contentType);
      } else {
        bytes = inflate(bytes, this.gzip?.maxInflated ?? DEFAULT_MAX_INFLATED);
      }
    }
    payload.body = { case: "raw", value: new Uint8Array(bytes) };
    payload.contentType = parsed.inner;
  }

  /**
   * Decodes the original inside a dead-letter copy's JSON, in place. The server copies a job that failed for good
   * as JSON it writes itself: the original's bytes as base64 text in `original_data`, its content type in
   * `original_content_type`; so an encoded original stays encoded inside a copy whose own payload is plain JSON.
   * Every read of the copy (getJob, waitForJob, retries, searches, listings, a worker of the dead-letter queue)
   * meets it here, so the copy reads as that of a plain original: the data decoded (JSON as JSON, other types as
   * base64 again) under its inner content type. Anything else is left as it is.
   */
  private decodeCopy(payload: Payload): void {
    const body = payload.body;
    let copy: unknown;
    if (body.case === "json") {
      const type = body.value.kind.case === "structValue" ? body.value.kind.value.fields["original_content_type"] : undefined;
      if (type?.kind.case !== "stringValue" || !isEncoded(type.kind.value)) {
        return;
      }
      copy = toJson(ValueSchema, body.value);
    } else if (body.case === "raw") {
      if (!Buffer.from(body.value.buffer, body.value.byteOffset, body.value.byteLength).includes(ENCODED_MARK)) {
        return;
      }
      try {
        copy = JSON.parse(new TextDecoder().decode(body.value));
      } catch {
        return;
      }
    }
    const decoded = this.decodedCopy(copy);
    if (decoded === undefined) {
      return;
    }
    if (body.case === "json") {
      payload.body = { case: "json", value: fromJson(ValueSchema, decoded as JsonValue) };
    } else {
      payload.body = { case: "raw", value: new TextEncoder().encode(JSON.stringify(decoded)) };
    }
  }

  /** A copy's JSON with its encoded original decoded; undefined when it holds no encoded original. */
  private decodedCopy(copy: unknown): Record<string, unknown> | undefined {
    if (copy === null || typeof copy !== "object" || Array.isArray(copy)) {
      return undefined;
    }
    const fields = copy as Record<string, unknown>;
    const type = fields["original_content_type"];
    const data = fields["original_data"];
    if (typeof type !== "string" || !isEncoded(type) || typeof data !== "string") {
      return undefined;
    }
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(data) || data.length % 4 !== 0) {
      return undefined;
    }
    const original = create(PayloadSchema, { body: { case: "raw", value: new Uint8Array(Buffer.from(data, "base64")) }, contentType: type });
    this.decode(original);
    const bytes = original.body.value as Uint8Array;
    let value: unknown;
    if (isJsonType(original.contentType)) {
      try {
        value = JSON.parse(new TextDecoder().decode(bytes));
      } catch {
        throw new PayloadCodecError(`the dead-letter copy's original data decodes to bytes that are not the ${original.contentType} it names`);
      }
    } else {
      value = Buffer.from(bytes).toString("base64");
    }
    return { ...fields, original_data: value, original_content_type: original.contentType };
  }

  /** Encodes every Payload in a message, however deep. */
  encodeMessage(message: object): void {
    walkPayloads(message, (p) => this.encode(p));
  }

  /** Decodes every Payload in a message, however deep; throws `PayloadCodecError` for one that cannot be. */
  decodeMessage(message: object): void {
    walkPayloads(message, (p) => this.decode(p));
  }
}

function isJsonType(contentType: string): boolean {
  return contentType.split(";")[0]!.trim().toLowerCase() === JSON_CONTENT_TYPE;
}

/**
 * Refuses a workflow whose `runIf` reads a step's result when the client has codecs: its workers encode results
 * the same way, and the server, which cannot read them, would judge the condition on the encoded bytes and skip
 * or run the step wrongly, silently. Conditions on an error (`source: "error"`) are fine.
 */
export function refuseResultConditions(steps: readonly WorkflowStep[]): void {
  for (const step of steps) {
    if (step.runIf.some((c) => c.source !== ConditionSource.ERROR)) {
      throw new TypeError(
        `workflow step '${step.key || step.jobName}': runIf on a result cannot work with payload codecs (the server ` +
          "cannot read encoded results); decide in the step's processor instead, or use a client without codecs",
      );
    }
    refuseResultConditions(step.onSuccess);
    refuseResultConditions(step.onFailure);
  }
}

/** A client's chain: its `codecs` option, or the environment's when undefined; undefined when there are none. */
export function makeChain(codecs: readonly PayloadCodec[] | undefined, env: NodeJS.ProcessEnv = process.env): CodecChain | undefined {
  const chain = new CodecChain(codecs ?? codecsFromEnv(env));
  return chain.codecs.length > 0 ? chain : undefined;
}

/**
 * The codecs the environment configures: `QM_CODEC_KEYS="k1:BASE64,k2:BASE64"` gives an `AesGcmCodec` whose
 * active key is `QM_CODEC_ACTIVE_KEY` (may be left out with one key); `QM_CODEC_GZIP_MIN_SIZE=1024` a
 * `GzipCodec` before it. Neither set: none.
 */
export function codecsFromEnv(env: NodeJS.ProcessEnv = process.env): PayloadCodec[] {
  const codecs: PayloadCodec[] = [];
  const minSize = (env.QM_CODEC_GZIP_MIN_SIZE ?? "").trim();
  if (minSize !== "") {
    if (!/^\d+$/.test(minSize)) {
      throw new RangeError(`QM_CODEC_GZIP_MIN_SIZE must be a number of bytes, not ${JSON.stringify(minSize)}`);
    }
    codecs.push(new GzipCodec({ minSize: Number(minSize) }));
  }
  const spec = (env.QM_CODEC_KEYS ?? "").trim();
  const active = (env.QM_CODEC_ACTIVE_KEY ?? "").trim();
  if (spec !== "") {
    const keys: Record<string, string> = {};
    for (const item of spec.split(",")) {
      const text = item.trim();
      const colon = text.indexOf(":");
      const id = text.slice(0, colon);
      if (colon < 0 || id in keys) {
        throw new RangeError("QM_CODEC_KEYS must be 'id:BASE64,id:BASE64', each id once");
      }
      keys[id] = text.slice(colon + 1);
    }
    try {
      codecs.push(new AesGcmCodec(keys, active || undefined));
    } catch (err) {
      throw new RangeError(`QM_CODEC_KEYS / QM_CODEC_ACTIVE_KEY: ${(err as Error).message}`);
    }
  } else if (active !== "") {
    throw new RangeError("QM_CODEC_ACTIVE_KEY is set without QM_CODEC_KEYS");
  }
  return codecs;
}
