package dev.queuemanager;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import com.google.protobuf.ByteString;
import io.grpc.Status;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.Test;
import queue_manager.v1.Types;

/**
 * Payload codecs (docs/security.md, "Compressing and encrypting payloads"): the wire format the Python,
 * TypeScript and Go clients share, through a real server and the Python client.
 */
class CodecsTest extends ServerTest {
  private static final Duration WAIT = Duration.ofSeconds(30);
  // The golden vectors every client's tests decode (made once by the Python codec, fixed nonces).
  private static final Path VECTORS = Path.of("..", "..", "tests", "codec_vectors.json");
  private static final byte[] K1 = key(1);
  private static final byte[] K2 = key(2);
  private static final String BIG = "x".repeat(2000);
  private static final String NOT_HELD =
      "the payload is encrypted under key id 'k1', which this client does not hold (it holds 'k2')";

  private static byte[] key(int seed) {
    byte[] key = new byte[32];
    for (int i = 0; i < key.length; i++) {
      key[i] = (byte) (seed * 31 + i);
    }
    return key;
  }

  private static String b64(byte[] bytes) {
    return Base64.getEncoder().encodeToString(bytes);
  }

  private static QueueManager client(PayloadCodec... codecs) {
    return QueueManager.builder(TestServers.env("QM_TEST_ADDRESS")).token("").codecs(codecs).build();
  }

  private static Types.Payload json(String text) {
    return Types.Payload.newBuilder().setRaw(ByteString.copyFromUtf8(text)).setContentType("application/json")
        .build();
  }

  @Test
  void encodesToTheSharedWireFormatAndBack() {
    AesGcmCodec aes = new AesGcmCodec(Map.of("k1", K1, "k2", K2), "k2");
    Codecs both = Codecs.of(List.of(new GzipCodec(1024), aes));
    String big = "{\"items\":\"" + BIG + "\"}";

    Types.Payload packed = both.encode(json(big));
    assertEquals("application/vnd.qm.encoded; v=1; codecs=gzip,aes-256-gcm; kid=k2; inner=application/json",
        packed.getContentType());
    assertTrue(packed.getRaw().size() < 200, "gzip ran before encryption: " + packed.getRaw().size());
    assertEquals(big, both.decode(packed).getRaw().toStringUtf8());
    assertEquals("application/json", both.decode(packed).getContentType());
    // A new nonce for every payload: the same body never encrypts to the same bytes.
    assertFalse(packed.getRaw().equals(both.encode(json(big)).getRaw()));

    // Under the threshold gzip leaves the body alone; encryption still applies.
    Types.Payload small = both.encode(json("{\"n\":1}"));
    assertEquals("application/vnd.qm.encoded; v=1; codecs=aes-256-gcm; kid=k2; inner=application/json",
        small.getContentType());
    // Bytes keep their own content type as the inner one, whatever it holds.
    Types.Payload bytes = Types.Payload.newBuilder().setRaw(ByteString.copyFrom(new byte[] {0, 1, 2}))
        .setContentType("image/png; name=a=b").build();
    Types.Payload sealed = both.encode(bytes);
    assertTrue(sealed.getContentType().endsWith("; inner=image/png; name=a=b"), sealed.getContentType());
    assertEquals(bytes, both.decode(sealed));

    // Gzip alone: only when the body is large enough and gets smaller; the rest passes through as it is.
    Codecs gzip = Codecs.of(List.of(new GzipCodec(16)));
    Types.Payload zipped = gzip.encode(json(big));
    assertEquals("application/vnd.qm.encoded; v=1; codecs=gzip; inner=application/json",
        zipped.getContentType());
    Types.Payload random = Types.Payload.newBuilder().setRaw(ByteString.copyFrom(key(9))).build();
    assertSame(random, gzip.encode(random));
    assertEquals(big, gzip.decode(zipped).getRaw().toStringUtf8());
    // Any client with codecs decompresses, and one that only encrypts too; plain payloads pass both ways.
    assertEquals(big, Codecs.of(List.of(aes)).decode(zipped).getRaw().toStringUtf8());
    Types.Payload plain = json("{\"n\":1}");
    assertSame(plain, both.decode(plain));
    assertSame(packed, both.encode(packed));

    // A body inflating past the limit is refused rather than filling memory.
    Codecs tight = Codecs.of(List.of(new GzipCodec(16, 100)));
    var e = assertThrows(PayloadCodecException.class, () -> tight.decode(zipped));
    assertTrue(e.getMessage().contains("inflates to more than 100 bytes"), e.getMessage());
    // A content type over the server's 200 characters is refused before sending.
    Types.Payload longType = Types.Payload.newBuilder().setRaw(ByteString.copyFromUtf8("x"))
        .setContentType("text/" + "x".repeat(150)).build();
    var tooLong = assertThrows(IllegalArgumentException.class, () -> both.encode(longType));
    assertTrue(tooLong.getMessage().contains("over the server's 200"), tooLong.getMessage());
  }

  @Test
  void decodesTheGoldenVectorsAndRefusesTamperedOnes() throws IOException {
    JsonObject vectors = JsonParser.parseString(Files.readString(VECTORS)).getAsJsonObject();
    JsonObject keyText = vectors.getAsJsonObject("keys");
    AesGcmCodec aes = new AesGcmCodec(
        Map.of("k1", AesGcmCodec.decodeKey(keyText.get("k1").getAsString()),
            "k2", AesGcmCodec.decodeKey(keyText.get("k2").getAsString())),
        "k1");
    Codecs codecs = Codecs.of(List.of(aes));
    int decoded = 0;
    for (JsonElement item : vectors.getAsJsonArray("decode")) {
      JsonObject v = item.getAsJsonObject();
      Types.Payload out = codecs.decode(payload(v));
      assertEquals(v.get("inner").getAsString(), out.getContentType(), v.get("name").getAsString());
      assertArrayEquals(Base64.getDecoder().decode(v.get("plain").getAsString()), out.getRaw().toByteArray(),
          v.get("name").getAsString());
      decoded++;
    }
    assertEquals(5, decoded);
    int refused = 0;
    for (JsonElement item : vectors.getAsJsonArray("refuse")) {
      JsonObject v = item.getAsJsonObject();
      var e = assertThrows(PayloadCodecException.class, () -> codecs.decode(payload(v)), v.toString());
      assertEquals(Status.Code.DATA_LOSS, e.code());
      assertTrue(e.getMessage().contains(v.get("error").getAsString()), e.getMessage());
      refused++;
    }
    assertEquals(4, refused);
    var unknown = assertThrows(PayloadCodecException.class, () -> Codecs.of(List.of(new AesGcmCodec(
        Map.of("k2", K2), null))).decode(payload(vectors.getAsJsonArray("decode").get(1).getAsJsonObject())));
    assertEquals(NOT_HELD, unknown.getMessage());
  }

  private static Types.Payload payload(JsonObject vector) {
    return Types.Payload.newBuilder()
        .setRaw(ByteString.copyFrom(Base64.getDecoder().decode(vector.get("raw").getAsString())))
        .setContentType(vector.get("content_type").getAsString())
        .build();
  }

  @Test
  void settingsThatCannotWorkAreRefusedWhenTheClientIsMade() {
    AesGcmCodec aes = new AesGcmCodec(Map.of("k1", K1), null);
    assertEquals("k1", aes.active());
    String address = TestServers.env("QM_TEST_ADDRESS");
    assertRefused("must be 32 bytes (AES-256), not 16",
        () -> new AesGcmCodec(Map.of("k1", new byte[16]), "k1"));
    assertRefused("holds 2 keys: say which is active", () -> new AesGcmCodec(Map.of("k1", K1, "k2", K2), ""));
    assertRefused("\"k3\" is not among the keys (k1)", () -> new AesGcmCodec(Map.of("k1", K1), "k3"));
    assertRefused("must be 1-64 of", () -> new AesGcmCodec(Map.of("k;1", K1), null));
    assertRefused("needs at least one key", () -> new AesGcmCodec(Map.of(), null));
    assertRefused("must not be negative", () -> new GzipCodec(-1));
    assertRefused("GzipCodec at most once, and before AesGcmCodec",
        () -> QueueManager.builder(address).codecs(aes, new GzipCodec(10)).build());
    assertRefused("AesGcmCodec at most once", () -> QueueManager.builder(address).codecs(aes, aes).build());
  }

  private static void assertRefused(String message, Runnable make) {
    var e = assertThrows(IllegalArgumentException.class, make::run);
    assertTrue(e.getMessage().contains(message), e.getMessage());
  }

  @Test
  void environmentVariablesGiveTheDefaultCodecs() {
    assertEquals(List.of(), Codecs.fromEnv(Map.of()));
    List<PayloadCodec> codecs = Codecs.fromEnv(Map.of(
        "QM_CODEC_KEYS", " k1:" + b64(K1) + ", k2:" + b64(K2).replace('+', '-').replace('/', '_'),
        "QM_CODEC_ACTIVE_KEY", "k2",
        "QM_CODEC_GZIP_MIN_SIZE", "512"));
    assertEquals(512, ((GzipCodec) codecs.get(0)).minSize());
    AesGcmCodec aes = (AesGcmCodec) codecs.get(1);
    assertEquals("k2", aes.active());
    assertEquals(List.of("k1", "k2"), aes.keyIds());
    // One key needs no active one; the encoded payload names it.
    List<PayloadCodec> one = Codecs.fromEnv(Map.of("QM_CODEC_KEYS", "solo:" + b64(K1)));
    assertTrue(Codecs.of(one).encode(json("1")).getContentType().contains("; kid=solo;"));

    assertRefused("QM_CODEC_GZIP_MIN_SIZE must be a number of bytes, not \"lots\"",
        () -> Codecs.fromEnv(Map.of("QM_CODEC_GZIP_MIN_SIZE", "lots")));
    assertRefused("QM_CODEC_ACTIVE_KEY is set without QM_CODEC_KEYS",
        () -> Codecs.fromEnv(Map.of("QM_CODEC_ACTIVE_KEY", "k1")));
    assertRefused("QM_CODEC_KEYS must be 'id:BASE64,id:BASE64', each id once",
        () -> Codecs.fromEnv(Map.of("QM_CODEC_KEYS", "k1:" + b64(K1) + ",k1:" + b64(K2))));
    assertRefused("QM_CODEC_KEYS: key 'k1' is not valid base64",
        () -> Codecs.fromEnv(Map.of("QM_CODEC_KEYS", "k1:not*base64")));
    assertRefused("QM_CODEC_KEYS / QM_CODEC_ACTIVE_KEY: key 'k1' must be 32 bytes",
        () -> Codecs.fromEnv(Map.of("QM_CODEC_KEYS", "k1:" + b64(new byte[8]))));
    assertRefused("QM_CODEC_KEYS / QM_CODEC_ACTIVE_KEY: AesGcmCodec holds 2 keys: say which is active",
        () -> Codecs.fromEnv(Map.of("QM_CODEC_KEYS", "k1:" + b64(K1) + ",k2:" + b64(K2))));
  }

  @Test
  void pythonReadsWhatJavaEncodesAndJavaReadsWhatPythonEncodes() throws Exception {
    String keys = "k1:" + b64(K1) + ",k2:" + b64(K2);
    List<PayloadCodec> codecs = Codecs.fromEnv(
        Map.of("QM_CODEC_KEYS", keys, "QM_CODEC_ACTIVE_KEY", "k1", "QM_CODEC_GZIP_MIN_SIZE", "64"));
    String queue = TestServers.queue("codecs-py");
    qm.registerQueue(queue);
    try (QueueManager java = client(codecs.toArray(new PayloadCodec[0]));
        QueueManager plain = client()) {
      Job added = java.addJob(queue, "from-java", Map.of("from", "java", "text", BIG, "note", "h\u00e9llo"));
      assertTrue(plain.getJob(queue, added.id()).contentType()
          .startsWith("application/vnd.qm.encoded; v=1; codecs=gzip,aes-256-gcm; kid=k1;"));

      JsonObject python = runPython(queue, added.id(), keys);
      JsonObject read = python.getAsJsonObject("read");
      assertEquals("java", read.get("from").getAsString());
      assertEquals(BIG, read.get("text").getAsString());
      assertEquals("h\u00e9llo", read.get("note").getAsString());

      // The bulk stream encodes each job as a single add does.
      String bulk = java.addBulk(queue, List.of(NewJob.of("bulk", Map.of("n", 1)))).jobIds().get(0);
      assertTrue(plain.getJob(queue, bulk).contentType().contains("; codecs=aes-256-gcm; kid=k1;"));
      assertEquals("{\"n\":1}", java.getJob(queue, bulk).dataJson());

      String id = python.get("added").getAsString();
      Job stored = plain.getJob(queue, id);
      EncodedPayloadInfo info = EncodedPayloadInfo.of(stored.contentType()).orElseThrow();
      assertEquals(List.of("gzip", "aes-256-gcm"), info.codecs());
      assertEquals("k2", info.keyId());
      assertEquals("application/json", info.inner());
      JsonObject fromPython = java.getJob(queue, id).data(JsonObject.class);
      assertEquals("python", fromPython.get("from").getAsString());
      assertEquals(BIG, fromPython.get("text").getAsString());
      assertEquals("application/json", java.getJob(queue, id).contentType());
    }
  }

  /** Reads a job with the Python client holding keys (active k2) and adds one through it. */
  private static JsonObject runPython(String queue, String jobId, String keys) throws Exception {
    String script = String.join("\n",
        "import asyncio, json, sys",
        "from queue_manager import QueueManager",
        "async def main() -> None:",
        "    async with QueueManager(sys.argv[1]) as qm:",
        "        job = await qm.get_job(sys.argv[2], sys.argv[3])",
        "        data = {'from': 'python', 'text': 'x' * 2000}",
        "        added = await qm.add_job(sys.argv[2], 'from-python', data)",
        "        print(json.dumps({'read': job.data, 'added': added.id}))",
        "asyncio.run(main())");
    ProcessBuilder pb = new ProcessBuilder(TestServers.env("QM_TEST_PYTHON"), "-c", script,
        TestServers.env("QM_TEST_ADDRESS"), queue, jobId);
    // The Python client takes its codecs from the environment, as every client does without an argument.
    pb.environment().put("QM_CODEC_KEYS", keys);
    pb.environment().put("QM_CODEC_ACTIVE_KEY", "k2");
    pb.environment().put("QM_CODEC_GZIP_MIN_SIZE", "64");
    pb.redirectErrorStream(true);
    Process process = pb.start();
    byte[] output = process.getInputStream().readAllBytes();
    assertTrue(process.waitFor(60, TimeUnit.SECONDS));
    String text = new String(output, StandardCharsets.UTF_8);
    assertEquals(0, process.exitValue(), text);
    String[] lines = text.strip().split("\n");
    return JsonParser.parseString(lines[lines.length - 1]).getAsJsonObject();
  }

  @Test
  void workerRunsAnEncodedJobAndStoresItsResultEncoded() throws Exception {
    AesGcmCodec aes = new AesGcmCodec(Map.of("k1", K1), "k1");
    String queue = TestServers.queue("codecs-worker");
    try (QueueManager coded = client(new GzipCodec(64), aes); QueueManager plain = client()) {
      coded.registerQueue(queue);
      AtomicReference<String> checkpoint = new AtomicReference<>();
      worker = coded.newWorker(WorkerOptions.builder().handler(queue, job -> {
        JsonObject data = job.data(JsonObject.class);
        int step = data.get("step").getAsInt();
        if (step == 0) {
          job.updateData(Map.of("step", 1, "text", BIG)); // a checkpoint goes encoded
          throw new IllegalStateException("stopped after step 1");
        }
        if (step == 1) {
          checkpoint.set(plain.getJob(queue, job.id()).contentType());
          // A durable sleep's new data goes encoded too (on the worker stream, not through a call).
          throw DelayedException.withData(Duration.ofMillis(10), Map.of("step", 2, "text", BIG));
        }
        return Map.of("done", data.get("text").getAsString().length());
      }).build());
      worker.start();
      assertTrue(worker.awaitConnected(WAIT), "the worker did not connect");
      Job added = coded.addJob(queue, "steps", Map.of("step", 0, "text", BIG),
          JobOptions.builder().attempts(2).backoff(Backoff.fixed(Duration.ofMillis(10))).build());
      Job done = coded.waitForJob(queue, added.id(), WAIT);
      assertEquals(JobState.COMPLETED, done.state(), done.failedReason());
      assertEquals("{\"done\":2000}", done.resultJson());
      assertEquals("application/json", done.resultContentType());

      Job stored = plain.getJob(queue, added.id());
      String result = stored.resultContentType();
      assertTrue(result.startsWith("application/vnd.qm.encoded; v=1; codecs=aes-256-gcm; kid=k1;"), result);
      String data = stored.contentType();
      assertTrue(data.startsWith("application/vnd.qm.encoded; v=1; codecs=gzip,aes-256-gcm; kid=k1;"), data);
      assertTrue(checkpoint.get().startsWith("application/vnd.qm.encoded; v=1; codecs=gzip,aes-256-gcm;"),
          checkpoint.get());
      assertEquals(2, coded.getJob(queue, added.id()).data(JsonObject.class).get("step").getAsInt());
      stopWorker(); // before its client closes
    }
  }

  private void stopWorker() throws InterruptedException {
    worker.shutdown(Duration.ofSeconds(5));
    worker = null;
  }

  /** Waits for the dead-letter copy, which the server adds in a hand-off after the job failed. */
  private static void awaitCopy(QueueManager qm, String dlq, String copyId) throws InterruptedException {
    long deadline = System.nanoTime() + WAIT.toNanos();
    while (true) {
      try {
        qm.getJob(dlq, copyId);
        return;
      } catch (NotFoundException e) {
        if (System.nanoTime() > deadline) {
          throw e;
        }
        Thread.sleep(20);
      }
    }
  }

  @Test
  void aWrongKeyIsRefusedAndAJobNoWorkerCanReadFailsForGood() throws Exception {
    String queue = TestServers.queue("codecs-key");
    try (QueueManager k1 = client(new AesGcmCodec(Map.of("k1", K1), null));
        QueueManager k2 = client(new AesGcmCodec(Map.of("k2", K2), null))) {
      String dead = queue + "-dead";
      k1.registerQueue(queue, QueueConfig.builder().deadLetterQueue(dead).build());
      JobOptions three = JobOptions.builder().attempts(3).build();
      Job added = k1.addJob(queue, "secret", Map.of("card", "4111"), three);
      var e = assertThrows(PayloadCodecException.class, () -> k2.getJob(queue, added.id()));
      assertEquals(Status.Code.DATA_LOSS, e.code());
      assertEquals(NOT_HELD, e.getMessage());

      List<String> ran = new ArrayList<>();
      worker = k2.newWorker(WorkerOptions.builder().handler(queue, job -> {
        ran.add(job.id());
        return null;
      }).build());
      worker.start();
      Job failed = k1.waitForJob(queue, added.id(), WAIT);
      assertEquals(JobState.FAILED, failed.state());
      assertEquals("cannot decode the job's payload: " + NOT_HELD, failed.failedReason());
      assertEquals(1, failed.attemptsMade(), "no retry: no attempt could read it");
      assertEquals(List.of(), ran);
      assertNull(failed.result());
      stopWorker(); // before its client closes

      // The dead-letter copy keeps the original encoded; a client with the key reads it as a plain one's.
      awaitCopy(k1, dead, queue + ":" + added.id());
      DeadLetter copy = k1.listDeadLetters(dead, null, 10, "").items().get(0);
      assertEquals(added.id(), copy.originalJobId());
      assertEquals("application/json", copy.originalContentType());
      JsonObject original = copy.originalData(JsonObject.class);
      assertEquals("4111", original.get("card").getAsString());
      try (QueueManager plain = client()) {
        DeadLetter unread = plain.listDeadLetters(dead, null, 10, "").items().get(0);
        assertTrue(unread.originalContentType().startsWith("application/vnd.qm.encoded;"));
      }
      // A client with other keys cannot read it, as it cannot read the original, and says why.
      var other = assertThrows(PayloadCodecException.class, () -> k2.listDeadLetters(dead, null, 10, ""));
      assertTrue(other.getMessage().contains("key id 'k1'"), other.getMessage());

      // The server would judge a result condition on ciphertext: refused before sending.
      Workflow flow = Workflow.builder(queue).steps(
          WorkflowStep.builder(queue, "check").key("check")
              .onSuccess(WorkflowStep.builder(queue, "pay").key("pay")
                  .runIf(StepCondition.when("check", "total", ">", 0)).build())
              .build())
          .build();
      var refused = assertThrows(IllegalArgumentException.class, () -> k1.executeWorkflow(flow));
      assertTrue(refused.getMessage().startsWith("workflow step 'pay': runIf on a result cannot work with"),
          refused.getMessage());
    }
  }
}
