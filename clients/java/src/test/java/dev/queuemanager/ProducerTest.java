package dev.queuemanager;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.gson.reflect.TypeToken;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.function.Executable;

/** The producer and admin calls against a real server. */
class ProducerTest {
  private QueueManager qm;

  @BeforeEach
  void connect() {
    qm = TestServers.client();
  }

  @AfterEach
  void close() {
    if (qm != null) { // null when the test skipped itself
      qm.close();
    }
  }

  @Test
  void addJobStoresItsOptionsAndIsIdempotent() {
    String queue = TestServers.queue("opts");
    assertTrue(qm.registerQueue(queue).created());
    assertFalse(qm.registerQueue(queue).created());
    JobOptions options =
        JobOptions.builder()
            .priority(JobPriority.HIGH)
            .delay(Duration.ofHours(1))
            .attempts(3)
            .backoff(
                Backoff.exponential(Duration.ofSeconds(2))
                    .withJitter(0.5)
                    .withMaxDelay(Duration.ofMinutes(1)))
            .jobId("order-42")
            .timeout(Duration.ofSeconds(30))
            .lifo(true)
            .correlationId("req-7")
            .tags("billing", "eu")
            .attributes(Map.of("tenant", "acme"))
            .build();
    Instant before = Instant.now();
    Job added = qm.addJob(queue, "invoice", Map.of("amount", 12, "note", "paid"), options);
    assertTrue(added.created());
    assertEquals("order-42", added.id());

    Job job = qm.getJob(queue, "order-42");
    assertEquals("invoice", job.name());
    assertEquals(JobState.DELAYED, job.state());
    assertEquals(JobPriority.HIGH, job.priority());
    assertEquals(3, job.maxAttempts());
    assertEquals("application/json", job.contentType());
    // Whole numbers read back as the other clients write them, not as 12.0.
    assertTrue(job.dataJson().contains("\"amount\":12") && !job.dataJson().contains("12.0"), job.dataJson());
    Map<String, Object> data = job.data(new TypeToken<Map<String, Object>>() {}.getType());
    assertEquals(12.0, data.get("amount"));
    assertEquals("paid", data.get("note"));
    assertTrue(job.runTime().isAfter(before.plus(Duration.ofMinutes(59))), String.valueOf(job.runTime()));
    JobOptions stored = job.options();
    assertEquals(JobPriority.HIGH, stored.priority());
    assertEquals(3, stored.attempts());
    assertEquals(Backoff.Type.EXPONENTIAL, stored.backoff().type());
    assertEquals(Duration.ofSeconds(2), stored.backoff().delay());
    assertEquals(0.5, stored.backoff().jitter());
    assertEquals(Duration.ofMinutes(1), stored.backoff().maxDelay());
    assertEquals(Duration.ofSeconds(30), stored.timeout());
    assertTrue(stored.lifo());
    assertEquals("req-7", stored.correlationId());
    assertEquals(List.of("billing", "eu"), stored.tags());
    assertEquals("acme", stored.attributes().get("tenant"));

    Job again = qm.addJob(queue, "invoice", Map.of("amount", 99), options);
    assertFalse(again.created());
    assertEquals("order-42", again.id());
    assertTrue(qm.getJob(queue, "order-42").dataJson().contains("12"));
  }

  @Test
  void dedupKeyAnswersWithTheJobHoldingIt() {
    String queue = TestServers.queue("dedup");
    qm.registerQueue(queue);
    JobOptions options = JobOptions.builder().dedup(Dedup.of("user-1", Duration.ofMinutes(5))).build();
    Job first = qm.addJob(queue, "sync", Map.of("n", 1), options);
    Job second = qm.addJob(queue, "sync", Map.of("n", 2), options);
    assertTrue(first.created());
    assertFalse(second.created());
    assertEquals(first.id(), second.id());
    assertEquals("user-1", qm.getJob(queue, first.id()).options().dedup().key());

    Dedup debounce = Dedup.of("user-2", Duration.ofMinutes(5)).withMode(Dedup.Mode.REPLACE);
    JobOptions replace = JobOptions.builder().dedup(debounce).build();
    Job pending = qm.addJob(queue, "sync", Map.of("n", 1), replace);
    qm.addJob(queue, "sync", Map.of("n", 3), replace);
    assertEquals("{\"n\":3}", qm.getJob(queue, pending.id()).dataJson());
  }

  @Test
  void addBulkAddsEveryJobInOrder() {
    String queue = TestServers.queue("bulk");
    qm.registerQueue(queue);
    byte[] raw = {0, 1, 2, (byte) 255};
    BulkResult result =
        qm.addBulk(
            queue,
            List.of(
                NewJob.of("a", Map.of("i", 1)),
                NewJob.of("b", raw),
                NewJob.of("c", JsonText.of("[1, 2]"), JobOptions.builder().jobId("third").build())));
    assertEquals(3, result.created());
    assertEquals(3, result.jobIds().size());
    assertEquals("third", result.jobIds().get(2));
    Job bytes = qm.getJob(queue, result.jobIds().get(1));
    assertEquals("b", bytes.name());
    assertEquals("application/octet-stream", bytes.contentType());
    assertArrayEquals(raw, bytes.data());
    assertThrows(IllegalStateException.class, bytes::dataJson);
    assertEquals("[1,2]", qm.getJob(queue, "third").dataJson());
    assertEquals(3, qm.getQueueMetrics(queue).waiting());
  }

  @Test
  void addBulkSplitsJobsOverOneMessageLimit() {
    String queue = TestServers.queue("bulk-big");
    qm.registerQueue(queue);
    // 17 jobs of 1 MB each: each is under the payload limit, all of them are over the transport's 16 MiB
    // limit of one message, so the client must split them by size as well as by count.
    byte[] data = new byte[1_000_000];
    List<NewJob> jobs = new ArrayList<>();
    for (int i = 0; i < 17; i++) {
      jobs.add(NewJob.of("big", data));
    }
    BulkResult result = qm.addBulk(queue, jobs);
    assertEquals(17, result.created());
    assertEquals(1_000_000, qm.getJob(queue, result.jobIds().get(16)).data().length);
    qm.obliterateQueue(queue, true);
  }

  @Test
  void addBulkIsAllOrNone() {
    String queue = TestServers.queue("bulk-none");
    qm.registerQueue(queue);
    List<NewJob> jobs = List.of(NewJob.of("ok", Map.of()), NewJob.of("", Map.of()));
    InvalidArgumentException e = assertThrows(InvalidArgumentException.class, () -> qm.addBulk(queue, jobs));
    assertTrue(e.getMessage().contains("name"), e.getMessage());
    assertEquals(0, qm.getQueueMetrics(queue).waiting());
  }

  @Test
  void metricsCountJobsByState() {
    String queue = TestServers.queue("metrics");
    qm.registerQueue(queue);
    qm.addJob(queue, "now", null);
    qm.addJob(queue, "now", null);
    qm.addJob(queue, "later", null, JobOptions.builder().delay(Duration.ofHours(1)).build());
    QueueMetrics m = qm.getQueueMetrics(queue);
    assertEquals(queue, m.queue());
    assertEquals(2, m.waiting());
    assertEquals(1, m.delayed());
    assertEquals(3, m.addedTotal());
    assertEquals(0, m.active());
    assertFalse(m.isPaused());
  }

  @Test
  void pauseAndResumeQueue() {
    String queue = TestServers.queue("pause");
    qm.registerQueue(queue);
    QueueInfo paused = qm.pauseQueue(queue);
    assertTrue(paused.paused());
    assertNull(paused.pausedUntil());
    assertTrue(qm.getQueueMetrics(queue).isPaused());
    Job job = qm.addJob(queue, "held", null);
    assertEquals(JobState.PAUSED, qm.getJob(queue, job.id()).state());
    assertFalse(qm.resumeQueue(queue).paused());
    assertEquals(JobState.WAITING, qm.getJob(queue, job.id()).state());

    Instant before = Instant.now();
    QueueInfo timed = qm.pauseQueue(queue, Duration.ofMinutes(10));
    assertTrue(timed.paused());
    assertNotNull(timed.pausedUntil());
    assertTrue(
        timed.pausedUntil().isAfter(before.plus(Duration.ofMinutes(9))), String.valueOf(timed.pausedUntil()));
    assertFalse(qm.resumeQueue(queue).paused());
  }

  @Test
  void cleanQueueRemovesJobsOfAState() {
    String queue = TestServers.queue("clean");
    qm.registerQueue(queue);
    String first = null;
    for (int i = 0; i < 3; i++) {
      Job job = qm.addJob(queue, "gone", Map.of("i", i));
      assertEquals(JobState.CANCELLED, qm.cancelJob(queue, job.id(), "not needed").state());
      first = first == null ? job.id() : first;
    }
    assertEquals("not needed", qm.getJob(queue, first).cancelReason());
    Job kept = qm.addJob(queue, "kept", null);
    assertEquals(2, qm.cleanQueue(queue, JobState.CANCELLED, Duration.ZERO, 2));
    assertEquals(1, qm.cleanQueue(queue, JobState.CANCELLED, Duration.ZERO, 0));
    assertEquals(0, qm.getQueueMetrics(queue).cancelled());
    assertEquals(JobState.WAITING, qm.getJob(queue, kept.id()).state());
  }

  @Test
  void errorsMapToTypedExceptionsWithTheServersMessage() {
    InvalidArgumentException bad =
        assertThrows(InvalidArgumentException.class, () -> qm.registerQueue("bad{name}"));
    assertEquals(io.grpc.Status.Code.INVALID_ARGUMENT, bad.code());
    // The server's own words, naming the value and what to use instead.
    assertTrue(bad.getMessage().contains("'bad{name}' is not a valid queue name"), bad.getMessage());

    String queue = TestServers.queue("errors");
    qm.registerQueue(queue);
    NotFoundException missing = assertThrows(NotFoundException.class, () -> qm.getJob(queue, "no-such-job"));
    assertTrue(missing.getMessage().contains("no-such-job"), missing.getMessage());
    assertThrows(NotFoundException.class, () -> qm.addJob(TestServers.queue("unregistered"), "x", null));
    assertThrows(NotFoundException.class, () -> qm.pauseQueue(TestServers.queue("unregistered")));
    // Caught as the base class too, with the code.
    QueueManagerException any = assertThrows(QueueManagerException.class, () -> qm.getJob(queue, "nope"));
    assertEquals(io.grpc.Status.Code.NOT_FOUND, any.code());

    // Settings no server would take are refused before the call, naming the setting.
    IllegalArgumentException negative =
        assertThrows(
            IllegalArgumentException.class, () -> JobOptions.builder().delay(Duration.ofSeconds(-1)));
    assertTrue(negative.getMessage().contains("delay"), negative.getMessage());
    assertThrows(IllegalArgumentException.class, () -> JobOptions.builder().attempts(0));
    assertThrows(IllegalArgumentException.class, () -> Backoff.fixed(Duration.ofSeconds(1)).withJitter(2));
    assertThrows(IllegalArgumentException.class, () -> QueueManager.builder("no-port"));
    assertThrows(IllegalArgumentException.class, () -> QueueManager.builder("host:70000"));
    assertThrows(IllegalArgumentException.class, () -> JsonText.of("{not json"));
  }

  @Test
  void waitForJobEndsWithDeadlineExceeded() {
    String queue = TestServers.queue("wait");
    qm.registerQueue(queue);
    Job job = qm.addJob(queue, "never-run", null);
    assertThrows(
        DeadlineExceededException.class, () -> qm.waitForJob(queue, job.id(), Duration.ofMillis(300)));
    qm.cancelJob(queue, job.id(), "done waiting");
    assertEquals(JobState.CANCELLED, qm.waitForJob(queue, job.id(), Duration.ofSeconds(10)).state());
  }

  @Test
  void aNullQueueNameIsRefusedNamingTheArgument() {
    // Protobuf's setters threw a NullPointerException whose whole message was "null".
    List<Executable> calls =
        List.of(
            () -> qm.registerQueue(null),
            () -> qm.getQueue(null),
            () -> qm.pauseQueue(null),
            () -> qm.getQueueMetrics(null),
            () -> qm.drainQueue(null, false),
            () -> qm.addJob(null, "job", Map.of()),
            () -> qm.addBulk(null, List.of()),
            () -> qm.getJob(null, "id"),
            () -> qm.cancelJob(null, "id", "why"),
            () -> qm.listJobs(null, JobState.WAITING, 10, ""),
            () -> qm.pauseGroup(null, "g"));
    for (var call : calls) {
      var e = assertThrows(IllegalArgumentException.class, call);
      assertTrue(e.getMessage().startsWith("the queue name is null: give the queue's name"), e.getMessage());
    }
  }
}
