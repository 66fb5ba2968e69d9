package dev.queuemanager;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.regex.Pattern;

/**
 * What an encoded payload's content type says: the codecs applied in order, the key id of the encryption
 * and the content type before encoding. The wire format (version 1), the same in every client, is
 *
 * <pre>application/vnd.qm.encoded; v=1; codecs=gzip,aes-256-gcm; kid=k1; inner=application/json</pre>
 *
 * <p>{@code v} is the format's version; {@code codecs} the codecs in the order applied (decoding undoes them
 * from the last); {@code kid} the key of the encryption, there only with one; {@code inner} the content type
 * before, always last, so that it may hold {@code ;} and {@code =} itself (docs/security.md).
 *
 * @param codecs the codecs applied, in order ({@code gzip}, {@code aes-256-gcm})
 * @param keyId the key id of the encryption ("" when not encrypted)
 * @param inner the content type before encoding
 */
public record EncodedPayloadInfo(List<String> codecs, String keyId, String inner) {
  /** The content type of every encoded payload starts with this. */
  public static final String CONTENT_TYPE = "application/vnd.qm.encoded";

  static final String GZIP = "gzip";
  static final String AES_256_GCM = "aes-256-gcm";

  // Key ids travel in the content type: short, and free of the characters that separate its parameters.
  static final Pattern KEY_ID = Pattern.compile("[A-Za-z0-9._-]{1,64}");

  private static final String VERSION = "1";
  private static final String PREFIX = CONTENT_TYPE + ";";
  private static final String INNER = "; inner=";
  // The server refuses a content type over 200 characters (its payload.content_type limit).
  private static final int MAX_CONTENT_TYPE = 200;

  /** Copies the codecs, so that the record cannot change. */
  public EncodedPayloadInfo {
    codecs = List.copyOf(codecs);
  }

  /**
   * What the content type of a payload this client could not decode says (a job read by a client without
   * the codecs): empty when it is not an encoded payload's.
   */
  public static Optional<EncodedPayloadInfo> of(String contentType) {
    try {
      return Optional.of(parse(contentType));
    } catch (PayloadCodecException e) {
      return Optional.empty();
    }
  }

  /** Whether a content type marks an encoded payload. */
  static boolean isEncoded(String contentType) {
    return contentType != null && contentType.startsWith(PREFIX);
  }

  /** The content type of a payload encoded by codecs (in the order applied), under keyId if not "". */
  static String contentType(List<String> codecs, String keyId, String inner) {
    String key = keyId.isEmpty() ? "" : "; kid=" + keyId;
    String contentType =
        CONTENT_TYPE + "; v=" + VERSION + "; codecs=" + String.join(",", codecs) + key + INNER + inner;
    if (contentType.length() > MAX_CONTENT_TYPE) {
      throw new IllegalArgumentException("the encoded payload's content type would be " + contentType.length()
          + " characters, over the server's " + MAX_CONTENT_TYPE
          + ": shorten the key id or the content type \"" + inner + "\"");
    }
    return contentType;
  }

  /** Reads an encoded payload's content type; PayloadCodecException when it cannot. */
  static EncodedPayloadInfo parse(String contentType) {
    int innerAt = isEncoded(contentType) ? contentType.indexOf(INNER) : -1;
    if (innerAt < 0) {
      throw new PayloadCodecException(
          "\"" + contentType + "\" is not an encoded payload's content type (no inner=)");
    }
    Map<String, String> params = new HashMap<>();
    for (String part : contentType.substring(PREFIX.length(), innerAt).split(";", -1)) {
      String[] nameValue = part.strip().split("=", 2);
      if (nameValue.length != 2 || params.put(nameValue[0], nameValue[1]) != null) {
        throw new PayloadCodecException(
            "the encoded payload's content type \"" + contentType + "\" is malformed");
      }
    }
    String version = params.getOrDefault("v", "");
    if (!version.equals(VERSION)) {
      String found = version.isEmpty() ? "?" : version;
      throw new PayloadCodecException("the payload is encoded in format v=" + found
          + "; this client reads v=" + VERSION + " (upgrade it)");
    }
    List<String> codecs = new ArrayList<>();
    for (String codec : params.getOrDefault("codecs", "").split(",", -1)) {
      if ((!codec.equals(GZIP) && !codec.equals(AES_256_GCM)) || codecs.contains(codec)) {
        throw new PayloadCodecException(
            "the payload names codecs this client does not know: \"" + params.get("codecs") + "\"");
      }
      codecs.add(codec);
    }
    String keyId = params.getOrDefault("kid", "");
    if (codecs.contains(AES_256_GCM) == keyId.isEmpty()
        || (!keyId.isEmpty() && !KEY_ID.matcher(keyId).matches())) {
      throw new PayloadCodecException(
          "the encoded payload's key id is missing or malformed in \"" + contentType + "\"");
    }
    for (String name : params.keySet()) {
      if (!name.equals("v") && !name.equals("codecs") && !name.equals("kid")) {
        throw new PayloadCodecException(
            "the encoded payload's content type \"" + contentType + "\" has unknown parameters");
      }
    }
    return new EncodedPayloadInfo(codecs, keyId, contentType.substring(innerAt + INNER.length()));
  }
}
