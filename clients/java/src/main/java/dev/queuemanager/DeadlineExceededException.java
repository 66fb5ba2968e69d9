package dev.queuemanager;

import io.grpc.Status;

/** The call's deadline passed before it finished (gRPC {@code DEADLINE_EXCEEDED}). */
public class DeadlineExceededException extends QueueManagerException {
  private static final long serialVersionUID = 1L;

  /**
   * Makes the exception.
   *
   * @param message the server's message
   * @param cause the transport's exception, or null
   */
  public DeadlineExceededException(String message, Throwable cause) {
    super(Status.Code.DEADLINE_EXCEEDED, message, cause);
  }
}
