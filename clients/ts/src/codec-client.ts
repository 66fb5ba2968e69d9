/**
 * A client whose calls go through a codec chain (codecs.ts): `QueueManager` and the worker's producer-service
 * client are made through it when they have codecs, so that no call can send a payload in clear.
 */
import { clone, create, isMessage, type DescMessage, type DescService } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import type { CodecChain } from "./codecs.js";

type AnyFn = (input: unknown, options?: unknown) => unknown;

/**
 * `client` with every call's request encoded (a copy of it) and its answer decoded by `chain` (streams item by
 * item).
 */
export function withCodecs<T extends DescService>(client: Client<T>, service: T, chain: CodecChain): Client<T> {
  const wrapped: Record<string, AnyFn> = {};
  const calls = client as unknown as Record<string, AnyFn>;
  for (const [name, method] of Object.entries(service.method)) {
    const call = calls[name]!;
    const encode = (request: unknown): object => {
      const message = full(method.input, request);
      chain.encodeMessage(message);
      return message;
    };
    const decode = <R>(answer: R): R => {
      chain.decodeMessage(answer as object);
      return answer;
    };
    async function* encodeAll(requests: AsyncIterable<unknown>): AsyncIterable<object> {
      for await (const request of requests) {
        yield encode(request);
      }
    }
    async function* decodeAll(answers: AsyncIterable<object>): AsyncIterable<object> {
      for await (const answer of answers) {
        yield decode(answer);
      }
    }
    switch (method.methodKind) {
      case "unary":
        wrapped[name] = (request, options) => (call(encode(request), options) as Promise<object>).then(decode);
        break;
      case "server_streaming":
        wrapped[name] = (request, options) => decodeAll(call(encode(request), options) as AsyncIterable<object>);
        break;
      case "client_streaming":
        wrapped[name] = (requests, options) => (call(encodeAll(requests as AsyncIterable<unknown>), options) as Promise<object>).then(decode);
        break;
      case "bidi_streaming":
        wrapped[name] = (requests, options) => decodeAll(call(encodeAll(requests as AsyncIterable<unknown>), options) as AsyncIterable<object>);
        break;
    }
  }
  return wrapped as unknown as Client<T>;
}

/**
 * A request as a new full message: encoding changes it in place, and the caller's own (an add's, whose answer
 * is built from its request) must keep its data; an init shape's nested messages get the type names `walk` reads.
 */
function full(schema: DescMessage, request: unknown): object {
  return clone(schema, isMessage(request, schema) ? request : create(schema, request as never));
}
