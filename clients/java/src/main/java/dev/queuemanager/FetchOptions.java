package dev.queuemanager;

import java.time.Duration;

/** The options of {@link QueueManager#fetchJobs}; the defaults fetch one job without waiting. */
public final class FetchOptions {
  /** The most jobs one fetch leases (the server's bound). */
  public static final int MAX_JOBS = 1000;

  /** The longest a fetch waits for a first job (the server's bound). */
  public static final Duration MAX_WAIT = Duration.ofSeconds(30);

  final int maxJobs;
  final Duration waitFor;
  final Duration lease;
  final String workerName;

  private FetchOptions(Builder b) {
    maxJobs = b.maxJobs;
    waitFor = b.waitFor;
    lease = b.lease;
    workerName = b.workerName;
  }

  /** Options that fetch one job without waiting, with the server's lease duration. */
  public static Builder builder() {
    return new Builder();
  }

  /** Builds {@link FetchOptions}; each setter refuses a value the server would refuse. */
  public static final class Builder {
    private int maxJobs = 1;
    private Duration waitFor = Duration.ZERO;
    private Duration lease = Duration.ZERO;
    private String workerName = "";

    private Builder() {}

    /** The most jobs to lease, 1 to {@link #MAX_JOBS} (default 1). */
    public Builder maxJobs(int maxJobs) {
      if (maxJobs < 1 || maxJobs > MAX_JOBS) {
        throw new IllegalArgumentException("maxJobs must be from 1 to " + MAX_JOBS + ", got " + maxJobs);
      }
      this.maxJobs = maxJobs;
      return this;
    }

    /** How long to wait for a first job when none is ready (a long poll), at most 30 s; zero: no wait. */
    public Builder waitFor(Duration wait) {
      Protos.notNegative(wait, "the wait");
      if (wait.compareTo(MAX_WAIT) > 0) {
        throw new IllegalArgumentException("the wait must be at most " + MAX_WAIT + ", got " + wait);
      }
      this.waitFor = wait;
      return this;
    }

    /** Each lease's duration (1 s to 1 h); zero takes the server's lease duration. */
    public Builder lease(Duration lease) {
      this.lease = Protos.notNegative(lease, "the lease");
      return this;
    }

    /** A name that lists the caller in ListWorkers (language "pull") for a lease after each fetch. */
    public Builder workerName(String workerName) {
      this.workerName = workerName == null ? "" : workerName;
      return this;
    }

    /** The options. */
    public FetchOptions build() {
      return new FetchOptions(this);
    }
  }
}
