package dev.queuemanager;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.gson.JsonObject;
import java.time.Duration;
import java.time.Instant;
import java.util.List;
import java.util.Map;
import java.util.UUID;
import org.junit.jupiter.api.Test;

/** Schedules, external events and event triggers against a real server. */
class SchedulesEventsTest extends ServerTest {
  @Test
  void anIntervalScheduleAddsItsJobs() {
    String queue = TestServers.queue("sched");
    qm.registerQueue(queue);
    Schedule added =
        qm.upsertSchedule(
            Schedule.builder(queue, "tick")
                .every(Duration.ofSeconds(1))
                .limit(1)
                .job(NewJob.of("tick", Map.of("n", 7), JobOptions.builder().attempts(2).build()))
                .catchUp(Schedule.CatchUp.ONE)
                .build());
    assertTrue(added.created());
    assertEquals(Duration.ofSeconds(1), added.every());
    assertEquals("", added.cron());
    assertEquals(Schedule.CatchUp.ONE, added.catchUp());
    assertEquals(1, added.limit());
    assertEquals("tick", added.jobName());
    assertEquals(7, added.<JsonObject>jobData(JsonObject.class).get("n").getAsInt());
    assertEquals(2, added.jobOptions().attempts());
    assertNotNull(added.nextRunTime());
    assertNotNull(added.createTime());
    // The scheduled job is added when due; a long poll takes it as soon as it is.
    List<PulledJob> jobs =
        qm.fetchJobs(
            queue,
            FetchOptions.builder().waitFor(Duration.ofSeconds(15)).lease(Duration.ofSeconds(30)).build());
    assertEquals(1, jobs.size());
    assertTrue(jobs.get(0).id().startsWith("schedule:tick:"), jobs.get(0).id());
    assertEquals("tick", jobs.get(0).job().name());
    jobs.get(0).complete(null);
    Schedule read = qm.getSchedule(queue, "tick");
    assertFalse(read.created());
    assertEquals(1, read.runCount());
    assertEquals(jobs.get(0).id(), read.lastJobId());
    assertNull(read.nextRunTime(), "the schedule is over after its one run");
    assertEquals(List.of("tick"), qm.listSchedules(queue).stream().map(Schedule::id).toList());
    Schedule deleted = qm.deleteSchedule(queue, "tick");
    assertEquals("tick", deleted.id());
    assertTrue(qm.listSchedules(queue).isEmpty());
    assertThrows(NotFoundException.class, () -> qm.getSchedule(queue, "tick"));
    assertThrows(NotFoundException.class, () -> qm.deleteSchedule(queue, "tick"));
  }

  @Test
  void aCronScheduleIsReplacedInPlace() {
    String queue = TestServers.queue("cron");
    qm.registerQueue(queue);
    Instant start = Instant.now().plus(Duration.ofDays(1));
    Schedule first =
        qm.upsertSchedule(
            Schedule.builder(queue, "nightly")
                .cron("0 3 * * *", "Europe/Paris")
                .start(start)
                .job("report", null)
                .build());
    assertTrue(first.created());
    assertEquals("Europe/Paris", first.timezone());
    assertEquals(start, first.start());
    assertTrue(first.nextRunTime().isAfter(start), first.nextRunTime().toString());
    Schedule second =
        qm.upsertSchedule(Schedule.builder(queue, "nightly").cron("*/5 * * * *").job("report", null).build());
    assertFalse(second.created());
    assertEquals("*/5 * * * *", second.cron());
    assertEquals("UTC", second.timezone());
    assertEquals(1, qm.listSchedules(queue).size());
    assertTrue(
        qm.listSchedules("").stream().anyMatch(s -> s.queue().equals(queue)), "listed for every queue");
    qm.deleteSchedule(queue, "nightly");
  }

  @Test
  void badSchedulesAreRefusedWithAPreciseError() {
    String queue = TestServers.queue("sched-bad");
    qm.registerQueue(queue);
    InvalidArgumentException badCron =
        assertThrows(
            InvalidArgumentException.class,
            () -> qm.upsertSchedule(Schedule.builder(queue, "s").cron("not cron").job("x", null).build()));
    assertTrue(badCron.getMessage().contains("cron"), badCron.getMessage());
    assertThrows(
        InvalidArgumentException.class,
        () ->
            qm.upsertSchedule(
                Schedule.builder(queue, "s")
                    .cron("* * * * *")
                    .every(Duration.ofSeconds(5))
                    .job("x", null)
                    .build()));
    assertThrows(
        InvalidArgumentException.class,
        () -> qm.upsertSchedule(Schedule.builder(queue, "s").job("x", null).build()));
    assertThrows(
        NotFoundException.class,
        () ->
            qm.upsertSchedule(
                Schedule.builder("no-such-queue-j", "s")
                    .every(Duration.ofSeconds(5))
                    .job("x", null)
                    .build()));
    assertThrows(IllegalArgumentException.class, () -> Schedule.builder(queue, "s").every(Duration.ZERO));
    assertThrows(IllegalArgumentException.class, () -> Schedule.builder(queue, "s").limit(-1));
  }

  @Test
  void pushedEventsRunTheirTriggersOncePerEventId() {
    String queue = TestServers.queue("events");
    qm.registerQueue(queue);
    String id = "trigger-" + UUID.randomUUID().toString().substring(0, 8);
    String prefix = "order-" + UUID.randomUUID().toString().substring(0, 8);
    EventTrigger trigger =
        qm.upsertEventTrigger(
            EventTrigger.builder(id, prefix + ":*", queue, "on-order")
                .jobOptions(JobOptions.builder().priority(JobPriority.HIGH).build())
                .build());
    assertTrue(trigger.created());
    assertEquals(prefix + ":*", trigger.keyPattern());
    assertEquals(JobPriority.HIGH, trigger.jobOptions().priority());
    assertNotNull(trigger.createTime());
    assertFalse(
        qm.upsertEventTrigger(EventTrigger.builder(id, prefix + ":*", queue, "on-order").build()).created());
    assertEquals(List.of(id), qm.listEventTriggers(queue).stream().map(EventTrigger::id).toList());

    PushedEvent pushed = qm.pushEvent(prefix + ":1", Map.of("total", 12), "evt-" + prefix);
    assertFalse(pushed.duplicate());
    assertNotNull(pushed.pushedAt());
    assertTrue(pushed.woken().isEmpty(), "no job waited for the key");
    assertEquals(0, pushed.wokenCount());
    assertEquals(1, pushed.added().size());
    JobRef ref = pushed.added().get(0);
    assertEquals(queue, ref.queue());
    Job job = qm.getJob(queue, ref.id());
    assertEquals("on-order", job.name());
    assertEquals(12, job.data(JsonObject.class).get("total").getAsInt());
    // The same event id again (a webhook's retry) changes nothing and answers as the first push did.
    PushedEvent again = qm.pushEvent(prefix + ":1", Map.of("total", 12), "evt-" + prefix);
    assertTrue(again.duplicate());
    assertEquals(pushed.added(), again.added());
    assertEquals(1, qm.getQueueMetrics(queue).waiting());
    // A key the pattern does not match adds nothing.
    assertTrue(qm.pushEvent("other:1", null, "").added().isEmpty());

    assertEquals(id, qm.deleteEventTrigger(id).id());
    assertTrue(qm.pushEvent(prefix + ":2", null, "").added().isEmpty());
    assertThrows(NotFoundException.class, () -> qm.deleteEventTrigger(id));
  }

  @Test
  void badEventsAndTriggersAreRefusedWithAPreciseError() {
    String queue = TestServers.queue("events-bad");
    qm.registerQueue(queue);
    InvalidArgumentException emptyKey =
        assertThrows(InvalidArgumentException.class, () -> qm.pushEvent("", null, ""));
    assertTrue(emptyKey.getMessage().contains("key"), emptyKey.getMessage());
    assertThrows(InvalidArgumentException.class, () -> qm.pushEvent("k", null, "x".repeat(300)));
    assertThrows(
        InvalidArgumentException.class,
        () -> qm.upsertEventTrigger(EventTrigger.builder("t-bad", "a*b", queue, "x").build()));
    assertThrows(
        NotFoundException.class,
        () -> qm.upsertEventTrigger(EventTrigger.builder("t-bad", "k", "no-such-queue-j", "x").build()));
  }
}
