package dev.queuemanager;

/** Thrown by a {@link JobHandler} to fail the job for good, skipping any attempts left. */
public class UnrecoverableException extends RuntimeException {
  private static final long serialVersionUID = 1L;

  /** Fails the job for good with this message. */
  public UnrecoverableException(String message) {
    super(message);
  }

  /** Fails the job for good with this message and cause. */
  public UnrecoverableException(String message, Throwable cause) {
    super(message, cause);
  }
}
