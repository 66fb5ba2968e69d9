"""Retrying a failed workflow step resumes its run: RetryJob or RetryFailedJobs on its job, RetryWorkflow."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest

from queue_manager import (
    FailedPreconditionError,
    InvalidArgumentError,
    JobContext,
    NotFoundError,
    QueueManager,
    WorkflowState,
    WorkflowStepState,
)
from queue_manager.v1 import workflows_pb2
from queue_manager_server.engine import Engine
from queue_manager_server.engine.job_control import JobControl
from queue_manager_server.engine.workflows import WorkflowStore
from queue_manager_server.services.flows import Flows
from queue_manager_server.services.workflows import Workflows, step_job_id
from tests.conftest import RunningServer, ServerFactory
from tests.rawworker import eventually
from tests.test_cli import qm_cli, qm_json

WAIT = 20.0
STARTED, PENDING, SKIPPED = WorkflowStepState.STARTED, WorkflowStepState.PENDING, WorkflowStepState.SKIPPED
COMPLETED, FAILED = WorkflowStepState.COMPLETED, WorkflowStepState.FAILED


def step(key: str, **more: Any) -> dict[str, Any]:
    """A step of queue "steps" whose job is named as its key, failing for good at its first failure."""
    return {"key": key, "queue_name": "steps", "job_name": key, "options": {"attempts": 1}, **more}


def a_b_c() -> dict[str, Any]:
    """A → B → C, each on the success of the one before."""
    return {"name": "abc", "steps": [step("a", on_success=[step("b", on_success=[step("c")])])]}


class Steps:
    """The processor of queue "steps": records the jobs it runs (name, its parent's result); each name in
    `fail` fails once; a name in `hold` waits for its event on its second run."""

    def __init__(self, qm: QueueManager, fail: Iterable[str] = (), hold: Iterable[str] = ()) -> None:
        self.ran: list[tuple[str, Any]] = []
        self.fail = set(fail)
        self.hold = {name: asyncio.Event() for name in hold}
        self.second: set[str] = set()

        @qm.processor("steps")
        async def run(job: JobContext) -> dict[str, str]:
            self.ran.append((job.name, job.parent.result if job.parent else None))
            if job.name in self.fail:
                self.fail.discard(job.name)
                raise RuntimeError(f"{job.name} broke")
            if job.name in self.hold:
                await self.hold[job.name].wait()
            return {"by": job.name}


@pytest.fixture
async def qm(server: RunningServer) -> AsyncIterator[QueueManager]:
    client = QueueManager(address=server.address, concurrency=8)
    await client.register_queue("steps")
    yield client
    await client.shutdown()


async def settled(qm: QueueManager, run_id: str) -> Any:
    """The run once it is no longer running."""

    async def done() -> bool:
        return (await qm.get_workflow(run_id)).state != WorkflowState.RUNNING

    await eventually(done, timeout=WAIT)
    return await qm.get_workflow(run_id)


def states(run: Any) -> dict[str, WorkflowStepState]:
    return {s.key: s.state for s in run.steps}


async def test_retrying_a_failed_steps_job_runs_its_successors_and_completes_the_run(
    qm: QueueManager,
) -> None:
    steps = Steps(qm, fail={"b"}, hold={"b"})
    await qm.start_workers()
    run_id = await qm.execute_workflow(a_b_c())
    run = await settled(qm, run_id)
    assert run.state == WorkflowState.FAILED and run.finished_at is not None
    assert states(run) == {"a": COMPLETED, "b": FAILED, "c": SKIPPED}
    assert run.step("b").error == "b broke" and run.finished_step_count == 3

    await qm.retry_job("steps", step_job_id(run_id, "b"))
    # The retry's answer comes once the step has reopened: B started again, C pending, the run running.
    run = await qm.get_workflow(run_id)
    assert run.state == WorkflowState.RUNNING and run.finished_at is None
    assert states(run) == {"a": COMPLETED, "b": STARTED, "c": PENDING}
    assert (run.step("b").error, run.finished_step_count) == ("", 1)

    steps.hold["b"].set()
    run = await settled(qm, run_id)
    assert run.state == WorkflowState.COMPLETED and run.finished_at is not None
    assert states(run) == {"a": COMPLETED, "b": COMPLETED, "c": COMPLETED}
    assert run.finished_step_count == 3
    assert steps.ran == [("a", None), ("b", {"by": "a"}), ("b", {"by": "a"}), ("c", {"by": "b"})]


async def test_a_retried_step_whose_failure_branch_ran_takes_its_success_branch(qm: QueueManager) -> None:
    """The on_failure step that ran stays completed (it ran); the on_success step runs once the retried step
    completes, and the run completes."""
    steps = Steps(qm, fail={"b"})
    await qm.start_workers()
    b = step("b", on_success=[step("ok")], on_failure=[step("alert")])
    run_id = await qm.execute_workflow({"steps": [b]})
    run = await settled(qm, run_id)
    assert run.state == WorkflowState.FAILED
    assert states(run) == {"b": FAILED, "ok": SKIPPED, "alert": COMPLETED}

    await qm.retry_job("steps", step_job_id(run_id, "b"))
    run = await settled(qm, run_id)
    assert run.state == WorkflowState.COMPLETED
    assert states(run) == {"b": COMPLETED, "ok": COMPLETED, "alert": COMPLETED}
    assert [name for name, _ in steps.ran] == ["b", "alert", "b", "ok"]
    assert run.step("ok").result == {"by": "ok"}


async def test_a_retried_step_that_fails_again_fails_its_run_again(qm: QueueManager) -> None:
    """Failing again: the run is failed as before, its on_failure step does not run a second time."""
    steps = Steps(qm, fail={"b"})
    await qm.start_workers()
    b = step("b", on_success=[step("ok")], on_failure=[step("alert")])
    run_id = await qm.execute_workflow({"steps": [b, step("d", depends_on=["b"])]})
    first = await settled(qm, run_id)
    steps.fail.add("b")
    await qm.retry_job("steps", step_job_id(run_id, "b"))
    run = await settled(qm, run_id)
    assert run.state == WorkflowState.FAILED and run.finished_at >= first.finished_at
    assert states(run) == {"b": FAILED, "ok": SKIPPED, "alert": COMPLETED, "d": SKIPPED}
    assert run.finished_step_count == run.step_count == 4
    assert [name for name, _ in steps.ran] == ["b", "alert", "b"]


async def test_retry_failed_jobs_of_a_queue_reopens_each_steps_run(qm: QueueManager) -> None:
    steps = Steps(qm, fail={"a"})
    await qm.start_workers()
    run_id = await qm.execute_workflow(a_b_c())
    assert (await settled(qm, run_id)).state == WorkflowState.FAILED
    assert await qm.retry_failed("steps") == 1
    run = await settled(qm, run_id)
    assert run.state == WorkflowState.COMPLETED
    assert [name for name, _ in steps.ran] == ["a", "a", "b", "c"]


async def test_a_retry_by_filter_reopens_the_steps_run(qm: QueueManager) -> None:
    steps = Steps(qm, fail={"a"})
    await qm.start_workers()
    run_id = await qm.execute_workflow(a_b_c())
    assert (await settled(qm, run_id)).state == WorkflowState.FAILED
    result = await qm.retry_jobs("steps", name="a")
    assert result.count == 1
    assert (await settled(qm, run_id)).state == WorkflowState.COMPLETED
    assert [name for name, _ in steps.ran] == ["a", "a", "b", "c"]


async def test_retry_workflow_runs_every_failed_step_again_in_one_call(qm: QueueManager) -> None:
    """Two parallel steps failed for good (their fan-in step skipped): one RetryWorkflow runs both again,
    the fan-in step runs once after them, and the run completes. A second call while the run is running is
    refused, and so is one on the completed run."""
    steps = Steps(qm, fail={"p1", "p2"}, hold={"p1"})
    await qm.start_workers()
    wf = {"steps": [step("p1"), step("p2"), step("ok"), step("fan-in", depends_on=["p1", "p2", "ok"])]}
    run_id = await qm.execute_workflow(wf)
    run = await settled(qm, run_id)
    assert run.state == WorkflowState.FAILED
    assert states(run) == {"p1": FAILED, "p2": FAILED, "ok": COMPLETED, "fan-in": SKIPPED}

    run = await qm.retry_workflow(run_id)
    assert run.state == WorkflowState.RUNNING
    assert states(run)["p1"] == STARTED and states(run)["fan-in"] == PENDING
    with pytest.raises(FailedPreconditionError, match="still running"):
        await qm.retry_workflow(run_id)
    steps.hold["p1"].set()
    run = await settled(qm, run_id)
    assert run.state == WorkflowState.COMPLETED
    assert set(states(run).values()) == {COMPLETED}
    names = [name for name, _ in steps.ran]
    assert sorted(names[:3]) == ["ok", "p1", "p2"] and names[-1] == "fan-in" and names.count("fan-in") == 1
    with pytest.raises(FailedPreconditionError, match="completed; there is nothing to retry"):
        await qm.retry_workflow(run_id)


async def test_retry_workflow_refuses_bad_input_and_changes_nothing(qm: QueueManager) -> None:
    with pytest.raises(NotFoundError, match="no-such-run"):
        await qm.retry_workflow("no-such-run")
    with pytest.raises(InvalidArgumentError, match="run_id"):
        await qm.retry_workflow("")
    Steps(qm, fail={"p1", "p2"}, hold={"slow"})
    await qm.start_workers()
    failed = await qm.execute_workflow({"steps": [step("p1"), step("p2")]})
    assert (await settled(qm, failed)).state == WorkflowState.FAILED
    # A failed step's job removed (as retention would): the run cannot be retried, and nothing is.
    await qm.remove_job("steps", step_job_id(failed, "p2"))
    with pytest.raises(
        FailedPreconditionError, match=r"step 'p2' \(job '.*\.p2' in queue 'steps'\) no longer"
    ):
        await qm.retry_workflow(failed)
    run = await qm.get_workflow(failed)
    assert run.state == WorkflowState.FAILED and run.step("p1").job_state.name == "FAILED"
    # A run cancelled with cancel_workflow stays cancelled.
    cancelled = await qm.execute_workflow({"steps": [step("slow")]})
    await qm.cancel_workflow(cancelled, "stop")
    with pytest.raises(FailedPreconditionError, match="cancelled with CancelWorkflow"):
        await qm.retry_workflow(cancelled)


async def test_cli_retries_a_run(
    qm: QueueManager, server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    steps = Steps(qm, fail={"a"}, hold={"a"})
    await qm.start_workers()
    run_id = await qm.execute_workflow(a_b_c(), run_id="cli-retry")
    await settled(qm, run_id)
    out = await qm_json(capsys, server, "workflows", "retry", run_id)
    assert out == {"run_id": run_id, "state": "running", "started_steps": ["a"]}
    status, _, err = await qm_cli(capsys, "--server", server.address, "workflows", "retry", run_id)
    assert status == 1 and "FAILED_PRECONDITION" in err and "still running" in err
    steps.hold["a"].set()  # the held run ends, so the worker's shutdown does not wait out its grace


async def test_two_servers_retrying_a_run_at_once_reopen_it_once(server_factory: ServerFactory) -> None:
    """No worker: the failed steps' jobs are failed by hand. Two servers retry the run at the same time:
    each step is reopened once (its reopen count is 1, the run's failure counted off once)."""
    one, two = await server_factory(), await server_factory()
    engine = one.app.queue_service.engine  # its failures are handed off at once
    a, b = QueueManager(address=one.address), QueueManager(address=two.address)
    await a.register_queue("steps")
    run_id = await a.execute_workflow({"steps": [step("p1"), step("p2"), step("d", depends_on=["p1", "p2"])]})
    claimed = await engine.claim("steps", 10, "t", "w", 30_000)
    await engine.fail("steps", [(j.id, "t", "broke", "", True) for j in claimed.jobs])
    assert (await settled(a, run_id)).state == WorkflowState.FAILED
    outcomes = await asyncio.gather(
        a.retry_workflow(run_id), b.retry_workflow(run_id), return_exceptions=True
    )
    assert any(not isinstance(o, BaseException) for o in outcomes), outcomes
    for o in outcomes:
        assert not isinstance(o, BaseException) or isinstance(o, FailedPreconditionError), o
    key = WorkflowStore(engine).key(run_id)
    fields = await engine.redis.hmget(key, ["rt:p1", "rt:p2", "nfail", "nf", "st"])
    assert fields == [b"1", b"1", b"0", b"0", b"running"]
    run = await a.get_workflow(run_id)
    assert states(run) == {"p1": STARTED, "p2": STARTED, "d": PENDING}
    assert (await engine.metrics("steps")).waiting == 2
    await a.shutdown()
    await b.shutdown()


async def test_a_retry_before_the_failure_was_handed_off_never_records_the_failure(engine: Engine) -> None:
    """The step's job failed for good and was retried before the hand-off carried the failure out (its
    server died, say): the retry's entry replaces the failure's, so the run never counts it; the step stays
    started and its job's completion completes the run."""
    await engine.register_queue("steps", {})
    engine.flow_hook = None  # hand-offs run below, by hand
    workflows = Workflows(engine, 1 << 20)
    flows = Flows(engine, workflows, 1 << 20)
    wf = workflows_pb2.Workflow(steps=[workflows_pb2.WorkflowStep(key="a", queue_name="steps", job_name="a")])
    run_id, _ = await workflows.execute(wf, "race")
    (job,) = (await engine.claim("steps", 10, "t", "w", 30_000)).jobs
    await engine.fail("steps", [(job.id, "t", "broke", "", True)])
    await JobControl(engine).retry_job("steps", job.id)
    assert await flows.hand_off("steps") == 2  # the failure's place and the retry's: one entry, "retried"
    key = workflows.store.key(run_id)
    assert await engine.redis.hmget(key, ["s:a", "nfail", "rt:a", "st"]) == [b"s", None, None, b"running"]
    assert await engine.redis.llen(engine.keys("steps").flow_outbox) == 0
    (job,) = (await engine.claim("steps", 10, "t", "w", 30_000)).jobs
    await engine.complete("steps", [(job.id, "t", b"1", "application/json")])
    await flows.hand_off("steps")
    assert (await workflows.get(run_id)).state == workflows_pb2.WORKFLOW_STATE_COMPLETED
