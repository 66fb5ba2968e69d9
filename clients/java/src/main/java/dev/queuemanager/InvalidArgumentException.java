package dev.queuemanager;

import io.grpc.Status;

/** A value of the request is not allowed; the message names the field (gRPC {@code INVALID_ARGUMENT}). */
public class InvalidArgumentException extends QueueManagerException {
  private static final long serialVersionUID = 1L;

  /**
   * Makes the exception.
   *
   * @param message the server's message
   * @param cause the transport's exception, or null
   */
  public InvalidArgumentException(String message, Throwable cause) {
    super(Status.Code.INVALID_ARGUMENT, message, cause);
  }
}
