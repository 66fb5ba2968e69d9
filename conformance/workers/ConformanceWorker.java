// The Java conformance worker: the kit's processor contract (conformance/README.md) on the Java client
// (clients/java). The harness runs it as a single-file program on the client's classpath (`make java-dev`
// writes it to clients/java/target/classpath.txt):
//
//   java -cp clients/java/target/classes:$(cat clients/java/target/classpath.txt) \
//       conformance/workers/ConformanceWorker.java
//
// with QM_CONFORMANCE_ADDRESS, QM_CONFORMANCE_QUEUE and QM_CONFORMANCE_CONCURRENCY set; it stops gracefully
// on SIGTERM and then exits with status 0.

import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import dev.queuemanager.JobContext;
import dev.queuemanager.JsonText;
import dev.queuemanager.QueueManager;
import dev.queuemanager.UnrecoverableException;
import dev.queuemanager.Worker;
import dev.queuemanager.WorkerOptions;
import java.time.Duration;
import java.util.Map;
import java.util.concurrent.CountDownLatch;

public final class ConformanceWorker {
  private ConformanceWorker() {}

  /** Does what the job's name says, with its data (a JSON object). */
  static Object process(JobContext job) throws Exception {
    JsonObject data = job.data(JsonObject.class);
    if (data == null) {
      data = new JsonObject();
    }
    switch (job.name()) {
      case "echo":
        return JsonText.of(job.dataJson() == null ? "null" : job.dataJson());
      case "fail":
        // Fails the first `times` attempts (every attempt without it), then succeeds.
        if (!data.has("times") || job.attemptsMade() < data.get("times").getAsInt()) {
          throw new RuntimeException(data.has("message") ? data.get("message").getAsString() : "failed");
        }
        return Map.of("attempts", job.attemptsMade() + 1);
      case "sleep":
        long ms = data.has("ms") ? data.get("ms").getAsLong() : 0;
        Thread.sleep(ms); // a cancel interrupts it
        return Map.of("slept", ms);
      case "progress":
        JsonArray steps = data.has("steps") ? data.getAsJsonArray("steps") : new JsonArray();
        for (JsonElement step : steps) {
          job.reportProgress(JsonText.of(step.toString()));
        }
        return Map.of("steps", steps.size());
      case "checkpoint":
        int step = data.has("step") ? data.get("step").getAsInt() : 0;
        if (step == 0) {
          job.updateData(Map.of("step", 1));
          throw new RuntimeException("checkpointed at step 1");
        }
        return Map.of("resumed_at", step);
      default:
        throw new UnrecoverableException("unknown job name \"" + job.name() + "\"");
    }
  }

  public static void main(String[] args) throws InterruptedException {
    String concurrency = System.getenv("QM_CONFORMANCE_CONCURRENCY");
    QueueManager qm = QueueManager.builder(System.getenv("QM_CONFORMANCE_ADDRESS")).build();
    Worker worker =
        qm.newWorker(
            WorkerOptions.builder()
                .handler(System.getenv("QM_CONFORMANCE_QUEUE"), ConformanceWorker::process)
                .concurrency(concurrency == null ? 2 : Integer.parseInt(concurrency))
                .shutdownTimeout(Duration.ofSeconds(10))
                .build());
    CountDownLatch stopped = new CountDownLatch(1);
    // SIGTERM runs the shutdown hooks: stop gracefully there, then leave with status 0 (not 143).
    Runtime.getRuntime()
        .addShutdownHook(
            new Thread(
                () -> {
                  worker.close();
                  qm.close();
                  stopped.countDown();
                  Runtime.getRuntime().halt(0);
                }));
    worker.start();
    stopped.await();
  }
}
