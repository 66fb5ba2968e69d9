package dev.queuemanager;

import java.time.Duration;
import java.time.Instant;
import java.util.List;
import java.util.Map;
import queue_manager.v1.Metrics;

/** One connected worker, as {@link QueueManager#listWorkers} reports it. */
public final class WorkerInfo {
  private final Metrics.WorkerInfo proto;

  WorkerInfo(Metrics.WorkerInfo proto) {
    this.proto = proto;
  }

  /** The worker's id (from its hello). */
  public String id() {
    return proto.getWorkerId();
  }

  /** The server whose stream it holds. */
  public String serverId() {
    return proto.getServerId();
  }

  public String host() {
    return proto.getHost();
  }

  /** Its client's language, such as {@code "java"}. */
  public String language() {
    return proto.getLanguage();
  }

  /** Its client library's version. */
  public String version() {
    return proto.getVersion();
  }

  /** The queues it takes jobs from. */
  public List<String> queues() {
    return List.copyOf(proto.getQueuesList());
  }

  /** The most jobs it runs at once. */
  public int concurrency() {
    return proto.getConcurrency();
  }

  /** The jobs it holds now. */
  public int inFlight() {
    return proto.getInFlight();
  }

  public Instant connectTime() {
    return Protos.instant(proto.getConnectTime());
  }

  /** When it last reported anything, heartbeats included. */
  public Instant lastHeartbeatTime() {
    return Protos.instant(proto.getLastHeartbeatTime());
  }

  /** Its process's CPU use, in percent of one core; 0 when it reports none. */
  public double cpuPercent() {
    return proto.getCpuPercent();
  }

  /** Its resident memory in bytes; 0 when it reports none. */
  public long memoryBytes() {
    return proto.getMemoryBytes();
  }

  /** The free labels of its hello. */
  public Map<String, String> labels() {
    return Map.copyOf(proto.getLabelsMap());
  }

  /** How long it has been connected. */
  public Duration uptime() {
    return Protos.duration(proto.getUptime());
  }

  /** Whether it takes jobs; null when the server does not say. */
  public WorkerState state() {
    return WorkerState.fromProto(proto.getState());
  }

  /** Its preference among the workers of its queues (0: the first). */
  public int tier() {
    return proto.getTier();
  }

  @Override
  public String toString() {
    return "WorkerInfo{" + id() + " " + language() + " " + queues() + "}";
  }
}
