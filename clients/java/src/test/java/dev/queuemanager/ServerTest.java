package dev.queuemanager;

import java.time.Duration;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;

/**
 * What every test class against the test server shares: a client for each test ({@link TestServers#client})
 * and, when the test started one, a worker, both closed after it.
 */
abstract class ServerTest {
  /** The test's client (null when the test skipped itself for want of a server). */
  protected QueueManager qm;
  /** A worker the test started, shut down after it. */
  protected Worker worker;

  @BeforeEach
  void connect() {
    qm = TestServers.client();
  }

  @AfterEach
  void close() throws InterruptedException {
    if (worker != null) {
      worker.shutdown(Duration.ofSeconds(5));
    }
    if (qm != null) {
      qm.close();
    }
  }
}
