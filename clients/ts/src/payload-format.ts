/**
 * The wire format of encoded payloads (compressed, encrypted or both), the same in the Python, TypeScript and
 * Go clients (docs/security.md, "Compressing and encrypting payloads"). An encoded payload is raw bytes whose
 * content type names what was done to them, in order, and what they were:
 *
 *     application/vnd.qm.encoded; v=1; codecs=gzip,aes-256-gcm; kid=k1; inner=application/json
 *
 * `v` is the format's version; `codecs` lists the codecs in the order they were applied (decoding undoes
 * them from the last); `kid` names the key of the encryption, and is there only with one; `inner` is the
 * content type before, always last, so that it may hold `;` and `=` itself.
 */

export const ENCODED_TYPE = "application/vnd.qm.encoded";
export const FORMAT_VERSION = "1";
export const GZIP = "gzip";
export const AES_256_GCM = "aes-256-gcm";
const CODEC_NAMES = new Set([GZIP, AES_256_GCM]);
/** The server refuses a content type over 200 characters (its `payload.content_type` limit). */
export const MAX_CONTENT_TYPE = 200;
/** Key ids travel in the content type: short, and free of the characters that separate its parameters. */
export const KEY_ID = /^[A-Za-z0-9._-]{1,64}$/;
const PREFIX = `${ENCODED_TYPE};`;
const INNER = "; inner=";

/** A content type that says it is an encoded payload but cannot be read as one. */
export class PayloadFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "PayloadFormatError";
  }
}

/**
 * A payload this client could not decode (it has no codecs): the bytes and what the content type says. Sent
 * again as data (a retry's, an edit's), it goes as it is, content type and all.
 */
export class EncodedPayload {
  constructor(
    /** The whole content type, `application/vnd.qm.encoded; ...`. */
    readonly contentType: string,
    /** The encoded bytes. */
    readonly raw: Uint8Array,
    /** The codecs applied, in order (`["gzip", "aes-256-gcm"]`). */
    readonly codecs: readonly string[],
    /** The key id of the encryption ("" when not encrypted). */
    readonly keyId: string,
    /** The content type before encoding. */
    readonly inner: string,
  ) {}

  toString(): string {
    const key = this.keyId ? `, key ${this.keyId}` : "";
    return `<${this.raw.length.toLocaleString("en-US")} bytes: ${this.inner} encoded ${this.codecs.join("+")}${key}>`;
  }

  toJSON(): unknown {
    return { encoded: this.toString() };
  }
}

/** Whether a content type marks an encoded payload. */
export function isEncoded(contentType: string): boolean {
  return contentType.startsWith(PREFIX);
}

/** The content type of a payload encoded by `codecs` (in the order applied), under `keyId` if any. */
export function buildContentType(codecs: readonly string[], keyId: string, inner: string): string {
  const key = keyId ? `; kid=${keyId}` : "";
  const contentType = `${ENCODED_TYPE}; v=${FORMAT_VERSION}; codecs=${codecs.join(",")}${key}${INNER}${inner}`;
  if (contentType.length > MAX_CONTENT_TYPE) {
    throw new RangeError(
      `the encoded payload's content type would be ${contentType.length} characters, over the server's ` +
        `${MAX_CONTENT_TYPE}: shorten the key id or the content type ${JSON.stringify(inner)}`,
    );
  }
  return contentType;
}

/** Reads an encoded payload's content type: the codecs in the order applied, the key id ("" for none), the inner type. */
export function parseContentType(contentType: string): { codecs: string[]; keyId: string; inner: string } {
  const rest = contentType.slice(PREFIX.length);
  const at = rest.indexOf(INNER);
  if (!isEncoded(contentType) || at < 0) {
    throw new PayloadFormatError(`${JSON.stringify(contentType)} is not an encoded payload's content type (no inner=)`);
  }
  const inner = rest.slice(at + INNER.length);
  const params = new Map<string, string>();
  for (const part of rest.slice(0, at).split(";")) {
    const text = part.trim();
    const eq = text.indexOf("=");
    const name = text.slice(0, eq);
    if (eq < 0 || params.has(name)) {
      throw new PayloadFormatError(`the encoded payload's content type ${JSON.stringify(contentType)} is malformed`);
    }
    params.set(name, text.slice(eq + 1));
  }
  if (params.get("v") !== FORMAT_VERSION) {
    throw new PayloadFormatError(
      `the payload is encoded in format v=${params.get("v") ?? "?"}; this client reads v=${FORMAT_VERSION} (upgrade it)`,
    );
  }
  const codecs = (params.get("codecs") ?? "").split(",");
  if (codecs.some((c) => !CODEC_NAMES.has(c)) || new Set(codecs).size !== codecs.length) {
    throw new PayloadFormatError(`the payload names codecs this client does not know: ${JSON.stringify(params.get("codecs"))}`);
  }
  const keyId = params.get("kid") ?? "";
  if (codecs.includes(AES_256_GCM) !== (keyId !== "") || (keyId !== "" && !KEY_ID.test(keyId))) {
    throw new PayloadFormatError(`the encoded payload's key id is missing or malformed in ${JSON.stringify(contentType)}`);
  }
  if ([...params.keys()].some((k) => k !== "v" && k !== "codecs" && k !== "kid")) {
    throw new PayloadFormatError(`the encoded payload's content type ${JSON.stringify(contentType)} has unknown parameters`);
  }
  return { codecs, keyId, inner };
}

/** An undecoded payload as an `EncodedPayload`; its bytes alone when its content type cannot be read. */
export function encodedPayload(contentType: string, raw: Uint8Array): EncodedPayload | Uint8Array {
  try {
    const { codecs, keyId, inner } = parseContentType(contentType);
    return new EncodedPayload(contentType, raw, codecs, keyId, inner);
  } catch {
    return raw;
  }
}
