package dev.queuemanager;

import io.grpc.CallOptions;
import io.grpc.Channel;
import io.grpc.ClientCall;
import io.grpc.ClientInterceptor;
import io.grpc.ForwardingClientCall;
import io.grpc.ForwardingClientCallListener;
import io.grpc.Metadata;
import io.grpc.MethodDescriptor;
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

  // grpc-java's words for a connection whose TLS handshake failed ("io exception", "Network closed for
  // unknown reason") name no setting; what the caller can change, as the Python client's errors.py says it.
  // A connection the server closed at once reads the same whether the client used TLS or not: without, the
  // server may want TLS; with, it may want a client certificate (on TLS 1.3 it closes the connection after
  // the client's side of the handshake is done, so the client sees only the close).
  static final String NO_TLS_HINT =
      "the server does not use TLS on this port: connect without TLS (no Builder.tls)";
  static final String CA_HINT =
      "the server's certificate is not signed by the CA given (Builder.tls(ca))";
  static final String CLOSED_PLAIN_HINT =
      "if the server uses TLS, give the CA that signed its certificate (Builder.tls(ca)); if it requires "
          + "mutual TLS, also a client certificate its CA signed (Builder.tls(ca, cert, key))";
  static final String CLOSED_TLS_HINT =
      "if the server requires mutual TLS, give a client certificate its CA signed (Builder.tls(ca, cert, key))";

  /**
   * The status with the hint its failed TLS handshake calls for appended to its description, for a client
   * that dialled with TLS ({@code tls}) or without; any other status as it is.
   */
  static Status withTlsHint(Status status, boolean tls) {
    if (status.getCode() != Status.Code.UNAVAILABLE) {
      return status;
    }
    String hint = null;
    for (Throwable c = status.getCause(); c != null && hint == null; c = c.getCause()) {
      String words = c.getClass().getSimpleName() + ": " + c.getMessage();
      if (words.contains("NotSslRecordException")) {
        hint = NO_TLS_HINT;
      } else if (words.contains("unable to find valid certification path")) {
        hint = CA_HINT;
      }
    }
    String description = status.getDescription() == null ? "" : status.getDescription();
    if (hint == null && description.startsWith("Network closed for unknown reason")) {
      hint = tls ? CLOSED_TLS_HINT : CLOSED_PLAIN_HINT;
    }
    return hint == null ? status : status.withDescription(description + "; " + hint);
  }

  /** Adds {@link #withTlsHint} to the statuses of every call of a channel (tls: it dials with TLS). */
  static final class TlsHints implements ClientInterceptor {
    private final boolean tls;

    TlsHints(boolean tls) {
      this.tls = tls;
    }

    @Override
    public <Q, A> ClientCall<Q, A> interceptCall(
        MethodDescriptor<Q, A> method, CallOptions options, Channel next) {
      return new ForwardingClientCall.SimpleForwardingClientCall<>(next.newCall(method, options)) {
        @Override
        public void start(Listener<A> listener, Metadata headers) {
          super.start(
              new ForwardingClientCallListener.SimpleForwardingClientCallListener<>(listener) {
                @Override
                public void onClose(Status status, Metadata trailers) {
                  super.onClose(withTlsHint(status, tls), trailers);
                }
              },
              headers);
        }
      };
    }
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
