package dev.queuemanager;

import io.grpc.Status;

/**
 * A payload this client cannot decode: under a key id it does not hold, altered since it was encoded
 * (authentication failed), or not a readable encoded payload. Its code is {@code DATA_LOSS} (this client
 * cannot read what the server holds) and its message names the key id.
 */
public class PayloadCodecException extends QueueManagerException {
  private static final long serialVersionUID = 1L;

  /** A payload that cannot be decoded, for this reason. */
  public PayloadCodecException(String message) {
    this(message, null);
  }

  /** A payload that cannot be decoded, for this reason, found by a call that failed with {@code cause}. */
  public PayloadCodecException(String message, Throwable cause) {
    super(Status.Code.DATA_LOSS, message, cause);
  }
}
