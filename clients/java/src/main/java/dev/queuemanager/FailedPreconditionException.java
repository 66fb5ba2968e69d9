package dev.queuemanager;

import io.grpc.Status;

/**
 * The object is not in a state that allows the call, such as a stale lease token (gRPC {@code
 * FAILED_PRECONDITION}).
 */
public class FailedPreconditionException extends QueueManagerException {
  private static final long serialVersionUID = 1L;

  /**
   * Makes the exception.
   *
   * @param message the server's message
   * @param cause the transport's exception, or null
   */
  public FailedPreconditionException(String message, Throwable cause) {
    super(Status.Code.FAILED_PRECONDITION, message, cause);
  }
}
