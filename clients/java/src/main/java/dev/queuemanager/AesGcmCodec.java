package dev.queuemanager;

import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.Base64;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import javax.crypto.AEADBadTagException;
import javax.crypto.Cipher;
import javax.crypto.spec.GCMParameterSpec;
import javax.crypto.spec.SecretKeySpec;

/**
 * Encrypts payloads with AES-256-GCM under the active key and decrypts them under any key it holds. Each
 * payload gets a random 96-bit nonce; its whole content type (codecs, key id, inner type) is the associated
 * data, so neither it nor the bytes can change without the decryption failing. Rotate keys by adding the
 * new one and making it active: payloads under the old ids decode while their keys are held.
 */
public final class AesGcmCodec implements PayloadCodec {
  private static final int KEY_SIZE = 32; // AES-256
  private static final int NONCE_SIZE = 12; // 96 bits, GCM's own size
  private static final int TAG_BITS = 128;
  private static final SecureRandom RANDOM = new SecureRandom();

  private final Map<String, SecretKeySpec> keys = new TreeMap<>();
  private final String active;

  /**
   * Holds {@code keys} (key id, 1-64 of {@code A-Z a-z 0-9 . _ -}, to its 32 bytes: {@link #decodeKey} reads
   * base64) and encrypts under {@code active} (null or "" with one key: that one).
   *
   * @throws IllegalArgumentException for a key that is not 32 bytes, a malformed key id, several keys and no
   *     active one, or an active id not among the keys
   */
  public AesGcmCodec(Map<String, byte[]> keys, String active) {
    if (keys == null || keys.isEmpty()) {
      throw new IllegalArgumentException("AesGcmCodec needs at least one key");
    }
    for (var entry : keys.entrySet()) {
      String id = entry.getKey();
      byte[] key = entry.getValue();
      if (id == null || !EncodedPayloadInfo.KEY_ID.matcher(id).matches()) {
        throw new IllegalArgumentException("key id \"" + id + "\" must be 1-64 of A-Z a-z 0-9 . _ -");
      }
      if (key == null || key.length != KEY_SIZE) {
        int length = key == null ? 0 : key.length;
        throw new IllegalArgumentException(
            "key '" + id + "' must be " + KEY_SIZE + " bytes (AES-256), not " + length);
      }
      this.keys.put(id, new SecretKeySpec(key.clone(), "AES"));
    }
    if (active == null || active.isEmpty()) {
      if (keys.size() != 1) {
        throw new IllegalArgumentException("AesGcmCodec holds " + keys.size() + " keys: say which is active");
      }
      active = this.keys.keySet().iterator().next();
    }
    if (!this.keys.containsKey(active)) {
      throw new IllegalArgumentException(
          "the active key id \"" + active + "\" is not among the keys (" + String.join(", ", keyIds()) + ")");
    }
    this.active = active;
  }

  /** A key given as base64 (standard or URL-safe, with its padding); IllegalArgumentException when not. */
  public static byte[] decodeKey(String text) {
    String standard = text.strip().replace('-', '+').replace('_', '/');
    return Base64.getDecoder().decode(standard);
  }

  @Override
  public String name() {
    return EncodedPayloadInfo.AES_256_GCM;
  }

  /** The id of the key new payloads are encrypted under. */
  public String active() {
    return active;
  }

  /** The ids of the keys held, sorted. */
  public List<String> keyIds() {
    return Collections.unmodifiableList(new ArrayList<>(keys.keySet()));
  }

  /** The nonce, ciphertext and tag of body under the active key; contentType is the associated data. */
  byte[] seal(byte[] body, String contentType) {
    byte[] nonce = new byte[NONCE_SIZE];
    RANDOM.nextBytes(nonce);
    try {
      Cipher cipher = Cipher.getInstance("AES/GCM/NoPadding");
      cipher.init(Cipher.ENCRYPT_MODE, keys.get(active), new GCMParameterSpec(TAG_BITS, nonce));
      cipher.updateAAD(contentType.getBytes(StandardCharsets.UTF_8));
      byte[] sealed = cipher.doFinal(body);
      byte[] out = new byte[NONCE_SIZE + sealed.length];
      System.arraycopy(nonce, 0, out, 0, NONCE_SIZE);
      System.arraycopy(sealed, 0, out, NONCE_SIZE, sealed.length);
      return out;
    } catch (GeneralSecurityException e) {
      // Every JDK 17 has AES/GCM/NoPadding, and a 32-byte key is valid: this is a broken JDK.
      throw new IllegalStateException("AES-256-GCM is not available: " + e.getMessage(), e);
    }
  }

  /** Undoes {@link #seal} under key keyId, checking that neither the bytes nor the content type changed. */
  byte[] open(byte[] body, String keyId, String contentType) {
    SecretKeySpec key = keys.get(keyId);
    if (key == null) {
      throw new PayloadCodecException("the payload is encrypted under key id '" + keyId
          + "', which this client does not hold (it holds '" + String.join("', '", keys.keySet()) + "')");
    }
    if (body.length < NONCE_SIZE + TAG_BITS / 8) {
      throw new PayloadCodecException("the payload under key id '" + keyId + "' is too short to be AES-GCM");
    }
    try {
      Cipher cipher = Cipher.getInstance("AES/GCM/NoPadding");
      cipher.init(Cipher.DECRYPT_MODE, key, new GCMParameterSpec(TAG_BITS, body, 0, NONCE_SIZE));
      cipher.updateAAD(contentType.getBytes(StandardCharsets.UTF_8));
      return cipher.doFinal(body, NONCE_SIZE, body.length - NONCE_SIZE);
    } catch (AEADBadTagException e) {
      throw new PayloadCodecException("the payload under key id '" + keyId + "' failed authentication: it or"
          + " its content type was altered, or it was encrypted under another key with that id");
    } catch (GeneralSecurityException e) {
      throw new IllegalStateException("AES-256-GCM is not available: " + e.getMessage(), e);
    }
  }
}
