package dev.queuemanager;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.gson.JsonObject;
import java.time.Duration;
import java.time.Instant;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/** Pull workers (fetchJobs and the calls of a pulled job) against a real server. */
class PullTest extends ServerTest {
  // Leases far longer than the test server's short default, so a busy machine loses none.
  private static final Duration LEASE = Duration.ofSeconds(30);

  @Test
  void fetchedJobsCompleteFailAndReportProgress() {
    String queue = TestServers.queue("pull");
    qm.registerQueue(queue);
    Job first = qm.addJob(queue, "one", Map.of("n", 1));
    Job second = qm.addJob(queue, "two", Map.of("n", 2), JobOptions.builder().attempts(3).build());
    Job third = qm.addJob(queue, "three", null, JobOptions.builder().attempts(1).build());
    List<PulledJob> jobs =
        qm.fetchJobs(queue, FetchOptions.builder().maxJobs(2).workerName("java-pull").lease(LEASE).build());
    assertEquals(List.of(first.id(), second.id()), List.of(jobs.get(0).id(), jobs.get(1).id()));
    PulledJob one = jobs.get(0);
    assertEquals(1, one.job().data(JsonObject.class).get("n").getAsInt());
    assertFalse(one.isRedelivery());
    assertTrue(one.leaseExpires().isAfter(Instant.now()));
    Job active = qm.getJob(queue, one.id());
    assertEquals(JobState.ACTIVE, active.state());
    assertEquals("java-pull", active.workerId());

    one.reportProgress(40, "halfway", "still going");
    Job progressed = qm.getJob(queue, one.id());
    assertEquals("40", progressed.progressJson());
    assertEquals(List.of("halfway", "still going"), progressed.logs());
    one.complete(Map.of("ok", true));
    Job done = qm.getJob(queue, one.id());
    assertEquals(JobState.COMPLETED, done.state());
    assertEquals("{\"ok\":true}", done.resultJson());

    FailOutcome retry = jobs.get(1).fail("try again");
    assertTrue(retry.willRetry());
    Job retried = qm.getJob(queue, second.id());
    assertFalse(retried.state().isFinished(), retried.toString());
    assertEquals(1, retried.attemptsMade());

    PulledJob last = qm.fetchJobs(queue, FetchOptions.builder().lease(LEASE).build()).get(0);
    assertEquals(third.id(), last.id());
    FailOutcome forGood = last.fail("broken", true, Duration.ZERO);
    assertFalse(forGood.willRetry());
    assertNull(forGood.retryAt());
    Job failed = qm.getJob(queue, third.id());
    assertEquals(JobState.FAILED, failed.state());
    assertEquals("broken", failed.failedReason());
  }

  @Test
  void aLostLeaseIsRefusedAndACancelIsSeenOnExtend() {
    String queue = TestServers.queue("pull-lease");
    qm.registerQueue(queue);
    // With attempts left, a failure of a run asked to stop ends the job cancelled rather than retried.
    Job added = qm.addJob(queue, "long", null, JobOptions.builder().attempts(3).build());
    PulledJob job = qm.fetchJobs(queue, FetchOptions.builder().lease(Duration.ofSeconds(5)).build()).get(0);
    Instant before = job.leaseExpires();
    Instant after = job.extendLease(Duration.ofSeconds(30));
    assertTrue(after.isAfter(before), before + " then " + after);
    assertFalse(job.cancelRequested());
    qm.cancelJob(queue, added.id(), "enough");
    job.extendLease(Duration.ZERO);
    assertTrue(job.cancelRequested());
    job.fail("stopped on cancel");
    assertEquals(JobState.CANCELLED, qm.getJob(queue, added.id()).state());
    // The run is over: its lease token no longer fences anything.
    assertThrows(FailedPreconditionException.class, () -> job.complete("late"));
    assertThrows(FailedPreconditionException.class, () -> job.reportProgress(50));
    assertThrows(FailedPreconditionException.class, () -> job.extendLease(Duration.ZERO));
  }

  @Test
  void aLongPollAnswersWhenAJobArrives() throws Exception {
    String queue = TestServers.queue("pull-wait");
    qm.registerQueue(queue);
    assertTrue(qm.fetchJobs(queue, null).isEmpty(), "an empty queue answers at once with no job");
    CompletableFuture<List<PulledJob>> fetched =
        CompletableFuture.supplyAsync(
            () ->
                qm.fetchJobs(
                    queue, FetchOptions.builder().waitFor(Duration.ofSeconds(20)).lease(LEASE).build()));
    // The job is added while the fetch waits or just before it: either way the fetch answers with it
    // long before its wait ends.
    Job added = qm.addJob(queue, "late", null);
    List<PulledJob> jobs = fetched.get(10, TimeUnit.SECONDS);
    assertEquals(1, jobs.size());
    assertEquals(added.id(), jobs.get(0).id());
    jobs.get(0).complete(null);
  }

  @Test
  void badFetchesAreRefused() {
    String queue = TestServers.queue("pull-bad");
    qm.registerQueue(queue);
    NotFoundException e = assertThrows(NotFoundException.class, () -> qm.fetchJobs("no-such-queue-j", null));
    assertTrue(e.getMessage().contains("no-such-queue-j"), e.getMessage());
    assertThrows(
        InvalidArgumentException.class,
        () -> qm.fetchJobs(queue, FetchOptions.builder().lease(Duration.ofMillis(500)).build()));
    assertThrows(IllegalArgumentException.class, () -> FetchOptions.builder().maxJobs(0));
    assertThrows(IllegalArgumentException.class, () -> FetchOptions.builder().maxJobs(1001));
    assertThrows(
        IllegalArgumentException.class, () -> FetchOptions.builder().waitFor(Duration.ofSeconds(31)));
  }

  @Test
  void aJobFetchedElsewhereIsSettledByItsIdAndToken() {
    String queue = TestServers.queue("pull-ref");
    qm.registerQueue(queue);
    Job first = qm.addJob(queue, "one", null);
    Job second = qm.addJob(queue, "two", null, JobOptions.builder().attempts(3).build());
    List<PulledJob> fetched = qm.fetchJobs(queue, FetchOptions.builder().maxJobs(2).lease(LEASE).build());
    // Another process (here another client) holds only the ids and tokens the fetch gave.
    try (QueueManager other = TestServers.client()) {
      PulledJob one = other.pulledJob(queue, first.id(), fetched.get(0).leaseToken());
      assertEquals(first.id(), one.job().id());
      assertNull(one.leaseExpires());
      one.reportProgress(10, "taken up elsewhere");
      assertTrue(one.extendLease(Duration.ZERO).isAfter(Instant.now()));
      one.complete(Map.of("by", "reference"));
      Job done = qm.getJob(queue, first.id());
      assertEquals(JobState.COMPLETED, done.state());
      assertEquals("{\"by\":\"reference\"}", done.resultJson());
      assertEquals(List.of("taken up elsewhere"), done.logs());

      PulledJob two = other.pulledJob(queue, second.id(), fetched.get(1).leaseToken());
      FailOutcome failed = two.fail("broken", true, Duration.ZERO);
      assertFalse(failed.willRetry());
      assertEquals(JobState.FAILED, qm.getJob(queue, second.id()).state());

      PulledJob stale = other.pulledJob(queue, second.id(), "not-the-token");
      assertThrows(FailedPreconditionException.class, () -> stale.complete(null));
      assertThrows(IllegalArgumentException.class, () -> other.pulledJob(queue, "", "token"));
      assertThrows(IllegalArgumentException.class, () -> other.pulledJob(queue, first.id(), ""));
    }
  }
}
