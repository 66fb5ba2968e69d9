package dev.queuemanager;

import com.google.gson.JsonParseException;
import com.google.gson.JsonParser;

/**
 * JSON text to send as it is (a job's data, a result, progress), instead of a value that Gson would
 * encode. The text is checked when this is made, so a payload is never stored as invalid JSON.
 */
public final class JsonText {
  private final String text;

  private JsonText(String text) {
    this.text = text;
  }

  /**
   * Wraps JSON text.
   *
   * @param text a JSON value (object, array, string, number, true, false or null)
   * @return the text, ready to send
   * @throws IllegalArgumentException if the text is not valid JSON
   */
  public static JsonText of(String text) {
    if (text == null) {
      throw new IllegalArgumentException("the JSON text is null");
    }
    try {
      JsonParser.parseString(text);
    } catch (JsonParseException e) {
      throw new IllegalArgumentException("not valid JSON: " + e.getMessage(), e);
    }
    return new JsonText(text);
  }

  /** The JSON text. */
  public String text() {
    return text;
  }

  @Override
  public String toString() {
    return text;
  }
}
