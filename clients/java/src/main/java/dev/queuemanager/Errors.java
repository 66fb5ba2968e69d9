package dev.queuemanager;

import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import java.util.Locale;

/** Turns gRPC statuses into this client's exceptions: the one place where that mapping lives. */
final class Errors {
  private Errors() {}

  /** The exception for a failed call, keeping the transport's exception as its cause. */
  static QueueManagerException fromRpc(StatusRuntimeException e) {
    Status status = e.getStatus();
    return of(status.getCode(), status.getDescription(), e);
  }

  /** The exception for a status the server reported inside an answer (a report item's verdict). */
  static QueueManagerException fromStatus(int code, String message) {
    return of(Status.fromCodeValue(code).getCode(), message, null);
  }

  static QueueManagerException of(Status.Code code, String message, Throwable cause) {
    if (message == null || message.isEmpty()) {
      // A status without a message still says what happened, in words.
      message = code.name().replace('_', ' ').toLowerCase(Locale.ROOT);
    }
    switch (code) {
      case NOT_FOUND:
        return new NotFoundException(message, cause);
      case INVALID_ARGUMENT:
        return new InvalidArgumentException(message, cause);
      case FAILED_PRECONDITION:
        return new FailedPreconditionException(message, cause);
      case ALREADY_EXISTS:
        return new AlreadyExistsException(message, cause);
      case RESOURCE_EXHAUSTED:
        return new ResourceExhaustedException(message, cause);
      case UNAVAILABLE:
        return new UnavailableException(message, cause);
      case UNAUTHENTICATED:
        return new UnauthenticatedException(message, cause);
      case PERMISSION_DENIED:
        return new PermissionDeniedException(message, cause);
      case DEADLINE_EXCEEDED:
        return new DeadlineExceededException(message, cause);
      case DATA_LOSS: // an answer whose payload this client's codecs cannot decode
        return new PayloadCodecException(message, cause);
      default:
        return new QueueManagerException(code, message, cause);
    }
  }
}
