package dev.queuemanager;

import com.google.gson.Gson;
import com.google.gson.GsonBuilder;
import com.google.gson.JsonParseException;
import com.google.protobuf.ByteString;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.protobuf.Value;
import com.google.protobuf.util.JsonFormat;
import java.lang.reflect.Type;
import java.nio.charset.StandardCharsets;
import queue_manager.v1.Types;

/**
 * The payload conventions the Python, TypeScript and Go clients share: a {@code byte[]} travels as raw
 * bytes of content type {@value #BYTES}; {@link JsonText} as the JSON text it holds; any other value as its
 * JSON (Gson) of content type {@value #JSON}; null as no payload (the server stores JSON null). JSON goes
 * as raw UTF-8 text rather than a {@code google.protobuf.Value} (cheaper, as in the other clients). Readers
 * get JSON back as a {@code google.protobuf.Value}, whose numbers are doubles: send integers past 2^53 as
 * strings.
 */
final class Payloads {
  /** The content type of JSON payloads. */
  static final String JSON = "application/json";

  /** The content type of raw bytes. */
  static final String BYTES = "application/octet-stream";

  // Nulls inside maps are kept, as the other clients' JSON encoders keep them.
  static final Gson GSON = new GsonBuilder().serializeNulls().disableHtmlEscaping().create();

  private Payloads() {}

  /** The wire payload of a value; null for null. */
  static Types.Payload encode(Object value) {
    if (value == null) {
      return null;
    }
    if (value instanceof byte[]) {
      return Types.Payload.newBuilder()
          .setRaw(ByteString.copyFrom((byte[]) value))
          .setContentType(BYTES)
          .build();
    }
    String text;
    if (value instanceof JsonText) {
      text = ((JsonText) value).text();
    } else {
      text = GSON.toJson(value);
    }
    return Types.Payload.newBuilder()
        .setRaw(ByteString.copyFromUtf8(text))
        .setContentType(JSON)
        .build();
  }

  /** The wire payload of data that replaces a job's: null as JSON null (an unset payload keeps the data). */
  static Types.Payload encodeData(Object value) {
    return value == null ? encode(JsonText.of("null")) : encode(value);
  }

  /** The bytes of a wire payload (JSON text for a JSON value); null when there is none. */
  static byte[] body(Types.Payload payload) {
    if (payload == null) {
      return null;
    }
    switch (payload.getBodyCase()) {
      case JSON:
        return valueJson(payload.getJson()).getBytes(StandardCharsets.UTF_8);
      case RAW:
        return payload.getRaw().toByteArray();
      default:
        return null;
    }
  }

  /** The content type of a wire payload; null when there is none. */
  static String contentType(Types.Payload payload) {
    if (payload == null) {
      return null;
    }
    switch (payload.getBodyCase()) {
      case JSON:
        return JSON;
      case RAW:
        return payload.getContentType().isEmpty() ? BYTES : payload.getContentType();
      default:
        return null;
    }
  }

  /** Whether a content type is JSON ("application/json", with or without parameters). */
  static boolean isJson(String contentType) {
    return contentType != null && contentType.startsWith(JSON);
  }

  /** A JSON payload decoded into a type; what says which payload it is, for the exception. */
  static <T> T decode(byte[] body, String contentType, Type type, String what) {
    if (body == null) {
      return null;
    }
    if (!isJson(contentType)) {
      throw new IllegalStateException(what + " is not JSON but " + contentType + ": read its bytes");
    }
    try {
      return GSON.fromJson(new String(body, StandardCharsets.UTF_8), type);
    } catch (JsonParseException e) {
      throw new IllegalStateException(
          what + " cannot be read as " + type.getTypeName() + ": " + e.getMessage(), e);
    }
  }

  /** A value as a {@code google.protobuf.Value} (progress travels so). */
  static Value jsonValue(Object value) {
    String text = value instanceof JsonText ? ((JsonText) value).text() : GSON.toJson(value);
    Value.Builder out = Value.newBuilder();
    try {
      JsonFormat.parser().merge(text, out);
    } catch (InvalidProtocolBufferException e) {
      throw new IllegalArgumentException("the value cannot be sent as JSON: " + e.getMessage(), e);
    }
    return out.build();
  }

  /**
   * The compact JSON text of a {@code google.protobuf.Value} (what the server returns to readers), with
   * whole numbers written without a fraction ({@code 3}, not {@code 3.0}), as the other clients write them.
   */
  static String valueJson(Value value) {
    StringBuilder out = new StringBuilder();
    writeValue(value, out);
    return out.toString();
  }

  private static void writeValue(Value value, StringBuilder out) {
    switch (value.getKindCase()) {
      case NUMBER_VALUE:
        double d = value.getNumberValue();
        // Whole numbers within a double's exact range print as integers.
        if (d == Math.rint(d) && Math.abs(d) < 9.007199254740992E15) {
          out.append((long) d);
        } else {
          out.append(GSON.toJson(d));
        }
        break;
      case STRING_VALUE:
        out.append(GSON.toJson(value.getStringValue()));
        break;
      case BOOL_VALUE:
        out.append(value.getBoolValue());
        break;
      case STRUCT_VALUE:
        out.append('{');
        boolean first = true;
        for (var field : value.getStructValue().getFieldsMap().entrySet()) {
          if (!first) {
            out.append(',');
          }
          first = false;
          out.append(GSON.toJson(field.getKey())).append(':');
          writeValue(field.getValue(), out);
        }
        out.append('}');
        break;
      case LIST_VALUE:
        out.append('[');
        for (int i = 0; i < value.getListValue().getValuesCount(); i++) {
          if (i > 0) {
            out.append(',');
          }
          writeValue(value.getListValue().getValues(i), out);
        }
        out.append(']');
        break;
      default:
        out.append("null");
    }
  }
}
