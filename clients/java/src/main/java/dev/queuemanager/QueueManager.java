package dev.queuemanager;

import io.grpc.CallOptions;
import io.grpc.Channel;
import io.grpc.ChannelCredentials;
import io.grpc.ClientCall;
import io.grpc.ClientInterceptor;
import io.grpc.ForwardingClientCall;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.MethodDescriptor;
import io.grpc.StatusRuntimeException;
import io.grpc.TlsChannelCredentials;
import io.grpc.stub.StreamObserver;
import io.opentelemetry.api.trace.Span;
import io.opentelemetry.api.trace.TracerProvider;
import java.io.File;
import java.io.IOException;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.function.Supplier;
import queue_manager.v1.ExternalEvents;
import queue_manager.v1.Jobs;
import queue_manager.v1.Metrics;
import queue_manager.v1.Pull;
import queue_manager.v1.QueueServiceGrpc;
import queue_manager.v1.QueueServiceOuterClass;
import queue_manager.v1.Schedules;
import queue_manager.v1.Types;
import queue_manager.v1.WorkerServiceGrpc;
import queue_manager.v1.Workflows;

/**
 * The Java client of a Queue Manager server: the producer and admin calls, and {@link #newWorker} for
 * workers. Thread-safe; make one per server and {@link #close()} it at the end. Every call has the
 * builder's deadline (30 s by default) and throws a {@link QueueManagerException} (a subclass for the
 * usual codes) when the server refuses it.
 */
public final class QueueManager implements AutoCloseable {
  /** This client's version, sent in workers' hellos. */
  public static final String VERSION = "0.1.0";

  // Large enough for a bulk message of 1,000 jobs with sizeable data, as the other clients allow.
  private static final int MAX_MESSAGE_BYTES = 16 << 20;

  // How many jobs one message of the AddBulk stream carries at most.
  private static final int BULK_MESSAGE_JOBS = 1000;

  // A message also ends once its jobs' data reach about this many bytes, as the Python client splits them:
  // the transport refuses a message over MAX_MESSAGE_BYTES whole, and 1,000 jobs of up to 1 MiB each could
  // make one.
  private static final long BULK_MESSAGE_BYTES = 4 << 20;

  private final ManagedChannel channel;
  private final Duration deadline;
  private final QueueServiceGrpc.QueueServiceBlockingStub queues;
  private final QueueServiceGrpc.QueueServiceStub queuesAsync;
  final WorkerServiceGrpc.WorkerServiceStub workers;
  // The payload codecs (Codecs.java); null: payloads go and come as they are.
  final Codecs codecs;
  // The builder's tracer provider; null: the global one, read at the first add or worker start (Tracing.java).
  private final TracerProvider tracerProvider;
  // Whether tracing was decided (tracingDecided), and what it is: null when it is off.
  private volatile boolean tracingDecided;
  private Tracing tracing;

  private QueueManager(Builder b) {
    tracerProvider = b.tracerProvider;
    // Settings that cannot work are refused here, before anything connects.
    codecs = Codecs.of(b.codecs != null ? b.codecs : Codecs.fromEnv(System.getenv()));
    ChannelCredentials credentials;
    try {
      credentials = b.credentials();
    } catch (IOException e) {
      throw new IllegalArgumentException("cannot read the TLS files: " + e.getMessage(), e);
    }
    var channelBuilder =
        Grpc.newChannelBuilder(b.address, credentials)
            .maxInboundMessageSize(MAX_MESSAGE_BYTES)
            // Pings keep a quiet worker stream open through proxies; the server allows them every 10 s.
            .keepAliveTime(20, TimeUnit.SECONDS)
            .keepAliveTimeout(10, TimeUnit.SECONDS)
            .keepAliveWithoutCalls(true);
    if (!b.token.isEmpty()) {
      channelBuilder.intercept(new BearerToken(b.token));
    }
    if (codecs != null) {
      channelBuilder.intercept(new CodecInterceptor(codecs));
    }
    // A refused TLS handshake says which setting to change, as the other clients' do.
    channelBuilder.intercept(new Errors.TlsHints(b.tls));
    channel = channelBuilder.build();
    deadline = b.deadline;
    queues = QueueServiceGrpc.newBlockingStub(channel);
    queuesAsync = QueueServiceGrpc.newStub(channel);
    workers = WorkerServiceGrpc.newStub(channel);
  }

  /** A builder for a client of the server at {@code address} ({@code host:port}). */
  public static Builder builder(String address) {
    return new Builder(address);
  }

  /**
   * Registers a queue (or finds it registered) with the server's default settings.
   *
   * @param name 1 to 100 letters, digits, {@code - _ .}
   * @return the queue; {@link QueueInfo#created()} says whether this call created it
   */
  public QueueInfo registerQueue(String name) {
    var req =
        QueueServiceOuterClass.RegisterQueueRequest.newBuilder()
            .setName(Protos.queueName(name))
            .build();
    var resp = call(() -> queues().registerQueue(req));
    return new QueueInfo(resp.getQueue(), resp.getCreated());
  }

  /**
   * Registers a queue with these settings, or replaces the whole config of a registered one (as the other
   * clients do): a setting left out goes back to its default, so change one with {@code
   * getQueue(name).config().toBuilder()}. The server checks the settings and refuses a bad one with {@link
   * InvalidArgumentException} naming it.
   *
   * @param name 1 to 100 letters, digits, {@code - _ .}
   * @param config the settings; null takes the defaults
   * @return the queue as stored; {@link QueueInfo#created()} says whether this call created it
   */
  public QueueInfo registerQueue(String name, QueueConfig config) {
    var req = QueueServiceOuterClass.RegisterQueueRequest.newBuilder().setName(Protos.queueName(name));
    if (config != null) {
      req.setConfig(config.proto());
    }
    var resp = call(() -> queues().registerQueue(req.build()));
    return new QueueInfo(resp.getQueue(), resp.getCreated());
  }

  /** Pauses a queue until {@link #resumeQueue}: it starts no job; running ones finish. */
  public QueueInfo pauseQueue(String name) {
    var req = QueueServiceOuterClass.PauseQueueRequest.newBuilder().setName(Protos.queueName(name)).build();
    return new QueueInfo(call(() -> queues().pauseQueue(req)).getQueue(), false);
  }

  /** Pauses a queue for {@code resumeAfter}, after which it resumes by itself. */
  public QueueInfo pauseQueue(String name, Duration resumeAfter) {
    Protos.notNegative(resumeAfter, "resumeAfter");
    var req =
        QueueServiceOuterClass.PauseQueueRequest.newBuilder()
            .setName(Protos.queueName(name))
            .setResumeAfter(Protos.duration(resumeAfter))
            .build();
    return new QueueInfo(call(() -> queues().pauseQueue(req)).getQueue(), false);
  }

  /** Resumes a paused queue. */
  public QueueInfo resumeQueue(String name) {
    var req = QueueServiceOuterClass.ResumeQueueRequest.newBuilder().setName(Protos.queueName(name)).build();
    return new QueueInfo(call(() -> queues().resumeQueue(req)).getQueue(), false);
  }

  /**
   * Removes finished (or waiting, delayed…) jobs of a queue.
   *
   * @param state the state whose jobs go: COMPLETED, FAILED, CANCELLED, WAITING, DELAYED or PAUSED
   * @param grace only jobs older than this (finished, or added, that long ago); zero: all
   * @param limit at most this many; 0: no limit
   * @return how many were removed
   */
  public long cleanQueue(String name, JobState state, Duration grace, int limit) {
    if (state == null) {
      throw new IllegalArgumentException("cleanQueue needs the state of the jobs to remove");
    }
    if (limit < 0) {
      throw new IllegalArgumentException("the limit must not be negative, got " + limit);
    }
    var req =
        QueueServiceOuterClass.CleanQueueRequest.newBuilder()
            .setName(Protos.queueName(name))
            .setState(state.proto())
            .setGrace(Protos.duration(Protos.notNegative(grace, "the grace")))
            .setLimit(limit)
            .build();
    return call(() -> queues().cleanQueue(req)).getRemoved();
  }

  /** A queue's counts and rates. */
  public QueueMetrics getQueueMetrics(String name) {
    var req =
        QueueServiceOuterClass.GetQueueMetricsRequest.newBuilder()
            .setName(Protos.queueName(name))
            .build();
    return new QueueMetrics(call(() -> queues().getQueueMetrics(req)).getMetrics());
  }

  /** Adds a job with the queue's default options ({@link #addJob(String, String, Object, JobOptions)}). */
  public Job addJob(String queue, String name, Object data) {
    return addJob(queue, name, data, null);
  }

  /**
   * Adds one job to a registered queue.
   *
   * @param queue the queue
   * @param name the kind of work, 1 to 200 characters
   * @param data a {@code byte[]} (raw bytes), a {@link JsonText}, or any value Gson encodes as JSON; null
   *     stores JSON null
   * @param options the job's settings; null takes the queue's defaults
   * @return the job as stored; with a job id or dedup key that is held, the existing job ({@link
   *     Job#created()} false)
   */
  public Job addJob(String queue, String name, Object data, JobOptions options) {
    Protos.queueName(queue);
    Jobs.NewJob job = NewJob.of(name, data, options).proto();
    Tracing t = tracing();
    if (t == null) {
      return addJob(queue, job);
    }
    Span span = t.publish(queue, -1);
    try {
      Job added = addJob(queue, Tracing.carry(job, t.traceContext(span)));
      span.setAttribute(Tracing.MESSAGE_ID, added.id());
      return added;
    } catch (RuntimeException e) {
      Tracing.failed(span, e);
      throw e;
    } finally {
      span.end();
    }
  }

  private Job addJob(String queue, Jobs.NewJob job) {
    var req = Jobs.AddJobRequest.newBuilder().setQueueName(queue).setJob(job).build();
    var resp = call(() -> queues().addJob(req));
    return new Job(resp.getJob(), resp.getCreated());
  }

  /**
   * Adds many jobs to one queue on one stream, all or none: the server checks the whole stream before it
   * writes, and a refusal adds nothing. At most 100,000 jobs per call.
   */
  public BulkResult addBulk(String queue, List<NewJob> jobs) {
    Protos.queueName(queue); // before the stream opens, which would carry the refusal as its error
    Tracing t = tracing();
    if (t == null) {
      return addBulk(queue, jobs, null);
    }
    // One span for the whole batch, as the other clients: every job carries its context.
    Span span = t.publish(queue, jobs.size());
    try {
      return addBulk(queue, jobs, t.traceContext(span));
    } catch (RuntimeException e) {
      Tracing.failed(span, e);
      throw e;
    } finally {
      span.end();
    }
  }

  /** Sends the AddBulk stream, each job with {@code traceContext} in its attributes unless it is null. */
  private BulkResult addBulk(String queue, List<NewJob> jobs, Map<String, String> traceContext) {
    CompletableFuture<Jobs.AddBulkResponse> answer = new CompletableFuture<>();
    StreamObserver<Jobs.AddBulkResponse> observer =
        new StreamObserver<>() {
          @Override
          public void onNext(Jobs.AddBulkResponse value) {
            answer.complete(value);
          }

          @Override
          public void onError(Throwable t) {
            answer.completeExceptionally(t);
          }

          @Override
          public void onCompleted() {
            answer.completeExceptionally(
                new IllegalStateException("the server ended AddBulk without an answer"));
          }
        };
    StreamObserver<Jobs.AddBulkRequest> requests =
        queuesAsync.withDeadlineAfter(deadline.toMillis(), TimeUnit.MILLISECONDS).addBulk(observer);
    try {
      var message = Jobs.AddBulkRequest.newBuilder().setQueueName(queue);
      long size = 0;
      for (NewJob job : jobs) {
        Jobs.NewJob proto = traceContext == null ? job.proto() : Tracing.carry(job.proto(), traceContext);
        message.addJobs(proto);
        size += proto.getData().getRaw().size() + proto.getName().length() + 32;
        if (message.getJobsCount() >= BULK_MESSAGE_JOBS || size >= BULK_MESSAGE_BYTES) {
          requests.onNext(message.build());
          message = Jobs.AddBulkRequest.newBuilder().setQueueName(queue);
          size = 0;
        }
      }
      if (message.getJobsCount() > 0) {
        requests.onNext(message.build());
      }
    } catch (RuntimeException e) {
      requests.onError(e);
      throw e;
    }
    if (jobs.isEmpty()) {
      // An empty stream still names the queue, so the server can check it.
      requests.onNext(Jobs.AddBulkRequest.newBuilder().setQueueName(queue).build());
    }
    requests.onCompleted();
    Jobs.AddBulkResponse resp;
    try {
      resp = answer.get();
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new QueueManagerException(io.grpc.Status.Code.CANCELLED, "interrupted while adding", e);
    } catch (ExecutionException e) {
      if (e.getCause() instanceof StatusRuntimeException) {
        throw Errors.fromRpc((StatusRuntimeException) e.getCause());
      }
      throw new IllegalStateException(e.getCause().getMessage(), e.getCause());
    }
    return new BulkResult(resp.getJobIdsList(), resp.getCreatedCount(), resp.getReplacedCount());
  }

  /** One job, with the last lines of its log. */
  public Job getJob(String queue, String id) {
    var req = Jobs.GetJobRequest.newBuilder().setQueueName(Protos.queueName(queue)).setJobId(id).build();
    return new Job(call(() -> queues().getJob(req)).getJob(), false);
  }

  /**
   * Waits until a job has finished (completed, failed for good or cancelled) and returns it.
   *
   * @throws DeadlineExceededException when {@code timeout} passes first
   */
  public Job waitForJob(String queue, String id, Duration timeout) {
    Protos.notNegative(timeout, "the timeout");
    var req = Jobs.WaitForJobRequest.newBuilder().setQueueName(Protos.queueName(queue)).setJobId(id).build();
    return call(
        () -> {
          Iterator<Jobs.WaitForJobResponse> answers =
              queues.withDeadlineAfter(timeout.toMillis(), TimeUnit.MILLISECONDS).waitForJob(req);
          Types.Job last = null;
          while (answers.hasNext()) {
            last = answers.next().getJob();
          }
          if (last == null) {
            throw new IllegalStateException("the server ended WaitForJob without sending the job");
          }
          return new Job(last, false);
        });
  }

  /**
   * Cancels a job: a waiting or delayed one at once; a running one is stopped by its worker.
   *
   * @param reason why, kept with the job
   * @return the job as the call left it
   */
  public Job cancelJob(String queue, String id, String reason) {
    var req =
        Jobs.CancelJobRequest.newBuilder()
            .setQueueName(Protos.queueName(queue))
            .setJobId(id)
            .setReason(reason == null ? "" : reason)
            .build();
    return new Job(call(() -> queues().cancelJob(req)).getJob(), false);
  }

  /** A worker of this client (see {@link Worker}); start it with {@link Worker#start()}. */
  public Worker newWorker(WorkerOptions options) {
    return new Worker(this, options);
  }

  /** The client's tracing, decided at the first call: null when tracing is off. */
  Tracing tracing() {
    if (!tracingDecided) {
      synchronized (this) {
        if (!tracingDecided) {
          tracing = Tracing.of(tracerProvider);
          tracingDecided = true;
        }
      }
    }
    return tracing;
  }

  /** Updates a running job's data under its lease (the worker's {@link JobContext#updateData}). */
  Types.Job updateJobData(String queue, String id, String leaseToken, Object data) {
    var req =
        Jobs.UpdateJobDataRequest.newBuilder()
            .setQueueName(Protos.queueName(queue))
            .setJobId(id)
            .setLeaseToken(leaseToken);
    Types.Payload payload = Payloads.encode(data);
    if (payload != null) {
      req.setData(payload);
    }
    return call(() -> queues().updateJobData(req.build())).getJob();
  }

  /** Closes the connection, waiting up to 5 s for calls in flight. Stop workers first. */
  @Override
  public void close() {
    channel.shutdown();
    try {
      if (!channel.awaitTermination(5, TimeUnit.SECONDS)) {
        channel.shutdownNow();
      }
    } catch (InterruptedException e) {
      channel.shutdownNow();
      Thread.currentThread().interrupt();
    }
  }

  boolean isClosed() {
    return channel.isShutdown();
  }

  private QueueServiceGrpc.QueueServiceBlockingStub queues() {
    return queues.withDeadlineAfter(deadline.toMillis(), TimeUnit.MILLISECONDS);
  }

  /** Runs a call, turning a failed status into this client's exception. */
  static <T> T call(Supplier<T> rpc) {
    try {
      return rpc.get();
    } catch (StatusRuntimeException e) {
      throw Errors.fromRpc(e);
    }
  }

  /** Sends {@code authorization: Bearer <token>} with every call. */
  private static final class BearerToken implements ClientInterceptor {
    private static final Metadata.Key<String> AUTHORIZATION =
        Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER);
    private final String header;

    BearerToken(String token) {
      header = "Bearer " + token;
    }

    @Override
    public <Q, A> ClientCall<Q, A> interceptCall(
        MethodDescriptor<Q, A> method, CallOptions options, Channel next) {
      return new ForwardingClientCall.SimpleForwardingClientCall<>(next.newCall(method, options)) {
        @Override
        public void start(Listener<A> listener, Metadata headers) {
          headers.put(AUTHORIZATION, header);
          super.start(listener, headers);
        }
      };
    }
  }

  /** Settings of a {@link QueueManager}. */
  public static final class Builder {
    private final String address;
    private String token;
    private Duration deadline = Duration.ofSeconds(30);
    private File tlsCa;
    private File tlsCert;
    private File tlsKey;
    private boolean tls;
    private List<PayloadCodec> codecs;
    private TracerProvider tracerProvider;

    private Builder(String address) {
      this.address = checkAddress(address);
      // As the other clients: the token from QM_TOKEN unless one is given.
      String fromEnv = System.getenv("QM_TOKEN");
      this.token = fromEnv == null ? "" : fromEnv.strip();
    }

    /** Sends {@code authorization: Bearer <token>} on every call (default: QM_TOKEN); "" sends none. */
    public Builder token(String token) {
      if (token == null || token.chars().anyMatch(c -> c < 0x21 || c > 0x7e)) {
        throw new IllegalArgumentException("the token must be printable ASCII without spaces");
      }
      this.token = token;
      return this;
    }

    /** The deadline of each call (30 s by default); worker streams have none. */
    public Builder deadline(Duration deadline) {
      if (deadline == null || deadline.isZero() || deadline.isNegative()) {
        throw new IllegalArgumentException("the deadline must be positive, got " + deadline);
      }
      this.deadline = deadline;
      return this;
    }

    /** Connects with TLS, trusting the system's certificate authorities. */
    public Builder tls() {
      this.tls = true;
      return this;
    }

    /** Connects with TLS, trusting the certificate authority in the PEM file {@code ca}. */
    public Builder tls(File ca) {
      this.tls = true;
      this.tlsCa = ca;
      return this;
    }

    /** Connects with mutual TLS: trusts {@code ca} and shows the certificate {@code cert}/{@code key}. */
    public Builder tls(File ca, File cert, File key) {
      this.tls = true;
      this.tlsCa = ca;
      this.tlsCert = cert;
      this.tlsKey = key;
      return this;
    }

    /**
     * Encodes the payloads the client and its workers send, and decodes those they read, with these codecs
     * ({@code codecs(new GzipCodec(1024), new AesGcmCodec(keys, "k1"))}; docs/security.md). Without this call
     * the client takes them from the environment ({@link PayloadCodec#fromEnv()}); {@code codecs()} with none
     * turns that off. {@link #build()} refuses codecs in an order that cannot work (gzip after encryption,
     * one twice) with {@link IllegalArgumentException}.
     */
    public Builder codecs(PayloadCodec... codecs) {
      return codecs(List.of(codecs));
    }

    /** Encodes and decodes payloads with these codecs ({@link #codecs(PayloadCodec...)}). */
    public Builder codecs(List<PayloadCodec> codecs) {
      this.codecs = List.copyOf(codecs);
      return this;
    }

    /**
     * Traces the client's adds, and the runs of its workers, with this OpenTelemetry provider
     * (docs/observability.md "Tracing (OpenTelemetry)"). Default: the global one ({@code
     * GlobalOpenTelemetry}), read at the first add or worker start; tracing is off while none is set, or
     * with a no-op provider.
     */
    public Builder tracerProvider(TracerProvider provider) {
      this.tracerProvider = provider;
      return this;
    }

    /**
     * The client; the connection opens at the first call.
     *
     * @throws IllegalArgumentException for settings that cannot work (codecs out of order, {@code QM_CODEC_*}
     *     variables with a key that is not 32 bytes of base64, several keys and no active one), naming them
     */
    public QueueManager build() {
      return new QueueManager(this);
    }

    private ChannelCredentials credentials() throws IOException {
      if (!tls) {
        return InsecureChannelCredentials.create();
      }
      TlsChannelCredentials.Builder b = TlsChannelCredentials.newBuilder();
      if (tlsCa != null) {
        b.trustManager(tlsCa);
      }
      if (tlsCert != null) {
        b.keyManager(tlsCert, tlsKey);
      }
      return b.build();
    }

    private static String checkAddress(String address) {
      int colon = address == null ? -1 : address.lastIndexOf(':');
      if (colon <= 0) {
        throw new IllegalArgumentException("the server address must be host:port, not \"" + address + "\"");
      }
      int port;
      try {
        port = Integer.parseInt(address.substring(colon + 1));
      } catch (NumberFormatException e) {
        port = -1;
      }
      if (port < 1 || port > 65535) {
        throw new IllegalArgumentException(
            "the port of the server address \"" + address + "\" must be a number from 1 to 65535");
      }
      return address;
    }
  }

  // Jobs, queues, groups and dead letters: listing and control.

  /** The default dead-letter queue: that of every queue registered without one of its own. */
  public static final String DEAD_LETTER_QUEUE = "dead-letter-queue";

  /**
   * A page of a queue's jobs in one state ({@link #listJobsMatching} with {@link JobFilter#ALL}): waiting ones
   * by priority then age, delayed ones by run time, active ones by lease, finished ones newest first; {@link
   * Page#total()} is how many jobs were in the state when the page was read.
   *
   * @param state the state to list; required (the server refuses none)
   * @param pageSize 1 to 1,000 jobs; 0 means 100
   * @param pageToken "" for the first page, then the previous page's {@link Page#nextPageToken()}
   */
  public Page<Job> listJobs(String queue, JobState state, int pageSize, String pageToken) {
    return listJobsMatching(queue, state, JobFilter.ALL, pageSize, pageToken);
  }

  /**
   * A page of a queue's jobs in one state that match a filter. With a filter a page may hold fewer jobs
   * than {@code pageSize}, or none, and still carry a token: follow it until it is "". Pages keep {@link
   * #listJobs}'s order; {@link Page#total()} stays the number of jobs in the state, matching or not.
   */
  public Page<Job> listJobsMatching(
      String queue, JobState state, JobFilter filter, int pageSize, String pageToken) {
    var req =
        Jobs.ListJobsRequest.newBuilder()
            .setQueueName(Protos.queueName(queue))
            .setState(wire(state))
            .setPageSize(pageSize(pageSize))
            .setPageToken(pageToken == null ? "" : pageToken);
    Jobs.JobFilter f = (filter == null ? JobFilter.ALL : filter).proto();
    if (f != null) {
      req.setFilter(f);
    }
    var resp = call(() -> queues().listJobs(req.build()));
    List<Job> jobs = new ArrayList<>();
    for (Types.Job job : resp.getJobsList()) {
      jobs.add(new Job(job, false));
    }
    return new Page<>(jobs, resp.getNextPageToken(), resp.getTotalSize());
  }

  /**
   * Counts the jobs of one state that match a filter, from the state's start to its end ({@link
   * #countJobs(String, JobState, JobFilter, String, int)}).
   */
  public JobCount countJobs(String queue, JobState state, JobFilter filter) {
    return countJobs(queue, state, filter, "", 0);
  }

  /**
   * Counts the jobs of one state that match a filter, on the server (no job is sent back). With a filter
   * each call reads at most a few thousand jobs of the state, so counting follows the tokens, one call after
   * the other, to the end of the state or for at most {@code maxCalls} calls; {@link
   * JobCount#nextPageToken()} then says where to go on.
   *
   * @param pageToken where to start: "" for the state's start, or a previous count's (or listing's) token
   * @param maxCalls the most ListJobs calls; 0 means until the state's end
   */
  public JobCount countJobs(String queue, JobState state, JobFilter filter, String pageToken, int maxCalls) {
    if (maxCalls < 0) {
      throw new IllegalArgumentException("maxCalls must be at least 1 (0: until the end), got " + maxCalls);
    }
    Jobs.JobFilter f = (filter == null ? JobFilter.ALL : filter).proto();
    long count = 0;
    int calls = 0;
    String token = pageToken == null ? "" : pageToken;
    while (maxCalls == 0 || calls < maxCalls) {
      var req =
          Jobs.ListJobsRequest.newBuilder()
              .setQueueName(Protos.queueName(queue))
              .setState(wire(state))
              .setPageToken(token)
              .setCountOnly(true);
      if (f != null) {
        req.setFilter(f);
      }
      Jobs.ListJobsResponse resp = call(() -> queues().listJobs(req.build()));
      count += resp.getMatchCount();
      calls++;
      token = resp.getNextPageToken();
      if (token.isEmpty()) {
        break;
      }
    }
    return new JobCount(count, token, calls);
  }

  /** Removes a job that is not active and returns the state it was in. */
  public JobState removeJob(String queue, String id) {
    var req = Jobs.RemoveJobRequest.newBuilder().setQueueName(Protos.queueName(queue)).setJobId(id).build();
    return JobState.fromProto(call(() -> queues().removeJob(req)).getPreviousState());
  }

  /** Runs a failed or cancelled job again, its attempts counted afresh, with its data. */
  public Job retryJob(String queue, String id) {
    var req = Jobs.RetryJobRequest.newBuilder().setQueueName(Protos.queueName(queue)).setJobId(id).build();
    return new Job(call(() -> queues().retryJob(req)).getJob(), false);
  }

  /**
   * Runs a failed or cancelled job again with new data (edit and requeue): the data changes in the same
   * atomic step as the retry, so a job in another state ({@link FailedPreconditionException}) keeps its
   * data. {@code data} is encoded as {@link #addJob} encodes it, null as JSON null.
   */
  public Job retryJobWithData(String queue, String id, Object data) {
    var req =
        Jobs.RetryJobRequest.newBuilder()
            .setQueueName(Protos.queueName(queue))
            .setJobId(id)
            .setData(dataPayload(data))
            .build();
    return new Job(call(() -> queues().retryJob(req)).getJob(), false);
  }

  /** Runs every failed job of a queue again ({@link #retryFailedJobs(String, JobState)} with FAILED). */
  public long retryFailedJobs(String queue) {
    return retryFailedJobs(queue, JobState.FAILED);
  }

  /**
   * Runs every job of a queue in {@code state} (FAILED or CANCELLED; the server refuses another) again, their
   * attempts counted afresh, in one call however many there are, and returns how many. {@link #retryJobs}
   * takes a filter and a bound.
   */
  public long retryFailedJobs(String queue, JobState state) {
    var req =
        Jobs.RetryFailedJobsRequest.newBuilder()
            .setQueueName(Protos.queueName(queue))
            .setState(wire(state))
            .build();
    return call(() -> queues().retryFailedJobs(req)).getCount();
  }

  /**
   * Runs the jobs of {@code state} (FAILED or CANCELLED) that match the options' filter again, their
   * attempts counted afresh: one bounded call, newest first. Call again with the result's {@link
   * BulkActionResult#nextPageToken()} until it is "".
   */
  public BulkActionResult retryJobs(String queue, JobState state, BulkOptions options) {
    BulkOptions o = options == null ? BulkOptions.ALL : options;
    var req =
        Jobs.RetryFailedJobsRequest.newBuilder()
            .setQueueName(Protos.queueName(queue))
            .setState(wire(state))
            // A limit always, so that the call is bounded even with no filter and no token (the server runs
            // every failed job in one call when none of the three is set: retryFailedJobs).
            .setLimit(o.limit() == 0 ? BulkOptions.MAX_LIMIT : o.limit())
            .setPageToken(o.pageToken());
    Jobs.JobFilter f = o.filter().proto();
    if (f != null) {
      req.setFilter(f);
    }
    var resp = call(() -> queues().retryFailedJobs(req.build()));
    return new BulkActionResult(resp.getCount(), 0, resp.getNextPageToken());
  }

  /**
   * Cancels the jobs of one state (WAITING, PAUSED, DELAYED or ACTIVE) that match the options' filter, with
   * {@code reason} kept on each: waiting, paused and delayed ones at once ({@link BulkActionResult#count()}),
   * while an active one's worker is told to stop it ({@link BulkActionResult#requested()}). One bounded
   * call: call again with the result's token until it is "".
   */
  public BulkActionResult cancelJobs(String queue, JobState state, String reason, BulkOptions options) {
    BulkOptions o = options == null ? BulkOptions.ALL : options;
    var req =
        Jobs.CancelJobsRequest.newBuilder()
            .setQueueName(Protos.queueName(queue))
            .setState(wire(state))
            .setLimit(o.limit())
            .setPageToken(o.pageToken())
            .setReason(reason == null ? "" : reason);
    Jobs.JobFilter f = o.filter().proto();
    if (f != null) {
      req.setFilter(f);
    }
    var resp = call(() -> queues().cancelJobs(req.build()));
    return new BulkActionResult(resp.getCount(), resp.getRequestedCount(), resp.getNextPageToken());
  }

  /**
   * Removes the jobs of one state (any but ACTIVE: cancel those first) that match the options' filter. One
   * bounded call: call again with the result's token until it is "".
   */
  public BulkActionResult removeJobs(String queue, JobState state, BulkOptions options) {
    BulkOptions o = options == null ? BulkOptions.ALL : options;
    var req =
        Jobs.RemoveJobsRequest.newBuilder()
            .setQueueName(Protos.queueName(queue))
            .setState(wire(state))
            .setLimit(o.limit())
            .setPageToken(o.pageToken());
    Jobs.JobFilter f = o.filter().proto();
    if (f != null) {
      req.setFilter(f);
    }
    var resp = call(() -> queues().removeJobs(req.build()));
    return new BulkActionResult(resp.getCount(), 0, resp.getNextPageToken());
  }

  /** Makes a delayed job waiting now. */
  public Job promoteJob(String queue, String id) {
    var req = Jobs.PromoteJobRequest.newBuilder().setQueueName(Protos.queueName(queue)).setJobId(id).build();
    return new Job(call(() -> queues().promoteJob(req)).getJob(), false);
  }

  /**
   * Replaces the data of a job that has not finished (waiting, paused, delayed or active): a running attempt
   * keeps the data it was given, the next attempt gets the new data. {@code data} is encoded as {@link
   * #addJob} encodes it, null as JSON null. A finished job gives {@link FailedPreconditionException}.
   */
  public Job updateJobData(String queue, String id, Object data) {
    var req =
        Jobs.UpdateJobDataRequest.newBuilder()
            .setQueueName(Protos.queueName(queue))
            .setJobId(id)
            .setData(dataPayload(data))
            .build();
    return new Job(call(() -> queues().updateJobData(req)).getJob(), false);
  }

  /**
   * Changes when a delayed job runs, to {@code delay} from now (the Redis server's clock); a waiting (or
   * paused) job becomes delayed until then. Zero makes a delayed job waiting now and leaves a waiting one as
   * it is. An active or finished job gives {@link FailedPreconditionException} naming its state.
   */
  public Job rescheduleJob(String queue, String id, Duration delay) {
    Protos.notNegative(delay, "the delay");
    var req =
        Jobs.RescheduleJobRequest.newBuilder()
            .setQueueName(Protos.queueName(queue))
            .setJobId(id)
            .setDelay(Protos.duration(delay))
            .build();
    return new Job(call(() -> queues().rescheduleJob(req)).getJob(), false);
  }

  /**
   * {@link #rescheduleJob} to a time: one that has come (by the Redis server's clock) makes a delayed job
   * waiting now and leaves a waiting one as it is.
   */
  public Job rescheduleJobAt(String queue, String id, Instant at) {
    if (at == null) {
      throw new IllegalArgumentException("rescheduleJobAt needs the time to run at");
    }
    var req =
        Jobs.RescheduleJobRequest.newBuilder()
            .setQueueName(Protos.queueName(queue))
            .setJobId(id)
            .setRunTime(Protos.timestamp(at))
            .build();
    return new Job(call(() -> queues().rescheduleJob(req)).getJob(), false);
  }

  /** Gives a waiting or delayed job a new priority (a waiting job keeps its age within the new level). */
  public Job changeJobPriority(String queue, String id, JobPriority priority) {
    if (priority == null) {
      throw new IllegalArgumentException("changeJobPriority needs the new priority");
    }
    var req =
        Jobs.ChangeJobPriorityRequest.newBuilder()
            .setQueueName(Protos.queueName(queue))
            .setJobId(id)
            .setPriority(priority.proto())
            .build();
    return new Job(call(() -> queues().changeJobPriority(req)).getJob(), false);
  }

  /**
   * A page of a job's log lines, oldest first; {@link Page#total()} is how many lines are kept for the job
   * (its last 1,000).
   *
   * @param pageSize 1 to 1,000 lines; 0 means 100
   * @param pageToken "" for the first page, then the previous page's {@link Page#nextPageToken()}
   */
  public Page<LogLine> getJobLogs(String queue, String id, int pageSize, String pageToken) {
    var req =
        Jobs.GetJobLogsRequest.newBuilder()
            .setQueueName(Protos.queueName(queue))
            .setJobId(id)
            .setPageSize(pageSize(pageSize))
            .setPageToken(pageToken == null ? "" : pageToken)
            .build();
    var resp = call(() -> queues().getJobLogs(req));
    List<LogLine> lines = new ArrayList<>();
    for (Types.JobLogLine line : resp.getLinesList()) {
      lines.add(new LogLine(line));
    }
    return new Page<>(lines, resp.getNextPageToken(), resp.getTotalSize());
  }

  /** One queue, with its settings ({@link QueueInfo#config()}). */
  public QueueInfo getQueue(String name) {
    var req = QueueServiceOuterClass.GetQueueRequest.newBuilder().setName(Protos.queueName(name)).build();
    return new QueueInfo(call(() -> queues().getQueue(req)).getQueue(), false);
  }

  /** Every registered queue, dead-letter queues included, sorted by name. */
  public List<QueueInfo> listQueues() {
    var resp = call(() -> queues().listQueues(QueueServiceOuterClass.ListQueuesRequest.getDefaultInstance()));
    List<QueueInfo> out = new ArrayList<>();
    for (Types.Queue q : resp.getQueuesList()) {
      out.add(new QueueInfo(q, false));
    }
    return Collections.unmodifiableList(out);
  }

  /**
   * Removes every waiting (or paused) job of a queue, and the delayed ones too with {@code includeDelayed};
   * returns how many it removed.
   */
  public long drainQueue(String name, boolean includeDelayed) {
    var req =
        QueueServiceOuterClass.DrainQueueRequest.newBuilder()
            .setName(Protos.queueName(name))
            .setIncludeDelayed(includeDelayed)
            .build();
    return call(() -> queues().drainQueue(req)).getRemoved();
  }

  /**
   * Deletes a queue and all its jobs, and returns how many jobs went. While jobs are active it is refused
   * ({@link FailedPreconditionException}) unless {@code force} (their workers' outcomes are then rejected).
   */
  public long obliterateQueue(String name, boolean force) {
    var req =
        QueueServiceOuterClass.ObliterateQueueRequest.newBuilder()
            .setName(Protos.queueName(name))
            .setForce(force)
            .build();
    return call(() -> queues().obliterateQueue(req)).getRemoved();
  }

  /**
   * The connected workers (of every server of a cluster), by worker id.
   *
   * @param queue only those taking jobs of this queue; "" or null for all
   */
  public List<WorkerInfo> listWorkers(String queue) {
    var req = Metrics.ListWorkersRequest.newBuilder().setQueueName(queue == null ? "" : queue).build();
    List<WorkerInfo> out = new ArrayList<>();
    for (Metrics.WorkerInfo w : call(() -> queues().listWorkers(req)).getWorkersList()) {
      out.add(new WorkerInfo(w));
    }
    return Collections.unmodifiableList(out);
  }

  /** The metrics of every registered queue, by queue name (one read of the store). */
  public List<QueueMetrics> getAllMetrics() {
    var resp = call(() -> queues().getAllMetrics(Metrics.GetAllMetricsRequest.getDefaultInstance()));
    List<QueueMetrics> out = new ArrayList<>();
    for (Types.QueueMetrics m : resp.getMetricsList()) {
      out.add(new QueueMetrics(m));
    }
    return Collections.unmodifiableList(out);
  }

  /**
   * A page of a queue's fairness groups, by name: those with jobs, with limits of their own, or paused;
   * {@link Page#total()} is how many groups the queue knows.
   *
   * @param pageSize 1 to 1,000 groups; 0 means 100
   * @param pageToken "" for the first page, then the previous page's {@link Page#nextPageToken()}
   */
  public Page<GroupInfo> listGroups(String queue, int pageSize, String pageToken) {
    var req =
        QueueServiceOuterClass.ListGroupsRequest.newBuilder()
            .setQueueName(Protos.queueName(queue))
            .setPageSize(pageSize(pageSize))
            .setPageToken(pageToken == null ? "" : pageToken)
            .build();
    var resp = call(() -> queues().listGroups(req));
    List<GroupInfo> groups = new ArrayList<>();
    for (Types.GroupInfo group : resp.getGroupsList()) {
      groups.add(new GroupInfo(group));
    }
    return new Page<>(groups, resp.getNextPageToken(), resp.getTotalSize());
  }

  /**
   * Gives one fairness group limits of its own, replacing the queue's group limits for it, and returns the
   * group as it is now (known to the queue even while it has no jobs).
   *
   * @param windows the group's own maintenance windows (none: none), at most 16: while the server's clock is
   *     inside one, none of the group's jobs starts while the queue's other groups run
   */
  public GroupInfo setGroupLimits(
      String queue, String group, GroupLimits limits, MaintenanceWindow... windows) {
    if (limits == null) {
      throw new IllegalArgumentException("setGroupLimits needs the limits (clearGroupLimits removes them)");
    }
    var req =
        QueueServiceOuterClass.SetGroupLimitsRequest.newBuilder()
            .setQueueName(Protos.queueName(queue))
            .setGroup(group)
            .setLimits(limits.proto(List.of(windows)))
            .build();
    return new GroupInfo(call(() -> queues().setGroupLimits(req)).getGroup());
  }

  /**
   * Removes a group's own limits: the queue's group limits apply to it again, and a group with no jobs is
   * forgotten. Returns the group as it is now.
   */
  public GroupInfo clearGroupLimits(String queue, String group) {
    var req =
        QueueServiceOuterClass.SetGroupLimitsRequest.newBuilder()
            .setQueueName(Protos.queueName(queue))
            .setGroup(group)
            .setClear(true)
            .build();
    return new GroupInfo(call(() -> queues().setGroupLimits(req)).getGroup());
  }

  /**
   * Pauses one fairness group until {@link #resumeGroup}: its jobs are still added but none starts; its
   * active jobs run on and the queue's other groups keep their turns. The group need not have jobs.
   */
  public GroupInfo pauseGroup(String queue, String group) {
    return pauseGroup(
        QueueServiceOuterClass.PauseGroupRequest.newBuilder()
            .setQueueName(Protos.queueName(queue))
            .setGroup(group));
  }

  /** Pauses a fairness group for {@code resumeAfter} (more than 0, at most 366 days), then it resumes. */
  public GroupInfo pauseGroup(String queue, String group, Duration resumeAfter) {
    Protos.notNegative(resumeAfter, "resumeAfter");
    return pauseGroup(
        QueueServiceOuterClass.PauseGroupRequest.newBuilder()
            .setQueueName(Protos.queueName(queue))
            .setGroup(group)
            .setResumeAfter(Protos.duration(resumeAfter)));
  }

  /** Pauses a fairness group until {@code resumeAt} (ahead by the server's clock, at most 366 days). */
  public GroupInfo pauseGroupUntil(String queue, String group, Instant resumeAt) {
    if (resumeAt == null) {
      throw new IllegalArgumentException("pauseGroupUntil needs the time to resume at");
    }
    return pauseGroup(
        QueueServiceOuterClass.PauseGroupRequest.newBuilder()
            .setQueueName(Protos.queueName(queue))
            .setGroup(group)
            .setResumeAt(Protos.timestamp(resumeAt)));
  }

  private GroupInfo pauseGroup(QueueServiceOuterClass.PauseGroupRequest.Builder req) {
    return new GroupInfo(call(() -> queues().pauseGroup(req.build())).getGroup());
  }

  /** Resumes a paused fairness group: its waiting jobs take their turns again at once. */
  public GroupInfo resumeGroup(String queue, String group) {
    var req =
        QueueServiceOuterClass.ResumeGroupRequest.newBuilder()
            .setQueueName(Protos.queueName(queue))
            .setGroup(group)
            .build();
    return new GroupInfo(call(() -> queues().resumeGroup(req)).getGroup());
  }

  /**
   * A page of the copies in dead-letter queue {@code dlq} in one state (null: WAITING), each read as its
   * original's queue, id, name, data and why it failed. Jobs of the queue that are not copies are left out,
   * so a page may hold fewer than {@code pageSize}: follow the token until it is "". {@link Page#total()} is
   * how many jobs (copies or not) were in the state when the page was read.
   *
   * @param pageSize 1 to 1,000 jobs; 0 means 100
   */
  public Page<DeadLetter> listDeadLetters(String dlq, JobState state, int pageSize, String pageToken) {
    Page<Job> page = listJobs(dlq, state == null ? JobState.WAITING : state, pageSize, pageToken);
    List<DeadLetter> copies = new ArrayList<>();
    for (Job job : page.items()) {
      DeadLetter copy = DeadLetter.fromJob(job);
      if (copy != null) {
        copies.add(copy);
      }
    }
    return new Page<>(copies, page.nextPageToken(), page.total());
  }

  /**
   * Sends copies in dead-letter queue {@code dlq} back to their original queues: a failed original runs
   * again, one that retention removed is added anew, one run again meanwhile is left as it is; each copy
   * leaves the dead-letter queue. A queue that is no queue's dead-letter queue, or options that do not fit
   * together, give {@link InvalidArgumentException}.
   */
  public RedriveResult redriveDeadLetters(String dlq, RedriveOptions options) {
    var req = (options == null ? RedriveOptions.ALL : options).proto(dlq);
    return new RedriveResult(call(() -> queues().redriveDeadLetters(req)));
  }

  /** The wire value of a state; unset for null, which the server refuses or defaults as each call says. */
  private static Types.JobState wire(JobState state) {
    return state == null ? Types.JobState.JOB_STATE_UNSPECIFIED : state.proto();
  }

  /** A page size for the wire: the server checks the range (1 to 1,000; 0 means 100). */
  private static int pageSize(int pageSize) {
    if (pageSize < 0) {
      throw new IllegalArgumentException("the page size must be from 0 to 1000, got " + pageSize);
    }
    return pageSize;
  }

  /** New data for a job, null as JSON null: the server requires data in the request. */
  private static Types.Payload dataPayload(Object data) {
    return Payloads.encode(data == null ? JsonText.of("null") : data);
  }

  // Workflows, schedules, events and pull workers.

  /** Starts a run of a workflow with a new random run id ({@link #executeWorkflow(Workflow, String)}). */
  public WorkflowExecution executeWorkflow(Workflow workflow) {
    return executeWorkflow(workflow, "");
  }

  /**
   * Starts a run of a workflow and returns its id at once: its root steps' jobs are added, and each further
   * step's when its branch fires and what it depends on completed.
   *
   * @param runId the run's id (1 to 100 letters, digits, {@code - _ .}); executing again with a run id that
   *     exists starts nothing ({@link WorkflowExecution#created()} false); "" means a new random id
   */
  public WorkflowExecution executeWorkflow(Workflow workflow, String runId) {
    if (workflow == null) {
      throw new IllegalArgumentException("executeWorkflow needs a workflow");
    }
    var req =
        Workflows.ExecuteWorkflowRequest.newBuilder()
            .setWorkflow(workflow.proto())
            .setRunId(runId == null ? "" : runId)
            .build();
    var resp = call(() -> stub().executeWorkflow(req));
    return new WorkflowExecution(resp.getRunId(), resp.getCreated());
  }

  /** A workflow run with every step. */
  public WorkflowRun getWorkflow(String runId) {
    var req = Workflows.GetWorkflowRequest.newBuilder().setRunId(runId).build();
    return new WorkflowRun(call(() -> stub().getWorkflow(req)).getRun());
  }

  /**
   * A page of workflow runs, newest first, without their steps ({@link #getWorkflow} has them). The pages
   * follow a cursor, so runs started while a caller pages shift nothing; {@link Page#total()} is how many runs
   * the server keeps.
   *
   * @param pageSize 1 to 1,000; 0 means 100
   * @param pageToken "" for the first page, then the previous page's {@link Page#nextPageToken()}
   */
  public Page<WorkflowRun> listWorkflows(int pageSize, String pageToken) {
    if (pageSize < 0) {
      throw new IllegalArgumentException("the page size must be from 0 to 1000, got " + pageSize);
    }
    var req =
        Workflows.ListWorkflowsRequest.newBuilder()
            .setPageSize(pageSize)
            .setPageToken(pageToken == null ? "" : pageToken)
            .build();
    var resp = call(() -> stub().listWorkflows(req));
    List<WorkflowRun> runs = new ArrayList<>();
    for (Workflows.WorkflowRun run : resp.getRunsList()) {
      runs.add(new WorkflowRun(run));
    }
    return new Page<>(runs, resp.getNextPageToken(), resp.getTotalSize());
  }

  /**
   * Cancels a run: no further step starts, and its waiting and active step jobs are cancelled.
   *
   * @param reason why, kept with the run
   * @return the run after the cancel
   */
  public WorkflowRun cancelWorkflow(String runId, String reason) {
    var req =
        Workflows.CancelWorkflowRequest.newBuilder()
            .setRunId(runId)
            .setReason(reason == null ? "" : reason)
            .build();
    return new WorkflowRun(call(() -> stub().cancelWorkflow(req)).getRun());
  }

  /**
   * Runs the job of every failed (or cancelled) step of a failed run again, in one call: the steps start
   * again, the steps skipped because of them are pending again, and the run is running until they finish.
   *
   * @throws NotFoundException for an unknown run
   * @throws FailedPreconditionException for a run that is running, completed or cancelled, or whose failed
   *     step's job no longer exists (the message names it)
   */
  public WorkflowRun retryWorkflow(String runId) {
    var req = Workflows.RetryWorkflowRequest.newBuilder().setRunId(runId).build();
    return new WorkflowRun(call(() -> stub().retryWorkflow(req)).getRun());
  }

  /**
   * Creates a schedule, or replaces the one of the same queue and id (its run count is kept).
   *
   * @return the schedule as stored, with its next run time; {@link Schedule#created()} says whether it is
   *     new
   */
  public Schedule upsertSchedule(Schedule schedule) {
    if (schedule == null) {
      throw new IllegalArgumentException("upsertSchedule needs a schedule");
    }
    var req = Schedules.UpsertScheduleRequest.newBuilder().setSchedule(schedule.proto()).build();
    var resp = call(() -> stub().upsertSchedule(req));
    return new Schedule(resp.getSchedule(), resp.getCreated());
  }

  /** One schedule. */
  public Schedule getSchedule(String queue, String id) {
    var req =
        Schedules.GetScheduleRequest.newBuilder()
            .setQueueName(Protos.queueName(queue))
            .setScheduleId(id)
            .build();
    return new Schedule(call(() -> stub().getSchedule(req)).getSchedule(), false);
  }

  /** The schedules of a queue ("" for every queue), by queue then id. */
  public List<Schedule> listSchedules(String queue) {
    var req = Schedules.ListSchedulesRequest.newBuilder().setQueueName(queue == null ? "" : queue).build();
    List<Schedule> out = new ArrayList<>();
    for (Schedules.Schedule s : call(() -> stub().listSchedules(req)).getSchedulesList()) {
      out.add(new Schedule(s, false));
    }
    return List.copyOf(out);
  }

  /** Deletes a schedule (the jobs it already added stay) and returns it as it was. */
  public Schedule deleteSchedule(String queue, String id) {
    var req =
        Schedules.DeleteScheduleRequest.newBuilder()
            .setQueueName(Protos.queueName(queue))
            .setScheduleId(id)
            .build();
    return new Schedule(call(() -> stub().deleteSchedule(req)).getSchedule(), false);
  }

  /**
   * Pushes an external event: every job waiting for {@code key} goes back to waiting at once (its next run
   * sees the event), and every event trigger matching the key adds a job with the event's data.
   *
   * @param data as {@link #addJob} takes it; null: no data
   * @param eventId when not "", makes the push safe to repeat within 24 hours (a webhook's retries): a repeat
   *     changes nothing and answers as the first push did ({@link PushedEvent#duplicate()})
   * @throws InvalidArgumentException for a bad key or oversized data
   */
  public PushedEvent pushEvent(String key, Object data, String eventId) {
    var req =
        ExternalEvents.PushEventRequest.newBuilder()
            .setKey(key == null ? "" : key)
            .setEventId(eventId == null ? "" : eventId);
    Types.Payload payload = Payloads.encode(data);
    if (payload != null) {
      req.setData(payload);
    }
    return new PushedEvent(call(() -> stub().pushEvent(req.build())));
  }

  /**
   * Creates an event trigger, or replaces the one of that id (keeping its create time).
   *
   * @return the trigger as stored; {@link EventTrigger#created()} says whether it is new
   * @throws NotFoundException when its queue is not registered
   * @throws FailedPreconditionException for the server's 1,000th trigger, or on a Redis Cluster
   */
  public EventTrigger upsertEventTrigger(EventTrigger trigger) {
    if (trigger == null) {
      throw new IllegalArgumentException("upsertEventTrigger needs a trigger");
    }
    var req = ExternalEvents.UpsertEventTriggerRequest.newBuilder().setTrigger(trigger.proto()).build();
    var resp = call(() -> stub().upsertEventTrigger(req));
    return new EventTrigger(resp.getTrigger(), resp.getCreated());
  }

  /** The event triggers of a queue ("" for every queue), by id. */
  public List<EventTrigger> listEventTriggers(String queue) {
    var req =
        ExternalEvents.ListEventTriggersRequest.newBuilder().setQueueName(queue == null ? "" : queue).build();
    List<EventTrigger> out = new ArrayList<>();
    for (ExternalEvents.EventTrigger t : call(() -> stub().listEventTriggers(req)).getTriggersList()) {
      out.add(new EventTrigger(t, false));
    }
    return List.copyOf(out);
  }

  /** Deletes an event trigger (the jobs it added stay) and returns it as it was. */
  public EventTrigger deleteEventTrigger(String id) {
    var req = ExternalEvents.DeleteEventTriggerRequest.newBuilder().setTriggerId(id).build();
    return new EventTrigger(call(() -> stub().deleteEventTrigger(req)).getTrigger(), false);
  }

  /**
   * Pull workers (no stream): leases up to {@code options}' most jobs ready in a queue, as a stream worker's
   * claim does (pause, priorities, rate limits, group limits and caps apply; jobs routed by worker labels
   * are never fetched), waiting up to its wait for a first one. Each {@link PulledJob} then completes,
   * fails, extends or reports itself.
   *
   * @return the jobs; empty when none came before the wait ran out
   * @throws NotFoundException for an unknown queue
   */
  public List<PulledJob> fetchJobs(String queue, FetchOptions options) {
    FetchOptions o = options == null ? FetchOptions.builder().build() : options;
    var req =
        Pull.FetchJobsRequest.newBuilder()
            .setQueueName(Protos.queueName(queue))
            .setMaxJobs(o.maxJobs)
            .setWait(Protos.duration(o.waitFor))
            .setWorkerName(o.workerName);
    if (!o.lease.isZero()) {
      req.setLeaseDuration(Protos.duration(o.lease));
    }
    // A long poll holds the call for its wait: the call's deadline runs from the end of it.
    long millis = deadline.plus(o.waitFor).toMillis();
    var resp =
        call(() -> queues.withDeadlineAfter(millis, TimeUnit.MILLISECONDS).fetchJobs(req.build()));
    long now = System.nanoTime();
    List<PulledJob> jobs = new ArrayList<>();
    for (var leased : resp.getJobsList()) {
      jobs.add(new PulledJob(this, leased, now));
    }
    return List.copyOf(jobs);
  }

  /**
   * A fetched job taken up by its lease, maybe in another process than the fetch's (a shell script's {@code
   * qm pull fetch}, a function handed the id and token), to {@link PulledJob#complete complete}, {@link
   * PulledJob#fail fail}, {@link PulledJob#extendLease extend} or {@link PulledJob#reportProgress report on}
   * it. Makes no call: its job holds only its id and queue ({@link #getJob} reads the rest), its lease expiry
   * is null until {@link PulledJob#extendLease}, and its outcome carries no duration (the server measures the
   * run from its fetch). A stale token is refused by each call with {@link FailedPreconditionException}.
   *
   * @param queue the job's queue
   * @param id the job's id
   * @param leaseToken the lease token its fetch gave
   * @throws IllegalArgumentException for an empty queue, id or token
   */
  public PulledJob pulledJob(String queue, String id, String leaseToken) {
    for (String[] arg : new String[][] {{"queue", queue}, {"job id", id}, {"lease token", leaseToken}}) {
      if (arg[1] == null || arg[1].isEmpty()) {
        throw new IllegalArgumentException("the " + arg[0] + " must not be empty");
      }
    }
    return new PulledJob(this, queue, id, leaseToken);
  }

  /**
   * Delivers nothing more to a worker until {@link #resumeWorker}; it runs what it holds and stays
   * connected.
   *
   * @param workerId the worker's id (as ListWorkers and {@link Worker#id()} show it)
   * @throws NotFoundException when no live server holds a stream of the worker
   * @throws FailedPreconditionException when the worker does not take the command (its hello lists none) or
   *     is stopping
   */
  public WorkerControlResult quietWorker(String workerId) {
    return controlWorker(workerId, QueueServiceOuterClass.WorkerControlAction.WORKER_CONTROL_ACTION_QUIET, 0);
  }

  /** Delivers to a quiet worker again (errors as {@link #quietWorker}). */
  public WorkerControlResult resumeWorker(String workerId) {
    return controlWorker(
        workerId, QueueServiceOuterClass.WorkerControlAction.WORKER_CONTROL_ACTION_RESUME, 0);
  }

  /**
   * Stops a worker: it finishes (within its shutdown timeout) or releases what it holds, then ends without
   * reconnecting (errors as {@link #quietWorker}).
   */
  public WorkerControlResult stopWorker(String workerId) {
    return controlWorker(workerId, QueueServiceOuterClass.WorkerControlAction.WORKER_CONTROL_ACTION_STOP, 0);
  }

  /**
   * Makes a worker run at most {@code concurrency} jobs at once from now on (1 to 100,000); a lower value
   * takes effect as its running jobs finish (errors as {@link #quietWorker}).
   */
  public WorkerControlResult setWorkerConcurrency(String workerId, int concurrency) {
    if (concurrency < 1 || concurrency > WorkerOptions.MAX_CONCURRENCY) {
      throw new IllegalArgumentException(
          "the concurrency must be from 1 to " + WorkerOptions.MAX_CONCURRENCY + ", got " + concurrency);
    }
    return controlWorker(
        workerId,
        QueueServiceOuterClass.WorkerControlAction.WORKER_CONTROL_ACTION_SET_CONCURRENCY,
        concurrency);
  }

  private WorkerControlResult controlWorker(
      String workerId, QueueServiceOuterClass.WorkerControlAction action, int concurrency) {
    if (workerId == null || workerId.isEmpty()) {
      throw new IllegalArgumentException("the worker id is empty (ListWorkers gives the ids)");
    }
    var req =
        QueueServiceOuterClass.ControlWorkerRequest.newBuilder()
            .setWorkerId(workerId)
            .setAction(action)
            .setConcurrency(concurrency)
            .build();
    var resp = call(() -> stub().controlWorker(req));
    return new WorkerControlResult(
        resp.getServerId(),
        WorkerControlResult.State.fromProto(resp.getState()),
        resp.getConcurrency(),
        resp.getChanged());
  }

  /** Follows every job event of a queue ({@link #watchJobEvents(String, Set, List)}). */
  public JobEventStream watchJobEvents(String queue) throws InterruptedException {
    return watchJobEvents(queue, Set.of(), List.of());
  }

  /**
   * Follows a queue's job events live (added, active, progress, completed, failed, retrying…), as BullMQ's
   * QueueEvents does. Returns once the server watches the queue: every event from then on is in the
   * stream, so an add made after it returns is seen. The feed is at most once and never replayed (Redis
   * pub/sub): {@link #getJob} and {@link #waitForJob} give a job's durable state (docs/events.md).
   *
   * @param types the event types to send; empty: every type
   * @param jobNames only events of jobs with these names; empty: every job
   * @throws NotFoundException for an unknown queue
   */
  public JobEventStream watchJobEvents(String queue, Set<JobEvent.Type> types, List<String> jobNames)
      throws InterruptedException {
    var req = Jobs.WatchJobEventsRequest.newBuilder().setQueueName(Protos.queueName(queue));
    for (JobEvent.Type type : types) {
      req.addTypes(type.proto());
    }
    for (String name : jobNames) {
      if (name == null || name.isEmpty()) {
        throw new IllegalArgumentException("a job name to watch is 1 to 200 characters, got an empty one");
      }
      req.addJobNames(name);
    }
    // No deadline: the call lasts until the stream is closed or the server ends it.
    var stream =
        new JobEventStream(channel.newCall(QueueServiceGrpc.getWatchJobEventsMethod(), CallOptions.DEFAULT));
    stream.start(req.build(), deadline);
    return stream;
  }

  /** The blocking stub with this client's deadline, for the calls of the classes it returns. */
  QueueServiceGrpc.QueueServiceBlockingStub stub() {
    return queues();
  }
}
