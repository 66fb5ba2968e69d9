package dev.queuemanager;

import io.grpc.Status;

/** The queue or job named does not exist (gRPC {@code NOT_FOUND}). */
public class NotFoundException extends QueueManagerException {
  private static final long serialVersionUID = 1L;

  /**
   * Makes the exception.
   *
   * @param message the server's message
   * @param cause the transport's exception, or null
   */
  public NotFoundException(String message, Throwable cause) {
    super(Status.Code.NOT_FOUND, message, cause);
  }
}
