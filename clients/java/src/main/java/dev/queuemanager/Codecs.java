package dev.queuemanager;

import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParseException;
import com.google.gson.JsonParser;
import com.google.gson.JsonPrimitive;
import com.google.protobuf.ByteString;
import com.google.protobuf.Descriptors.FieldDescriptor;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.protobuf.Message;
import com.google.protobuf.Value;
import com.google.protobuf.util.JsonFormat;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Base64;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.UnaryOperator;
import queue_manager.v1.Types;
import queue_manager.v1.Workflows;

/**
 * The payload codecs of one client: job data and results compressed (gzip) and encrypted (AES-256-GCM)
 * before they leave this process, and decoded when they come back; the server stores them byte for byte. A
 * client with codecs encodes every payload it sends (adds, workflow steps, schedules, retries, redrives,
 * data updates; its workers' results, checkpoints and children) and decodes every payload it reads (jobs,
 * results, parents' and children's outcomes, workflow steps, dead-letter copies). A payload that is not
 * encoded passes through either way. The wire format is in {@link EncodedPayloadInfo} and docs/security.md.
 */
final class Codecs {
  private final GzipCodec gzip;
  private final AesGcmCodec aes;

  private Codecs(GzipCodec gzip, AesGcmCodec aes) {
    this.gzip = gzip;
    this.aes = aes;
  }

  /** The chain of codecs, checked for their order; null when there are none. */
  static Codecs of(List<PayloadCodec> codecs) {
    GzipCodec gzip = null;
    AesGcmCodec aes = null;
    for (PayloadCodec codec : codecs) {
      if (codec instanceof GzipCodec) {
        if (gzip != null || aes != null) {
          throw new IllegalArgumentException("codecs: GzipCodec at most once, and before AesGcmCodec");
        }
        gzip = (GzipCodec) codec;
      } else if (codec instanceof AesGcmCodec) {
        if (aes != null) {
          throw new IllegalArgumentException("codecs: AesGcmCodec at most once");
        }
        aes = (AesGcmCodec) codec;
      } else {
        throw new IllegalArgumentException("codecs: expected a GzipCodec or an AesGcmCodec, got " + codec);
      }
    }
    return gzip == null && aes == null ? null : new Codecs(gzip, aes);
  }

  /** The codecs an environment configures ({@link PayloadCodec#fromEnv()}). */
  static List<PayloadCodec> fromEnv(Map<String, String> env) {
    List<PayloadCodec> out = new ArrayList<>();
    String minSize = env.getOrDefault("QM_CODEC_GZIP_MIN_SIZE", "").strip();
    if (!minSize.isEmpty()) {
      int n;
      try {
        n = Integer.parseInt(minSize);
      } catch (NumberFormatException e) {
        n = -1;
      }
      if (n < 0) {
        throw new IllegalArgumentException(
            "QM_CODEC_GZIP_MIN_SIZE must be a number of bytes, not \"" + minSize + "\"");
      }
      out.add(new GzipCodec(n));
    }
    String spec = env.getOrDefault("QM_CODEC_KEYS", "").strip();
    String active = env.getOrDefault("QM_CODEC_ACTIVE_KEY", "").strip();
    if (spec.isEmpty()) {
      if (!active.isEmpty()) {
        throw new IllegalArgumentException("QM_CODEC_ACTIVE_KEY is set without QM_CODEC_KEYS");
      }
      return out;
    }
    Map<String, byte[]> keys = new LinkedHashMap<>();
    for (String item : spec.split(",", -1)) {
      String[] idKey = item.strip().split(":", 2);
      if (idKey.length != 2 || keys.containsKey(idKey[0])) {
        throw new IllegalArgumentException("QM_CODEC_KEYS must be 'id:BASE64,id:BASE64', each id once");
      }
      try {
        keys.put(idKey[0], AesGcmCodec.decodeKey(idKey[1]));
      } catch (IllegalArgumentException e) {
        throw new IllegalArgumentException("QM_CODEC_KEYS: key '" + idKey[0] + "' is not valid base64", e);
      }
    }
    try {
      out.add(new AesGcmCodec(keys, active));
    } catch (IllegalArgumentException e) {
      throw new IllegalArgumentException("QM_CODEC_KEYS / QM_CODEC_ACTIVE_KEY: " + e.getMessage(), e);
    }
    return out;
  }

  /** A payload encoded; one already encoded, or without a body, as it is. */
  Types.Payload encode(Types.Payload p) {
    if (p.getBodyCase() == Types.Payload.BodyCase.BODY_NOT_SET
        || EncodedPayloadInfo.isEncoded(p.getContentType())) {
      return p;
    }
    byte[] body = Payloads.body(p);
    String inner = Payloads.contentType(p);
    List<String> applied = new ArrayList<>();
    if (gzip != null) {
      byte[] packed = gzip.compress(body);
      if (packed != null) {
        body = packed;
        applied.add(EncodedPayloadInfo.GZIP);
      }
    }
    if (aes != null) {
      applied.add(EncodedPayloadInfo.AES_256_GCM);
    }
    if (applied.isEmpty()) {
      return p;
    }
    String contentType =
        EncodedPayloadInfo.contentType(applied, aes == null ? "" : aes.active(), inner);
    if (aes != null) {
      body = aes.seal(body, contentType);
    }
    return Types.Payload.newBuilder().setRaw(ByteString.copyFrom(body)).setContentType(contentType).build();
  }

  /**
   * A payload decoded; one not encoded as it is. A dead-letter copy's JSON holding an encoded original
   * (see {@link #decodeCopy}) comes back with the original decoded.
   *
   * @throws PayloadCodecException when it cannot be decoded
   */
  Types.Payload decode(Types.Payload p) {
    String contentType = p.getContentType();
    boolean raw = p.getBodyCase() == Types.Payload.BodyCase.RAW;
    if (p.getBodyCase() == Types.Payload.BodyCase.JSON || (raw && Payloads.isJson(contentType))) {
      return decodeCopy(p);
    }
    if (!raw || !EncodedPayloadInfo.isEncoded(contentType)) {
      return p;
    }
    EncodedPayloadInfo info = EncodedPayloadInfo.parse(contentType);
    byte[] body = p.getRaw().toByteArray();
    for (int i = info.codecs().size() - 1; i >= 0; i--) {
      if (info.codecs().get(i).equals(EncodedPayloadInfo.AES_256_GCM)) {
        if (aes == null) {
          throw new PayloadCodecException("the payload is encrypted under key id '" + info.keyId()
              + "'; this client has no AesGcmCodec");
        }
        body = aes.open(body, info.keyId(), contentType);
      } else {
        body = GzipCodec.inflate(body, gzip == null ? GzipCodec.DEFAULT_MAX_INFLATED : gzip.maxInflated());
      }
    }
    return Types.Payload.newBuilder().setRaw(ByteString.copyFrom(body)).setContentType(info.inner()).build();
  }

  /**
   * A dead-letter copy with its encoded original decoded. The server copies a job that failed for good as
   * JSON it writes itself: the original's bytes as base64 text in original_data, its content type in
   * original_content_type; so an encoded original stays encoded inside a copy whose own payload is plain
   * JSON. Every read of the copy meets it here, so that it reads as the copy of a plain original: the data
   * decoded (JSON as JSON, other types as base64 again) under its inner content type. Anything else is left
   * as it is.
   */
  private Types.Payload decodeCopy(Types.Payload p) {
    String text;
    if (p.getBodyCase() == Types.Payload.BodyCase.JSON) {
      Value field = p.getJson().getStructValue().getFieldsOrDefault("original_content_type", null);
      if (field == null || !EncodedPayloadInfo.isEncoded(field.getStringValue())) {
        return p;
      }
      text = Payloads.valueJson(p.getJson());
    } else {
      // A cheap test that spares the parse of every other JSON payload read (a Lua rewrite of the copy
      // writes the content type as "application\/vnd...", so the test leaves out the slash).
      text = p.getRaw().toStringUtf8();
      if (!text.contains("vnd.qm.encoded")) {
        return p;
      }
    }
    String decoded = decodedCopy(text);
    if (decoded == null) {
      return p;
    }
    if (p.getBodyCase() == Types.Payload.BodyCase.RAW) {
      return p.toBuilder().setRaw(ByteString.copyFromUtf8(decoded)).build();
    }
    Value.Builder value = Value.newBuilder();
    try {
      JsonFormat.parser().merge(decoded, value);
    } catch (InvalidProtocolBufferException e) {
      throw new PayloadCodecException(
          "the dead-letter copy cannot be read back as a JSON value: " + e.getMessage());
    }
    return p.toBuilder().setJson(value).build();
  }

  /** A copy's JSON with its encoded original decoded; null when it holds no encoded original. */
  private String decodedCopy(String text) {
    JsonObject copy;
    byte[] body;
    String contentType;
    try {
      JsonElement parsed = JsonParser.parseString(text);
      if (!parsed.isJsonObject()) {
        return null;
      }
      copy = parsed.getAsJsonObject();
      JsonElement type = copy.get("original_content_type");
      JsonElement data = copy.get("original_data");
      if (type == null || data == null || !type.isJsonPrimitive() || !data.isJsonPrimitive()) {
        return null;
      }
      contentType = type.getAsString();
      if (!EncodedPayloadInfo.isEncoded(contentType)) {
        return null;
      }
      body = Base64.getDecoder().decode(data.getAsString());
    } catch (JsonParseException | IllegalArgumentException e) {
      return null;
    }
    Types.Payload original = decode(
        Types.Payload.newBuilder().setRaw(ByteString.copyFrom(body)).setContentType(contentType).build());
    byte[] plain = original.getRaw().toByteArray();
    JsonElement data;
    if (Payloads.isJson(original.getContentType())) {
      try {
        data = JsonParser.parseString(new String(plain, StandardCharsets.UTF_8));
      } catch (JsonParseException e) {
        throw new PayloadCodecException("the dead-letter copy's original data decodes to bytes that are not"
            + " the " + original.getContentType() + " it names");
      }
    } else {
      data = new JsonPrimitive(Base64.getEncoder().encodeToString(plain));
    }
    copy.add("original_data", data);
    copy.addProperty("original_content_type", original.getContentType());
    return Payloads.GSON.toJson(copy);
  }

  /** A message with every payload in it, however deep, encoded. */
  <M extends Message> M encodeMessage(M message) {
    return walk(message, this::encode);
  }

  /** A message with every payload in it, however deep, decoded; PayloadCodecException when one cannot be. */
  <M extends Message> M decodeMessage(M message) {
    return walk(message, this::decode);
  }

  /**
   * Refuses a workflow whose runIf reads a step's result: its workers encode results the same way, and the
   * server, which cannot read them, would judge the condition on the encoded bytes and skip or run the step
   * wrongly, silently. Conditions on an error are fine.
   */
  static void refuseResultConditions(List<Workflows.WorkflowStep> steps) {
    for (Workflows.WorkflowStep step : steps) {
      for (Workflows.StepCondition condition : step.getRunIfList()) {
        if (condition.getSource() != Workflows.ConditionSource.CONDITION_SOURCE_ERROR) {
          String key = step.getKey().isEmpty() ? step.getJobName() : step.getKey();
          throw new IllegalArgumentException("workflow step '" + key + "': runIf on a result cannot work with"
              + " payload codecs (the server cannot read encoded results); decide in the step's handler"
              + " instead, or use a client without codecs");
        }
      }
      refuseResultConditions(step.getOnSuccessList());
      refuseResultConditions(step.getOnFailureList());
    }
  }

  /** The message with fn applied to every Payload in it, however deep; the same object when none changed. */
  @SuppressWarnings("unchecked")
  private static <M extends Message> M walk(M message, UnaryOperator<Types.Payload> fn) {
    Message.Builder builder = null;
    for (Map.Entry<FieldDescriptor, Object> field : message.getAllFields().entrySet()) {
      FieldDescriptor fd = field.getKey();
      if (fd.getJavaType() != FieldDescriptor.JavaType.MESSAGE
          || fd.getMessageType().getFullName().startsWith("google.protobuf.")) {
        continue;
      }
      if (fd.isRepeated()) {
        List<?> items = (List<?>) field.getValue();
        for (int i = 0; i < items.size(); i++) {
          Message item = (Message) items.get(i);
          Message out = visit(item, fn);
          if (out != item) {
            builder = builder == null ? message.toBuilder() : builder;
            builder.setRepeatedField(fd, i, out);
          }
        }
      } else {
        Message item = (Message) field.getValue();
        Message out = visit(item, fn);
        if (out != item) {
          builder = builder == null ? message.toBuilder() : builder;
          builder.setField(fd, out);
        }
      }
    }
    return builder == null ? message : (M) builder.build();
  }

  private static Message visit(Message item, UnaryOperator<Types.Payload> fn) {
    return item instanceof Types.Payload ? fn.apply((Types.Payload) item) : walk(item, fn);
  }
}
