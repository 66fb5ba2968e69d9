package dev.queuemanager;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.gson.JsonObject;
import java.time.Duration;
import java.time.Instant;
import java.time.temporal.ChronoUnit;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.function.Executable;

/** Every job option and every queue setting, sent to a real server and read back or seen at work. */
class OptionsTest extends ServerTest {
  private static final Duration WAIT = Duration.ofSeconds(30);

  private void start(WorkerOptions.Builder options) throws InterruptedException {
    worker = qm.newWorker(options.concurrency(4).build());
    worker.start();
    assertTrue(worker.awaitConnected(WAIT), "the worker did not connect");
  }

  /** The exception a call throws, checked to name the field the server refused. */
  private static <T extends Throwable> T refused(Class<T> type, String field, Executable call) {
    T e = assertThrows(type, call);
    assertTrue(e.getMessage().contains(field), "the message names " + field + ": " + e.getMessage());
    return e;
  }

  @Test
  void everyJobOptionIsStoredAndReadBack() {
    String queue = TestServers.queue("every");
    String next = TestServers.queue("every-next");
    qm.registerQueue(queue);
    Instant at = Instant.now().plus(Duration.ofHours(2)).truncatedTo(ChronoUnit.MILLIS);
    JobOptions options =
        JobOptions.builder()
            .scheduleTime(at)
            .removeOnComplete(Retention.keep(Duration.ofHours(1), 5))
            .removeOnFail(Retention.removeAtOnce())
            .maxStalled(2)
            .expireAfter(Duration.ofMinutes(30))
            .group("tenant-a")
            .errorHistory(3)
            .chainTo(
                ChainLink.of(
                    next, "after", Map.of("n", 2), JobOptions.builder().priority(JobPriority.HIGH).build()),
                ChainLink.of(next, "last", new byte[] {7}))
            .build();
    Job job = qm.getJob(queue, qm.addJob(queue, "first", Map.of("n", 1), options).id());

    assertEquals(JobState.DELAYED, job.state());
    assertEquals(at, job.runTime());
    // The server keeps the schedule time as the job's run time.
    JobOptions stored = job.options();
    assertFalse(stored.removeOnComplete().remove());
    assertEquals(Duration.ofHours(1), stored.removeOnComplete().age());
    assertEquals(5, stored.removeOnComplete().count());
    assertTrue(stored.removeOnFail().remove());
    assertEquals(2, stored.maxStalled());
    assertEquals(Duration.ofMinutes(30), stored.expireAfter());
    assertEquals("tenant-a", stored.group());
    assertEquals(3, stored.errorHistory());
    List<ChainLink> chain = stored.chainTo();
    assertEquals(2, chain.size());
    assertEquals(next, chain.get(0).queue());
    assertEquals("after", chain.get(0).name());
    assertEquals("{\"n\":2}", ((JsonText) chain.get(0).data()).text());
    assertEquals(JobPriority.HIGH, chain.get(0).options().priority());
    assertEquals("last", chain.get(1).name());
    assertEquals(7, ((byte[]) chain.get(1).data())[0]);

    // Unset, the options read back as "the queue's default".
    JobOptions plain = qm.getJob(queue, qm.addJob(queue, "plain", null).id()).options();
    assertNull(plain.scheduleTime());
    assertNull(plain.errorHistory());
    assertEquals("", plain.group());
    assertTrue(plain.chainTo().isEmpty() && plain.workerLabels().isEmpty());
  }

  @Test
  void chainRunsEachLinkAfterTheOneBeforeAndRemoveOnCompleteRemovesTheJob() throws Exception {
    String queue = TestServers.queue("chain");
    String next = TestServers.queue("chain-next");
    qm.registerQueue(queue);
    qm.registerQueue(next);
    CompletableFuture<Job> link = new CompletableFuture<>();
    start(
        WorkerOptions.builder()
            .handler(queue, job -> Map.of("from", "first"))
            .handler(
                next,
                job -> {
                  link.complete(job.job());
                  return null;
                }));
    JobOptions options =
        JobOptions.builder()
            .removeOnComplete(Retention.removeAtOnce())
            .chainTo(ChainLink.of(next, "second", Map.of("step", 2)))
            .build();
    Job first = qm.addJob(queue, "first", Map.of("step", 1), options);

    Job second = link.get(WAIT.toSeconds(), TimeUnit.SECONDS);
    assertEquals(next, second.queue());
    assertEquals("second", second.name());
    assertEquals(2, second.data(JsonObject.class).get("step").getAsInt());
    // The link is added once its predecessor completed, which removed it at once.
    refused(NotFoundException.class, first.id(), () -> qm.getJob(queue, first.id()));
  }

  @Test
  void expiredJobIsCancelledWithoutARun() throws Exception {
    String queue = TestServers.queue("expire");
    qm.registerQueue(queue);
    AtomicInteger runs = new AtomicInteger();
    Job job =
        qm.addJob(queue, "late", null, JobOptions.builder().expireAfter(Duration.ofMillis(1)).build());
    // The first claim after the millisecond ends the job (or the server's expiry sweep does, first).
    start(
        WorkerOptions.builder()
            .handler(
                queue,
                j -> {
                  runs.incrementAndGet();
                  return null;
                }));
    Job done = qm.waitForJob(queue, job.id(), WAIT);
    assertEquals(JobState.CANCELLED, done.state());
    assertTrue(done.cancelReason().startsWith("expired"), done.cancelReason());
    assertEquals(0, runs.get());
  }

  @Test
  void workerLabelsRouteTheJobToAWorkerThatHasThem() throws Exception {
    String queue = TestServers.queue("labels");
    qm.registerQueue(queue);
    Job job =
        qm.addJob(queue, "render", null, JobOptions.builder().workerLabels(Map.of("gpu", "a100")).build());
    assertEquals(Map.of("gpu", "a100"), qm.getJob(queue, job.id()).options().workerLabels());
    // The job waits in the routing group named after its labels.
    List<GroupInfo> groups = qm.listGroups(queue, 10, "").items();
    assertEquals(1, groups.size());
    assertEquals("labels:gpu=a100", groups.get(0).group());
    assertEquals(1, groups.get(0).waiting());

    start(
        WorkerOptions.builder()
            .labels(Map.of("gpu", "a100", "region", "eu"))
            .handler(queue, j -> "rendered"));
    assertEquals(JobState.COMPLETED, qm.waitForJob(queue, job.id(), WAIT).state());
  }

  @Test
  void serverRefusesBadJobOptionsNamingTheField() {
    String queue = TestServers.queue("bad-opts");
    qm.registerQueue(queue);
    Map<String, JobOptions> bad =
        Map.of(
            "schedule_time",
            JobOptions.builder().delay(Duration.ofSeconds(1)).scheduleTime(Instant.now()).build(),
            "worker_labels",
            JobOptions.builder().group("g").workerLabels(Map.of("gpu", "a100")).build(),
            "error_history",
            JobOptions.builder().errorHistory(101).build(),
            "expire_after",
            JobOptions.builder().expireAfter(Duration.ofDays(366)).build(),
            "group",
            JobOptions.builder().group("labels:gpu=a100").build(),
            "max_stalled",
            JobOptions.builder().maxStalled(1_000_000).build(),
            "chain_to",
            JobOptions.builder()
                .chainTo(
                    ChainLink.of(
                        queue,
                        "nested",
                        null,
                        JobOptions.builder().chainTo(ChainLink.of(queue, "deeper", null)).build()))
                .build());
    for (Map.Entry<String, JobOptions> e : bad.entrySet()) {
      refused(InvalidArgumentException.class, e.getKey(), () -> qm.addJob(queue, "x", null, e.getValue()));
    }
    assertEquals(0, qm.getQueueMetrics(queue).waiting() + qm.getQueueMetrics(queue).delayed());
  }

  @Test
  void buildersRefuseWhatTheWireCannotCarry() {
    List<Executable> calls =
        List.of(
            () -> JobOptions.builder().maxStalled(-1),
            () -> JobOptions.builder().errorHistory(-1),
            () -> JobOptions.builder().expireAfter(Duration.ofSeconds(-1)),
            () -> JobOptions.builder().chainTo((ChainLink) null),
            () -> Retention.keep(Duration.ofSeconds(-1), 0),
            () -> Retention.keep(Duration.ZERO, -1),
            () -> Retention.keep(Duration.ZERO, 1L << 32),
            () -> QueueConfig.builder().concurrency(-1),
            () -> QueueConfig.builder().maxSize(-1),
            () -> QueueConfig.builder().priorityBound(null, Duration.ofSeconds(1)),
            () -> QueueConfig.builder().priorityBound(JobPriority.LOW, Duration.ofSeconds(-1)),
            () -> QueueConfig.builder().maintenanceWindows((MaintenanceWindow) null),
            () -> WorkerOptions.builder().handler("emails:high", job -> null),
            () -> WorkerOptions.builder().handler("a{b}", job -> null));
    for (Executable call : calls) {
      assertThrows(IllegalArgumentException.class, call);
    }
  }

  @Test
  void registerQueueStoresEverySetting() {
    String queue = TestServers.queue("config");
    String dlq = TestServers.queue("config-dlq");
    QueueConfig config =
        QueueConfig.builder()
            .rateLimit(RateLimit.of(100, Duration.ofSeconds(1)).withBurst(10))
            .defaultJobOptions(
                JobOptions.builder()
                    .priority(JobPriority.LOW)
                    .attempts(4)
                    .timeout(Duration.ofSeconds(20))
                    .errorHistory(5)
                    .build())
            .deadLetterQueue(dlq)
            .completedRetention(Retention.keep(Duration.ofHours(2), 50))
            .failedRetention(Retention.removeAtOnce())
            .concurrency(3)
            .priorityBound(JobPriority.LOW, Duration.ofMinutes(5))
            .priorityBound(JobPriority.BACKGROUND, Duration.ofMinutes(30))
            .groupLimits(GroupLimits.builder().concurrency(1).maxSize(20).build())
            .maxSize(1000)
            .maintenanceWindows(MaintenanceWindow.of("0 3 * * *", Duration.ofHours(1)).inZone("Europe/Paris"))
            .build();
    QueueInfo registered = qm.registerQueue(queue, config);
    assertTrue(registered.created());

    QueueConfig stored = qm.getQueue(queue).config();
    assertEquals(100, stored.rateLimit().max());
    assertEquals(10, stored.rateLimit().burst());
    assertEquals(JobPriority.LOW, stored.defaultJobOptions().priority());
    assertEquals(4, stored.defaultJobOptions().attempts());
    assertEquals(Duration.ofSeconds(20), stored.defaultJobOptions().timeout());
    assertEquals(5, stored.defaultJobOptions().errorHistory());
    assertEquals(dlq, stored.deadLetterQueue());
    assertEquals(Duration.ofHours(2), stored.completedRetention().age());
    assertEquals(50, stored.completedRetention().count());
    assertTrue(stored.failedRetention().remove());
    assertEquals(3, stored.concurrency());
    assertEquals(
        Map.of(JobPriority.LOW, Duration.ofMinutes(5), JobPriority.BACKGROUND, Duration.ofMinutes(30)),
        stored.priorityBounds());
    assertEquals(1, stored.groupLimits().concurrency());
    assertEquals(20, stored.groupLimits().maxSize());
    assertEquals(1000, stored.maxSize());
    assertEquals("0 3 * * *", stored.maintenanceWindows().get(0).cron());
    assertEquals("Europe/Paris", stored.maintenanceWindows().get(0).timezone());
    // Its dead-letter queue is registered with it.
    assertEquals(dlq, qm.getQueue(dlq).name());

    // A job added without options takes the queue's defaults.
    Job job = qm.getJob(queue, qm.addJob(queue, "plain", null).id());
    assertEquals(JobPriority.LOW, job.priority());
    assertEquals(4, job.maxAttempts());
  }

  @Test
  void registeringAgainReplacesTheWholeConfig() {
    String queue = TestServers.queue("replace");
    QueueConfig full =
        QueueConfig.builder()
            .maxSize(1)
            .defaultJobOptions(JobOptions.builder().attempts(5).build())
            .disableDeadLetter(true)
            .build();
    assertTrue(qm.registerQueue(queue, full).created());
    assertEquals(5, qm.addJob(queue, "one", null).maxAttempts());
    refused(ResourceExhaustedException.class, queue, () -> qm.addJob(queue, "two", null));

    // One setting changed, the others kept: the config read back, rebuilt.
    QueueConfig bigger = qm.getQueue(queue).config().toBuilder().maxSize(10).build();
    assertFalse(qm.registerQueue(queue, bigger).created());
    assertEquals(5, qm.addJob(queue, "two", null).maxAttempts());
    assertTrue(qm.getQueue(queue).config().disableDeadLetter());

    // A config without them takes the defaults back.
    qm.registerQueue(queue, QueueConfig.builder().build());
    QueueConfig plain = qm.getQueue(queue).config();
    assertEquals(0, plain.maxSize());
    assertFalse(plain.disableDeadLetter());
    assertEquals(0, plain.defaultJobOptions().attempts());
  }

  @Test
  void serverRefusesBadQueueConfigNamingTheField() {
    String queue = TestServers.queue("bad-config");
    qm.registerQueue(queue, QueueConfig.builder().maxSize(7).build());
    Map<String, QueueConfig> bad =
        Map.of(
            "default_job_options.group",
            QueueConfig.builder().defaultJobOptions(JobOptions.builder().group("g").build()).build(),
            "default_job_options.lifo",
            QueueConfig.builder().defaultJobOptions(JobOptions.builder().lifo(true).build()).build(),
            "default_job_options.chain_to",
            QueueConfig.builder()
                .defaultJobOptions(JobOptions.builder().chainTo(ChainLink.of(queue, "x", null)).build())
                .build(),
            "priority_bounds",
            QueueConfig.builder().priorityBound(JobPriority.CRITICAL, Duration.ofMinutes(1)).build(),
            "maintenance_windows",
            QueueConfig.builder()
                .maintenanceWindows(MaintenanceWindow.of("not a cron", Duration.ofHours(1)))
                .build());
    for (Map.Entry<String, QueueConfig> e : bad.entrySet()) {
      refused(InvalidArgumentException.class, e.getKey(), () -> qm.registerQueue(queue, e.getValue()));
    }
    // A refused config changes nothing.
    assertEquals(7, qm.getQueue(queue).config().maxSize());
  }
}
