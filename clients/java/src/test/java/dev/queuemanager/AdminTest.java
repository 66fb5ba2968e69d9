package dev.queuemanager;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.gson.JsonObject;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/** The admin layer (listing and control of jobs, queues, groups and dead letters) against a real server. */
class AdminTest extends ServerTest {
  private static final Duration WAIT = Duration.ofSeconds(30);

  private void start(String queue, JobHandler handler) throws InterruptedException {
    worker = qm.newWorker(WorkerOptions.builder().handler(queue, handler).concurrency(4).build());
    worker.start();
    assertTrue(worker.awaitConnected(WAIT), "the worker did not connect");
  }

  /** Every job of a listing, following its tokens. */
  private List<Job> all(String queue, JobState state, JobFilter filter, int pageSize) {
    List<Job> out = new ArrayList<>();
    String token = "";
    do {
      Page<Job> page = qm.listJobsMatching(queue, state, filter, pageSize, token);
      out.addAll(page.items());
      token = page.nextPageToken();
    } while (!token.isEmpty());
    return out;
  }

  private static List<String> ids(List<Job> jobs) {
    List<String> out = new ArrayList<>();
    for (Job job : jobs) {
      out.add(job.id());
    }
    return out;
  }

  @Test
  void listJobsPagesAndFiltersAndCounts() {
    String queue = TestServers.queue("list");
    qm.registerQueue(queue);
    List<String> added = new ArrayList<>();
    for (String name : List.of("send-a", "send-b", "send-c", "bill-a", "bill-b")) {
      JobOptions options = JobOptions.builder().tags(name.startsWith("bill") ? "money" : "mail").build();
      added.add(qm.addJob(queue, name, Map.of("n", name), options).id());
    }

    Page<Job> first = qm.listJobs(queue, JobState.WAITING, 2, "");
    assertEquals(2, first.items().size());
    assertEquals(5, first.total());
    assertTrue(first.hasNextPage());
    Page<Job> second = qm.listJobs(queue, JobState.WAITING, 2, first.nextPageToken());
    assertEquals(2, second.items().size());
    Page<Job> last = qm.listJobs(queue, JobState.WAITING, 2, second.nextPageToken());
    assertEquals(1, last.items().size());
    assertFalse(last.hasNextPage());
    assertEquals(added, ids(all(queue, JobState.WAITING, JobFilter.ALL, 2)));
    assertEquals(0, qm.listJobs(queue, JobState.DELAYED, 0, "").items().size());

    JobFilter sends = JobFilter.builder().name("send-*").build();
    assertEquals(added.subList(0, 3), ids(all(queue, JobState.WAITING, sends, 100)));
    JobFilter money = JobFilter.builder().tag("money").createdAfter(Instant.now().minusSeconds(600)).build();
    assertEquals(added.subList(3, 5), ids(all(queue, JobState.WAITING, money, 100)));
    JobCount count = qm.countJobs(queue, JobState.WAITING, sends);
    assertEquals(3, count.count());
    assertTrue(count.complete());
    assertEquals(1, count.calls());
    assertEquals(5, qm.countJobs(queue, JobState.WAITING, JobFilter.ALL, "", 1).count());

    // The server's own words, naming the field at fault.
    JobFilter starInside = JobFilter.builder().name("a*b").build();
    InvalidArgumentException star =
        assertThrows(
            InvalidArgumentException.class,
            () -> qm.listJobsMatching(queue, JobState.WAITING, starInside, 0, ""));
    assertTrue(star.getMessage().contains("filter.name"), star.getMessage());
    JobFilter backwards =
        JobFilter.builder().createdAfter(Instant.now()).createdBefore(Instant.now().minusSeconds(60)).build();
    InvalidArgumentException order =
        assertThrows(InvalidArgumentException.class, () -> qm.countJobs(queue, JobState.WAITING, backwards));
    assertTrue(order.getMessage().contains("created_after"), order.getMessage());
    InvalidArgumentException big =
        assertThrows(InvalidArgumentException.class, () -> qm.listJobs(queue, JobState.WAITING, 5000, ""));
    assertTrue(big.getMessage().contains("page_size"), big.getMessage());
    assertThrows(InvalidArgumentException.class, () -> qm.listJobs(queue, null, 0, ""));
    assertThrows(InvalidArgumentException.class, () -> qm.listJobs(queue, JobState.WAITING, 0, "garbage"));
    String unknown = TestServers.queue("nope");
    assertThrows(NotFoundException.class, () -> qm.listJobs(unknown, JobState.WAITING, 0, ""));
    assertThrows(IllegalArgumentException.class, () -> qm.listJobs(queue, JobState.WAITING, -1, ""));
    assertThrows(IllegalArgumentException.class, () -> qm.countJobs(queue, JobState.WAITING, null, "", -1));
  }

  @Test
  void bulkActionsAreBoundedAndFollowTheirToken() {
    String queue = TestServers.queue("bulk-act");
    qm.registerQueue(queue);
    for (int i = 0; i < 5; i++) {
      qm.addJob(queue, (i < 3 ? "old-" : "new-") + i, null);
    }
    JobFilter oldOnes = JobFilter.builder().name("old-*").build();
    BulkOptions olds = BulkOptions.builder().filter(oldOnes).limit(2).build();
    BulkActionResult cancelled = qm.cancelJobs(queue, JobState.WAITING, "cleanup", olds);
    assertEquals(2, cancelled.count());
    assertEquals(0, cancelled.requested());
    assertFalse(cancelled.complete());
    BulkOptions rest =
        BulkOptions.builder().filter(olds.filter()).limit(2).pageToken(cancelled.nextPageToken()).build();
    BulkActionResult more = qm.cancelJobs(queue, JobState.WAITING, "cleanup", rest);
    assertEquals(1, more.count());
    assertTrue(more.complete());
    assertEquals(3, qm.getQueueMetrics(queue).cancelled());
    assertEquals("cleanup", qm.listJobs(queue, JobState.CANCELLED, 1, "").items().get(0).cancelReason());

    BulkActionResult retried =
        qm.retryJobs(queue, JobState.CANCELLED, BulkOptions.builder().limit(2).build());
    assertEquals(2, retried.count());
    BulkActionResult retriedRest =
        qm.retryJobs(
            queue, JobState.CANCELLED, BulkOptions.builder().pageToken(retried.nextPageToken()).build());
    assertEquals(1, retriedRest.count());
    assertTrue(retriedRest.complete());
    assertEquals(5, qm.getQueueMetrics(queue).waiting());

    BulkActionResult removed =
        qm.removeJobs(
            queue,
            JobState.WAITING,
            BulkOptions.builder().filter(JobFilter.builder().name("new-*").build()).build());
    assertEquals(2, removed.count());
    assertTrue(removed.complete());
    assertEquals(3, qm.getQueueMetrics(queue).waiting());

    InvalidArgumentException finished =
        assertThrows(
            InvalidArgumentException.class,
            () -> qm.cancelJobs(queue, JobState.COMPLETED, "", BulkOptions.ALL));
    assertTrue(finished.getMessage().contains("state"), finished.getMessage());
    assertThrows(InvalidArgumentException.class, () -> qm.removeJobs(queue, JobState.ACTIVE, null));
    assertThrows(InvalidArgumentException.class, () -> qm.retryJobs(queue, JobState.WAITING, null));
    assertThrows(
        IllegalArgumentException.class, () -> BulkOptions.builder().limit(BulkOptions.MAX_LIMIT + 1));
  }

  @Test
  void jobControlMovesOneJob() {
    String queue = TestServers.queue("control");
    qm.registerQueue(queue);
    JobOptions inAnHour = JobOptions.builder().delay(Duration.ofHours(1)).build();
    Job later = qm.addJob(queue, "later", Map.of("v", 1), inAnHour);
    Job promoted = qm.promoteJob(queue, later.id());
    assertEquals(JobState.WAITING, promoted.state());
    FailedPreconditionException notDelayed =
        assertThrows(FailedPreconditionException.class, () -> qm.promoteJob(queue, later.id()));
    assertTrue(notDelayed.getMessage().contains(later.id()), notDelayed.getMessage());

    Instant before = Instant.now();
    Job delayed = qm.rescheduleJob(queue, later.id(), Duration.ofMinutes(30));
    assertEquals(JobState.DELAYED, delayed.state());
    assertTrue(
        delayed.runTime().isAfter(before.plus(Duration.ofMinutes(29))), String.valueOf(delayed.runTime()));
    Instant past = Instant.now().minusSeconds(5);
    assertEquals(JobState.WAITING, qm.rescheduleJobAt(queue, later.id(), past).state());
    Duration negative = Duration.ofSeconds(-1);
    assertThrows(IllegalArgumentException.class, () -> qm.rescheduleJob(queue, later.id(), negative));

    Job critical = qm.changeJobPriority(queue, later.id(), JobPriority.CRITICAL);
    assertEquals(JobPriority.CRITICAL, critical.priority());
    assertEquals("{\"v\":2}", qm.updateJobData(queue, later.id(), Map.of("v", 2)).dataJson());
    assertEquals("null", qm.updateJobData(queue, later.id(), null).dataJson());

    qm.cancelJob(queue, later.id(), "stop");
    FailedPreconditionException finished =
        assertThrows(
            FailedPreconditionException.class, () -> qm.rescheduleJob(queue, later.id(), Duration.ZERO));
    assertTrue(finished.getMessage().contains("cancelled"), finished.getMessage());
    assertThrows(FailedPreconditionException.class, () -> qm.updateJobData(queue, later.id(), Map.of()));
    Job retried = qm.retryJobWithData(queue, later.id(), Map.of("v", 3));
    assertEquals(JobState.WAITING, retried.state());
    assertEquals("{\"v\":3}", retried.dataJson());
    FailedPreconditionException notFailed =
        assertThrows(FailedPreconditionException.class, () -> qm.retryJob(queue, later.id()));
    assertTrue(notFailed.getMessage().contains(later.id()), notFailed.getMessage());

    qm.cancelJob(queue, later.id(), "again");
    assertEquals("{\"v\":3}", qm.retryJob(queue, later.id()).dataJson());
    qm.cancelJob(queue, later.id(), "once more");
    assertEquals(0, qm.retryFailedJobs(queue));
    assertEquals(1, qm.retryFailedJobs(queue, JobState.CANCELLED));
    assertThrows(InvalidArgumentException.class, () -> qm.retryFailedJobs(queue, JobState.COMPLETED));

    assertEquals(JobState.WAITING, qm.removeJob(queue, later.id()));
    NotFoundException gone = assertThrows(NotFoundException.class, () -> qm.removeJob(queue, later.id()));
    assertTrue(gone.getMessage().contains(later.id()), gone.getMessage());
    assertThrows(NotFoundException.class, () -> qm.changeJobPriority(queue, "no-such-job", JobPriority.LOW));
  }

  @Test
  void jobLogsComeInPages() throws Exception {
    String queue = TestServers.queue("logs");
    qm.registerQueue(queue);
    start(
        queue,
        job -> {
          for (int i = 1; i <= 5; i++) {
            job.log("line " + i);
          }
          return null;
        });
    Job job = qm.addJob(queue, "chatty", null);
    assertEquals(JobState.COMPLETED, qm.waitForJob(queue, job.id(), WAIT).state());
    Page<LogLine> first = qm.getJobLogs(queue, job.id(), 2, "");
    assertEquals(5, first.total());
    assertEquals("line 1", first.items().get(0).message());
    assertEquals("line 2", first.items().get(1).message());
    assertNotNull(first.items().get(0).time());
    List<String> messages = new ArrayList<>();
    String token = "";
    do {
      Page<LogLine> page = qm.getJobLogs(queue, job.id(), 2, token);
      assertTrue(page.items().size() <= 2);
      page.items().forEach(line -> messages.add(line.message()));
      token = page.nextPageToken();
    } while (!token.isEmpty());
    assertEquals(List.of("line 1", "line 2", "line 3", "line 4", "line 5"), messages);
    assertEquals(5, qm.getJobLogs(queue, job.id(), 0, "").items().size());
    assertThrows(NotFoundException.class, () -> qm.getJobLogs(queue, "no-such-job", 0, ""));
    assertThrows(InvalidArgumentException.class, () -> qm.getJobLogs(queue, job.id(), 5000, ""));
  }

  @Test
  void queuesAreReadDrainedAndObliterated() {
    String queue = TestServers.queue("queues");
    qm.registerQueue(queue);
    QueueInfo info = qm.getQueue(queue);
    assertEquals(queue, info.name());
    assertFalse(info.paused());
    assertNotNull(info.createTime());
    QueueConfig config = info.config();
    assertEquals(QueueManager.DEAD_LETTER_QUEUE, config.deadLetterQueue());
    assertFalse(config.disableDeadLetter());
    assertEquals(Duration.ofDays(1), config.completedRetention().age());
    assertEquals(10_000, config.completedRetention().count());
    assertEquals(Duration.ofDays(7), config.failedRetention().age());
    assertNull(config.rateLimit());
    assertNull(config.groupLimits());
    assertTrue(config.maintenanceWindows().isEmpty());
    assertTrue(config.priorityBounds().isEmpty());
    assertEquals(0, config.maxSize());
    assertThrows(NotFoundException.class, () -> qm.getQueue(TestServers.queue("nope")));

    List<String> names = new ArrayList<>();
    qm.listQueues().forEach(q -> names.add(q.name()));
    assertTrue(names.contains(queue) && names.contains(QueueManager.DEAD_LETTER_QUEUE), names.toString());
    List<String> sorted = new ArrayList<>(names);
    sorted.sort(null);
    assertEquals(sorted, names);
    assertTrue(qm.getAllMetrics().stream().anyMatch(m -> m.queue().equals(queue)));

    qm.addJob(queue, "a", null);
    qm.addJob(queue, "b", null);
    qm.addJob(queue, "c", null, JobOptions.builder().delay(Duration.ofHours(1)).build());
    assertEquals(2, qm.drainQueue(queue, false));
    assertEquals(1, qm.getQueueMetrics(queue).delayed());
    assertEquals(1, qm.drainQueue(queue, true));
    qm.addJob(queue, "d", null);
    assertEquals(1, qm.obliterateQueue(queue, false));
    assertThrows(NotFoundException.class, () -> qm.getQueue(queue));
    assertThrows(NotFoundException.class, () -> qm.drainQueue(queue, true));
  }

  @Test
  void workersAreListedAndActiveJobsHoldObliterate() throws Exception {
    String queue = TestServers.queue("workers");
    qm.registerQueue(queue);
    CountDownLatch running = new CountDownLatch(1);
    CountDownLatch release = new CountDownLatch(1);
    start(
        queue,
        job -> {
          running.countDown();
          release.await(30, TimeUnit.SECONDS);
          return null;
        });
    List<WorkerInfo> workers = qm.listWorkers(queue);
    assertEquals(1, workers.size());
    WorkerInfo w = workers.get(0);
    assertEquals(worker.id(), w.id());
    assertEquals("java", w.language());
    assertEquals(List.of(queue), w.queues());
    assertEquals(4, w.concurrency());
    assertEquals(WorkerState.ACTIVE, w.state());
    assertNotNull(w.connectTime());
    assertTrue(qm.listWorkers(null).stream().anyMatch(x -> x.id().equals(worker.id())));
    String idle = TestServers.queue("idle");
    qm.registerQueue(idle);
    assertTrue(qm.listWorkers(idle).isEmpty());
    assertThrows(NotFoundException.class, () -> qm.listWorkers(TestServers.queue("nope")));

    qm.addJob(queue, "hold", null);
    assertTrue(running.await(30, TimeUnit.SECONDS), "the job did not start");
    FailedPreconditionException busy =
        assertThrows(FailedPreconditionException.class, () -> qm.obliterateQueue(queue, false));
    assertTrue(busy.getMessage().contains("active"), busy.getMessage());
    assertEquals(1, qm.obliterateQueue(queue, true));
    release.countDown();
    assertThrows(NotFoundException.class, () -> qm.getQueue(queue));
  }

  @Test
  void groupsHaveLimitsAndPauses() {
    String queue = TestServers.queue("groups");
    qm.registerQueue(queue);
    GroupLimits limits =
        GroupLimits.builder()
            .concurrency(2)
            .rateLimit(RateLimit.of(10, Duration.ofSeconds(1)).withBurst(3))
            .maxSize(50)
            .build();
    MaintenanceWindow nightly = MaintenanceWindow.of("0 2 * * *", Duration.ofHours(1)).inZone("Europe/Paris");
    GroupInfo tenant = qm.setGroupLimits(queue, "tenant-a", limits, nightly);
    assertEquals("tenant-a", tenant.group());
    assertTrue(tenant.customLimits());
    assertEquals(2, tenant.limits().concurrency());
    assertEquals(10, tenant.limits().rateLimit().max());
    assertEquals(Duration.ofSeconds(1), tenant.limits().rateLimit().duration());
    assertEquals(3, tenant.limits().rateLimit().burst());
    assertEquals(50, tenant.limits().maxSize());
    assertEquals("0 2 * * *", tenant.limits().maintenanceWindows().get(0).cron());
    assertEquals("Europe/Paris", tenant.limits().maintenanceWindows().get(0).timezone());
    assertNotNull(tenant.nextMaintenanceTime());
    assertEquals(0, tenant.waiting());

    assertTrue(qm.pauseGroup(queue, "tenant-b").paused());
    Instant before = Instant.now();
    GroupInfo timed = qm.pauseGroup(queue, "tenant-c", Duration.ofMinutes(10));
    assertTrue(timed.paused());
    assertTrue(
        timed.pausedUntil().isAfter(before.plus(Duration.ofMinutes(9))), String.valueOf(timed.pausedUntil()));
    Instant at = Instant.now().plus(Duration.ofHours(2));
    GroupInfo until = qm.pauseGroupUntil(queue, "tenant-c", at);
    assertEquals(at.toEpochMilli(), until.pausedUntil().toEpochMilli());

    Page<GroupInfo> first = qm.listGroups(queue, 2, "");
    assertEquals(3, first.total());
    assertEquals("tenant-a", first.items().get(0).group());
    assertEquals("tenant-b", first.items().get(1).group());
    Page<GroupInfo> second = qm.listGroups(queue, 2, first.nextPageToken());
    assertEquals("tenant-c", second.items().get(0).group());
    assertFalse(second.hasNextPage());

    GroupInfo resumed = qm.resumeGroup(queue, "tenant-c");
    assertFalse(resumed.paused());
    assertNull(resumed.pausedUntil());
    qm.resumeGroup(queue, "tenant-b");
    GroupInfo cleared = qm.clearGroupLimits(queue, "tenant-a");
    assertFalse(cleared.customLimits());
    assertNull(cleared.limits().rateLimit());
    assertEquals(0, qm.listGroups(queue, 0, "").total());

    InvalidArgumentException noName =
        assertThrows(InvalidArgumentException.class, () -> qm.pauseGroup(queue, ""));
    assertTrue(noName.getMessage().contains("group"), noName.getMessage());
    MaintenanceWindow notACron = MaintenanceWindow.of("not a cron", Duration.ofHours(1));
    InvalidArgumentException badCron =
        assertThrows(
            InvalidArgumentException.class,
            () -> qm.setGroupLimits(queue, "tenant-a", GroupLimits.NONE, notACron));
    assertTrue(badCron.getMessage().contains("maintenance_windows"), badCron.getMessage());
    Instant gone = Instant.now().minusSeconds(60);
    assertThrows(InvalidArgumentException.class, () -> qm.pauseGroupUntil(queue, "tenant-a", gone));
    assertThrows(NotFoundException.class, () -> qm.resumeGroup(TestServers.queue("nope"), "tenant-a"));
    assertThrows(IllegalArgumentException.class, () -> RateLimit.of(0, Duration.ofSeconds(1)));
  }

  /** The copy of a job failed for good, once the server's hand-off wrote it. */
  private Job awaitCopy(String queue, String id) throws InterruptedException {
    String copyId = queue + ":" + id;
    long deadline = System.nanoTime() + WAIT.toNanos();
    while (true) {
      try {
        return qm.getJob(QueueManager.DEAD_LETTER_QUEUE, copyId);
      } catch (NotFoundException e) {
        if (System.nanoTime() > deadline) {
          throw e;
        }
        Thread.sleep(20);
      }
    }
  }

  @Test
  void deadLettersAreListedAndRedriven() throws Exception {
    String queue = TestServers.queue("dead");
    qm.registerQueue(queue);
    start(
        queue,
        job -> {
          throw new UnrecoverableException("broken " + job.name());
        });
    byte[] raw = {0, 1, 2, (byte) 255};
    Job json = qm.addJob(queue, "json", Map.of("to", "a@example.com", "n", 7));
    Job bytes = qm.addJob(queue, "bytes", raw);
    assertEquals(JobState.FAILED, qm.waitForJob(queue, json.id(), WAIT).state());
    assertEquals(JobState.FAILED, qm.waitForJob(queue, bytes.id(), WAIT).state());
    awaitCopy(queue, json.id());
    awaitCopy(queue, bytes.id());
    worker.shutdown(Duration.ofSeconds(5));
    worker = null;

    List<DeadLetter> mine = new ArrayList<>();
    String token = "";
    do {
      Page<DeadLetter> page = qm.listDeadLetters(QueueManager.DEAD_LETTER_QUEUE, null, 1000, token);
      page.items().stream().filter(d -> d.originalQueue().equals(queue)).forEach(mine::add);
      token = page.nextPageToken();
    } while (!token.isEmpty());
    assertEquals(2, mine.size(), mine.toString());
    DeadLetter jsonCopy =
        mine.stream().filter(d -> d.originalName().equals("json")).findFirst().orElseThrow();
    assertEquals(queue + ":" + json.id(), jsonCopy.id());
    assertEquals(json.id(), jsonCopy.originalJobId());
    assertEquals(JobState.WAITING, jsonCopy.state());
    assertEquals("broken json", jsonCopy.failureReason());
    assertEquals(1, jsonCopy.attemptsMade());
    assertEquals("application/json", jsonCopy.originalContentType());
    assertEquals(7, jsonCopy.<JsonObject>originalData(JsonObject.class).get("n").getAsInt());
    assertNotNull(jsonCopy.deadTime());
    DeadLetter bytesCopy =
        mine.stream().filter(d -> d.originalName().equals("bytes")).findFirst().orElseThrow();
    assertEquals("application/octet-stream", bytesCopy.originalContentType());
    assertArrayEquals(raw, bytesCopy.originalData());

    RedriveResult one =
        qm.redriveDeadLetters(
            QueueManager.DEAD_LETTER_QUEUE,
            RedriveOptions.builder().jobIds(jsonCopy.id()).data(Map.of("to", "b@example.com")).build());
    assertEquals(1, one.count());
    assertEquals(1, one.queues().get(queue).retried());
    Job rerun = qm.getJob(queue, json.id());
    assertEquals(JobState.WAITING, rerun.state());
    assertEquals("{\"to\":\"b@example.com\"}", rerun.dataJson());

    RedriveOptions ofQueue = RedriveOptions.builder().originalQueue(queue).build();
    RedriveResult rest = qm.redriveDeadLetters(QueueManager.DEAD_LETTER_QUEUE, ofQueue);
    assertEquals(1, rest.count());
    assertTrue(rest.skipped().isEmpty() && rest.missingQueues().isEmpty());
    assertEquals(JobState.WAITING, qm.getJob(queue, bytes.id()).state());
    assertArrayEquals(raw, qm.getJob(queue, bytes.id()).data());
    assertEquals(0, qm.redriveDeadLetters(QueueManager.DEAD_LETTER_QUEUE, ofQueue).count());

    RedriveResult skipped =
        qm.redriveDeadLetters(
            QueueManager.DEAD_LETTER_QUEUE, RedriveOptions.builder().jobIds(queue + ":no-such-job").build());
    assertEquals(0, skipped.count());
    assertTrue(skipped.skipped().containsKey(queue + ":no-such-job"), skipped.skipped().toString());

    InvalidArgumentException notDlq =
        assertThrows(InvalidArgumentException.class, () -> qm.redriveDeadLetters(queue, RedriveOptions.ALL));
    assertTrue(notDlq.getMessage().contains(queue), notDlq.getMessage());
    RedriveOptions dataForTwo = RedriveOptions.builder().jobIds("a:1", "a:2").data(1).build();
    InvalidArgumentException two =
        assertThrows(
            InvalidArgumentException.class,
            () -> qm.redriveDeadLetters(QueueManager.DEAD_LETTER_QUEUE, dataForTwo));
    assertTrue(two.getMessage().contains("data"), two.getMessage());
    assertThrows(
        NotFoundException.class, () -> qm.redriveDeadLetters(TestServers.queue("nope"), RedriveOptions.ALL));
  }
}
