package dev.queuemanager;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.List;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;

/** Operators' control of a Java stream worker (ControlWorker): quiet, resume, stop and concurrency. */
class ControlTest extends ServerTest {
  private static final Duration WAIT = Duration.ofSeconds(30);

  // Pulled jobs' leases: far longer than the test server's short default, so a busy machine loses none.
  private static final Duration LEASE = Duration.ofSeconds(30);

  private Worker start(String queue, int concurrency, JobHandler handler) throws InterruptedException {
    worker = qm.newWorker(WorkerOptions.builder().handler(queue, handler).concurrency(concurrency).build());
    worker.start();
    assertTrue(worker.awaitConnected(WAIT), "the worker did not connect");
    return worker;
  }

  private static String take(BlockingQueue<String> started, String what) throws InterruptedException {
    String name = started.poll(WAIT.toMillis(), TimeUnit.MILLISECONDS);
    assertNotNull(name, "timed out waiting for " + what);
    return name;
  }

  @Test
  void workerObeysQuietResumeAndStop() throws Exception {
    String queue = TestServers.queue("control");
    qm.registerQueue(queue);
    BlockingQueue<String> started = new LinkedBlockingQueue<>();
    CountDownLatch release = new CountDownLatch(1);
    Worker w =
        start(
            queue,
            2,
            job -> {
              started.add(job.name());
              if (job.name().equals("held")) {
                release.await();
              }
              return job.name();
            });
    Job held = qm.addJob(queue, "held", null);
    assertEquals("held", take(started, "the held run"));
    WorkerControlResult quiet = qm.quietWorker(w.id());
    assertEquals(WorkerControlResult.State.QUIET, quiet.state());
    assertTrue(quiet.changed());
    assertEquals(2, quiet.concurrency());
    assertFalse(quiet.serverId().isEmpty());
    assertFalse(qm.quietWorker(w.id()).changed(), "quiet twice changes nothing");
    release.countDown(); // the run in hand finishes while quiet
    assertEquals(JobState.COMPLETED, qm.waitForJob(queue, held.id(), WAIT).state());
    // A job added while it is quiet goes to another worker (a pull worker here), although this one has
    // free slots.
    Job meanwhile = qm.addJob(queue, "while-quiet", null);
    List<PulledJob> pulled =
        qm.fetchJobs(queue, FetchOptions.builder().waitFor(Duration.ofSeconds(10)).lease(LEASE).build());
    assertEquals(meanwhile.id(), pulled.get(0).id());
    pulled.get(0).complete(null);
    assertTrue(started.isEmpty(), "the quiet worker ran " + started);

    WorkerControlResult resumed = qm.resumeWorker(w.id());
    assertEquals(WorkerControlResult.State.ACTIVE, resumed.state());
    assertTrue(resumed.changed());
    qm.addJob(queue, "after-resume", null);
    assertEquals("after-resume", take(started, "a run after RESUME"));

    assertEquals(WorkerControlResult.State.STOPPING, qm.stopWorker(w.id()).state());
    assertTrue(w.awaitTermination(WAIT), "the worker did not stop after STOP");
    assertTrue(w.stoppedByServer());
    // It does not reconnect: the server no longer knows it.
    assertThrows(NotFoundException.class, () -> qm.quietWorker(w.id()));
  }

  @Test
  void setWorkerConcurrencyRaisesAndLowersTheRuns() throws Exception {
    String queue = TestServers.queue("concurrency");
    qm.registerQueue(queue);
    AtomicInteger running = new AtomicInteger();
    AtomicInteger most = new AtomicInteger(); // the most runs at once
    BlockingQueue<String> started = new LinkedBlockingQueue<>();
    BlockingQueue<Boolean> gates = new LinkedBlockingQueue<>();
    Worker w =
        start(
            queue,
            1,
            job -> {
              most.accumulateAndGet(running.incrementAndGet(), Math::max);
              started.add(job.id());
              gates.take();
              running.decrementAndGet();
              return null;
            });
    for (int i = 0; i < 3; i++) {
      qm.addJob(queue, "x", null);
    }
    take(started, "the first run");
    WorkerControlResult raised = qm.setWorkerConcurrency(w.id(), 3);
    assertEquals(3, raised.concurrency());
    assertTrue(raised.changed());
    // The two other jobs start at once on the extra credits.
    take(started, "a second run");
    take(started, "a third run");
    assertEquals(3, w.concurrency());
    assertEquals(3, most.get());
    assertEquals(3, running.get());

    // Lowered to 1 with 3 running: the slots are given up as runs finish, so the next 3 jobs run one at
    // a time.
    assertEquals(1, qm.setWorkerConcurrency(w.id(), 1).concurrency());
    long end = System.nanoTime() + WAIT.toNanos();
    while (w.concurrency() != 1) { // the command reaches the worker before its runs finish
      assertTrue(System.nanoTime() < end, "the worker did not take the lower concurrency");
      Thread.sleep(10);
    }
    for (int i = 0; i < 3; i++) {
      qm.addJob(queue, "y", null);
    }
    for (int i = 0; i < 3; i++) {
      gates.add(Boolean.TRUE); // the first three finish
    }
    take(started, "a run after lowering");
    // Nothing more may start while it runs: a bounded wait to see that none does.
    Thread.sleep(300);
    assertEquals(1, running.get(), "runs at once after lowering the concurrency to 1");
    assertTrue(started.isEmpty(), "another run started: " + started);
    for (int i = 0; i < 2; i++) {
      gates.add(Boolean.TRUE);
      take(started, "a later run after lowering");
    }
    gates.add(Boolean.TRUE);
  }

  @Test
  void badControlCallsAreRefusedWithAPreciseError() {
    NotFoundException e = assertThrows(NotFoundException.class, () -> qm.quietWorker("no-such-worker-j"));
    assertTrue(e.getMessage().contains("no-such-worker-j"), e.getMessage());
    assertThrows(IllegalArgumentException.class, () -> qm.stopWorker(""));
    assertThrows(IllegalArgumentException.class, () -> qm.setWorkerConcurrency("w", 0));
    assertThrows(IllegalArgumentException.class, () -> qm.setWorkerConcurrency("w", 100_001));
  }
}
