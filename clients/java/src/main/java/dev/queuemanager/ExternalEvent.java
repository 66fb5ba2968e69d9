package dev.queuemanager;

import java.lang.reflect.Type;
import java.nio.charset.StandardCharsets;
import java.time.Instant;
import queue_manager.v1.Types;

/** The external event that ended a job's last {@link JobContext#waitForEvent} ({@link Job#event()}). */
public final class ExternalEvent {
  private final Types.ExternalEvent proto;
  private final byte[] data;
  private final String contentType;

  ExternalEvent(Types.ExternalEvent proto) {
    this.proto = proto;
    this.data = proto.hasData() ? Payloads.body(proto.getData()) : null;
    this.contentType = proto.hasData() ? Payloads.contentType(proto.getData()) : null;
  }

  /** The event's key (one of the keys the job waited for). */
  public String key() {
    return proto.getKey();
  }

  /** The event's id, as pushed; "" when none was given. */
  public String eventId() {
    return proto.getEventId();
  }

  /** When the server recorded the push. */
  public Instant pushedAt() {
    return Protos.instant(proto.getPushedAt());
  }

  /** The data's bytes; null when the event has none. */
  public byte[] data() {
    return data == null ? null : data.clone();
  }

  /** The data's JSON text; null when the event has none. */
  public String dataJson() {
    if (data == null) {
      return null;
    }
    if (!Payloads.isJson(contentType)) {
      throw new IllegalStateException("the event's data is not JSON but " + contentType);
    }
    return new String(data, StandardCharsets.UTF_8);
  }

  /** The JSON data decoded by Gson into a class. */
  public <T> T data(Class<T> type) {
    return Payloads.decode(data, contentType, type, "the event's data");
  }

  /** The JSON data decoded by Gson into {@code type} (a {@code TypeToken}'s type, for generics). */
  public <T> T data(Type type) {
    return Payloads.decode(data, contentType, type, "the event's data");
  }

  @Override
  public String toString() {
    return "ExternalEvent{" + key() + "}";
  }
}
