/**
 * An OpenTelemetry SDK for the tracing tests: a tracer provider whose spans, once ended, are kept in memory
 * and can be awaited by name (no polling), and an AsyncLocalStorage context manager (set once per process,
 * as an application's SDK set-up does) so that a span is current across awaits.
 */
import { context, type Context } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { BasicTracerProvider, type ReadableSpan, type Span, type SpanProcessor } from "@opentelemetry/sdk-trace-base";

context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());

/** A span processor that keeps every ended span and wakes those waiting for spans of a name. */
export class SpanRecorder implements SpanProcessor {
  readonly ended: ReadableSpan[] = [];
  private readonly waiting = new Set<() => void>();

  onStart(_span: Span, _parent: Context): void {}

  onEnd(span: ReadableSpan): void {
    this.ended.push(span);
    for (const wake of [...this.waiting]) {
      wake();
    }
  }

  async forceFlush(): Promise<void> {}

  async shutdown(): Promise<void> {}

  /** The ended spans named `name`. */
  named(name: string): ReadableSpan[] {
    return this.ended.filter((s) => s.name === name);
  }

  /** The ended spans named `name`, once there are `count` of them; rejects after `timeoutMs`. */
  spans(name: string, count: number, timeoutMs = 20_000): Promise<ReadableSpan[]> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const found = this.named(name);
        if (found.length >= count) {
          clearTimeout(timer);
          this.waiting.delete(check);
          resolve(found);
        }
      };
      const timer = setTimeout(() => {
        this.waiting.delete(check);
        const seen = this.ended.map((s) => s.name).join(", ");
        reject(new Error(`${count} span(s) "${name}" not ended within ${timeoutMs} ms; ended: ${seen}`));
      }, timeoutMs);
      this.waiting.add(check);
      check();
    });
  }
}

/** A tracer provider recording into a new `SpanRecorder`. */
export function recordingProvider(): { provider: BasicTracerProvider; recorder: SpanRecorder } {
  const recorder = new SpanRecorder();
  return { provider: new BasicTracerProvider({ spanProcessors: [recorder] }), recorder };
}

/** Whether `span` is a child of `parent`: the same trace, `parent` its parent span. */
export function childOf(span: ReadableSpan, parent: ReadableSpan): boolean {
  const mine = span.spanContext();
  const theirs = parent.spanContext();
  return mine.traceId === theirs.traceId && span.parentSpanContext?.spanId === theirs.spanId;
}
