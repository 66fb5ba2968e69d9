package dev.queuemanager;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.File;
import org.junit.jupiter.api.Test;

/** The bearer token and TLS settings, against the servers that require them. */
class SecurityTest {
  @Test
  void tokenIsSentOnEveryCall() {
    String address = TestServers.env("QM_TEST_AUTH_ADDRESS");
    String queue = TestServers.queue("auth");
    try (QueueManager anonymous = QueueManager.builder(address).token("").build()) {
      assertThrows(UnauthenticatedException.class, () -> anonymous.registerQueue(queue));
    }
    try (QueueManager wrong = QueueManager.builder(address).token("not-a-token").build()) {
      assertThrows(UnauthenticatedException.class, () -> wrong.registerQueue(queue));
    }
    try (QueueManager qm = QueueManager.builder(address).token(TestServers.env("QM_TEST_TOKEN")).build()) {
      assertTrue(qm.registerQueue(queue).created());
      Job job = qm.addJob(queue, "secured", null);
      assertEquals("secured", qm.getJob(queue, job.id()).name());
    }
    assertThrows(IllegalArgumentException.class, () -> QueueManager.builder(address).token("has space"));
  }

  @Test
  void mutualTls() {
    String address = TestServers.env("QM_TEST_TLS_ADDRESS");
    File ca = new File(TestServers.env("QM_TEST_TLS_CA"));
    File cert = new File(TestServers.env("QM_TEST_TLS_CERT"));
    File key = new File(TestServers.env("QM_TEST_TLS_KEY"));
    String queue = TestServers.queue("tls");
    try (QueueManager qm = QueueManager.builder(address).token("").tls(ca, cert, key).build()) {
      assertTrue(qm.registerQueue(queue).created());
    }
    // Without a client certificate the server ends the handshake; in plaintext it cannot be talked to.
    try (QueueManager noCert = QueueManager.builder(address).token("").tls(ca).build()) {
      assertThrows(UnavailableException.class, () -> noCert.registerQueue(queue));
    }
    try (QueueManager plain = QueueManager.builder(address).token("").build()) {
      assertThrows(UnavailableException.class, () -> plain.registerQueue(queue));
    }
  }

  @Test
  void refusedTlsHandshakesSayWhatToChange() {
    // grpc-java's own words ("io exception", "Network closed for unknown reason") name no setting: each
    // refusal now says which one to change, as the other clients' do.
    String address = TestServers.env("QM_TEST_TLS_ADDRESS");
    File ca = new File(TestServers.env("QM_TEST_TLS_CA"));
    File cert = new File(TestServers.env("QM_TEST_TLS_CERT"));
    File key = new File(TestServers.env("QM_TEST_TLS_KEY"));
    File otherCa = new File(TestServers.env("QM_TEST_TLS_OTHER_CA"));
    assertRefusal(QueueManager.builder(address), Errors.CLOSED_PLAIN_HINT);
    assertRefusal(QueueManager.builder(address).tls(otherCa, cert, key), Errors.CA_HINT);
    assertRefusal(QueueManager.builder(address).tls(ca), Errors.CLOSED_TLS_HINT);
    assertRefusal(QueueManager.builder(TestServers.env("QM_TEST_ADDRESS")).tls(ca), Errors.NO_TLS_HINT);
  }

  private static void assertRefusal(QueueManager.Builder builder, String hint) {
    try (QueueManager qm = builder.token("").build()) {
      UnavailableException e = assertThrows(UnavailableException.class, qm::listQueues);
      assertTrue(e.getMessage().endsWith("; " + hint), e.getMessage());
    }
  }
}
