package dev.queuemanager;

import io.grpc.Status;

/** The call's token does not allow it (gRPC {@code PERMISSION_DENIED}). */
public class PermissionDeniedException extends QueueManagerException {
  private static final long serialVersionUID = 1L;

  /**
   * Makes the exception.
   *
   * @param message the server's message
   * @param cause the transport's exception, or null
   */
  public PermissionDeniedException(String message, Throwable cause) {
    super(Status.Code.PERMISSION_DENIED, message, cause);
  }
}
