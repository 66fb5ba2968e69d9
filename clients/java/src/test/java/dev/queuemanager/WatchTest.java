package dev.queuemanager;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.List;
import java.util.Set;
import org.junit.jupiter.api.Test;

/** watchJobEvents against a real server: the events of a job's life, filters, close and refusals. */
class WatchTest extends ServerTest {
  private static final Duration WAIT = Duration.ofSeconds(10);

  private static JobEvent next(JobEventStream events) throws InterruptedException {
    JobEvent event = events.next(WAIT);
    assertNotNull(event, "no event came in time");
    return event;
  }

  @Test
  void eventsFollowAJobThroughItsLife() throws Exception {
    String queue = TestServers.queue("watch");
    qm.registerQueue(queue);
    JobEventStream events = qm.watchJobEvents(queue);
    try {
      Job added = qm.addJob(queue, "tracked", null);
      FetchOptions longLease = FetchOptions.builder().lease(Duration.ofSeconds(30)).build();
      PulledJob job = qm.fetchJobs(queue, longLease).get(0);
      job.reportProgress(30);
      job.complete("done");
      JobEvent first = next(events);
      assertEquals(JobEvent.Type.ADDED, first.type());
      assertEquals(queue, first.queue());
      assertEquals(added.id(), first.jobId());
      assertEquals("tracked", first.jobName());
      assertNotNull(first.time());
      JobEvent active = next(events);
      assertEquals(JobEvent.Type.ACTIVE, active.type());
      assertEquals(1, active.attempt());
      JobEvent progress = next(events);
      assertEquals(JobEvent.Type.PROGRESS, progress.type());
      assertEquals("30", progress.progressJson());
      assertEquals(JobEvent.Type.COMPLETED, next(events).type());
      assertTrue(events.isOpen());
      events.close();
      assertNull(events.next(Duration.ofMillis(100)), "a closed stream ends without an error");
      assertFalse(events.isOpen());
    } finally {
      events.close(); // closing twice is harmless
    }
  }

  @Test
  void filtersPickTypesAndJobNames() throws Exception {
    String queue = TestServers.queue("watch-filter");
    qm.registerQueue(queue);
    try (JobEventStream events =
        qm.watchJobEvents(queue, Set.of(JobEvent.Type.FAILED, JobEvent.Type.CANCELLED), List.of("only"))) {
      qm.cancelJob(queue, qm.addJob(queue, "other", null).id(), "");
      Job only = qm.addJob(queue, "only", null);
      qm.cancelJob(queue, only.id(), "stop");
      JobEvent event = next(events);
      assertEquals(JobEvent.Type.CANCELLED, event.type());
      assertEquals(only.id(), event.jobId());
      assertNull(events.next(Duration.ofMillis(200)), "no other event passes the filter");
    }
  }

  @Test
  void badWatchesAreRefused() {
    NotFoundException e =
        assertThrows(NotFoundException.class, () -> qm.watchJobEvents("no-such-queue-j"));
    assertTrue(e.getMessage().contains("no-such-queue-j"), e.getMessage());
    assertThrows(
        IllegalArgumentException.class, () -> qm.watchJobEvents("q", Set.of(), List.of("")));
  }
}
