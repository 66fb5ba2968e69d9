package dev.queuemanager;

import static java.lang.System.Logger.Level.ERROR;
import static java.lang.System.Logger.Level.INFO;
import static java.lang.System.Logger.Level.WARNING;

import java.net.InetAddress;
import java.net.UnknownHostException;
import java.security.SecureRandom;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import queue_manager.v1.Types;
import queue_manager.v1.WorkerServiceOuterClass.LeaseRef;
import queue_manager.v1.WorkerServiceOuterClass.WorkerReport;

/**
 * A worker: one {@code WorkerService.Connect} stream runs the handlers of its queues, at most {@code
 * concurrency} at once, each run on a thread of its own. {@link #start()} connects (and reconnects with
 * backoff, 0.1 s doubling to 5 s, whenever the stream ends); {@link #shutdown(Duration)} stops it
 * gracefully.
 *
 * <p>Protocol, as this side speaks it (the server's side is in the docstring of
 * server/queue_manager_server/services/workers.py; docs/api.md section 3 summarises both):
 *
 * <ol>
 *   <li>Send hello (worker id, queues, concurrency, labels, language "java", version, the operator
 *       commands it obeys, quiet when an operator quieted it); the server answers welcome (lease duration,
 *       heartbeat interval) or ends the call (NOT_FOUND for an unknown queue).
 *   <li>Credits: the first report grants concurrency minus the runs going on; each delivered job uses one
 *       and each finished run gives one back in the report that carries its outcome.
 *   <li>Each delivered job starts at once on its own thread. Outcomes, credits, progress, log lines and
 *       releases wait in one outbox that the session's writer sends as one report whenever it wakes, so a
 *       lone completion goes out at once and a burst shares a message.
 *   <li>Every heartbeat interval the leases of running jobs are extended. A rejected lease means the run
 *       is lost: it is stopped ({@link StopReason#LEASE_LOST}) and nothing is reported for it.
 *   <li>DRAIN (no delivery follows it): grant nothing more, let running handlers finish, send their
 *       outcomes, release jobs delivered meanwhile, half-close, read until the server ends the stream,
 *       reconnect.
 *   <li>Operators' commands (ControlWorker; the hello lists them, so the server sends no other): QUIET,
 *       the server delivers nothing until RESUME; runs in hand finish and report as usual, credits
 *       included, and a stream opened meanwhile says quiet in its hello. STOP, {@link #shutdown} as if
 *       called (bounded by the shutdown timeout), without reconnecting ({@link #stoppedByServer()}).
 *       SET_CONCURRENCY, the command's concurrency from now on ({@link #concurrency()}): a higher one
 *       sends the extra credits at once; for a lower one the server dropped revoked_credits of those it
 *       held, and the rest of the decrease comes from credits not yet sent, then from runs as they finish
 *       (their credits are not given back until it is paid).
 *   <li>CANCEL_JOB: the run is stopped ({@link StopReason#CANCELLED}, or {@link StopReason#TIMEOUT} when
 *       the server timed it out) and reported cancelled (or failed as timed out) however it returns. The
 *       job's own timeout stops it the same way from this side.
 *   <li>A handler that throws {@link DelayedException} ends its run in {@code delays} (the job waits its
 *       delay in delayed without using an attempt, its new data written in the same step).
 *   <li>{@link JobContext#waitForEvent} and {@link JobContext#waitForChildren} are unary calls that park the
 *       job and end the run: the run is no longer extended, an extension of it not yet sent is dropped, a
 *       refused extension that crossed the call is expected (debug log), nothing more is reported for it, and
 *       the report that gives its credit back names it in {@code parked}, so the stream's server forgets the
 *       lease even when the call reached another server.
 *   <li>Shutdown: send stop (the server answers delivery_stopped), release what comes meanwhile, wait for
 *       running handlers until the grace ends, abandon the rest (they go back to waiting as a stall),
 *       flush the outbox, half-close, wait (bounded) for the server to end the stream.
 * </ol>
 */
public final class Worker implements AutoCloseable {
  private static final System.Logger LOG = System.getLogger(Worker.class.getName());

  static final Duration BACKOFF_FIRST = Duration.ofMillis(100);
  static final Duration BACKOFF_MAX = Duration.ofSeconds(5);
  // Bounds the wait for the server to end a stream this side half-closed, and the last flush at shutdown.
  static final Duration CLOSE_TIMEOUT = Duration.ofSeconds(10);

  private static final AtomicInteger THREADS = new AtomicInteger();

  final QueueManager client;
  final WorkerOptions options;
  final String id;
  final Map<String, String> labels;

  /** Guards every field below and each run's flags; waited on for wake-ups. */
  final Object mu = new Object();

  final Map<String, JobContext> running = new HashMap<>();
  WorkerReport.Builder outbox = WorkerReport.newBuilder();
  int credits;
  int unsent;
  // The most runs at once: the options' concurrency until a SET_CONCURRENCY command changes it.
  int concurrency;
  // Slots given up by a lowered concurrency: that many finished runs give no credit back.
  int debt;
  // An operator quieted this worker: the server delivers nothing until RESUME, on any stream it opens.
  boolean quiet;
  // An operator stopped this worker (ControlWorker STOP): it shuts down and does not reconnect.
  boolean stoppedByServer;
  boolean woken;
  boolean started;
  boolean stopping;
  boolean closing;
  boolean draining;
  boolean deliveryStopped;
  boolean connected;
  boolean done;
  WorkerSession session;
  private final ExpectedRejections expected = new ExpectedRejections();

  private final ExecutorService runs;
  final ScheduledExecutorService timers;
  private Thread loop;
  // The client's tracing, read when the worker starts (before its first run); null when tracing is off.
  Tracing tracing;

  Worker(QueueManager client, WorkerOptions options) {
    this.client = client;
    this.options = options;
    this.id = options.workerId.isEmpty() ? makeWorkerId() : options.workerId;
    Map<String, String> all = new LinkedHashMap<>(options.labels);
    all.putIfAbsent("host", hostname());
    all.putIfAbsent("pid", Long.toString(ProcessHandle.current().pid()));
    this.labels = all;
    this.concurrency = options.concurrency;
    this.runs =
        Executors.newCachedThreadPool(
            r -> daemon(r, "qm-run-" + THREADS.incrementAndGet()));
    this.timers = Executors.newSingleThreadScheduledExecutor(r -> daemon(r, "qm-timers-" + id));
  }

  /** The worker's id, as the server and ListWorkers know it. */
  public String id() {
    return id;
  }

  /** The most runs at once: the options' concurrency until an operator changes it (setWorkerConcurrency). */
  public int concurrency() {
    synchronized (mu) {
      return concurrency;
    }
  }

  /** Whether an operator stopped this worker ({@code qm workers stop}, {@link QueueManager#stopWorker}). */
  public boolean stoppedByServer() {
    synchronized (mu) {
      return stoppedByServer;
    }
  }

  /**
   * Waits until the worker has stopped (after {@link #shutdown}, or a stop an operator asked); false when
   * the timeout passed first.
   */
  public boolean awaitTermination(Duration timeout) throws InterruptedException {
    long end = System.nanoTime() + timeout.toNanos();
    synchronized (mu) {
      while (!done) {
        long left = end - System.nanoTime();
        if (left <= 0) {
          return false;
        }
        TimeUnit.NANOSECONDS.timedWait(mu, left);
      }
      return true;
    }
  }

  /** Connects and starts taking jobs on a thread of its own; returns at once. */
  public Worker start() {
    synchronized (mu) {
      if (started) {
        throw new IllegalStateException("start was called already on this worker");
      }
      started = true;
      tracing = client.tracing();
      if (stopping) {
        return this;
      }
    }
    loop = daemon(this::loop, "qm-worker-" + id);
    loop.start();
    return this;
  }

  /** Waits until the server has welcomed the worker's current stream; false when the timeout passed. */
  public boolean awaitConnected(Duration timeout) throws InterruptedException {
    long end = System.nanoTime() + timeout.toNanos();
    synchronized (mu) {
      while (!connected && !done) {
        long left = end - System.nanoTime();
        if (left <= 0) {
          return false;
        }
        TimeUnit.NANOSECONDS.timedWait(mu, left);
      }
      return connected;
    }
  }

  /**
   * Stops taking jobs, lets running handlers finish for up to {@code grace}, abandons the rest (their
   * threads are interrupted with {@link StopReason#ABANDONED}; the jobs go back to waiting as a stall),
   * sends the last outcomes and closes the stream. Returns once the worker has stopped.
   *
   * @return how many runs were abandoned (0 after a clean stop)
   */
  public int shutdown(Duration grace) throws InterruptedException {
    Protos.notNegative(grace, "the grace");
    Thread thread;
    synchronized (mu) {
      if (stopping) {
        while (!done && started) {
          mu.wait();
        }
        return 0;
      }
      stopping = true;
      credits = 0;
      outbox.setStop(true);
      thread = loop;
      if (!started) {
        done = true;
      }
      signal();
    }
    int abandoned = waitRuns(grace);
    synchronized (mu) {
      closing = true;
      signal();
    }
    if (thread != null) {
      thread.join(CLOSE_TIMEOUT.toMillis());
      if (thread.isAlive()) {
        LOG.log(WARNING, "the worker's stream did not close in time; closing it");
        abortSession();
        thread.join();
      }
    }
    runs.shutdown();
    timers.shutdownNow();
    return abandoned;
  }

  /**
   * {@link #shutdown(Duration)} with the options' shutdown timeout. An interrupt while waiting abandons
   * nothing more: the thread's interrupt flag is set again and the worker goes on stopping by itself.
   */
  @Override
  public void close() {
    try {
      shutdown(options.shutdownTimeout);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
  }

  /** Waits for the running handlers until grace ends, then abandons those left; returns how many. */
  private int waitRuns(Duration grace) throws InterruptedException {
    long end = System.nanoTime() + grace.toNanos();
    synchronized (mu) {
      while (!running.isEmpty()) {
        long left = end - System.nanoTime();
        if (left <= 0) {
          return abandonAll();
        }
        TimeUnit.NANOSECONDS.timedWait(mu, left);
      }
      return 0;
    }
  }

  private int abandonAll() {
    int count = 0;
    for (JobContext run : new ArrayList<>(running.values())) {
      run.abandoned = true;
      run.stop(StopReason.ABANDONED);
      if (run.stop != StopReason.LEASE_LOST && !run.parked) {
        outbox.addAbandoned(run.lease());
        unsent++;
        count++;
      }
    }
    running.clear();
    if (count > 0) {
      LOG.log(WARNING, "{0} job(s) still running at the end of the shutdown grace are abandoned", count);
    }
    signal();
    return count;
  }

  /** Wakes the session's writer (and whoever waits on the lock). Called with the lock held. */
  void signal() {
    woken = true;
    mu.notifyAll();
  }

  private void abortSession() {
    synchronized (mu) {
      if (session != null) {
        session.abort("the worker is closing");
      }
    }
  }

  /** Runs streams one after another until the worker has stopped. */
  private void loop() {
    Duration delay = BACKOFF_FIRST;
    try {
      while (!finished()) {
        WorkerSession s = new WorkerSession(this);
        synchronized (mu) {
          session = s;
        }
        boolean welcomed = s.run();
        synchronized (mu) {
          connected = false;
          session = null;
        }
        if (client.isClosed()) {
          LOG.log(ERROR, "the worker's client was closed; the worker stops (close it after the worker)");
          return;
        }
        if (finished()) {
          return;
        }
        if (s.error != null) {
          LOG.log(WARNING, "worker stream lost: {0}", s.error);
          if (WorkerSession.isConfigError(s.error)) {
            delay = BACKOFF_MAX; // retrying soon will not fix a refusal of the hello
          }
        }
        if (welcomed && s.error == null) {
          delay = BACKOFF_FIRST;
        }
        pause(delay);
        delay = delay.multipliedBy(2).compareTo(BACKOFF_MAX) > 0 ? BACKOFF_MAX : delay.multipliedBy(2);
      }
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    } finally {
      synchronized (mu) {
        done = true;
        mu.notifyAll();
      }
    }
  }

  /** Sleeps a jittered delay before reconnecting, cut short when the worker starts closing. */
  private void pause(Duration delay) throws InterruptedException {
    long nanos = (long) (delay.toNanos() * (0.5 + ThreadLocalRandom.current().nextDouble() / 2));
    long end = System.nanoTime() + nanos;
    synchronized (mu) {
      boolean wasClosing = closing;
      while (System.nanoTime() < end && closing == wasClosing) {
        TimeUnit.NANOSECONDS.timedWait(mu, Math.max(1, end - System.nanoTime()));
      }
    }
  }

  private boolean finished() {
    synchronized (mu) {
      return closing && unsent == 0;
    }
  }

  /** Starts the runs of a delivery; releases what this worker will not run. Called with the lock held. */
  void onDelivery(List<queue_manager.v1.WorkerServiceOuterClass.LeasedJob> jobs) {
    for (var leased : jobs) {
      Types.Job job = leased.getJob();
      JobHandler handler = options.handlers.get(job.getQueueName());
      String undecodable = null;
      if (client.codecs != null) {
        try {
          job = client.codecs.decodeMessage(job);
        } catch (PayloadCodecException e) {
          undecodable = "cannot decode the job's payload: " + e.getMessage();
        }
      }
      JobContext run = new JobContext(this, job, leased.getLeaseToken(), leased.getRedelivery());
      if (handler == null || stopping || draining) {
        if (handler == null) {
          LOG.log(ERROR, "received a job of a queue that has no handler: {0}", job.getQueueName());
        }
        outbox.addReleases(run.lease());
        unsent++;
        continue;
      }
      JobContext earlier = running.get(run.key);
      if (earlier != null) {
        // The server leased the job again (its earlier lease here was recovered): that run is lost.
        earlier.stop(StopReason.LEASE_LOST);
      }
      running.put(run.key, run);
      if (job.getOptions().hasTimeout()) {
        long nanos = Protos.duration(job.getOptions().getTimeout()).toNanos();
        if (nanos > 0) {
          run.timer = timers.schedule(() -> stopRun(run, StopReason.TIMEOUT), nanos, TimeUnit.NANOSECONDS);
        }
      }
      if (undecodable != null && handler != null) {
        // Fails for good, where an operator sees it: no attempt could read it.
        String reason = undecodable;
        handler = ignored -> {
          throw new UnrecoverableException(reason);
        };
      }
      JobHandler runHandler = handler;
      runs.execute(() -> WorkerRuns.execute(this, run, runHandler));
    }
    signal();
  }

  /** Stops a run if it is still going. */
  void stopRun(JobContext run, StopReason reason) {
    synchronized (mu) {
      if (running.get(run.key) == run) {
        run.stop(reason);
      }
    }
  }

  /** Obeys an operator's STOP: shuts down on a thread of its own (shutdown takes the lock held here). */
  void stopAsked(String reason) {
    LOG.log(INFO, "the server asks the worker to stop: {0}", reason);
    if (stopping) {
      return;
    }
    stoppedByServer = true;
    daemon(this::close, "qm-stop-" + id).start();
  }

  /**
   * Obeys SET_CONCURRENCY: at most {@code next} runs from now on. The server took back {@code revoked} of
   * the credits it held; the rest of a decrease comes from credits not yet sent, then from runs as they
   * finish (the debt). Called with the lock held.
   */
  void resize(int next, int revoked) {
    if (next < 1) {
      return;
    }
    int change = next - concurrency;
    concurrency = next;
    LOG.log(INFO, "concurrency set by the server: {0}", next);
    if (change > 0) {
      int paid = Math.min(change, debt);
      debt -= paid;
      if (!stopping && !draining) {
        credits += change - paid;
        signal();
      }
      return;
    }
    int owed = Math.max(0, -change - revoked);
    int taken = Math.min(owed, credits);
    credits -= taken;
    debt += owed - taken;
  }

  /** Gives a finished run's slot back: as a credit, or to pay a lowered concurrency's debt. Lock held. */
  void releaseSlot() {
    if (debt > 0) {
      debt--;
    } else if (!stopping && !draining) {
      credits++;
    }
  }

  /** Remembers a run reported stopped, whose rejection by the server is no surprise. Lock held. */
  void expectRejection(String key) {
    expected.add(key);
  }

  /**
   * Marks a run whose call parked its job (waitForEvent, waitForChildren): the server ended the run, so
   * nothing more is reported or extended for it, an extension the heartbeat put in the unsent report
   * meanwhile is dropped, and the next report names it in parked. The call may have reached another server
   * than the stream's (several behind one address), which cannot tell the stream's server that the lease is
   * over; without the item that server counts it against the worker's credits until the stream ends. No
   * signal: the item goes with the report that the run's end sends with its credit. Lock held.
   */
  void park(JobContext run) {
    run.parked = true;
    expected.addParked(run.key + "\0" + run.token);
    LeaseRef lease = run.lease();
    List<LeaseRef> kept = new ArrayList<>();
    for (LeaseRef extension : outbox.getExtensionsList()) {
      if (!extension.equals(lease)) {
        kept.add(extension);
      }
    }
    if (kept.size() != outbox.getExtensionsCount()) {
      outbox.clearExtensions().addAllExtensions(kept);
    }
    outbox.addParked(lease);
  }

  /** Whether a rejected report item was about a run its own call parked (kept: more than one may cross). */
  boolean parkedRejection(String key, String token) {
    return expected.parked(key + "\0" + token);
  }

  /** Whether a rejected report item was about a run this worker had reported stopped. Lock held. */
  boolean expectedRejection(String key, String token) {
    return expected.take(key + "\0" + token);
  }

  static String key(String queue, String id) {
    return queue + "\0" + id;
  }

  private static Thread daemon(Runnable r, String name) {
    Thread t = new Thread(r, name);
    t.setDaemon(true);
    return t;
  }

  private static String hostname() {
    try {
      return InetAddress.getLocalHost().getHostName();
    } catch (UnknownHostException e) {
      return "localhost";
    }
  }

  private static String makeWorkerId() {
    byte[] random = new byte[3];
    new SecureRandom().nextBytes(random);
    StringBuilder hex = new StringBuilder();
    for (byte b : random) {
      hex.append(String.format("%02x", b));
    }
    return hostname() + "-" + ProcessHandle.current().pid() + "-" + hex;
  }

  /**
   * Runs reported cancelled or timed out, whose rejection is no surprise (the server may have ended the run
   * itself), and runs parked by a call of their own (true: the server ended the lease in that call, so a
   * heartbeat that crossed it is refused); the oldest are forgotten.
   */
  private static final class ExpectedRejections extends LinkedHashMap<String, Boolean> {
    private static final long serialVersionUID = 1L;

    void add(String k) {
      put(k, Boolean.FALSE);
    }

    void addParked(String k) {
      put(k, Boolean.TRUE);
    }

    boolean take(String k) {
      return remove(k) != null;
    }

    boolean parked(String k) {
      return Boolean.TRUE.equals(get(k));
    }

    @Override
    protected boolean removeEldestEntry(Map.Entry<String, Boolean> eldest) {
      return size() > 1000;
    }
  }
}
