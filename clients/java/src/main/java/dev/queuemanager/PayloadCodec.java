package dev.queuemanager;

import java.util.List;

/**
 * A codec of the payloads a client sends and reads: {@link GzipCodec} and {@link AesGcmCodec}, each at most
 * once, gzip first (docs/security.md, "Compressing and encrypting payloads"). Give them to {@link
 * QueueManager.Builder#codecs}; without that call a client takes them from the environment ({@link
 * #fromEnv()}).
 */
public sealed interface PayloadCodec permits GzipCodec, AesGcmCodec {
  /** The codec's name in an encoded payload's content type ({@code gzip}, {@code aes-256-gcm}). */
  String name();

  /**
   * The codecs the environment configures, as every client reads them: {@code QM_CODEC_KEYS="k1:BASE64,
   * k2:BASE64"} gives an {@link AesGcmCodec} whose active key is {@code QM_CODEC_ACTIVE_KEY} (may be left out
   * with one key), {@code QM_CODEC_GZIP_MIN_SIZE=1024} a {@link GzipCodec} before it; neither set: none.
   *
   * @throws IllegalArgumentException when a variable cannot work, naming it and what to fix
   */
  static List<PayloadCodec> fromEnv() {
    return Codecs.fromEnv(System.getenv());
  }
}
