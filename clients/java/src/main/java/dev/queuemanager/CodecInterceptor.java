package dev.queuemanager;

import com.google.protobuf.Message;
import io.grpc.CallOptions;
import io.grpc.Channel;
import io.grpc.ClientCall;
import io.grpc.ClientInterceptor;
import io.grpc.ForwardingClientCall;
import io.grpc.ForwardingClientCallListener;
import io.grpc.Metadata;
import io.grpc.MethodDescriptor;
import io.grpc.Status;
import queue_manager.v1.QueueServiceGrpc;
import queue_manager.v1.Workflows;

/**
 * Where a client's codecs meet its calls: every payload of every QueueService request is encoded (the
 * caller's message is immutable, so it keeps its data) and every payload of every answer decoded, so that no
 * call can send a payload in clear. An answer that cannot be decoded ends its call with {@code DATA_LOSS},
 * which the caller sees as a {@link PayloadCodecException} naming the key. The worker stream is the worker's
 * own business: it decodes each delivered job on its own, to fail just that job when it cannot.
 */
final class CodecInterceptor implements ClientInterceptor {
  private final Codecs codecs;

  CodecInterceptor(Codecs codecs) {
    this.codecs = codecs;
  }

  @Override
  public <Q, A> ClientCall<Q, A> interceptCall(
      MethodDescriptor<Q, A> method, CallOptions options, Channel next) {
    ClientCall<Q, A> call = next.newCall(method, options);
    if (!QueueServiceGrpc.SERVICE_NAME.equals(method.getServiceName())) {
      return call;
    }
    return new ForwardingClientCall.SimpleForwardingClientCall<>(call) {
      @Override
      public void start(Listener<A> listener, Metadata headers) {
        super.start(new Decoding<>(listener, this), headers);
      }

      @Override
      @SuppressWarnings("unchecked")
      public void sendMessage(Q message) {
        if (message instanceof Workflows.ExecuteWorkflowRequest) {
          var run = (Workflows.ExecuteWorkflowRequest) message;
          Codecs.refuseResultConditions(run.getWorkflow().getStepsList());
        }
        super.sendMessage(message instanceof Message ? (Q) codecs.encodeMessage((Message) message) : message);
      }
    };
  }

  /** Decodes each answer; the first that cannot be decoded cancels the call, which then ends DATA_LOSS. */
  private final class Decoding<A> extends ForwardingClientCallListener.SimpleForwardingClientCallListener<A> {
    private final ClientCall<?, ?> call;
    private PayloadCodecException failure;

    Decoding(ClientCall.Listener<A> listener, ClientCall<?, ?> call) {
      super(listener);
      this.call = call;
    }

    @Override
    @SuppressWarnings("unchecked")
    public void onMessage(A message) {
      if (failure != null) {
        return;
      }
      A decoded;
      try {
        decoded = message instanceof Message ? (A) codecs.decodeMessage((Message) message) : message;
      } catch (PayloadCodecException e) {
        failure = e;
        call.cancel(e.getMessage(), e);
        return;
      }
      super.onMessage(decoded);
    }

    @Override
    public void onClose(Status status, Metadata trailers) {
      if (failure != null) {
        status = Status.DATA_LOSS.withDescription(failure.getMessage());
      }
      super.onClose(status, trailers);
    }
  }
}
