/**
 * What every call of `QueueManager` rests on: its options, the connection, the unary deadline and the
 * tracer of the adds.
 *
 * `QueueManager`'s calls live one group per module, each group a class on top of the previous one:
 * `ClientBase` (here) ← `Producer` (client-producer.ts: adds) ← `JobCalls` (client-jobs.ts: reading and
 * controlling jobs) ← `QueueCalls` (client-queues.ts: queues, groups, metrics, workers) ← `WorkerCalls`
 * (client-workers.ts: controlling workers) ← `WorkflowCalls` (client-workflows.ts: workflows, schedules) ←
 * `PullCalls` (client-pull.ts: pull workers) ← `ExternalEventCalls` (client-events.ts: pushing external events)
 * ← `TestClockCalls` (client-test-clock.ts: a test server's clock) ← `QueueManager` (client.ts: processors,
 * workers, shutdown).
 * A group uses only what this class holds (and `QueueManager`, closing them, `Producer`'s adds): apart from
 * that, the order of the stack means nothing.
 */
import { createClient, type CallOptions, type Client } from "@connectrpc/connect";
import type { Tracer, TracerProvider } from "@opentelemetry/api";
import { QueueService } from "./gen/queue_manager/v1/queue_service_pb.js";
import { withCodecs } from "./codec-client.js";
import { makeChain, type CodecChain, type PayloadCodec } from "./codecs.js";
import { checkMs } from "./convert.js";
import { tracerOf } from "./tracing.js";
import { checkKeys } from "./options.js";
import { CONNECTION_KEYS, connect, type Connection, type ConnectionOptions } from "./transport.js";

/** Options of a `QueueManager`: the connection, a deadline for unary calls, and worker defaults. */
export interface QueueManagerOptions extends ConnectionOptions {
  /** Deadline of each unary call in ms; default 30,000; 0 for none. */
  timeoutMs?: number;
  /** Jobs each worker from `startWorkers` runs at once; default `WORKER_CONCURRENCY` or 10. */
  concurrency?: number;
  /** Labels sent in each worker's hello. */
  workerLabels?: Record<string, string>;
  /** How long `shutdown` waits for running jobs, ms; default 30,000. */
  shutdownGraceMs?: number;
  /**
   * OpenTelemetry tracer provider of the adds' spans and of the workers `startWorkers` starts; default the
   * global one, read at the first add (tracing is off when none is configured then).
   */
  tracerProvider?: TracerProvider;
  /**
   * Payload codecs, `[new GzipCodec({ minSize: 1024 }), new AesGcmCodec({ k1: key }, "k1")]`: every payload this
   * client and its workers send is encoded, every one they read decoded (codecs.ts, docs/security.md). Default:
   * from `QM_CODEC_KEYS` and the like, else none; `[]`: none.
   */
  codecs?: PayloadCodec[];
}

// A misspelt option would be ignored silently (`adress`: the client would dial localhost:50051).
const OPTION_KEYS: ReadonlySet<string> = new Set([
  ...CONNECTION_KEYS,
  "timeoutMs",
  "concurrency",
  "workerLabels",
  "shutdownGraceMs",
  "tracerProvider",
  "codecs",
]);

// The adds' tracer before the first add has read it (tracing.tracerOf).
const UNREAD = Symbol("unread");

/** The connection and call settings shared by every group of `QueueManager`'s calls. */
export class ClientBase {
  readonly address: string;
  protected readonly options: QueueManagerOptions;
  protected readonly connection: Connection;
  protected readonly client: Client<typeof QueueService>;
  /** The payload codecs (codecs.ts); undefined: payloads go and come as they are. */
  protected readonly codecs: CodecChain | undefined;
  /** Deadline of each unary call in ms (0: none). */
  protected readonly timeoutMs: number;
  /** The options of each unary call: its deadline. */
  protected readonly callOptions: CallOptions;
  // The adds' tracer: undefined when tracing is off, UNREAD before the first add (a client made at import
  // time, before the application configured OpenTelemetry, still traces).
  private tracer: Tracer | undefined | typeof UNREAD = UNREAD;

  constructor(options: QueueManagerOptions = {}) {
    checkKeys(options, OPTION_KEYS, "QueueManager options");
    this.options = options;
    this.connection = connect(options);
    this.address = this.connection.address;
    this.codecs = makeChain(options.codecs);
    const client = createClient(QueueService, this.connection.transport);
    // Every call through the codecs, so that no call can send a payload in clear.
    this.client = this.codecs === undefined ? client : withCodecs(client, QueueService, this.codecs);
    this.timeoutMs = checkMs(options.timeoutMs ?? 30_000, "timeoutMs");
    this.callOptions = this.timeoutMs > 0 ? { timeoutMs: this.timeoutMs } : {};
  }

  /** The adds' tracer (undefined: tracing is off), read once. */
  protected tracing(): Tracer | undefined {
    if (this.tracer === UNREAD) {
      this.tracer = tracerOf(this.options.tracerProvider);
    }
    return this.tracer;
  }

  /** Whether the adds' tracer has been read and tracing is off (the adds' fast path: one test per add). */
  protected get untraced(): boolean {
    return this.tracer === undefined;
  }
}
