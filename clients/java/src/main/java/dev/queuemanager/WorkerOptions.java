package dev.queuemanager;

import java.time.Duration;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.regex.Pattern;

/** The settings of a {@link Worker}: a handler per queue, how many runs at once, its id and labels. */
public final class WorkerOptions {
  /** The most runs one worker may have at once (the server's limit). */
  public static final int MAX_CONCURRENCY = 100_000;

  // A queue name as the server takes it: 1 to 100 letters, digits, "-", "_" or ".".
  private static final Pattern QUEUE_NAME = Pattern.compile("[A-Za-z0-9._-]{1,100}");

  final Map<String, JobHandler> handlers;
  final int concurrency;
  final String workerId;
  final Map<String, String> labels;
  final Duration shutdownTimeout;

  private WorkerOptions(Builder b) {
    handlers = Collections.unmodifiableMap(new LinkedHashMap<>(b.handlers));
    concurrency = b.concurrency;
    workerId = b.workerId;
    labels = Collections.unmodifiableMap(new LinkedHashMap<>(b.labels));
    shutdownTimeout = b.shutdownTimeout;
  }

  /** A builder with no handler yet. */
  public static Builder builder() {
    return new Builder();
  }

  /** Builds {@link WorkerOptions}. */
  public static final class Builder {
    private final Map<String, JobHandler> handlers = new LinkedHashMap<>();
    private int concurrency;
    private String workerId = "";
    private final Map<String, String> labels = new LinkedHashMap<>();
    private Duration shutdownTimeout = Duration.ofSeconds(30);

    private Builder() {}

    /** Takes jobs of {@code queue} (registered on the server) and runs them with {@code handler}. */
    public Builder handler(String queue, JobHandler handler) {
      if (queue == null || queue.isEmpty() || handler == null) {
        throw new IllegalArgumentException("a handler needs a queue name and a handler");
      }
      // The server refuses a hello naming a queue it would never take; the worker would only log that
      // refusal every few seconds.
      if (!QUEUE_NAME.matcher(queue).matches()) {
        throw new IllegalArgumentException(
            "the handler's queue name \"" + queue + "\" must be 1 to 100 letters, digits, '-', '_' or '.'");
      }
      handlers.put(queue, handler);
      return this;
    }

    /** The most runs at once, 1 to 100,000 (default: WORKER_CONCURRENCY from the environment, else 10). */
    public Builder concurrency(int concurrency) {
      if (concurrency < 1 || concurrency > MAX_CONCURRENCY) {
        throw new IllegalArgumentException("the concurrency must be from 1 to 100000, got " + concurrency);
      }
      this.concurrency = concurrency;
      return this;
    }

    /** The worker's id, 1 to 200 characters (default: {@code host-pid-random}). */
    public Builder workerId(String workerId) {
      if (workerId == null || workerId.isEmpty() || workerId.length() > 200) {
        throw new IllegalArgumentException("the worker id must be 1 to 200 characters");
      }
      this.workerId = workerId;
      return this;
    }

    /** Free labels sent to the server ("host" and "pid" are added unless given). */
    public Builder labels(Map<String, String> labels) {
      this.labels.clear();
      this.labels.putAll(labels);
      return this;
    }

    /** How long {@link Worker#close()} lets running handlers finish (default 30 s). */
    public Builder shutdownTimeout(Duration timeout) {
      this.shutdownTimeout = Protos.notNegative(timeout, "the shutdown timeout");
      return this;
    }

    /** The options. */
    public WorkerOptions build() {
      if (handlers.isEmpty()) {
        throw new IllegalArgumentException("a worker needs at least one handler");
      }
      if (concurrency == 0) {
        concurrency = fromEnvironment();
      }
      return new WorkerOptions(this);
    }

    private static int fromEnvironment() {
      String text = System.getenv("WORKER_CONCURRENCY");
      if (text == null || text.isBlank()) {
        return 10;
      }
      try {
        int n = Integer.parseInt(text.strip());
        if (n >= 1 && n <= MAX_CONCURRENCY) {
          return n;
        }
      } catch (NumberFormatException e) {
        // Falls through to the message below.
      }
      throw new IllegalArgumentException("WORKER_CONCURRENCY must be a number from 1 to 100000, got " + text);
    }
  }
}
