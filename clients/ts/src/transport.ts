/**
 * The gRPC connection: address, TLS and bearer token, given as options or taken from the environment the
 * way the Python client and `qm` do (docs/security.md):
 *
 * - `QM_SERVER`: `host:port` of the server (default `localhost:50051`).
 * - `QM_TOKEN` (or `QM_TOKEN_FILE`, a file holding it): sent as `authorization: Bearer <token>`.
 * - `QM_TLS_CA` (PEM bundle, turns TLS on) or `QM_TLS=1` (the system's CAs); `QM_TLS_CERT` and
 *   `QM_TLS_KEY` for mutual TLS; `QM_TLS_SERVER_NAME` when the certificate names another host.
 */
import { readFileSync } from "node:fs";
import type { Interceptor, Transport } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";

/** TLS settings: PEM contents or file paths. */
/** The keys of `ConnectionOptions`, which every client and worker takes. */
export const CONNECTION_KEYS: readonly string[] = ["address", "token", "tls", "interceptors"];

export interface TlsOptions {
  /** CA bundle that signed the server's certificate (PEM text or a Buffer); default the system's CAs. */
  ca?: string | Buffer;
  /** This client's certificate chain, for servers that require mutual TLS. */
  cert?: string | Buffer;
  /** This client's private key. */
  key?: string | Buffer;
  /** Name expected in the server's certificate when it differs from the host dialled. */
  serverName?: string;
}

/** How to reach the server; every field falls back to the environment (see the module comment). */
export interface ConnectionOptions {
  /** Server `host:port` (or `[v6]:port`); default `QM_SERVER` or `localhost:50051`. */
  address?: string;
  /** Bearer token; default `QM_TOKEN` or the contents of `QM_TOKEN_FILE`; `null` sends none. */
  token?: string | null;
  /** TLS: `true` for the system's CAs, an object for files; default from `QM_TLS*`, else plaintext. */
  tls?: TlsOptions | boolean;
  /** Extra interceptors, run after the one adding the token. */
  interceptors?: Interceptor[];
}

/** A transport and the HTTP/2 connection under it, which `close` ends. */
export interface Connection {
  readonly address: string;
  readonly transport: Transport;
  close(): void;
}

const TRUE = new Set(["1", "true", "yes", "on"]);
// Client pings every 20 s on open streams: above the server's 5 s minimum (app.py), so never "too many pings".
const PING_INTERVAL_MS = 20_000;
const PING_TIMEOUT_MS = 10_000;

/** Checks a `host:port` address and returns it; throws a `RangeError` that says what is wrong. */
export function checkAddress(address: string): string {
  if (typeof address !== "string") {
    throw new TypeError(`address must be a string "host:port", not ${typeof address}`);
  }
  const match = /^(\[[0-9a-fA-F:.]+\]|[^\s:/[\]]+):(\d{1,5})$/.exec(address.trim());
  const port = match ? Number(match[2]) : 0;
  if (!match || port < 1 || port > 65535) {
    throw new RangeError(`address must be "host:port" with a port from 1 to 65535, got ${JSON.stringify(address)}`);
  }
  return address.trim();
}

function readPem(value: string | Buffer | undefined, what: string): Buffer | undefined {
  if (value === undefined || Buffer.isBuffer(value)) {
    return value;
  }
  if (value.includes("-----BEGIN")) {
    return Buffer.from(value);
  }
  try {
    return readFileSync(value);
  } catch (err) {
    throw new Error(`cannot read the ${what} ${value}: ${(err as Error).message}`);
  }
}

function resolveToken(token: string | null | undefined, env: NodeJS.ProcessEnv): string | undefined {
  let value = token === null ? undefined : token;
  if (token === undefined) {
    value = env.QM_TOKEN || undefined;
    if (value === undefined && env.QM_TOKEN_FILE) {
      const text = readPem(env.QM_TOKEN_FILE, "token file (QM_TOKEN_FILE)");
      value = text?.toString("utf8").trim() || undefined;
    }
  }
  if (value !== undefined && !/^[\x21-\x7e]+$/.test(value)) {
    throw new RangeError("the token must be one printable word (check QM_TOKEN / QM_TOKEN_FILE)");
  }
  return value;
}

function resolveTls(tls: TlsOptions | boolean | undefined, env: NodeJS.ProcessEnv): TlsOptions | undefined {
  if (tls === false) {
    return undefined;
  }
  if (tls === true) {
    return {};
  }
  if (tls !== undefined) {
    return tls;
  }
  const { QM_TLS_CA: ca, QM_TLS_CERT: cert, QM_TLS_KEY: key } = env;
  if (ca || cert || TRUE.has((env.QM_TLS ?? "").trim().toLowerCase())) {
    return { ca: ca || undefined, cert: cert || undefined, key: key || undefined, serverName: env.QM_TLS_SERVER_NAME };
  }
  return undefined;
}

/** An interceptor that sends the bearer token with every call (unary and streaming alike). */
export function tokenInterceptor(token: string): Interceptor {
  const header = `Bearer ${token}`;
  return (next) => async (req) => {
    req.header.set("authorization", header);
    return next(req);
  };
}

/** Opens (lazily: nothing connects before the first call) a gRPC transport to the server. */
export function connect(options: ConnectionOptions = {}, env: NodeJS.ProcessEnv = process.env): Connection {
  const address = checkAddress(options.address ?? (env.QM_SERVER || "localhost:50051"));
  const token = resolveToken(options.token, env);
  const tls = resolveTls(options.tls, env);
  if (tls && Boolean(tls.cert) !== Boolean(tls.key)) {
    throw new RangeError("a client certificate and its key go together (tls.cert and tls.key, QM_TLS_CERT and QM_TLS_KEY)");
  }
  const baseUrl = `${tls ? "https" : "http"}://${address}`;
  const nodeOptions = tls
    ? {
        ca: readPem(tls.ca, "CA bundle (QM_TLS_CA)"),
        cert: readPem(tls.cert, "client certificate (QM_TLS_CERT)"),
        key: readPem(tls.key, "client key (QM_TLS_KEY)"),
        servername: tls.serverName || undefined,
      }
    : {};
  const sessionManager = new Http2SessionManager(
    baseUrl,
    { pingIntervalMs: PING_INTERVAL_MS, pingTimeoutMs: PING_TIMEOUT_MS },
    nodeOptions,
  );
  const interceptors = [...(token ? [tokenInterceptor(token)] : []), ...(options.interceptors ?? [])];
  const transport = createGrpcTransport({ baseUrl, sessionManager, interceptors });
  return { address, transport, close: () => sessionManager.abort() };
}
