/** Every Payload in a protobuf-es message, however deep (codecs.ts encodes and decodes them in place). */
import { PayloadSchema, type Payload } from "./gen/queue_manager/v1/types_pb.js";

const PAYLOAD = PayloadSchema.typeName;

/** Calls `fn` on every Payload in a protobuf-es message: its fields, lists, maps and oneofs. */
export function walkPayloads(node: unknown, fn: (payload: Payload) => void): void {
  if (node === null || typeof node !== "object" || node instanceof Uint8Array) {
    return;
  }
  if (Array.isArray(node)) {
    for (const item of node) {
      walkPayloads(item, fn);
    }
    return;
  }
  const record = node as Record<string, unknown>;
  const typeName = record.$typeName;
  if (typeName === PAYLOAD) {
    fn(record as unknown as Payload);
    return;
  }
  if (typeof typeName === "string" && typeName.startsWith("google.protobuf.")) {
    return;
  }
  for (const key in record) {
    if (key !== "$typeName" && key !== "$unknown") {
      walkPayloads(record[key], fn);
    }
  }
}
