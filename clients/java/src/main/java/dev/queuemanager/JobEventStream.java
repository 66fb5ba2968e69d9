package dev.queuemanager;

import io.grpc.ClientCall;
import io.grpc.Metadata;
import io.grpc.Status;
import java.time.Duration;
import java.util.ArrayDeque;
import java.util.Deque;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import queue_manager.v1.Jobs;

/**
 * A live {@link QueueManager#watchJobEvents} call. Read it with {@link #next} from one thread; {@link
 * #close()} it when done. The server sends one message per moment; the next is asked for only once this
 * side has read the last, so a reader that falls behind is told by the server (RESOURCE_EXHAUSTED) rather
 * than buffered here without bound.
 */
public final class JobEventStream implements AutoCloseable {
  private final ClientCall<Jobs.WatchJobEventsRequest, Jobs.WatchJobEventsResponse> call;
  // Messages, then the call's final status, as gRPC's threads hand them over.
  private final BlockingQueue<Object> inbox = new LinkedBlockingQueue<>();
  private final CountDownLatch watching = new CountDownLatch(1);
  private final Deque<Jobs.JobEvent> pending = new ArrayDeque<>();
  private Status ended;
  private volatile boolean closed;
  private volatile boolean callEnded;

  JobEventStream(ClientCall<Jobs.WatchJobEventsRequest, Jobs.WatchJobEventsResponse> call) {
    this.call = call;
  }

  /** Starts the call; returns once the server watches the queue, or throws its refusal. */
  void start(Jobs.WatchJobEventsRequest request, Duration deadline) throws InterruptedException {
    call.start(
        new ClientCall.Listener<>() {
          @Override
          public void onHeaders(Metadata headers) {
            watching.countDown(); // the server sends its headers once it watches the queue
          }

          @Override
          public void onMessage(Jobs.WatchJobEventsResponse message) {
            inbox.add(message);
          }

          @Override
          public void onClose(Status status, Metadata trailers) {
            callEnded = true;
            inbox.add(status);
            watching.countDown();
          }
        },
        new Metadata());
    call.sendMessage(request);
    call.halfClose();
    call.request(1);
    if (!watching.await(deadline.toMillis(), TimeUnit.MILLISECONDS)) {
      call.cancel("the server did not start watching in time", null);
      throw new DeadlineExceededException("the server did not start watching the queue in time", null);
    }
    Object first = inbox.peek();
    if (first instanceof Status) {
      Status status = (Status) first;
      throw status.isOk()
          ? new QueueManagerException(
              Status.Code.UNKNOWN, "the server ended WatchJobEvents before it watched the queue", null)
          : Errors.of(status.getCode(), status.getDescription(), status.asRuntimeException());
    }
  }

  /**
   * Waits up to {@code timeout} for the next event, in the order they happened.
   *
   * @return the event; null when the timeout passed, or once the call was closed or ended by the server
   *     without an error ({@link #isOpen()} is then false)
   * @throws QueueManagerException when the server ended the call with an error: {@link NotFoundException}
   *     once the queue is deleted, {@link ResourceExhaustedException} when this reader fell behind (watch
   *     again, and read what was missed with getJob)
   */
  public JobEvent next(Duration timeout) throws InterruptedException {
    long end = System.nanoTime() + timeout.toNanos();
    while (pending.isEmpty()) {
      if (ended != null) {
        return endOfCall();
      }
      Object item = inbox.poll(Math.max(0, end - System.nanoTime()), TimeUnit.NANOSECONDS);
      if (item == null) {
        return null;
      }
      if (item instanceof Status) {
        ended = (Status) item;
      } else {
        pending.addAll(((Jobs.WatchJobEventsResponse) item).getEventsList());
        call.request(1);
      }
    }
    return new JobEvent(pending.poll());
  }

  private JobEvent endOfCall() {
    if (ended.isOk() || closed) {
      return null;
    }
    throw Errors.of(ended.getCode(), ended.getDescription(), ended.asRuntimeException());
  }

  /** Whether the call is still open: not closed, nor ended by the server (events read before may remain). */
  public boolean isOpen() {
    return !closed && !callEnded;
  }

  /** Ends the call; closing twice is harmless. */
  @Override
  public void close() {
    if (!closed) {
      closed = true;
      call.cancel("closed by the client", null);
    }
  }
}
