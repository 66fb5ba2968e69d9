package dev.queuemanager;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.gson.JsonObject;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.Test;

/** The stream worker against a real server (lease QM_TEST_LEASE_MS, heartbeats every third of it). */
class WorkerTest extends ServerTest {
  private static final Duration WAIT = Duration.ofSeconds(30);

  private Worker start(String queue, int concurrency, JobHandler handler) throws InterruptedException {
    worker = qm.newWorker(WorkerOptions.builder().handler(queue, handler).concurrency(concurrency).build());
    worker.start();
    assertTrue(worker.awaitConnected(WAIT), "the worker did not connect");
    return worker;
  }

  @Test
  void completesWithResultProgressAndLogs() throws Exception {
    String queue = TestServers.queue("complete");
    qm.registerQueue(queue);
    start(
        queue,
        4,
        job -> {
          JsonObject data = job.data(JsonObject.class);
          job.log("greeting " + data.get("who").getAsString());
          job.reportProgress(50);
          job.reportProgress(Map.of("step", "done"));
          return Map.of("hello", data.get("who").getAsString(), "attempt", job.attemptsMade() + 1);
        });
    Job added = qm.addJob(queue, "greet", Map.of("who", "java"));
    Job done = qm.waitForJob(queue, added.id(), WAIT);
    assertEquals(JobState.COMPLETED, done.state());
    JsonObject result = done.result(JsonObject.class);
    assertEquals("java", result.get("hello").getAsString());
    assertEquals(1, result.get("attempt").getAsInt());
    assertEquals("{\"step\":\"done\"}", done.progressJson());
    assertEquals(List.of("greeting java"), qm.getJob(queue, added.id()).logs());
  }

  @Test
  void failuresAreRetriedThenFailForGood() throws Exception {
    String queue = TestServers.queue("retry");
    qm.registerQueue(queue);
    AtomicInteger runs = new AtomicInteger();
    start(
        queue,
        2,
        job -> {
          runs.incrementAndGet();
          if (job.name().equals("fatal")) {
            throw new UnrecoverableException("bad input, no retry");
          }
          if (job.name().equals("flaky") && job.attemptsMade() < 2) {
            throw new IllegalStateException("downstream is down");
          }
          if (job.name().equals("broken")) {
            throw new IllegalStateException("always broken");
          }
          return "ok on attempt " + (job.attemptsMade() + 1);
        });
    JobOptions three =
        JobOptions.builder().attempts(3).backoff(Backoff.fixed(Duration.ofMillis(100))).build();
    Job flaky = qm.addJob(queue, "flaky", null, three);
    Job broken = qm.addJob(queue, "broken", null, three);
    Job fatal = qm.addJob(queue, "fatal", null, three);

    Job recovered = qm.waitForJob(queue, flaky.id(), WAIT);
    assertEquals(JobState.COMPLETED, recovered.state());
    assertEquals("\"ok on attempt 3\"", recovered.resultJson());
    Job failed = qm.waitForJob(queue, broken.id(), WAIT);
    assertEquals(JobState.FAILED, failed.state());
    assertEquals(3, failed.attemptsMade());
    assertEquals("always broken", failed.failedReason());
    assertTrue(failed.stacktrace().contains("IllegalStateException"), failed.stacktrace());
    Job forGood = qm.waitForJob(queue, fatal.id(), WAIT);
    assertEquals(JobState.FAILED, forGood.state());
    assertEquals(1, forGood.attemptsMade());
    assertEquals("bad input, no retry", forGood.failedReason());
    assertEquals(7, runs.get());
  }

  @Test
  void cancelStopsTheRunningHandler() throws Exception {
    String queue = TestServers.queue("cancel");
    qm.registerQueue(queue);
    CountDownLatch started = new CountDownLatch(1);
    AtomicReference<StopReason> seen = new AtomicReference<>();
    start(
        queue,
        1,
        job -> {
          if (job.name().equals("short")) {
            return "quick";
          }
          started.countDown();
          try {
            Thread.sleep(60_000);
          } catch (InterruptedException e) {
            seen.set(job.stopReason());
            throw e;
          }
          return "slept";
        });
    Job job = qm.addJob(queue, "long", null);
    assertTrue(started.await(30, TimeUnit.SECONDS));
    qm.cancelJob(queue, job.id(), "user asked");
    Job done = qm.waitForJob(queue, job.id(), WAIT);
    assertEquals(JobState.CANCELLED, done.state());
    assertEquals("user asked", done.cancelReason());
    assertEquals(StopReason.CANCELLED, seen.get());
    // The slot is free again: the next job runs.
    Job next = qm.addJob(queue, "short", null);
    assertEquals("\"quick\"", qm.waitForJob(queue, next.id(), WAIT).resultJson());
  }

  @Test
  void jobTimeoutStopsTheRunAndFailsTheAttempt() throws Exception {
    String queue = TestServers.queue("timeout");
    qm.registerQueue(queue);
    AtomicReference<StopReason> seen = new AtomicReference<>();
    start(
        queue,
        1,
        job -> {
          try {
            Thread.sleep(60_000);
          } catch (InterruptedException e) {
            seen.set(job.stopReason());
            throw e;
          }
          return "slept";
        });
    JobOptions options = JobOptions.builder().timeout(Duration.ofMillis(300)).attempts(1).build();
    Job job = qm.addJob(queue, "slow", null, options);
    Job done = qm.waitForJob(queue, job.id(), WAIT);
    assertEquals(JobState.FAILED, done.state());
    assertTrue(done.failedReason().contains("timed out"), done.failedReason());
    assertEquals(StopReason.TIMEOUT, seen.get());
  }

  @Test
  void aRunToldToStopKeepsItsReasonWhenTheServerThenEndsItsLease() {
    // The server ends a timed-out or cancelled run's lease after the grace; a heartbeat refused then must not
    // turn the reason the handler reads into LEASE_LOST (a slow handler thread read it after the refusal).
    Worker w = qm.newWorker(WorkerOptions.builder().handler("q", job -> null).build());
    WorkerSession session = new WorkerSession(w);
    try {
      JobContext timedOut = ParkTest.run(w, "timed-out", "t1");
      JobContext cancelled = ParkTest.run(w, "cancelled", "t2");
      JobContext held = ParkTest.run(w, "held", "t3");
      synchronized (w.mu) {
        timedOut.stop(StopReason.TIMEOUT);
        cancelled.stop(StopReason.CANCELLED);
        for (JobContext run : List.of(timedOut, cancelled, held)) {
          session.onNext(ParkTest.refusal(run));
        }
        assertEquals(StopReason.TIMEOUT, timedOut.stopReason());
        assertEquals(StopReason.CANCELLED, cancelled.stopReason());
        assertEquals(StopReason.LEASE_LOST, held.stopReason()); // a lease really lost still is
      }
    } finally {
      synchronized (w.mu) {
        w.running.clear();
      }
      w.close();
    }
  }

  @Test
  void workerTimesTheRunOutWhenTheServerDoesNot() throws Exception {
    // This server enforces no job timeout itself: the worker's own timer must end the run.
    String address = TestServers.env("QM_TEST_NO_TIMEOUTS_ADDRESS");
    try (QueueManager lax = QueueManager.builder(address).token("").build()) {
      String queue = TestServers.queue("own-timeout");
      lax.registerQueue(queue);
      AtomicReference<StopReason> seen = new AtomicReference<>();
      Worker own =
          lax.newWorker(
              WorkerOptions.builder()
                  .handler(
                      queue,
                      job -> {
                        try {
                          Thread.sleep(60_000);
                        } catch (InterruptedException e) {
                          seen.set(job.stopReason());
                          throw e;
                        }
                        return "slept";
                      })
                  .concurrency(1)
                  .build());
      own.start();
      try {
        JobOptions options = JobOptions.builder().timeout(Duration.ofMillis(300)).attempts(1).build();
        Job job = lax.addJob(queue, "slow", null, options);
        Job done = lax.waitForJob(queue, job.id(), WAIT);
        assertEquals(JobState.FAILED, done.state());
        assertEquals("job timed out after 0.3s", done.failedReason());
        assertEquals(StopReason.TIMEOUT, seen.get());
      } finally {
        own.shutdown(Duration.ofSeconds(5));
      }
    }
  }

  @Test
  void heartbeatsKeepARunLongerThanItsLease() throws Exception {
    String queue = TestServers.queue("heartbeat");
    qm.registerQueue(queue);
    long lease = Long.parseLong(TestServers.env("QM_TEST_LEASE_MS"));
    start(
        queue,
        1,
        job -> {
          Thread.sleep(lease * 3);
          return "still mine";
        });
    Job job = qm.addJob(queue, "long", null);
    Job done = qm.waitForJob(queue, job.id(), WAIT);
    assertEquals(JobState.COMPLETED, done.state());
    assertEquals(0, done.stalledCount());
    assertEquals("\"still mine\"", done.resultJson());
  }

  @Test
  void shutdownLetsRunningJobsFinish() throws Exception {
    String queue = TestServers.queue("drain");
    qm.registerQueue(queue);
    CountDownLatch started = new CountDownLatch(2);
    Worker w =
        start(
            queue,
            2,
            job -> {
              started.countDown();
              Thread.sleep(500);
              return "finished";
            });
    Job a = qm.addJob(queue, "a", null);
    Job b = qm.addJob(queue, "b", null);
    assertTrue(started.await(30, TimeUnit.SECONDS));
    assertEquals(0, w.shutdown(Duration.ofSeconds(10)));
    assertEquals(JobState.COMPLETED, qm.getJob(queue, a.id()).state());
    assertEquals(JobState.COMPLETED, qm.getJob(queue, b.id()).state());
    // A job added after the shutdown waits for another worker.
    Job later = qm.addJob(queue, "later", null);
    assertEquals(JobState.WAITING, qm.getJob(queue, later.id()).state());
  }

  @Test
  void shutdownAbandonsRunsPastItsGrace() throws Exception {
    String queue = TestServers.queue("abandon");
    qm.registerQueue(queue);
    CountDownLatch started = new CountDownLatch(1);
    AtomicReference<StopReason> seen = new AtomicReference<>();
    Worker w =
        start(
            queue,
            1,
            job -> {
              started.countDown();
              try {
                Thread.sleep(60_000);
              } catch (InterruptedException e) {
                seen.set(job.stopReason());
              }
              return "too late";
            });
    Job job = qm.addJob(queue, "stuck", null);
    assertTrue(started.await(30, TimeUnit.SECONDS));
    assertEquals(1, w.shutdown(Duration.ofMillis(200)));
    assertEquals(StopReason.ABANDONED, seen.get());
    Job back = qm.getJob(queue, job.id());
    assertEquals(JobState.WAITING, back.state());
    assertEquals(1, back.stalledCount());
    assertEquals(null, back.resultJson());
  }

  @Test
  void checkpointIsWhatTheNextAttemptReads() throws Exception {
    String queue = TestServers.queue("checkpoint");
    qm.registerQueue(queue);
    start(
        queue,
        1,
        job -> {
          int step = job.data(JsonObject.class).get("step").getAsInt();
          if (step == 0) {
            job.updateData(Map.of("step", 1));
            assertEquals("{\"step\":1}", job.dataJson());
            throw new IllegalStateException("stopped after step 1");
          }
          return Map.of("resumed_at", step);
        });
    Job job = qm.addJob(queue, "steps", Map.of("step", 0), JobOptions.builder().attempts(2).build());
    Job done = qm.waitForJob(queue, job.id(), WAIT);
    assertEquals(JobState.COMPLETED, done.state());
    assertEquals("{\"resumed_at\":1}", done.resultJson());
  }
}
