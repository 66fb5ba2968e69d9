package dev.queuemanager;

import io.grpc.Status;

/** The server or its store cannot be reached now; the call may be retried (gRPC {@code UNAVAILABLE}). */
public class UnavailableException extends QueueManagerException {
  private static final long serialVersionUID = 1L;

  /**
   * Makes the exception.
   *
   * @param message the server's message
   * @param cause the transport's exception, or null
   */
  public UnavailableException(String message, Throwable cause) {
    super(Status.Code.UNAVAILABLE, message, cause);
  }
}
