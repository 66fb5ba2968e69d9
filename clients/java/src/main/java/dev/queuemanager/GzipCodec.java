package dev.queuemanager;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.util.Locale;
import java.util.zip.GZIPInputStream;
import java.util.zip.GZIPOutputStream;

/**
 * Compresses payloads of at least {@code minSize} bytes with gzip (RFC 1952), when that makes them smaller;
 * a smaller or incompressible body goes as it is. Reading inflates at most {@code maxInflated} bytes, so a
 * small payload cannot fill this process's memory.
 */
public final class GzipCodec implements PayloadCodec {
  /**
   * The most bytes a gzip body may inflate to by default (64 MiB): the server caps a payload's size, not
   * what it inflates to.
   */
  public static final int DEFAULT_MAX_INFLATED = 64 << 20;

  private final int minSize;
  private final int maxInflated;

  /** Compresses bodies of at least {@code minSize} bytes (1024 is a good start). */
  public GzipCodec(int minSize) {
    this(minSize, DEFAULT_MAX_INFLATED);
  }

  /** Compresses bodies of at least {@code minSize} bytes; refuses one inflating past {@code maxInflated}. */
  public GzipCodec(int minSize, int maxInflated) {
    if (minSize < 0) {
      throw new IllegalArgumentException("GzipCodec's minSize must not be negative, got " + minSize);
    }
    if (maxInflated < 1) {
      throw new IllegalArgumentException("GzipCodec's maxInflated must be positive, got " + maxInflated);
    }
    this.minSize = minSize;
    this.maxInflated = maxInflated;
  }

  @Override
  public String name() {
    return EncodedPayloadInfo.GZIP;
  }

  /** The smallest body compressed, in bytes. */
  public int minSize() {
    return minSize;
  }

  /** The most bytes a body may inflate to when read. */
  public int maxInflated() {
    return maxInflated;
  }

  /** The gzip of body, or null when it is under the threshold or would not get smaller. */
  byte[] compress(byte[] body) {
    if (body.length < minSize) {
      return null;
    }
    var out = new ByteArrayOutputStream(body.length / 2 + 32);
    try (var zip = new GZIPOutputStream(out)) {
      zip.write(body);
    } catch (IOException e) {
      throw new IllegalStateException("gzip into memory failed", e); // a ByteArrayOutputStream never does
    }
    return out.size() < body.length ? out.toByteArray() : null;
  }

  /** A gzip body's bytes, at most limit of them. */
  static byte[] inflate(byte[] body, int limit) {
    var out = new ByteArrayOutputStream(Math.min(limit, body.length * 4 + 64));
    try (InputStream in = new GZIPInputStream(new ByteArrayInputStream(body))) {
      byte[] buffer = new byte[8192];
      for (int n; (n = in.read(buffer)) > 0; ) {
        if (out.size() + n > limit) {
          throw new PayloadCodecException(
              String.format(Locale.ROOT, "the payload inflates to more than %,d bytes; refused", limit));
        }
        out.write(buffer, 0, n);
      }
    } catch (IOException e) {
      throw new PayloadCodecException("the payload's gzip body cannot be read: " + e.getMessage());
    }
    return out.toByteArray();
  }
}
