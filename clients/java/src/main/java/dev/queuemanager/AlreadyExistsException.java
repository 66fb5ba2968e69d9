package dev.queuemanager;

import io.grpc.Status;

/** The object to create exists already (gRPC {@code ALREADY_EXISTS}). */
public class AlreadyExistsException extends QueueManagerException {
  private static final long serialVersionUID = 1L;

  /**
   * Makes the exception.
   *
   * @param message the server's message
   * @param cause the transport's exception, or null
   */
  public AlreadyExistsException(String message, Throwable cause) {
    super(Status.Code.ALREADY_EXISTS, message, cause);
  }
}
