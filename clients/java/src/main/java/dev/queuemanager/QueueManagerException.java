package dev.queuemanager;

import io.grpc.Status;

/**
 * A call the server (or the transport) refused: {@link #code()} is its gRPC status code and {@link
 * #getMessage()} the server's message, which names the field or the object at fault. The codes a caller
 * usually handles have subclasses ({@link NotFoundException}, {@link InvalidArgumentException}…), so a
 * {@code catch} can pick one; every other code is this class itself.
 */
public class QueueManagerException extends RuntimeException {
  private static final long serialVersionUID = 1L;

  private final Status.Code code;

  /**
   * Makes an exception for a status.
   *
   * @param code the gRPC status code
   * @param message the server's message
   * @param cause the transport's exception, or null
   */
  public QueueManagerException(Status.Code code, String message, Throwable cause) {
    super(message, cause);
    this.code = code;
  }

  /** The gRPC status code of the refusal. */
  public Status.Code code() {
    return code;
  }

  @Override
  public String toString() {
    return code + ": " + getMessage();
  }
}
