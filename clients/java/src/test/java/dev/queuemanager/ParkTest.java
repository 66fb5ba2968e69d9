package dev.queuemanager;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.gson.JsonObject;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.logging.Handler;
import java.util.logging.Level;
import java.util.logging.LogRecord;
import java.util.logging.Logger;
import org.junit.jupiter.api.Test;
import queue_manager.v1.Types;
import queue_manager.v1.WorkerServiceOuterClass.ConnectResponse;
import queue_manager.v1.WorkerServiceOuterClass.ReportAck;
import queue_manager.v1.WorkerServiceOuterClass.ReportItemResult;

/**
 * Runs that end without an outcome of their own: a durable sleep ({@link DelayedException}) and runs parked
 * by {@link JobContext#waitForEvent} or {@link JobContext#waitForChildren}, against a real server.
 */
class ParkTest extends ServerTest {
  private static final Duration WAIT = Duration.ofSeconds(30);

  private void start(int concurrency, Map<String, JobHandler> handlers) throws InterruptedException {
    WorkerOptions.Builder options = WorkerOptions.builder().concurrency(concurrency);
    handlers.forEach(options::handler);
    worker = qm.newWorker(options.build());
    worker.start();
    assertTrue(worker.awaitConnected(WAIT), "the worker did not connect");
  }

  @Test
  void delayedExceptionRunsTheJobAgainLaterWithoutAnAttempt() throws Exception {
    String queue = TestServers.queue("sleep");
    qm.registerQueue(queue);
    List<String> runs = Collections.synchronizedList(new ArrayList<>());
    AtomicLong firstEnded = new AtomicLong();
    AtomicLong secondStarted = new AtomicLong();
    start(
        1,
        Map.of(
            queue,
            job -> {
              int step = job.data(JsonObject.class).get("step").getAsInt();
              runs.add("step " + step + ", attempts made " + job.attemptsMade() + ", " + job.isRedelivery());
              if (step == 1) {
                firstEnded.set(System.nanoTime());
                throw DelayedException.withData(Duration.ofMillis(400), Map.of("step", 2));
              }
              if (runs.size() == 2) {
                secondStarted.set(System.nanoTime());
                throw new DelayedException(Duration.ZERO); // again as soon as a slot is free, the data kept
              }
              return "done at step " + step;
            }));
    // One attempt: a sleep that used one would fail the job for good instead of running it again.
    Job added = qm.addJob(queue, "steps", Map.of("step", 1), JobOptions.builder().attempts(1).build());
    Job done = qm.waitForJob(queue, added.id(), WAIT);
    assertEquals(JobState.COMPLETED, done.state(), done.failedReason());
    assertEquals("\"done at step 2\"", done.resultJson());
    assertEquals(1, done.attemptsMade()); // the completing run only: parking used no attempt
    assertEquals(
        List.of(
            "step 1, attempts made 0, false",
            "step 2, attempts made 0, false",
            "step 2, attempts made 0, false"),
        runs);
    // The job slept its delay by the server's clock (the worker's only slot was free meanwhile).
    assertTrue(
        secondStarted.get() - firstEnded.get() >= TimeUnit.MILLISECONDS.toNanos(350),
        "the job ran again before its delay");
  }

  @Test
  void waitForEventParksTheRunUntilTheEventIsPushed() throws Exception {
    String queue = TestServers.queue("event");
    qm.registerQueue(queue);
    String key = queue + ":approved";
    CountDownLatch parked = new CountDownLatch(1);
    CountDownLatch timedOut = new CountDownLatch(1);
    start(
        1,
        Map.of(
            queue,
            job -> {
              if (job.name().equals("other")) {
                return "ran while the first was parked";
              }
              if (job.name().equals("times-out")) {
                if (job.eventTimedOut()) {
                  timedOut.countDown();
                  return "no event";
                }
                job.waitForEvent(List.of(queue + ":never"), Duration.ofMillis(300));
              }
              ExternalEvent event = job.event();
              if (event != null) {
                return Map.of("key", event.key(), "by", event.data(JsonObject.class).get("by").getAsString());
              }
              try {
                job.waitForEvent(List.of(key), null, Map.of("checkpoint", 1));
              } catch (WaitingForEventException e) {
                assertEquals(List.of(key), e.keys());
                assertNull(e.until());
                parked.countDown();
                throw e;
              }
              return "not reached";
            }));
    Job waiting = qm.addJob(queue, "approval", null);
    assertTrue(parked.await(30, TimeUnit.SECONDS), "the run did not park");
    Job held = qm.getJob(queue, waiting.id());
    assertEquals(JobState.DELAYED, held.state());
    assertEquals("{\"checkpoint\":1}", held.dataJson());
    // The parked run gave its only slot back: another job runs meanwhile.
    Job other = qm.addJob(queue, "other", null);
    assertEquals(JobState.COMPLETED, qm.waitForJob(queue, other.id(), WAIT).state());

    PushedEvent pushed = qm.pushEvent(key, Map.of("by", "ops"), "");
    assertEquals(List.of(new JobRef(queue, waiting.id())), pushed.woken());
    Job done = qm.waitForJob(queue, waiting.id(), WAIT);
    assertEquals(JobState.COMPLETED, done.state(), done.failedReason());
    JsonObject result = done.result(JsonObject.class);
    assertEquals(key, result.get("key").getAsString());
    assertEquals("ops", result.get("by").getAsString());
    assertEquals(1, done.attemptsMade()); // the completing run only: parking used no attempt

    Job lapsed = qm.addJob(queue, "times-out", null);
    assertTrue(timedOut.await(30, TimeUnit.SECONDS), "the wait did not time out");
    assertEquals("\"no event\"", qm.waitForJob(queue, lapsed.id(), WAIT).resultJson());
  }

  @Test
  void waitForChildrenRunsTheParentAgainWithTheirOutcomes() throws Exception {
    String parents = TestServers.queue("parents");
    String parts = TestServers.queue("parts");
    qm.registerQueue(parents);
    qm.registerQueue(parts);
    CountDownLatch parked = new CountDownLatch(1);
    start(
        1, // the parked parent holds no slot: its children run on the same single slot
        Map.of(
            parents,
            job -> {
              if (job.children().isEmpty()) {
                try {
                  job.waitForChildren(
                      List.of(
                          ChildSpec.of(parts, "double", Map.of("n", 2)),
                          ChildSpec.of(parts, "double", Map.of("n", 5)),
                          ChildSpec.of(parts, "broken", null, JobOptions.builder().attempts(1).build())));
                } catch (WaitingForChildrenException e) {
                  assertEquals(3, e.children().size());
                  assertEquals(parts, e.children().get(0).queue());
                  parked.countDown();
                  throw e;
                }
              }
              int sum = 0;
              List<String> failed = new ArrayList<>();
              for (ChildJob child : job.children()) {
                if (child.state() == JobState.COMPLETED) {
                  sum += child.result(JsonObject.class).get("doubled").getAsInt();
                } else {
                  failed.add(child.state() + ": " + child.failedReason());
                }
              }
              return Map.of("sum", sum, "failed", failed);
            },
            parts,
            job -> {
              if (job.name().equals("broken")) {
                throw new UnrecoverableException("cannot do this part");
              }
              return Map.of("doubled", 2 * job.data(JsonObject.class).get("n").getAsInt());
            }));
    Job parent = qm.addJob(parents, "split", null);
    assertTrue(parked.await(30, TimeUnit.SECONDS), "the run did not park");
    Job done = qm.waitForJob(parents, parent.id(), WAIT);
    assertEquals(JobState.COMPLETED, done.state(), done.failedReason());
    JsonObject result = done.result(JsonObject.class);
    assertEquals(14, result.get("sum").getAsInt());
    assertEquals("[\"FAILED: cannot do this part\"]", result.get("failed").toString());
    List<ChildJob> read = qm.getJob(parents, parent.id()).children();
    assertEquals(3, read.size());
    assertEquals(
        List.of(JobState.COMPLETED, JobState.COMPLETED, JobState.FAILED),
        read.stream().map(ChildJob::currentState).toList());
    assertEquals(1, done.attemptsMade()); // the completing run only: parking used no attempt
  }

  @Test
  void badWaitsAreRefusedAndTheRunGoesOn() throws Exception {
    String queue = TestServers.queue("badwait");
    qm.registerQueue(queue);
    List<String> refusals = Collections.synchronizedList(new ArrayList<>());
    start(
        1,
        Map.of(
            queue,
            job -> {
              try {
                job.waitForChildren(List.of());
              } catch (InvalidArgumentException e) {
                refusals.add("no children: " + e.getClass().getSimpleName());
              }
              try {
                job.waitForChildren(List.of(ChildSpec.of(queue + "-unregistered", "part", null)));
              } catch (QueueManagerException e) {
                boolean named = e.getMessage().contains("-unregistered");
                refusals.add("unregistered queue: " + e.code() + " " + named);
              }
              List<String> many = new ArrayList<>();
              for (int i = 0; i < 17; i++) {
                many.add("k" + i);
              }
              try {
                job.waitForEvent(many, null);
              } catch (IllegalArgumentException e) {
                refusals.add(e.getMessage());
              }
              try {
                job.waitForEvent(List.of("k"), Duration.ofMillis(-1));
              } catch (IllegalArgumentException e) {
                refusals.add("negative timeout");
              }
              job.log("still running");
              return "went on";
            }));
    Job added = qm.addJob(queue, "x", null);
    Job done = qm.waitForJob(queue, added.id(), WAIT);
    assertEquals(JobState.COMPLETED, done.state(), done.failedReason());
    assertEquals("\"went on\"", done.resultJson());
    assertEquals(
        List.of(
            "no children: InvalidArgumentException",
            "unregistered queue: INVALID_ARGUMENT true",
            "wait for 1 to 16 event keys, got 17",
            "negative timeout"),
        refusals);
    assertEquals(List.of("still running"), qm.getJob(queue, added.id()).logs());
  }

  /**
   * The worker's waitForEvent and waitForChildren calls reach another server than its stream (the runner's
   * split proxy), which learns that those runs ended only from the reports' parked items. Without them it
   * kept counting the parked leases against the worker's credits (bounded to 4 there) and stopped delivering.
   */
  @Test
  void runsParkedThroughAnotherServerFreeTheirLeases() throws Exception {
    int jobs = 16; // well past the streams' server's bound of credits
    QueueManager split = QueueManager.builder(TestServers.env("QM_TEST_SPLIT_ADDRESS")).token("").build();
    try {
      String events = TestServers.queue("parked-ev");
      String parents = TestServers.queue("parked-parents");
      String children = TestServers.queue("parked-children"); // no worker takes these: every parent stays
      for (String q : List.of(events, parents, children)) {
        qm.registerQueue(q);
      }
      worker =
          split.newWorker(
              WorkerOptions.builder()
                  .concurrency(2)
                  .handler(events, job -> {
                    job.waitForEvent(events + ":" + job.data(JsonObject.class).get("i").getAsInt());
                    return null;
                  })
                  .handler(parents, job -> {
                    job.waitForChildren(List.of(ChildSpec.of(children, "part", null)));
                    return null;
                  })
                  .build());
      worker.start();
      List<NewJob> batch = new ArrayList<>();
      for (int i = 0; i < jobs; i++) {
        batch.add(NewJob.of("x", Map.of("i", i)));
      }
      qm.addBulk(events, batch);
      qm.addBulk(parents, batch);
      for (String q : List.of(events, parents)) {
        long end = System.nanoTime() + WAIT.toNanos();
        long delayed = 0;
        while ((delayed = qm.getQueueMetrics(q).delayed()) != jobs) {
          assertTrue(System.nanoTime() < end, "only " + delayed + " of " + jobs + " of " + q + " parked");
          Thread.sleep(20);
        }
      }
    } finally {
      worker.shutdown(Duration.ofSeconds(5));
      worker = null;
      split.close();
    }
  }

  /**
   * A heartbeat refused because the call parking its run ended the lease is expected: no warning and no lost
   * lease, whether the refusal comes while the call is out or after the run ended; the run's unsent extension
   * is dropped and the next report names it in parked. A run no call parks still loses its lease, warned.
   */
  @Test
  void aHeartbeatCrossingTheCallThatParksTheRunIsNoWarning() {
    Worker w = qm.newWorker(WorkerOptions.builder().handler("q", job -> null).build());
    WorkerSession session = new WorkerSession(w);
    List<LogRecord> records = Collections.synchronizedList(new ArrayList<>());
    Logger logger = Logger.getLogger(Worker.class.getName());
    Level level = logger.getLevel();
    Handler handler =
        new Handler() {
          @Override
          public void publish(LogRecord r) {
            records.add(r);
          }

          @Override
          public void flush() {}

          @Override
          public void close() {}
        };
    logger.addHandler(handler);
    logger.setLevel(Level.ALL);
    try {
      JobContext parks = run(w, "parks", "t1");
      JobContext held = run(w, "held", "t2");
      synchronized (w.mu) {
        w.outbox.addExtensions(parks.lease()).addExtensions(held.lease());
        parks.parking++; // the call is out
        session.onNext(refusal(parks));
        parks.parking--;
        w.park(parks); // the call answered
        w.running.remove(parks.key); // the run ended
        session.onNext(refusal(parks));
        assertFalse(parks.stop == StopReason.LEASE_LOST, "a parked run's lease is not lost");
        assertEquals(List.of(held.lease()), w.outbox.getExtensionsList());
        assertEquals(List.of(parks.lease()), w.outbox.getParkedList());
      }
      long warnings =
          records.stream().filter(r -> r.getLevel().intValue() >= Level.WARNING.intValue()).count();
      assertEquals(0, warnings, "no warning for a refusal that crossed the park");
      long crossed =
          records.stream().filter(r -> r.getMessage().contains("crossed the call that parked")).count();
      assertEquals(2, crossed);

      synchronized (w.mu) {
        session.onNext(refusal(held));
        assertEquals(StopReason.LEASE_LOST, held.stop);
      }
      assertNotNull(
          records.stream().filter(r -> r.getLevel() == Level.WARNING).findFirst().orElse(null),
          "a lease really lost is warned");
    } finally {
      logger.removeHandler(handler);
      logger.setLevel(level);
      synchronized (w.mu) {
        w.running.clear();
      }
      w.close();
    }
  }

  static JobContext run(Worker w, String id, String token) {
    JobContext run =
        new JobContext(w, Types.Job.newBuilder().setQueueName("q").setId(id).build(), token, false);
    synchronized (w.mu) {
      w.running.put(run.key, run);
    }
    return run;
  }

  static ConnectResponse refusal(JobContext run) {
    return ConnectResponse.newBuilder()
        .setAck(
            ReportAck.newBuilder()
                .addResults(
                    ReportItemResult.newBuilder()
                        .setLease(run.lease())
                        .setCode(9)
                        .setMessage("the lease is not held")))
        .build();
  }
}
