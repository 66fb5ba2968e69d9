/**
 * Carries one client's concurrent `addJob` calls together, as messages of one `AddJobStream` it keeps open
 * (or, with a server without it, as one `AddJob` call each); the Python client's adds.py, in Node.
 *
 * A web handler adds one job per request, and many handlers run at once. Each add on its own costs a gRPC
 * round trip and work on both sides; carried together, the cost is paid once per message. There is no
 * linger: while fewer than `MAX_IN_FLIGHT` messages are unanswered and none of them is a batch, an add goes
 * out at once on its own (a lone add is as fast as before). Adds made otherwise wait for a message to be
 * answered and then leave together, so under load the batches grow by themselves and no add waits longer
 * than one round trip. The callers a batch's answer wakes add again in the same turn of the event loop; those
 * adds leave together too. A large batch leaving with nothing under way is sent as two halves, which then
 * alternate (the server writes one while the other's callers add again).
 *
 * Each add keeps its own outcome: the server answers every item with its job or the status `AddJob` would
 * have ended with, so one bad add fails alone. When the stream breaks, an add whose message the transport had
 * not taken yet was never sent: it goes out once more, on a new stream. An add whose message was taken may
 * have been added, so its caller gets the stream's error (`UnavailableError` for a lost connection) rather
 * than risk a second job. A stream with nothing to answer for `IDLE_CLOSE_MS` is half-closed (an open stream
 * keeps Node's event loop alive), and the next add opens another.
 */
import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import {
  AddJobStreamRequestSchema,
  type AddJobOutcome,
  type AddJobRequest,
  type AddJobResponse,
  type AddJobStreamRequest,
  type AddJobStreamResponse,
  type CreatedJob,
} from "./gen/queue_manager/v1/jobs_pb.js";
import { DeadlineExceededError, errorFromRpc, errorFromStatus, QueueManagerError, UnavailableError } from "./errors.js";

// Messages unanswered at once. A lone add never waits; beyond this, adds share the next message. The Python
// client measured 1, 2 and 4 (adds.py): 2 keeps a paced producer's add from waiting for the previous one.
const MAX_IN_FLIGHT = 2;
// Beside a batch under way, a second message may leave only with at least this many adds: a lone add waits
// for the batch instead (else one caller's adds went out alone, one message each, while the batch was away).
const PIPELINE_MIN = 8;
// Adds per message (the server's limit, services/jobs.py MAX_BATCH_ITEMS).
const MAX_ITEMS = 1_000;
// How long an open stream with nothing to answer stays open. An open HTTP/2 stream keeps the process alive
// (connect-node unrefs only idle connections), so a script that never calls `shutdown` exits this much later;
// a producer adding more often than this keeps one stream.
const IDLE_CLOSE_MS = 1_000;
// How long closing waits for the server to end a half-closed stream before cancelling it.
const CLOSE_TIMEOUT_MS = 5_000;

/** An add's answer: the job as stored, or (a brief answer) what the request lacks to make it. */
export type Answer = AddJobResponse | CreatedJob;
/** Sends one unary `AddJob`, failing with a `QueueManagerError`. */
export type AddJobCall = (request: AddJobRequest) => Promise<AddJobResponse>;
/** Opens an `AddJobStream` call that sends `requests` and yields its answers until `signal` fires. */
export type OpenStream = (requests: AsyncIterable<AddJobStreamRequest>, signal: AbortSignal) => AsyncIterable<AddJobStreamResponse>;

interface Pending {
  request: AddJobRequest;
  resolve: (answer: Answer) => void;
  reject: (error: unknown) => void;
}

/** Sends adds at once while few messages are unanswered, and in shared messages beyond that. */
export class AddBatcher {
  private stream: AddStream | undefined;
  private streams = true; // false once the server turned out to lack AddJobStream
  private pending: Pending[] = [];
  private inFlight = 0;
  private batchesInFlight = 0; // messages carrying more than one add, unanswered
  // A batch's answers just woke its callers: the adds they make in this turn of the loop leave together.
  private gathering = false;
  private scheduled = false;
  private readonly sending = new Set<Promise<void>>();

  /**
   * @param addJob Sends one unary `AddJob` (a server without the stream, or a stream that cannot be opened).
   * @param openStream Opens an `AddJobStream`.
   * @param timeoutMs How long an add waits for its answer (0: no limit), as a unary call's deadline.
   */
  constructor(
    private readonly addJob: AddJobCall,
    private readonly openStream: OpenStream,
    private readonly timeoutMs: number,
  ) {}

  /** Adds one job (as `AddJob` would) and returns the server's answer, or rejects with its error. */
  async add(request: AddJobRequest): Promise<Answer> {
    if (this.free() && !this.pending.length && !this.gathering) {
      this.inFlight += 1;
      try {
        const outcomes = await this.onStream([request]);
        return outcomes === undefined ? await this.addJob(request) : answerOf(outcomes[0]!);
      } finally {
        this.inFlight -= 1;
        this.kick();
      }
    }
    return new Promise<Answer>((resolve, reject) => {
      this.pending.push({ request, resolve, reject });
      this.kick();
    });
  }

  /** Waits for the messages under way (their callers get their outcomes), then ends the stream. */
  async close(): Promise<void> {
    while (this.sending.size || this.pending.length || this.scheduled || this.gathering) {
      if (this.sending.size) {
        await Promise.allSettled([...this.sending]);
      } else {
        await new Promise<void>((resolve) => setImmediate(resolve)); // a flush or a gathering is due
      }
    }
    const stream = this.stream;
    this.stream = undefined;
    await stream?.close();
  }

  /** Whether a message may leave now: beside a batch, only one of `PIPELINE_MIN` adds or more. */
  private free(): boolean {
    if (this.inFlight >= MAX_IN_FLIGHT) {
      return false;
    }
    return !this.batchesInFlight || this.pending.length >= PIPELINE_MIN;
  }

  private kick(): void {
    if (this.pending.length && !this.scheduled && !this.gathering && this.free()) {
      this.scheduled = true;
      // After the callers running now have added theirs: adds made in one turn leave together.
      setImmediate(() => this.flush());
    }
  }

  private flush(): void {
    this.scheduled = false;
    if (!this.pending.length || !this.free()) {
      return;
    }
    const batch = this.pending.splice(0, MAX_ITEMS);
    if (this.inFlight === 0 && batch.length >= 2 * PIPELINE_MIN) {
      const half = batch.length >> 1;
      this.start(batch.slice(0, half));
      this.start(batch.slice(half));
    } else {
      this.start(batch);
    }
    this.kick(); // more than MAX_ITEMS were waiting
  }

  private start(batch: Pending[]): void {
    this.inFlight += 1;
    const isBatch = batch.length > 1;
    this.batchesInFlight += isBatch ? 1 : 0;
    const sent = this.send(batch, isBatch).finally(() => {
      this.sending.delete(sent);
      this.inFlight -= 1;
      this.kick();
    });
    this.sending.add(sent);
  }

  private async send(batch: Pending[], isBatch: boolean): Promise<void> {
    try {
      let outcomes: AddJobOutcome[] | undefined;
      try {
        outcomes = await this.onStream(batch.map((p) => p.request));
      } catch (err) {
        batch.forEach((p) => p.reject(err));
        return;
      }
      if (outcomes === undefined) {
        await Promise.all(batch.map((p) => this.addJob(p.request).then(p.resolve, p.reject)));
        return;
      }
      batch.forEach((p, i) => {
        try {
          p.resolve(answerOf(outcomes[i]!));
        } catch (err) {
          p.reject(err);
        }
      });
    } finally {
      if (isBatch) {
        // The callers just woken run (as microtasks) before the gathering ends: what they add waits for it,
        // so they leave together again instead of the first one alone.
        this.batchesInFlight -= 1;
        this.gathering = true;
        setImmediate(() => {
          this.gathering = false;
          this.kick();
        });
      }
    }
  }

  /**
   * Sends adds as one message of the stream and returns their outcomes; undefined when the server lacks the
   * stream (nothing was added: the caller sends them unary). Rejects with a `QueueManagerError` when the
   * stream broke or the answer did not come within the timeout.
   */
  private async onStream(requests: AddJobRequest[]): Promise<AddJobOutcome[] | undefined> {
    for (const fresh of [false, true]) {
      if (!this.streams) {
        return undefined;
      }
      let stream = this.stream;
      if (stream === undefined || !stream.usable) {
        stream = this.stream = new AddStream(this.openStream);
      }
      try {
        return await stream.send(requests, this.timeoutMs);
      } catch (err) {
        if (!(err instanceof Unsent)) {
          throw err;
        }
        if (err.error.code === Code.Unimplemented) {
          this.streams = false; // an older server: unary calls from now on
          return undefined;
        }
        if (fresh) {
          throw err.error;
        }
        // The stream had ended before the message left (a server restart): a new stream takes it, once.
      }
    }
    throw new Error("unreachable");
  }
}

interface Waiting {
  message: AddJobStreamRequest;
  taken: boolean; // handed to the transport: it may have reached the server
  answered: (outcomes: AddJobOutcome[]) => void;
  failed: (error: QueueManagerError) => void;
}

/**
 * One open AddJobStream: messages queued for the transport, which takes them as it can write them, and
 * answers matched to them by batch id as they come. When the call ends, every add still waiting gets its
 * error (`Unsent` for one whose message the transport never took), and the next add opens another stream.
 */
class AddStream {
  private readonly outgoing: Waiting[] = [];
  private readonly waiting = new Map<bigint, Waiting>();
  private readonly abort = new AbortController();
  private nextId = 0n;
  private wakeUp: (() => void) | undefined;
  private broken: QueueManagerError | undefined;
  private closing = false;
  private idle: NodeJS.Timeout | undefined;
  private readonly ended: Promise<void>;

  constructor(open: OpenStream) {
    this.ended = this.read(open(this.requests(), this.abort.signal));
  }

  /** Whether new adds may use this stream (neither broken nor closing). */
  get usable(): boolean {
    return this.broken === undefined && !this.closing;
  }

  /** Sends adds as one message; resolves with their outcomes, in order. */
  send(requests: AddJobRequest[], timeoutMs: number): Promise<AddJobOutcome[]> {
    if (!this.usable) {
      return Promise.reject(new Unsent(this.broken ?? new UnavailableError("the add stream is closing", Code.Unavailable)));
    }
    clearTimeout(this.idle);
    this.nextId += 1n;
    const batchId = this.nextId;
    // brief: jobs created as their requests say are answered without the job (convert.createdJob).
    const message = create(AddJobStreamRequestSchema, { batchId, items: requests, brief: true });
    return new Promise<AddJobOutcome[]>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const entry: Waiting = {
        message,
        taken: false,
        answered: (outcomes) => {
          clearTimeout(timer);
          if (outcomes.length === requests.length) {
            resolve(outcomes);
          } else {
            // A server bug: never guess which outcome is whose.
            const why = `the server answered ${outcomes.length} outcomes for ${requests.length} adds`;
            reject(new QueueManagerError(why, Code.Internal));
          }
        },
        failed: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      };
      if (timeoutMs > 0) {
        timer = setTimeout(() => {
          this.forget(batchId, entry);
          reject(new DeadlineExceededError(`no answer to the add within ${timeoutMs} ms`, Code.DeadlineExceeded));
        }, timeoutMs);
      }
      this.waiting.set(batchId, entry);
      this.outgoing.push(entry);
      this.wake();
    });
  }

  /** Half-closes the stream, waits (bounded) for the server to end it, then cancels it. */
  async close(): Promise<void> {
    this.closing = true;
    clearTimeout(this.idle);
    this.wake();
    const timer = setTimeout(() => this.abort.abort(), CLOSE_TIMEOUT_MS);
    try {
      await this.ended;
    } finally {
      clearTimeout(timer);
      this.abort.abort();
    }
  }

  /** The request messages, as the transport asks for them; returning half-closes the stream. */
  private async *requests(): AsyncGenerator<AddJobStreamRequest> {
    for (;;) {
      const entry = this.outgoing.shift();
      if (entry !== undefined) {
        entry.taken = true;
        yield entry.message;
        continue;
      }
      if (!this.usable) {
        return;
      }
      await new Promise<void>((resolve) => (this.wakeUp = resolve));
    }
  }

  private wake(): void {
    const resolve = this.wakeUp;
    this.wakeUp = undefined;
    resolve?.();
  }

  private async read(responses: AsyncIterable<AddJobStreamResponse>): Promise<void> {
    let error: QueueManagerError;
    try {
      for await (const response of responses) {
        const entry = this.waiting.get(response.batchId);
        if (entry !== undefined) {
          this.waiting.delete(response.batchId);
          entry.answered(response.outcomes);
        }
        if (!this.waiting.size && !this.closing) {
          clearTimeout(this.idle);
          this.idle = setTimeout(() => void this.close(), IDLE_CLOSE_MS).unref();
        }
      }
      error = new UnavailableError("the server ended the add stream", Code.Unavailable);
    } catch (err) {
      error = errorFromRpc(err);
    }
    this.broken = error;
    clearTimeout(this.idle);
    this.wake();
    // A server without the RPC refused the call before reading anything: none of its adds was made.
    const noneMade = error.code === Code.Unimplemented;
    const waiting = [...this.waiting.values()];
    this.waiting.clear();
    this.outgoing.length = 0;
    for (const entry of waiting) {
      entry.failed(entry.taken && !noneMade ? error : new Unsent(error));
    }
  }

  /** Drops an add whose caller stopped waiting; one still queued is then never sent. */
  private forget(batchId: bigint, entry: Waiting): void {
    this.waiting.delete(batchId);
    const at = this.outgoing.indexOf(entry);
    if (at >= 0) {
      this.outgoing.splice(at, 1);
    }
  }
}

/** A message never handed to the transport because its stream had ended; `error`: why it ended. */
class Unsent extends QueueManagerError {
  constructor(readonly error: QueueManagerError) {
    super(error.message, error.code);
  }
}

/** An add's answer, or its error thrown. */
function answerOf(outcome: AddJobOutcome): Answer {
  const kind = outcome.outcome;
  if (kind.case === "created" || kind.case === "added") {
    return kind.value;
  }
  if (kind.case === "error") {
    throw errorFromStatus(kind.value.code, kind.value.message);
  }
  throw new QueueManagerError("the server answered an add with an empty outcome", Code.Internal);
}
