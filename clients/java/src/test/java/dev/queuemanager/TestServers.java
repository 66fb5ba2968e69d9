package dev.queuemanager;

import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.util.UUID;

/**
 * The servers tests/test_client_java.py starts for this suite, named by environment variables; a test whose
 * server is not given skips itself (the runner checks that none did).
 */
final class TestServers {
  private TestServers() {}

  /** The value of a variable the runner sets; skips the test when it is not set. */
  static String env(String name) {
    String value = System.getenv(name);
    assumeTrue(value != null && !value.isEmpty(), name + " is not set: run tests/test_client_java.py");
    return value;
  }

  /** A client of the plain server. */
  static QueueManager client() {
    return QueueManager.builder(env("QM_TEST_ADDRESS")).token("").build();
  }

  /** A queue name no other test uses. */
  static String queue(String prefix) {
    return prefix + "-" + UUID.randomUUID().toString().substring(0, 8);
  }
}
