package dev.queuemanager;

import io.grpc.Status;

/** A limit was reached, such as a full queue; the message says which (gRPC {@code RESOURCE_EXHAUSTED}). */
public class ResourceExhaustedException extends QueueManagerException {
  private static final long serialVersionUID = 1L;

  /**
   * Makes the exception.
   *
   * @param message the server's message
   * @param cause the transport's exception, or null
   */
  public ResourceExhaustedException(String message, Throwable cause) {
    super(Status.Code.RESOURCE_EXHAUSTED, message, cause);
  }
}
