package dev.queuemanager;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.opentelemetry.api.GlobalOpenTelemetry;
import io.opentelemetry.api.common.AttributeKey;
import io.opentelemetry.api.trace.Span;
import io.opentelemetry.api.trace.SpanKind;
import io.opentelemetry.api.trace.StatusCode;
import io.opentelemetry.sdk.testing.exporter.InMemorySpanExporter;
import io.opentelemetry.sdk.trace.SdkTracerProvider;
import io.opentelemetry.sdk.trace.data.SpanData;
import io.opentelemetry.sdk.trace.export.SimpleSpanProcessor;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/** OpenTelemetry tracing of adds and worker runs, with the SDK's in-memory exporter. */
class TracingTest extends ServerTest {
  private static final Duration WAIT = Duration.ofSeconds(30);

  private InMemorySpanExporter exporter;
  private SdkTracerProvider provider;
  private QueueManager traced;

  @BeforeEach
  void tracer() {
    exporter = InMemorySpanExporter.create();
    provider = SdkTracerProvider.builder().addSpanProcessor(SimpleSpanProcessor.create(exporter)).build();
    traced = QueueManager.builder(TestServers.env("QM_TEST_ADDRESS")).token("").tracerProvider(provider).build();
  }

  @AfterEach
  void closeTracer() throws InterruptedException {
    // The worker runs on the traced client: it goes first.
    if (worker != null) {
      worker.shutdown(Duration.ofSeconds(5));
      worker = null;
    }
    traced.close();
    provider.close();
  }

  /** Starts a worker of the traced client running {@code handler} on {@code queue}. */
  private void start(String queue, JobHandler handler) throws InterruptedException {
    worker = traced.newWorker(WorkerOptions.builder().handler(queue, handler).concurrency(2).build());
    worker.start();
    assertTrue(worker.awaitConnected(WAIT), "the worker did not connect");
  }

  /** The ended span of this name and kind, waited for: a run's span ends just after its outcome is sent. */
  private SpanData span(String name, SpanKind kind, String jobId) throws InterruptedException {
    long end = System.nanoTime() + WAIT.toNanos();
    while (System.nanoTime() < end) {
      for (SpanData s : exporter.getFinishedSpanItems()) {
        String id = s.getAttributes().get(AttributeKey.stringKey("messaging.message.id"));
        if (s.getName().equals(name) && s.getKind() == kind && (jobId == null || jobId.equals(id))) {
          return s;
        }
      }
      Thread.sleep(10);
    }
    throw new AssertionError("no " + kind + " span " + name + " in " + exporter.getFinishedSpanItems());
  }

  @Test
  void addCarriesTheProducerSpanAndTheRunIsItsChild() throws Exception {
    String queue = TestServers.queue("traced");
    qm.registerQueue(queue);
    Map<String, String> runParents = new ConcurrentHashMap<>();
    start(
        queue,
        job -> {
          // The run's span is current in the handler, so the handler's own spans nest under it.
          runParents.put(job.id(), Span.current().getSpanContext().getSpanId());
          if (job.name().equals("broken")) {
            throw new IllegalStateException("downstream is down");
          }
          return "ok";
        });
    Job added = traced.addJob(queue, "greet", Map.of("who", "java"));
    BulkResult bulk = traced.addBulk(queue, List.of(NewJob.of("broken", null), NewJob.of("greet", null)));

    SpanData publish = span(queue + " publish", SpanKind.PRODUCER, added.id());
    assertEquals("queue_manager", publish.getAttributes().get(AttributeKey.stringKey("messaging.system")));
    String traceparent = qm.getJob(queue, added.id()).options().attributes().get("traceparent");
    String flags = publish.getSpanContext().getTraceFlags().asHex();
    assertEquals(
        "00-" + publish.getTraceId() + "-" + publish.getSpanId() + "-" + flags, traceparent, "the job carries the add");
    SpanData run = span(queue + " process", SpanKind.CONSUMER, added.id());
    assertEquals(publish.getTraceId(), run.getTraceId());
    assertEquals(publish.getSpanId(), run.getParentSpanId());
    assertEquals(1L, run.getAttributes().get(AttributeKey.longKey("queue_manager.job.attempt")));
    assertEquals(run.getSpanId(), runParents.get(added.id()));
    assertEquals(StatusCode.UNSET, run.getStatus().getStatusCode());

    // A bulk add is one span whose context every job carries; a failed run has ERROR status and the error.
    SpanData bulkSpan = span(queue + " publish", SpanKind.PRODUCER, null);
    for (SpanData s : exporter.getFinishedSpanItems()) {
      if (s.getAttributes().get(AttributeKey.longKey("messaging.batch.message_count")) != null) {
        bulkSpan = s;
      }
    }
    assertEquals(2L, bulkSpan.getAttributes().get(AttributeKey.longKey("messaging.batch.message_count")));
    SpanData failed = span(queue + " process", SpanKind.CONSUMER, bulk.jobIds().get(0));
    assertEquals(bulkSpan.getSpanId(), failed.getParentSpanId());
    assertEquals(StatusCode.ERROR, failed.getStatus().getStatusCode());
    assertEquals("downstream is down", failed.getStatus().getDescription());
    assertEquals("exception", failed.getEvents().get(0).getName());
  }

  @Test
  void aWorkerContinuesATraceparentSetByAnotherClient() throws Exception {
    String queue = TestServers.queue("continued");
    qm.registerQueue(queue);
    start(queue, job -> "ok");
    // As the Python client (or any producer) writes it: the untraced client sends the attribute as given.
    String traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
    String parentId = "00f067aa0ba902b7";
    JobOptions options =
        JobOptions.builder().attributes(Map.of("traceparent", "00-" + traceId + "-" + parentId + "-01")).build();
    Job added = qm.addJob(queue, "from-python", null, options);
    assertEquals(JobState.COMPLETED, qm.waitForJob(queue, added.id(), WAIT).state());

    SpanData run = span(queue + " process", SpanKind.CONSUMER, added.id());
    assertEquals(traceId, run.getTraceId());
    assertEquals(parentId, run.getParentSpanId());
    assertTrue(run.getParentSpanContext().isRemote());
    // A traced add keeps a caller's own traceparent, whole.
    Job own = traced.addJob(queue, "own", null, options);
    assertEquals(
        "00-" + traceId + "-" + parentId + "-01", qm.getJob(queue, own.id()).options().attributes().get("traceparent"));
  }

  @Test
  void withoutATracerNothingIsTracedAndNoContextIsSent() throws Exception {
    assertFalse(GlobalOpenTelemetry.isSet(), "no test sets the global OpenTelemetry");
    String queue = TestServers.queue("untraced");
    qm.registerQueue(queue);
    // The plain client's worker: no provider given and no global one, so tracing is off.
    worker = qm.newWorker(WorkerOptions.builder().handler(queue, job -> {
      assertFalse(Span.current().getSpanContext().isValid(), "no span is current in an untraced run");
      return "ok";
    }).build());
    worker.start();
    assertTrue(worker.awaitConnected(WAIT));
    Job added = qm.addJob(queue, "plain", null);
    BulkResult bulk = qm.addBulk(queue, List.of(NewJob.of("plain", null)));
    assertEquals(JobState.COMPLETED, qm.waitForJob(queue, added.id(), WAIT).state());
    assertEquals(JobState.COMPLETED, qm.waitForJob(queue, bulk.jobIds().get(0), WAIT).state());
    assertTrue(qm.getJob(queue, added.id()).options().attributes().isEmpty());
    assertTrue(qm.getJob(queue, bulk.jobIds().get(0)).options().attributes().isEmpty());
    assertNull(qm.tracing(), "tracing is off without a provider");
    assertTrue(exporter.getFinishedSpanItems().isEmpty());
  }
}
