/**
 * Errors raised by the client, and the one place that maps gRPC status codes to them (as the Python
 * client's errors.py does).
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { checkMs } from "./convert.js";
import type { JobRef } from "./types.js";

/** The gRPC status code names, by number (google.rpc.Code). */
const CODE_NAMES: Record<number, string> = {
  0: "OK",
  1: "CANCELLED",
  2: "UNKNOWN",
  3: "INVALID_ARGUMENT",
  4: "DEADLINE_EXCEEDED",
  5: "NOT_FOUND",
  6: "ALREADY_EXISTS",
  7: "PERMISSION_DENIED",
  8: "RESOURCE_EXHAUSTED",
  9: "FAILED_PRECONDITION",
  10: "ABORTED",
  11: "OUT_OF_RANGE",
  12: "UNIMPLEMENTED",
  13: "INTERNAL",
  14: "UNAVAILABLE",
  15: "DATA_LOSS",
  16: "UNAUTHENTICATED",
};

/** The name of a gRPC status code number ("NOT_FOUND"), or the number as text. */
export function codeName(code: number): string {
  return CODE_NAMES[code] ?? String(code);
}

/** A call to the server failed. `code` is the gRPC status code, `message` the server's text for a person. */
export class QueueManagerError extends Error {
  /** The gRPC status code number (5 NOT_FOUND, 3 INVALID_ARGUMENT…). */
  readonly code: number;
  /** Its name, e.g. "NOT_FOUND". */
  readonly codeName: string;

  constructor(message: string, code: number = Code.Unknown) {
    super(message);
    this.code = code;
    this.codeName = codeName(code);
    this.name = new.target.name;
  }

  override toString(): string {
    return `${this.codeName}: ${this.message}`;
  }
}

/** The queue, job, workflow run or schedule does not exist. */
export class NotFoundError extends QueueManagerError {}
/** The server rejected a field of the request; the message names it. */
export class InvalidArgumentError extends QueueManagerError {}
/** The request is valid but the state does not allow it (retrying a completed job, a stale lease…). */
export class FailedPreconditionError extends QueueManagerError {}
/** The object to create exists already. */
export class AlreadyExistsError extends QueueManagerError {}
/** The server (or its Redis) cannot be reached or serve now; retrying later may succeed. */
export class UnavailableError extends QueueManagerError {}
/**
 * The server or its store is out of a resource (Redis out of memory, a message over the size limit), or an add
 * found its queue full: the queue holds its `maxSize` jobs ("queue 'q' is full: …"), or the job's group its
 * own ("group 'g' of queue 'q' is full: …"); nothing was written, and adding again once workers have taken
 * some succeeds.
 */
export class ResourceExhaustedError extends QueueManagerError {}
/** The call carried no token, or one the server does not know. */
export class UnauthenticatedError extends QueueManagerError {}
/** The token's roles or queue patterns do not cover the call; the message says which. */
export class PermissionDeniedError extends QueueManagerError {}
/** The call's deadline (the client's `timeoutMs`) passed before the server answered. */
export class DeadlineExceededError extends QueueManagerError {}

const BY_CODE: Record<number, new (message: string, code: number) => QueueManagerError> = {
  [Code.NotFound]: NotFoundError,
  [Code.InvalidArgument]: InvalidArgumentError,
  [Code.FailedPrecondition]: FailedPreconditionError,
  [Code.AlreadyExists]: AlreadyExistsError,
  [Code.Unavailable]: UnavailableError,
  [Code.ResourceExhausted]: ResourceExhaustedError,
  [Code.Unauthenticated]: UnauthenticatedError,
  [Code.PermissionDenied]: PermissionDeniedError,
  [Code.DeadlineExceeded]: DeadlineExceededError,
};

/** The error for a status code number and message (a call's status, or a refused item of an answer). */
export function errorFromStatus(code: number, message: string): QueueManagerError {
  const Cls = BY_CODE[code] ?? QueueManagerError;
  return new Cls(message || codeName(code).toLowerCase().replace(/_/g, " "), code);
}

/**
 * Turns whatever a call threw into a `QueueManagerError` subclass: a `ConnectError` by its code and raw
 * message; a connection that could not be made or broke mid-call becomes `UnavailableError`.
 */
export function errorFromRpc(err: unknown): QueueManagerError {
  if (err instanceof QueueManagerError) {
    return err;
  }
  const connect = ConnectError.from(err);
  const transportCodes = [Code.Internal, Code.Canceled, Code.Unknown];
  if (transportCodes.includes(connect.code) && isConnectionLoss(connect)) {
    const why = `the connection to the server failed or broke (${connect.rawMessage.trim()})`;
    return errorFromStatus(Code.Unavailable, `${why}; ${tlsHint(connect) ?? "check the address and TLS settings, or retry"}`);
  }
  return errorFromStatus(connect.code, connect.rawMessage);
}

/**
 * Node's words for a connection refused in its TLS handshake name OpenSSL's reason, not the setting to
 * change: by the error code on the cause, what the caller can do about it, as the Python client's errors.py
 * says it. A stream closed with CANCEL and no cause is what both a plaintext client at a TLS port and a
 * client without the certificate a mutual-TLS server asks for see.
 */
const TLS_HINTS: [RegExp, string][] = [
  [/^ERR_SSL_WRONG_VERSION_NUMBER$/, "the server does not use TLS on this port: connect without TLS (unset QM_TLS_CA and QM_TLS)"],
  [
    /^(UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT(_LOCALLY)?|SELF_SIGNED_CERT_IN_CHAIN|DEPTH_ZERO_SELF_SIGNED_CERT|CERT_SIGNATURE_FAILURE)$/,
    "the server's certificate is not signed by the CA bundle given (QM_TLS_CA, tls.ca)",
  ],
  [
    /^ERR_TLS_CERT_ALTNAME_INVALID$/,
    "the server's certificate does not name the host dialled: dial a name it holds, or set QM_TLS_SERVER_NAME (tls.serverName)",
  ],
  [
    /ALERT_(CERTIFICATE_REQUIRED|BAD_CERTIFICATE|UNKNOWN_CA)$/,
    "the server requires mutual TLS: give a client certificate its CA signed (QM_TLS_CERT and QM_TLS_KEY, tls.cert and tls.key)",
  ],
];

const CLOSED_HINT =
  "if the server uses TLS, give the CA bundle that signed its certificate (QM_TLS_CA, tls.ca); if it requires " +
  "mutual TLS, also a client certificate its CA signed (QM_TLS_CERT and QM_TLS_KEY, tls.cert and tls.key)";

/** What to change for a connection refused in its TLS handshake; undefined for any other failure. */
function tlsHint(err: ConnectError): string | undefined {
  let causes = 0;
  for (let cause: unknown = err.cause, depth = 0; cause instanceof Error && depth < 5; depth++) {
    causes++;
    const code = (cause as { code?: unknown }).code;
    const hint = typeof code === "string" ? TLS_HINTS.find(([pattern]) => pattern.test(code)) : undefined;
    if (hint) {
      return hint[1];
    }
    cause = cause.cause;
  }
  return causes === 0 && /stream closed with error code CANCEL/.test(err.rawMessage) ? CLOSED_HINT : undefined;
}

/**
 * Whether a failure is the connection's, not a server's status: a Node error code on the cause (refused,
 * reset, a TLS handshake or certificate refused) or connect-node's words for a broken HTTP/2 stream (a
 * plaintext client at a TLS port sees its stream closed with CANCEL).
 */
function isConnectionLoss(err: ConnectError): boolean {
  for (let cause: unknown = err.cause, depth = 0; cause instanceof Error && depth < 5; depth++) {
    const code = (cause as { code?: unknown }).code;
    if (typeof code === "string" && /^(E[A-Z]+|ERR_(HTTP2|TLS|SSL)_\w+|\w*CERT\w*|UNABLE_TO_\w+)$/.test(code)) {
      return true;
    }
    cause = cause.cause;
  }
  return /ECONNRESET|ECONNREFUSED|EPIPE|stream closed with error code|session closed|GOAWAY|NGHTTP2/i.test(err.rawMessage);
}

/** Runs a call and rethrows its failure as a `QueueManagerError`. */
export async function mapped<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (err) {
    throw errorFromRpc(err);
  }
}

/** The text of whatever was thrown: an error's message (its name when it has none), else the value as text. */
export function errorText(error: unknown): string {
  return error instanceof Error ? error.message || error.name : String(error);
}

/** Thrown by a processor to fail its job for good, skipping the attempts left. */
export class UnrecoverableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UnrecoverableError";
  }
}

/**
 * Thrown by a processor when downstream said "slow down" (an HTTP 429, say): the job goes back to wait
 * `retryAfterMs` without using an attempt, and its queue starts no job for that long, on every worker.
 */
export class RateLimitedError extends Error {
  readonly retryAfterMs: number;

  constructor(retryAfterMs: number, message?: string) {
    checkMs(retryAfterMs, "retryAfterMs");
    super(message ?? `rate limited: retry after ${retryAfterMs / 1000}s`);
    this.name = "RateLimitedError";
    this.retryAfterMs = retryAfterMs;
  }
}

/** The longest delay the server takes: its durations' limit, 10 years. */
const MAX_DELAY_MS = 10 * 365 * 24 * 3600 * 1000;

/**
 * Thrown by a processor to run its job again later without using an attempt: a durable sleep between the
 * steps of a long job (BullMQ's `moveToDelayed` + `DelayedError`). The run ends, the job waits `delayMs`
 * in delayed (by the server's clock; the worker's slot and its group's are free meanwhile) and runs again
 * with no attempt used and no redelivery flag. With `data`, the job's data is replaced in the same step (a
 * checkpoint the next run resumes from); without, it is kept. Data the server cannot store fails the
 * attempt instead.
 */
export class DelayedError extends Error {
  readonly delayMs: number;
  /** The new data; `undefined` keeps the job's. */
  readonly data: unknown;
  readonly hasData: boolean;

  constructor(delayMs: number, ...data: [] | [unknown]) {
    checkMs(delayMs, "delayMs");
    if (delayMs > MAX_DELAY_MS) {
      throw new RangeError(`delayMs must be at most 10 years, got ${delayMs}`);
    }
    super(`run again in ${delayMs / 1000}s`);
    this.name = "DelayedError";
    this.delayMs = delayMs;
    this.hasData = data.length > 0;
    this.data = data[0];
  }
}

/**
 * Thrown by `ctx.waitForChildren` once the server has added the children and ended the run: the processor
 * stops there (let it propagate), and the job runs again when its children have all finished. Catching it
 * changes nothing: the run is over and whatever the processor returns or throws afterwards is not reported.
 */
export class WaitingForChildrenError extends Error {
  /** The children added, in the order given. */
  readonly children: JobRef[];
  /** How many of the job's children had not finished when the run ended. */
  readonly pending: number;

  constructor(children: JobRef[], pending: number) {
    super(`waiting for ${pending} of ${children.length} children`);
    this.name = "WaitingForChildrenError";
    this.children = children;
    this.pending = pending;
  }
}

/**
 * Thrown by `ctx.waitForEvent` once the server has parked the job and ended the run: the processor stops
 * there (let it propagate), and the job runs again when an event of one of its keys is pushed or the wait
 * times out. Catching it changes nothing, as for `WaitingForChildrenError`.
 */
export class WaitingForEventError extends Error {
  /** The event keys the job waits for. */
  readonly keys: string[];
  /** When the wait times out; undefined for a wait with no timeout. */
  readonly until: Date | undefined;

  constructor(keys: string[], until: Date | undefined) {
    super(`waiting for event ${keys.join(", ")}${until ? ` until ${until.toISOString()}` : ""}`);
    this.name = "WaitingForEventError";
    this.keys = keys;
    this.until = until;
  }
}

/** Why a run's AbortSignal fired: the reason object a processor sees in `ctx.signal.reason`. */
export class JobAbortedError extends Error {
  /** "cancelled" (CancelJob), "lease-lost", "timeout" (the job's timeout, on this worker or the server) or "shutdown". */
  readonly kind: "cancelled" | "lease-lost" | "timeout" | "shutdown";

  constructor(kind: JobAbortedError["kind"], message: string) {
    super(message);
    this.name = "JobAbortedError";
    this.kind = kind;
  }
}
