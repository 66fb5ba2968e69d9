package dev.queuemanager;

import static java.lang.System.Logger.Level.DEBUG;
import static java.lang.System.Logger.Level.INFO;
import static java.lang.System.Logger.Level.WARNING;

import io.opentelemetry.api.trace.Span;
import io.opentelemetry.context.Scope;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.time.Duration;
import queue_manager.v1.Types;
import queue_manager.v1.WorkerServiceOuterClass.JobCompletion;
import queue_manager.v1.WorkerServiceOuterClass.JobDelay;
import queue_manager.v1.WorkerServiceOuterClass.JobFailure;

/** The runs of a {@link Worker}: a handler called on a run's thread, and its outcome put into the outbox. */
final class WorkerRuns {
  private static final System.Logger LOG = System.getLogger(Worker.class.getName());

  private WorkerRuns() {}

  /** Runs the handler on this thread and records the outcome. */
  static void execute(Worker w, JobContext run, JobHandler handler) {
    synchronized (w.mu) {
      if (w.running.get(run.key) != run || run.stop != null) {
        finish(w, run, null, null, 0); // stopped before it started
        return;
      }
      run.thread = Thread.currentThread();
    }
    // The run's span is current on this thread while the handler runs, so the handler's own spans nest
    // under it.
    Span span = w.tracing == null ? null : w.tracing.process(run.job().proto());
    Scope scope = span == null ? null : span.makeCurrent();
    long started = System.nanoTime();
    Object result = null;
    Throwable error = null;
    try {
      result = handler.process(run);
    } catch (Throwable t) { // an Error too: the attempt fails with it, as a panic does in Go
      error = t;
    } finally {
      if (scope != null) {
        scope.close();
      }
    }
    String failure = finish(w, run, result, error, System.nanoTime() - started);
    if (span != null) {
      Tracing.endProcess(span, error, failure);
    }
  }

  /**
   * Puts a run's outcome into the outbox and gives its credit back.
   *
   * @return the failure's message when the run failed (it threw, timed out, or its result cannot be sent);
   *     null otherwise
   */
  private static String finish(Worker w, JobContext run, Object result, Throwable error, long nanos) {
    synchronized (w.mu) {
      run.thread = null;
      Thread.interrupted(); // a stop that came as the handler returned must not reach the next run
      if (run.timer != null) {
        run.timer.cancel(false);
      }
      w.signal();
      if (run.abandoned) {
        return null; // reported abandoned at shutdown
      }
      if (w.running.get(run.key) == run) {
        w.running.remove(run.key);
      }
      w.releaseSlot();
      var duration = Protos.duration(Duration.ofNanos(nanos));
      DelayedException delayed = delayed(error);
      if (run.parked) {
        // The server ended the run when it parked the job: a report would be refused as a lost lease.
        return null;
      } else if (run.stop == StopReason.LEASE_LOST) {
        LOG.log(INFO, "discarding the outcome of a run whose lease was lost: {0}", run.id());
      } else if (run.stop == StopReason.CANCELLED) {
        w.outbox.addCancelled(run.lease());
        w.unsent++;
        w.expectRejection(run.key + "\0" + run.token);
      } else if (run.stop == StopReason.TIMEOUT) {
        Duration timeout = Protos.duration(run.job().proto().getOptions().getTimeout());
        String message = "job timed out after " + (timeout.toMillis() / 1000.0) + "s";
        w.outbox.addFailures(failure(run, message, "", false, duration).setTimedOut(true));
        w.unsent++;
        w.expectRejection(run.key + "\0" + run.token); // the server may have timed it out first
        return message;
      } else if (delayed != null) {
        delay(w, run, delayed, duration);
      } else if (error != null) {
        String message = error.getMessage();
        if (message == null || message.isEmpty()) {
          message = error.getClass().getName();
        }
        boolean forGood = unrecoverable(error);
        LOG.log(WARNING, "job {0} of {1} failed (attempt {2}): {3}", run.id(), run.queue(),
            run.attemptsMade() + 1, message);
        w.outbox.addFailures(failure(run, message, stackTrace(error), forGood, duration));
        w.unsent++;
        return message;
      } else {
        Types.Payload payload;
        try {
          payload = encode(w, Payloads.encode(result));
        } catch (RuntimeException e) {
          String message = "the result cannot be sent: " + e.getMessage();
          w.outbox.addFailures(failure(run, message, "", false, duration));
          w.unsent++;
          return message;
        }
        JobCompletion.Builder completion =
            JobCompletion.newBuilder()
                .setQueueName(run.queue())
                .setJobId(run.id())
                .setLeaseToken(run.token)
                .setDuration(duration);
        if (payload != null) {
          completion.setResult(payload);
        }
        w.outbox.addCompletions(completion);
        w.unsent++;
      }
      return null;
    }
  }

  /** Puts a run that asked to run again later (a {@link DelayedException}) into the outbox. Lock held. */
  private static void delay(
      Worker w, JobContext run, DelayedException delayed, com.google.protobuf.Duration duration) {
    JobDelay.Builder item =
        JobDelay.newBuilder().setLease(run.lease()).setDelay(Protos.duration(delayed.delay()));
    if (delayed.hasData()) {
      try {
        item.setData(encode(w, Payloads.encodeData(delayed.data())));
      } catch (RuntimeException e) {
        // Data that cannot be sent fails the attempt with why, as a result that cannot be sent does.
        String message = "the delay's data cannot be sent: " + e.getMessage();
        w.outbox.addFailures(failure(run, message, "", false, duration));
        w.unsent++;
        return;
      }
    }
    LOG.log(DEBUG, "job {0} of {1} runs again in {2}s", run.id(), run.queue(),
        delayed.delay().toMillis() / 1000.0);
    w.outbox.addDelays(item);
    w.unsent++;
  }

  /** A result or data the worker reports, through its client's codecs (the stream is not intercepted). */
  private static Types.Payload encode(Worker w, Types.Payload payload) {
    return payload == null || w.client.codecs == null ? payload : w.client.codecs.encode(payload);
  }

  /** The {@link DelayedException} a handler threw, maybe as the cause of another; null for none. */
  private static DelayedException delayed(Throwable error) {
    for (Throwable t = error; t != null; t = t.getCause()) {
      if (t instanceof DelayedException) {
        return (DelayedException) t;
      }
    }
    return null;
  }

  private static JobFailure.Builder failure(
      JobContext run, String message, String stack, boolean forGood, com.google.protobuf.Duration duration) {
    return JobFailure.newBuilder()
        .setQueueName(run.queue())
        .setJobId(run.id())
        .setLeaseToken(run.token)
        .setMessage(message)
        .setStacktrace(stack)
        .setDoNotRetry(forGood)
        .setDuration(duration);
  }

  private static boolean unrecoverable(Throwable error) {
    for (Throwable t = error; t != null; t = t.getCause()) {
      if (t instanceof UnrecoverableException) {
        return true;
      }
    }
    return false;
  }

  private static String stackTrace(Throwable error) {
    StringWriter out = new StringWriter();
    error.printStackTrace(new PrintWriter(out));
    return out.toString();
  }
}
