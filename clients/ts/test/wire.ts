/** An interceptor that counts what a client puts on the wire: unary calls, and the messages of its add streams. */
import { EventEmitter } from "node:events";
import type { Interceptor } from "@connectrpc/connect";

export class WireCounter extends EventEmitter {
  /** Unary calls by method name ("AddJob"…). */
  readonly unary = new Map<string, number>();
  /** AddJobStream calls opened. */
  streams = 0;
  /** AddJobStream messages sent, and the adds they held. */
  messages = 0;
  adds = 0;
  /** AddJobStream calls whose request side ended cleanly (half-closed); emits `halfClosed`. */
  halfClosed = 0;
  /** AddJobStream calls whose answers ended without an error; emits `ended`. */
  endedCleanly = 0;

  readonly interceptor: Interceptor = (next) => async (req) => {
    const method = req.method.name;
    if (!req.stream) {
      this.unary.set(method, (this.unary.get(method) ?? 0) + 1);
      return next(req);
    }
    if (method !== "AddJobStream") {
      return next(req);
    }
    this.streams += 1;
    const source = req.message as AsyncIterable<{ items: unknown[] }>;
    const counted = async function* (this: WireCounter) {
      for await (const message of source) {
        this.messages += 1;
        this.adds += message.items.length;
        yield message;
      }
      this.halfClosed += 1;
      this.emit("halfClosed");
    }.call(this);
    const res = await next({ ...req, message: counted } as typeof req);
    if (!res.stream) {
      return res;
    }
    const answers = res.message;
    const watched = async function* (this: WireCounter) {
      yield* answers;
      this.endedCleanly += 1;
      this.emit("ended");
    }.call(this);
    return { ...res, message: watched } as typeof res;
  };
}
