package dev.queuemanager;

import io.grpc.Status;

/** The call carried no token, or one the server does not know (gRPC {@code UNAUTHENTICATED}). */
public class UnauthenticatedException extends QueueManagerException {
  private static final long serialVersionUID = 1L;

  /**
   * Makes the exception.
   *
   * @param message the server's message
   * @param cause the transport's exception, or null
   */
  public UnauthenticatedException(String message, Throwable cause) {
    super(Status.Code.UNAUTHENTICATED, message, cause);
  }
}
