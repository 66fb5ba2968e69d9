package dev.queuemanager;

/**
 * Runs one job in a {@link Worker}. What it returns is the job's result (encoded as {@link
 * QueueManager#addJob} encodes data; null for none). An exception fails the attempt, which is retried per
 * the job's attempts and backoff; an {@link UnrecoverableException} fails the job for good. When the run
 * must stop ({@link JobContext#stopReason()}: a cancel, the job's timeout, a lost lease, a shutdown that
 * stopped waiting) the handler's thread is interrupted: blocking calls throw and the handler should return.
 */
@FunctionalInterface
public interface JobHandler {
  /**
   * Runs the job.
   *
   * @param job the job and what a run can do (progress, log lines, checkpoints)
   * @return the result, or null
   * @throws Exception to fail the attempt
   */
  Object process(JobContext job) throws Exception;
}
