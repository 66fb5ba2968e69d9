package dev.queuemanager;

import java.time.Instant;

/**
 * What {@link PulledJob#fail} did to the job.
 *
 * @param willRetry whether the job runs again (false: it failed for good)
 * @param retryAt when its next run is due; null when it failed for good
 */
public record FailOutcome(boolean willRetry, Instant retryAt) {}
