package dev.queuemanager;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.Predicate;
import org.junit.jupiter.api.Test;

/** Workflows against a real server: branches, fan-in, conditions, paging, cancel and retry. */
class FlowsTest extends ServerTest {
  private static final Duration WAIT = Duration.ofSeconds(30);

  private void startWorker(String queue, JobHandler handler) throws InterruptedException {
    worker = qm.newWorker(WorkerOptions.builder().handler(queue, handler).concurrency(4).build());
    worker.start();
    assertTrue(worker.awaitConnected(WAIT), "the worker did not connect");
  }

  /** Jobs named "boom" fail for good; the others return their data's "n" doubled. */
  private static Object doubleOrBoom(JobContext job) {
    if (job.name().equals("boom")) {
      throw new UnrecoverableException("boom");
    }
    JsonElement data = job.data(JsonElement.class);
    int n = data != null && data.isJsonObject() ? data.getAsJsonObject().get("n").getAsInt() : 0;
    return Map.of("n", n * 2);
  }

  /** Polls a run until the predicate holds (the run's state changes on the server as its jobs finish). */
  private WorkflowRun awaitRun(String runId, Predicate<WorkflowRun> done) throws InterruptedException {
    long end = System.nanoTime() + WAIT.toNanos();
    WorkflowRun run = qm.getWorkflow(runId);
    while (!done.test(run)) {
      assertTrue(System.nanoTime() < end, "the run did not get there in time: " + run);
      Thread.sleep(20);
      run = qm.getWorkflow(runId);
    }
    return run;
  }

  private static boolean finished(WorkflowRun run) {
    return run.state() != WorkflowRun.State.RUNNING;
  }

  @Test
  void workflowFollowsBranchesDependenciesAndConditions() throws Exception {
    String queue = TestServers.queue("flow");
    qm.registerQueue(queue);
    startWorker(queue, FlowsTest::doubleOrBoom);
    WorkflowStep skippedByCondition =
        WorkflowStep.builder(queue, "gated")
            .key("gated")
            .runIf(StepCondition.when("a", "n", ">", 100))
            .build();
    Workflow flow =
        Workflow.builder("orders")
            .name("order flow")
            .correlationId("req-9")
            .steps(
                WorkflowStep.builder(queue, "double")
                    .key("a")
                    .data(Map.of("n", 21))
                    .onSuccess(
                        WorkflowStep.builder(queue, "double").key("b").data(Map.of("n", 1)).build(),
                        skippedByCondition)
                    .build(),
                WorkflowStep.builder(queue, "boom")
                    .key("c")
                    .options(JobOptions.builder().attempts(1).build())
                    .onSuccess(WorkflowStep.builder(queue, "double").key("not-taken").build())
                    .onFailure(
                        WorkflowStep.builder(queue, "double")
                            .key("handled")
                            .runIf(StepCondition.whenError("c", "contains", "boom"))
                            .build())
                    .build(),
                WorkflowStep.builder(queue, "double").key("join").dependsOn("a", "b").build())
            .build();
    WorkflowExecution started = qm.executeWorkflow(flow);
    assertTrue(started.created());
    WorkflowRun run = awaitRun(started.runId(), FlowsTest::finished);
    // A step failed for good (handled by its on_failure branch): the run is failed.
    assertEquals(WorkflowRun.State.FAILED, run.state());
    assertEquals("orders", run.workflowId());
    assertEquals("order flow", run.name());
    assertEquals("req-9", run.correlationId());
    assertEquals(7, run.stepCount());
    assertEquals(7, run.finishedStepCount());
    assertNotNull(run.finishTime());
    assertEquals(WorkflowStepRun.State.COMPLETED, run.step("a").state());
    assertEquals(42, run.step("a").result(JsonObject.class).get("n").getAsInt());
    assertEquals("{\"n\":42}", run.step("a").resultJson());
    assertEquals(WorkflowStepRun.State.COMPLETED, run.step("b").state());
    assertEquals("a", run.step("b").parentKey());
    assertEquals(WorkflowStepRun.State.SKIPPED, run.step("gated").state());
    assertTrue(run.step("gated").error().contains("run_if"), run.step("gated").error());
    assertEquals(WorkflowStepRun.State.FAILED, run.step("c").state());
    assertEquals("boom", run.step("c").error());
    assertEquals(WorkflowStepRun.State.SKIPPED, run.step("not-taken").state());
    assertEquals(WorkflowStepRun.State.COMPLETED, run.step("handled").state());
    assertEquals(WorkflowStepRun.State.COMPLETED, run.step("join").state());
    assertEquals(List.of("a", "b"), run.step("join").dependsOn());
    assertFalse(run.step("join").jobId().isEmpty());
    assertEquals(JobState.COMPLETED, qm.getJob(queue, run.step("join").jobId()).state());
  }

  @Test
  void executeWithARunIdIsIdempotent() {
    String queue = TestServers.queue("flow-id");
    qm.registerQueue(queue);
    String runId = "java-run-" + UUID.randomUUID();
    Workflow flow = Workflow.builder("once").steps(WorkflowStep.builder(queue, "x").build()).build();
    WorkflowExecution first = qm.executeWorkflow(flow, runId);
    assertEquals(runId, first.runId());
    assertTrue(first.created());
    WorkflowExecution again = qm.executeWorkflow(flow, runId);
    assertEquals(runId, again.runId());
    assertFalse(again.created());
    assertEquals(1, qm.getQueueMetrics(queue).waiting()); // the second call started nothing
  }

  @Test
  void listWorkflowsPagesByCursor() {
    String queue = TestServers.queue("flow-page");
    qm.registerQueue(queue);
    Set<String> mine = new HashSet<>();
    for (int i = 0; i < 3; i++) {
      Workflow flow = Workflow.builder("paged").steps(WorkflowStep.builder(queue, "x").build()).build();
      mine.add(qm.executeWorkflow(flow).runId());
    }
    Page<WorkflowRun> first = qm.listWorkflows(2, "");
    assertEquals(2, first.items().size());
    assertFalse(first.nextPageToken().isEmpty());
    assertTrue(first.total() >= 3);
    assertTrue(first.items().get(0).steps().isEmpty(), "pages list runs without their steps");
    // Runs started while paging do not shift the pages: every run is listed once.
    List<String> seen = new ArrayList<>();
    String token = "";
    do {
      Page<WorkflowRun> page = qm.listWorkflows(2, token);
      for (WorkflowRun run : page.items()) {
        seen.add(run.runId());
      }
      token = page.nextPageToken();
      WorkflowStep step = WorkflowStep.builder(queue, "y").build();
      qm.executeWorkflow(Workflow.builder("meanwhile").steps(step).build());
    } while (!token.isEmpty());
    assertEquals(new HashSet<>(seen).size(), seen.size(), "a run was listed twice: " + seen);
    assertTrue(seen.containsAll(mine), "runs missing from the pages: " + mine);
    assertThrows(InvalidArgumentException.class, () -> qm.listWorkflows(1001, ""));
    assertThrows(InvalidArgumentException.class, () -> qm.listWorkflows(10, "not-a-token"));
    assertThrows(IllegalArgumentException.class, () -> qm.listWorkflows(-1, ""));
  }

  @Test
  void cancelStopsARunAndRetryRerunsItsFailedSteps() throws Exception {
    String queue = TestServers.queue("flow-retry");
    qm.registerQueue(queue);
    // The held queue has no worker: its run stays running until cancelled.
    String held = TestServers.queue("flow-held");
    qm.registerQueue(held);
    String runId =
        qm.executeWorkflow(Workflow.builder("held").steps(WorkflowStep.builder(held, "x").build()).build())
            .runId();
    WorkflowRun cancelled = qm.cancelWorkflow(runId, "not today");
    assertEquals(WorkflowRun.State.CANCELLED, cancelled.state());
    assertEquals("not today", cancelled.cancelReason());
    assertEquals(WorkflowStepRun.State.CANCELLED, cancelled.steps().get(0).state());
    assertEquals(JobState.CANCELLED, qm.getJob(held, cancelled.steps().get(0).jobId()).state());
    assertThrows(FailedPreconditionException.class, () -> qm.retryWorkflow(runId));

    AtomicInteger runs = new AtomicInteger();
    startWorker(
        queue,
        job -> {
          if (runs.incrementAndGet() == 1) {
            throw new IllegalStateException("first run fails");
          }
          return "fixed";
        });
    Workflow flow =
        Workflow.builder("retry")
            .steps(
                WorkflowStep.builder(queue, "flaky")
                    .key("flaky")
                    .options(JobOptions.builder().attempts(1).build())
                    .onSuccess(WorkflowStep.builder(queue, "after").key("after").build())
                    .build())
            .build();
    String retried = qm.executeWorkflow(flow).runId();
    WorkflowRun failed = awaitRun(retried, FlowsTest::finished);
    assertEquals(WorkflowRun.State.FAILED, failed.state());
    assertEquals(WorkflowStepRun.State.SKIPPED, failed.step("after").state());
    WorkflowRun again = qm.retryWorkflow(retried);
    // The retried step's job starts at once (the worker may even have finished it when the call answers).
    assertTrue(again.state() != WorkflowRun.State.FAILED, again.toString());
    assertTrue(again.step("flaky").state() != WorkflowStepRun.State.FAILED, again.toString());
    WorkflowRun done = awaitRun(retried, FlowsTest::finished);
    assertEquals(WorkflowRun.State.COMPLETED, done.state());
    assertEquals(WorkflowStepRun.State.COMPLETED, done.step("after").state());
    assertEquals("\"fixed\"", done.step("flaky").resultJson());
    assertThrows(FailedPreconditionException.class, () -> qm.retryWorkflow(retried));
  }

  @Test
  void badWorkflowsAreRefusedWithAPreciseError() {
    String queue = TestServers.queue("flow-bad");
    qm.registerQueue(queue);
    assertThrows(NotFoundException.class, () -> qm.getWorkflow("no-such-run"));
    assertThrows(NotFoundException.class, () -> qm.cancelWorkflow("no-such-run", ""));
    assertThrows(NotFoundException.class, () -> qm.retryWorkflow("no-such-run"));
    QueueManagerException empty =
        assertThrows(QueueManagerException.class, () -> qm.executeWorkflow(Workflow.builder("x").build()));
    assertEquals(io.grpc.Status.Code.INVALID_ARGUMENT, empty.code());
    Workflow unknownDependency =
        Workflow.builder("x")
            .steps(WorkflowStep.builder(queue, "a").key("a").dependsOn("nowhere").build())
            .build();
    InvalidArgumentException e =
        assertThrows(InvalidArgumentException.class, () -> qm.executeWorkflow(unknownDependency));
    assertTrue(e.getMessage().contains("nowhere"), e.getMessage());
    Workflow unknownQueue =
        Workflow.builder("x").steps(WorkflowStep.builder("no-such-queue-j", "a").build()).build();
    assertThrows(NotFoundException.class, () -> qm.executeWorkflow(unknownQueue));
    assertThrows(IllegalArgumentException.class, () -> StepCondition.when("a", "", "~", 1));
    assertThrows(IllegalArgumentException.class, () -> StepCondition.when("a", "", "exists", 1));
  }
}
