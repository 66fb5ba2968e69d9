package dev.queuemanager;

import java.time.Duration;
import queue_manager.v1.Types;

/**
 * A deduplication key (scoped to the queue): while it is held, adding a job with the same key does not
 * make a new job; what it does instead is the {@link Mode}.
 */
public final class Dedup {
  /** What an add does while its key is held. */
  public enum Mode {
    /** The add is ignored and answered with the job holding the key (the default). */
    KEEP_FIRST,
    /** The add is ignored and the key's TTL starts again (a sliding window); needs a TTL. */
    EXTEND,
    /**
     * The job holding the key, while it has not started, takes the add's name and data and its TTL starts
     * again (debounce); once it started, the add makes a new job, which takes the key.
     */
    REPLACE
  }

  private final String key;
  private final Duration ttl;
  private final Mode mode;

  private Dedup(String key, Duration ttl, Mode mode) {
    this.key = key;
    this.ttl = ttl;
    this.mode = mode;
  }

  /** A key held until the job that took it finishes. */
  public static Dedup of(String key) {
    return new Dedup(key, Duration.ZERO, Mode.KEEP_FIRST);
  }

  /** A key held for {@code ttl} from the first add (zero: until that job finishes). */
  public static Dedup of(String key, Duration ttl) {
    return new Dedup(key, Protos.notNegative(ttl, "the dedup TTL"), Mode.KEEP_FIRST);
  }

  /** This key with another mode. */
  public Dedup withMode(Mode mode) {
    if (mode == null) {
      throw new IllegalArgumentException("the dedup mode is null");
    }
    return new Dedup(key, ttl, mode);
  }

  public String key() {
    return key;
  }

  /** How long the key is held; zero: until its job finishes. */
  public Duration ttl() {
    return ttl;
  }

  public Mode mode() {
    return mode;
  }

  Types.Dedup proto() {
    Types.Dedup.Builder b = Types.Dedup.newBuilder().setKey(key == null ? "" : key);
    if (!ttl.isZero()) {
      b.setTtl(Protos.duration(ttl));
    }
    switch (mode) {
      case EXTEND:
        b.setMode(Types.DedupMode.DEDUP_MODE_EXTEND);
        break;
      case REPLACE:
        b.setMode(Types.DedupMode.DEDUP_MODE_REPLACE);
        break;
      default:
        b.setMode(Types.DedupMode.DEDUP_MODE_KEEP_FIRST);
    }
    return b.build();
  }

  static Dedup fromProto(Types.Dedup d) {
    Mode mode = Mode.KEEP_FIRST;
    if (d.getMode() == Types.DedupMode.DEDUP_MODE_EXTEND) {
      mode = Mode.EXTEND;
    } else if (d.getMode() == Types.DedupMode.DEDUP_MODE_REPLACE) {
      mode = Mode.REPLACE;
    }
    return new Dedup(d.getKey(), Protos.duration(d.getTtl()), mode);
  }
}
