"""Workflows: success and failure branches, fan-in, idempotent run ids, cancel, crash safety."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from queue_manager import (
    FailedPreconditionError,
    InvalidArgumentError,
    JobContext,
    NotFoundError,
    QueueManager,
    SyncQueueManager,
    WorkflowState,
    WorkflowStepState,
)
from queue_manager.v1 import types_pb2, workflows_pb2
from queue_manager_server.engine import Engine
from queue_manager_server.engine.keys import workflow_registry, workflow_starting
from queue_manager_server.engine.records import NewJob
from queue_manager_server.engine.workflows import WorkflowStore
from queue_manager_server.errors import QueueNotFound
from queue_manager_server.services.flows import Flows
from queue_manager_server.services.workflows import (
    STARTING_GRACE_MS,
    Workflows,
    layout,
    run_fields,
    step_job_id,
)
from tests.conftest import RunningServer
from tests.procs import Procs
from tests.rawworker import eventually
from tests.test_cli import qm_cli, qm_json

WAIT = 20.0


async def in_two_queues(engine: Engine) -> Workflows:
    """Workflows over the engine, with the queues "first" and "second" registered."""
    for q in ("first", "second"):
        await engine.register_queue(q, {})
    return Workflows(engine, 1 << 20)


def branching(*after: str, roots: tuple[str, ...] = ()) -> workflows_pb2.Workflow:
    """A step "a" in queue first whose success starts the steps `after` in queue second, and more root
    steps `roots` in queue first (each step's job named as its key)."""
    a = workflows_pb2.WorkflowStep(key="a", queue_name="first", job_name="a")
    a.on_success.extend(workflows_pb2.WorkflowStep(key=k, queue_name="second", job_name=k) for k in after)
    more = [workflows_pb2.WorkflowStep(key=k, queue_name="first", job_name=k) for k in roots]
    return workflows_pb2.Workflow(steps=[a, *more])


async def step_outcome(
    store: WorkflowStore, run_id: str, key: str, outcome: str = "c", result: bytes = b"1"
) -> tuple[str, list[str]] | None:
    """A step's outcome recorded: (the run's state, the keys of steps to start), None for a run gone."""
    (done,) = await store.finish_steps([(run_id, key, outcome, result, "application/json", "")])
    return None if done is None else (done.state, done.to_start)


QUEUES = ("user-processing", "email-notifications", "admin-alerts", "analytics", "maps", "reduce")


def onboarding(user_id: int) -> dict[str, Any]:
    """The seed's onboarding workflow."""
    return {
        "id": "user-onboarding",
        "name": "User onboarding",
        "steps": [
            {
                "key": "create-user-profile",
                "queue_name": "user-processing",
                "job_name": "create-user-profile",
                "data": {"user_id": user_id},
                "options": {"attempts": 2},
                "on_success": [
                    {"queue_name": "email-notifications", "job_name": "send-welcome-email"},
                    {"queue_name": "analytics", "job_name": "track-signup"},
                ],
                "on_failure": [
                    {"key": "alert-admin", "queue_name": "admin-alerts", "job_name": "alert-admin"}
                ],
            }
        ],
        "metadata": {
            "created_by": "signup-service",
            "correlation_id": f"req-{user_id}",
            "tags": ["onboarding"],
        },
    }


@pytest.fixture
async def qm(server: RunningServer) -> AsyncIterator[QueueManager]:
    client = QueueManager(address=server.address, concurrency=8)
    for name in QUEUES:
        await client.register_queue(name)
    yield client
    await client.shutdown()


async def finished(qm: QueueManager, run_id: str) -> Any:
    async def done() -> bool:
        return (await qm.get_workflow(run_id)).state != WorkflowState.RUNNING

    await eventually(done, timeout=WAIT)
    return await qm.get_workflow(run_id)


def record(qm: QueueManager, ran: list[tuple[str, Any]], fail_profile: bool = False) -> None:
    @qm.processor("user-processing")
    async def profile(job: JobContext) -> dict[str, Any]:
        ran.append((job.name, job.attempts_made))
        if fail_profile:
            raise RuntimeError("profile service down")
        return {"profile_id": job.data["user_id"] * 10}

    @qm.processor("email-notifications")
    async def email(job: JobContext) -> str:
        assert job.parent is not None and job.workflow is not None
        ran.append((job.name, job.parent.result))
        return "sent"

    @qm.processor("analytics")
    async def track(job: JobContext) -> None:
        ran.append((job.name, job.metadata.correlation_id))

    @qm.processor("admin-alerts")
    async def alert(job: JobContext) -> None:
        assert job.parent is not None
        ran.append((job.name, job.parent.failed_reason))


async def test_onboarding_success_path(qm: QueueManager) -> None:
    ran: list[tuple[str, Any]] = []
    record(qm, ran)
    await qm.start_workers()
    run_id = await qm.execute_workflow(onboarding(7))
    run = await finished(qm, run_id)
    assert run.state == WorkflowState.COMPLETED
    assert sorted(ran) == [
        ("create-user-profile", 0),
        ("send-welcome-email", {"profile_id": 70}),
        ("track-signup", "req-7"),
    ]
    states = {s.key: s.state for s in run.steps}
    assert states == {
        "create-user-profile": WorkflowStepState.COMPLETED,
        "create-user-profile.s0": WorkflowStepState.COMPLETED,
        "create-user-profile.s1": WorkflowStepState.COMPLETED,
        "alert-admin": WorkflowStepState.SKIPPED,
    }
    profile = run.step("create-user-profile")
    assert profile.result == {"profile_id": 70} and profile.job_id == f"{run_id}.create-user-profile"
    assert run.step("create-user-profile.s0").branch == "on_success"
    assert (run.created_by, run.correlation_id, run.tags) == ("signup-service", "req-7", ["onboarding"])
    assert run.step_count == run.finished_step_count == 4


async def test_onboarding_failure_path_runs_alert_only_after_all_attempts(qm: QueueManager) -> None:
    ran: list[tuple[str, Any]] = []
    record(qm, ran, fail_profile=True)
    await qm.start_workers()
    run_id = await qm.execute_workflow(onboarding(8))
    run = await finished(qm, run_id)
    assert run.state == WorkflowState.FAILED
    assert ran == [
        ("create-user-profile", 0),
        ("create-user-profile", 1),
        ("alert-admin", "profile service down"),
    ]
    assert run.step("create-user-profile").state == WorkflowStepState.FAILED
    assert run.step("create-user-profile").error == "profile service down"
    assert run.step("alert-admin").state == WorkflowStepState.COMPLETED
    assert {run.step(k).state for k in ("create-user-profile.s0", "create-user-profile.s1")} == {
        WorkflowStepState.SKIPPED
    }


async def test_fan_in_reduce_runs_once_after_all_maps(qm: QueueManager) -> None:
    reduced: list[list[int]] = []

    @qm.processor("maps")
    async def square(job: JobContext) -> int:
        await asyncio.sleep(0.01 * (job.data["n"] % 3))
        return int(job.data["n"]) ** 2

    @qm.processor("reduce")
    async def total(job: JobContext) -> int:
        reduced.append(sorted(p.result for p in job.parents))
        return sum(p.result for p in job.parents)

    await qm.start_workers()
    maps = [
        {"key": f"map-{n}", "queue_name": "maps", "job_name": "square", "data": {"n": n}} for n in range(10)
    ]
    reduce = {
        "key": "reduce",
        "queue_name": "reduce",
        "job_name": "sum",
        "depends_on": [m["key"] for m in maps],
    }
    run_id = await qm.execute_workflow({"name": "map-reduce", "steps": [*maps, reduce]})
    run = await finished(qm, run_id)
    assert run.state == WorkflowState.COMPLETED
    assert reduced == [sorted(n * n for n in range(10))]
    assert run.step("reduce").result == sum(n * n for n in range(10))
    assert run.step("reduce").depends_on == [f"map-{n}" for n in range(10)]


async def test_failed_dependency_skips_the_fan_in_step(qm: QueueManager) -> None:
    @qm.processor("maps")
    async def square(job: JobContext) -> int:
        if job.data["n"] == 1:
            raise RuntimeError("bad input")
        return 1

    @qm.processor("reduce")
    async def total(job: JobContext) -> None:
        raise AssertionError("must not run")

    await qm.start_workers()
    steps = [{"key": f"m{n}", "queue_name": "maps", "job_name": "sq", "data": {"n": n}} for n in range(3)]
    steps.append({"key": "r", "queue_name": "reduce", "job_name": "sum", "depends_on": ["m0", "m1", "m2"]})
    run = await finished(qm, await qm.execute_workflow({"steps": steps}))
    assert run.state == WorkflowState.FAILED
    assert run.step("r").state == WorkflowStepState.SKIPPED and run.step("r").job_id == ""


async def test_run_id_makes_execution_idempotent(qm: QueueManager) -> None:
    ran: list[tuple[str, Any]] = []
    record(qm, ran)
    first = await qm.execute_workflow(onboarding(9), run_id="signup-9")
    again = await qm.execute_workflow(onboarding(9), run_id="signup-9")
    assert first == again == "signup-9"
    await qm.start_workers()
    await finished(qm, "signup-9")
    assert [name for name, _ in ran].count("create-user-profile") == 1
    runs, _ = await qm.list_workflows()
    assert [r.run_id for r in runs].count("signup-9") == 1


async def test_run_and_step_states_equal_their_names_as_job_states_do(qm: QueueManager) -> None:
    # The docs name the states as strings ("running", "started"), and a JobState compares equal to its
    # name: a run's state must too, or a loop waiting for `run.state == "completed"` never ends.
    run = await qm.get_workflow(await qm.execute_workflow(onboarding(3)))
    assert run.state == "running" and f"{run.state}" == "running"
    step = run.step("create-user-profile")
    assert step.state == "started" and run.step("alert-admin").state == "pending"
    assert step.job_state == "waiting"


async def test_pages_list_each_run_once_while_runs_start(qm: QueueManager) -> None:
    """A page token is a cursor (the last run listed), not an offset: runs started while a caller pages sort
    before it and shift nothing, so no run is listed twice or skipped (an offset listed one twice)."""
    mine = [await qm.execute_workflow(onboarding(100 + i), run_id=f"paged-{i}") for i in range(5)]
    runs, token = await qm.list_workflows(page_size=2)
    seen = [r.run_id for r in runs]
    while token and len(seen) <= len(mine):  # bounded: an offset never caught up with the runs started
        for i in range(2):  # started between two pages
            await qm.execute_workflow(onboarding(200 + i), run_id=f"later-{len(seen)}-{i}")
        runs, token = await qm.list_workflows(page_size=2, page_token=token)
        seen += [r.run_id for r in runs]
    assert seen == mine[::-1]
    with pytest.raises(InvalidArgumentError, match="page_token"):
        await qm.list_workflows(page_token=base64.urlsafe_b64encode(b"o:2").decode())  # an offset's


async def test_a_run_id_of_the_wrong_type_is_named(qm: QueueManager) -> None:
    # Protobuf refused an int with "bad argument type for built-in operation", naming nothing.
    for call in (qm.get_workflow, qm.cancel_workflow, qm.retry_workflow):
        with pytest.raises(TypeError, match=r"^run_id must be a str, not int$"):
            await call(5)  # type: ignore[arg-type]


@pytest.mark.parametrize("page_size", [-1, 1001, 2**40, "5"])
async def test_a_bad_page_size_names_the_argument_on_both_clients(
    qm: QueueManager, server: RunningServer, page_size: Any
) -> None:
    # As list_jobs's: protobuf refused a negative or huge one with a bare "Value out of range: -1", and the
    # server answered INVALID_ARGUMENT for one over 1000 only after the call.
    with pytest.raises(ValueError, match=r"page_size must be an int from 1 to 1000 \(0 means 100\)"):
        await qm.list_workflows(page_size=page_size)
    with (
        SyncQueueManager(server.address) as client,
        pytest.raises(ValueError, match="page_size must be an int from 1 to 1000"),
    ):
        client.list_workflows(page_size=page_size)


async def test_cancel_stops_further_steps(qm: QueueManager) -> None:
    release = asyncio.Event()

    @qm.processor("user-processing")
    async def slow(job: JobContext) -> str:
        await release.wait()
        return "done"

    await qm.start_workers()
    run_id = await qm.execute_workflow(onboarding(10))

    async def started() -> bool:
        return (await qm.get_workflow(run_id)).step("create-user-profile").state == WorkflowStepState.STARTED

    await eventually(started)
    run = await qm.cancel_workflow(run_id, "user deleted")
    assert (run.state, run.cancel_reason) == (WorkflowState.CANCELLED, "user deleted")
    release.set()

    async def settled() -> bool:
        r = await qm.get_workflow(run_id)
        return r.finished_step_count == r.step_count

    await eventually(settled)
    run = await qm.get_workflow(run_id)
    assert run.state == WorkflowState.CANCELLED
    assert run.step("create-user-profile.s0").state == WorkflowStepState.CANCELLED
    assert (await qm.get_queue_metrics("email-notifications")).waiting == 0
    with pytest.raises(FailedPreconditionError, match="already cancelled"):
        await qm.cancel_workflow(run_id)


async def test_bad_workflows_are_refused(qm: QueueManager) -> None:
    step = {"queue_name": "maps", "job_name": "j"}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"steps": [{**step, "key": "a"}, {**step, "key": "a"}]}, "unique"),
        ({"steps": [{**step, "key": "a", "depends_on": ["nope"]}]}, "'nope'"),
        (
            {"steps": [{**step, "key": "a", "depends_on": ["b"]}, {**step, "key": "b", "depends_on": ["a"]}]},
            "cycle",
        ),
        (
            {"steps": [{**step, "key": "a", "on_success": [{**step, "key": "b"}], "depends_on": ["b"]}]},
            "cycle",
        ),
        ({"steps": [{**step, "options": {"job_id": "x"}}]}, "job_id"),
        ({"steps": [{**step, "key": "bad key"}]}, "key"),
    ]
    for workflow, message in cases:
        with pytest.raises(InvalidArgumentError, match=message):
            await qm.execute_workflow(workflow)
    with pytest.raises(NotFoundError, match="not-registered"):
        await qm.execute_workflow({"steps": [{"queue_name": "not-registered", "job_name": "j"}]})
    with pytest.raises(NotFoundError):
        await qm.get_workflow("no-such-run")
    with pytest.raises(ValueError, match="at least one step"):
        await qm.execute_workflow({"steps": []})
    # Branches nest 32 levels deep, as the docs say: the 32nd step's empty branches counted as a 33rd level.
    for depth, accepted in ((32, True), (33, False)):
        nested = {**step, "job_name": "deepest"}
        for _ in range(depth - 1):
            nested = {**step, "on_success": [nested]}
        if accepted:
            run = await qm.get_workflow(await qm.execute_workflow({"steps": [nested]}))
            assert (run.step_count, run.steps[-1].key) == (32, "0" + ".s0" * 31), run.steps[-1]
        else:
            with pytest.raises(InvalidArgumentError, match="branches nest at most 32 levels deep"):
                await qm.execute_workflow({"steps": [nested]})
    # A lone string was iterated letter by letter: "a-b" waited for steps "a", "-" and "b".
    with pytest.raises(TypeError, match=r"steps\[1\]\.depends_on must be a list of step keys, not str"):
        await qm.execute_workflow({"steps": [{**step, "key": "a-b"}, {**step, "depends_on": "a-b"}]})
    with pytest.raises(TypeError, match="metadata tags must be a list of tags"):
        await qm.execute_workflow({"steps": [step], "metadata": {"tags": "vip"}})


async def killed_after_first_step(
    procs: Procs, redis_url: str, prefix: str, point: str, workflow: dict[str, Any], result: Any
) -> tuple[str, QueueManager]:
    """Executes a workflow whose first step runs in queue user-processing (returning result) on a server that
    kills itself at the hand-off's crash point `point`; returns the run id and a client of a second server,
    whose janitor carries the hand-off out."""
    fast = ("--janitor-interval-ms", "200")
    doomed = await procs.server(redis_url, prefix, 0, "--test-crash-point", point, *fast)
    client = QueueManager(address=doomed.address)
    for name in QUEUES:
        await client.register_queue(name)

    @client.processor("user-processing")
    async def profile(job: JobContext) -> Any:
        return result

    run_id = await client.execute_workflow(workflow, run_id="crash-run")
    await client.start_workers()
    assert await doomed.wait(timeout=WAIT) == -9
    await client.shutdown(grace=0)
    survivor = await procs.server(redis_url, prefix, 0, *fast)
    return run_id, QueueManager(address=survivor.address)


@pytest.mark.parametrize("point", ["before-hand-off", "after-successor"])
async def test_server_killed_between_step_completion_and_next_steps(
    procs: Procs, redis_url: str, prefix: str, engine: Engine, point: str
) -> None:
    run_id, qm = await killed_after_first_step(procs, redis_url, prefix, point, onboarding(11), 1)

    async def next_steps_started() -> bool:
        run = await qm.get_workflow(run_id)
        return run.step("create-user-profile.s0").state == WorkflowStepState.STARTED

    await eventually(next_steps_started, timeout=WAIT)
    for queue in ("email-notifications", "analytics"):
        _, total = await engine.list_jobs(queue, "waiting", 0, 10)
        assert total == 1, queue
    assert (await engine.metrics("admin-alerts")).waiting == 0
    await qm.shutdown()


async def test_cli_runs_and_reads_workflows(
    qm: QueueManager, server: RunningServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    ran: list[tuple[str, Any]] = []
    record(qm, ran)
    await qm.start_workers()
    definition = tmp_path / "onboarding.json"
    definition.write_text(json.dumps(onboarding(12)))
    started = await qm_json(capsys, server, "workflows", "run", f"@{definition}", "--run-id", "cli-run")
    assert started == {"run_id": "cli-run"}
    await finished(qm, "cli-run")
    run = await qm_json(capsys, server, "workflows", "get", "cli-run")
    assert run["state"] == "completed"
    assert [s["state"] for s in run["steps"]] == ["completed", "completed", "completed", "skipped"]
    listed = await qm_json(capsys, server, "workflows", "list")
    assert "cli-run" in [r["run_id"] for r in listed["runs"]]
    status, _, err = await qm_cli(capsys, "--server", server.address, "workflows", "cancel", "cli-run")
    assert status == 1 and "FAILED_PRECONDITION" in err


class _Batches(Workflows):
    """Records the steps each call of steps_finished was given."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine, 1 << 20)
        self.batches: list[list[str]] = []

    async def steps_finished(
        self, steps: Sequence[tuple[str, str, str, dict[str, bytes]]]
    ) -> list[list[types_pb2.JobRef]]:
        self.batches.append([f"{run_id}.{key}" for run_id, key, _, _ in steps])
        return await super().steps_finished(steps)


async def step_jobs(engine: Engine, queue: str, order: list[tuple[str, str]]) -> list[str]:
    """Adds, claims and completes a job for each (run id, step key), in that order; returns their ids."""
    jobs = []
    for run_id, key in order:
        view = types_pb2.Job(workflow=types_pb2.WorkflowStepRef(run_id=run_id, step_key=key))
        jobs.append(
            NewJob(
                id=f"{run_id}.{key}",
                name=key,
                data=b"1",
                extra={"flo": b"1", "par": view.SerializeToString()},
            )
        )
    await engine.add_jobs(queue, jobs)
    claimed = (await engine.claim(queue, len(jobs), "t", "w", 30_000)).jobs
    assert [j.id for j in claimed] == [job.id for job in jobs]
    await engine.complete(queue, [(j.id, "t", b"1", "application/json") for j in claimed])
    return [job.id for job in jobs]


async def test_a_hand_off_records_the_steps_of_its_runs_together(engine: Engine) -> None:
    """The finished steps of a hand-off's runs are recorded and followed in shared round trips (a round trip
    per step made steps a sixth as fast as plain jobs): the first step of every run together, then the
    second of the runs with more, so one run's steps keep the order they finished in."""
    await engine.register_queue("steps", {})
    engine.flow_hook = None  # the hand-off is run below, by hand
    workflows = _Batches(engine)
    await step_jobs(engine, "steps", [("r1", "a"), ("r2", "a"), ("r1", "b"), ("r3", "a"), ("r1", "c")])
    assert await Flows(engine, workflows, 1 << 20).hand_off("steps") == 5
    assert workflows.batches == [["r1.a", "r2.a", "r3.a"], ["r1.b"], ["r1.c"]]
    assert await engine.redis.llen(engine.keys("steps").flow_outbox) == 0


async def test_steps_of_many_runs_finished_together_start_and_finish_their_runs(engine: Engine) -> None:
    """Forty runs whose first steps finish in one hand-off: each starts its next step (with its parent's
    result), and when those finish every run is completed and set to expire."""
    workflows = await in_two_queues(engine)
    engine.flow_hook = None
    flows = Flows(engine, workflows, 1 << 20)
    runs = [(await workflows.execute(branching("b"), f"run-{n}"))[0] for n in range(40)]
    firsts = (await engine.claim("first", 100, "t", "w", 30_000)).jobs
    assert sorted(j.id for j in firsts) == sorted(step_job_id(r, "a") for r in runs)
    await engine.complete("first", [(j.id, "t", b'{"n": 1}', "application/json") for j in firsts])
    assert await flows.hand_off("first") == 40
    seconds = (await engine.claim("second", 100, "t", "w", 30_000)).jobs
    assert sorted(j.id for j in seconds) == sorted(step_job_id(r, "b") for r in runs)
    for job in seconds:
        (parent,) = types_pb2.Job.FromString(job.flow).parents
        assert (parent.step_key, parent.result.raw) == ("a", b'{"n": 1}')
    for run_id in runs:
        assert (await workflows.get(run_id)).steps[1].state == workflows_pb2.WORKFLOW_STEP_STATE_STARTED
    await engine.complete("second", [(j.id, "t", b"2", "application/json") for j in seconds])
    assert await flows.hand_off("second") == 40
    for run_id in runs:
        assert (await workflows.get(run_id)).state == workflows_pb2.WORKFLOW_STATE_COMPLETED
        assert await engine.redis.pttl(workflows.store.key(run_id)) > 0


async def test_steps_finished_together_whose_queue_is_gone_fail_and_a_cancelled_run_stops_its_step(
    engine: Engine,
) -> None:
    """Steps started together: those whose queue was deleted since their run was created fail (their runs
    fail), beside a run of another queue whose step starts; a step of a run cancelled before it was marked
    started has its job cancelled."""
    workflows = await in_two_queues(engine)
    await engine.register_queue("third", {})
    cancelled: list[tuple[str, str]] = []

    async def cancel_job(queue: str, job_id: str, reason: str) -> None:
        cancelled.append((queue, job_id))

    workflows.cancel_job = cancel_job
    to_second = [(await workflows.execute(branching("b"), f"gone-{n}"))[0] for n in range(3)]
    to_third = branching("c")
    to_third.steps[0].on_success[0].queue_name = "third"
    kept, _ = await workflows.execute(to_third, "kept")
    await engine.obliterate("second", force=True)
    firsts = (await engine.claim("first", 10, "t", "w", 30_000)).jobs
    outcomes = [(j.id.rsplit(".", 1)[0], "a", "completed", {"res": b"1"}) for j in firsts]
    refs = await workflows.steps_finished(outcomes)
    assert [ref.job_id for started in refs for ref in started] == [step_job_id(kept, "c")]
    for run_id in to_second:
        run = await workflows.get(run_id)
        assert run.state == workflows_pb2.WORKFLOW_STATE_FAILED
        assert "second" in run.steps[1].error
    assert (await workflows.get(kept)).steps[1].state == workflows_pb2.WORKFLOW_STEP_STATE_STARTED
    # A run cancelled between its step's add and the started mark: the step's job is cancelled.
    again, _ = await workflows.execute(to_third, "again")
    (done,) = await workflows.store.finish_steps([(again, "a", "c", b"1", "application/json", "")])
    await workflows.store.cancel(again, "stop")
    await workflows.start_steps(again, done.to_start, done.run)
    assert cancelled == [("third", step_job_id(again, "c"))]


async def test_executing_a_run_registers_it_and_starts_its_roots_without_reading_it_back(
    engine: Engine,
) -> None:
    """A new run is registered at Redis's time (its starting mark for the janitor set in the creation's
    round trip), its root steps' jobs are added from what was just written (no read of the run), and the
    mark goes once they are added. A run executed again is not registered anew."""
    workflows = await in_two_queues(engine)
    wf = workflows_pb2.Workflow(
        name="two roots",
        metadata=workflows_pb2.WorkflowMetadata(correlation_id="c-1"),
        steps=[
            workflows_pb2.WorkflowStep(key="a", queue_name="first", job_name="a"),
            workflows_pb2.WorkflowStep(key="b", queue_name="second", job_name="b"),
        ],
    )

    async def calls(command: str) -> int:
        stats = await engine.redis.info("commandstats")
        return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))

    t0 = await engine.redis_time_ms()
    before = await calls("hgetall")
    run_id, created = await workflows.execute(wf, "fresh")
    assert created
    assert await calls("hgetall") == before
    a = await engine.get_job("first", step_job_id(run_id, "a"))
    assert a.state == "waiting" and a.text("name") == "a"
    assert types_pb2.JobMetadata.FromString(a.raw("md") or b"").correlation_id == "c-1"
    assert (await engine.get_job("second", step_job_id(run_id, "b"))).state == "waiting"
    registered = await engine.redis.zscore(workflow_registry(engine.prefix), run_id)
    assert registered is not None and t0 <= registered <= await engine.redis_time_ms()
    assert await engine.redis.zscore(workflow_starting(engine.prefix), run_id) is None  # done starting
    run = await workflows.get(run_id)
    assert [s.state for s in run.steps] == [workflows_pb2.WORKFLOW_STEP_STATE_STARTED] * 2

    assert await workflows.execute(wf, "fresh") == (run_id, False)
    assert await engine.redis.zscore(workflow_registry(engine.prefix), run_id) == registered
    with pytest.raises(QueueNotFound, match="third"):
        await engine.require_queues(["first", "third", "fourth"])


async def test_a_run_whose_creator_died_before_its_first_steps_is_started_and_registered(
    engine: Engine,
) -> None:
    """The creator wrote the run (and its starting mark) and died before adding its first steps' jobs, which
    is also before registering it: the janitor adds them, registers the run at the mark's time and clears
    the mark. A run whose creator is alive (a mark younger than the grace) is left to it."""
    workflows = await in_two_queues(engine)
    wf = branching("b", roots=("c",))
    created, to_start, now = await workflows.store.create("orphan", run_fields(wf, layout(wf, 1 << 20)))
    assert (created, to_start) == (True, ["a", "c"])
    await workflows.store.create("young", run_fields(wf, layout(wf, 1 << 20)))
    starting, registry = workflow_starting(engine.prefix), workflow_registry(engine.prefix)
    marked = now - STARTING_GRACE_MS - 1_000
    await engine.redis.zadd(starting, {"orphan": marked})
    assert await engine.redis.zscore(registry, "orphan") is None
    assert await workflows.resume_starting() == 1
    assert await engine.redis.zscore(registry, "orphan") == marked
    assert await engine.redis.zrange(starting, 0, -1) == [b"young"]
    first = await engine.claim("first", 10, "t", "w", 30_000)
    assert sorted(j.id for j in first.jobs) == [step_job_id("orphan", "a"), step_job_id("orphan", "c")]
    run = await workflows.get("orphan")
    assert [s.state for s in run.steps][::2] == [workflows_pb2.WORKFLOW_STEP_STATE_STARTED] * 2


def _map_reduce(maps: int) -> workflows_pb2.Workflow:
    steps = [workflows_pb2.WorkflowStep(key=f"m{n}", queue_name="first", job_name="map") for n in range(maps)]
    reduce = workflows_pb2.WorkflowStep(
        key="reduce", queue_name="second", job_name="reduce", depends_on=[f"m{n}" for n in range(maps)]
    )
    return workflows_pb2.Workflow(name="map-reduce", steps=[*steps, reduce])


async def _hgets(engine: Engine) -> int:
    stats = await engine.redis.info("commandstats")
    return int(stats.get("cmdstat_hget", {}).get("calls", 0))


@pytest.mark.parametrize("stored_before_counts", [False, True])
async def test_a_steps_outcome_costs_what_its_neighbours_cost_not_the_whole_run(
    engine: Engine, stored_before_counts: bool
) -> None:
    """A map's outcome in a map-reduce of 200 maps reads a few fields, not every step's state (that made a
    run of 1,000 maps cost Valkey a second); the reduce starts once the last map completes, and the steps
    to start come back on a replay. A run stored before the counts (no go, nd: or dc: fields) still runs
    right, reading its dependencies' states as before."""
    workflows = await in_two_queues(engine)
    store = workflows.store
    run_id, _ = await workflows.execute(_map_reduce(200), "mr")
    key = store.key(run_id)
    assert await engine.redis.hget(key, "go") == b""  # every map started
    if stored_before_counts:
        await engine.redis.hdel(key, "go", "nd:reduce")
    costs = []
    for n in range(200):
        before = await _hgets(engine)
        state, to_start = await step_outcome(workflows.store, run_id, f"m{n}")
        costs.append(await _hgets(engine) - before)
        assert (state, to_start) == ("running", ["reduce"] if n == 199 else [])
    # Replayed (a server killed before adding the reduce's job): the same steps to start, counted once, with
    # what starting the reduce reads (its spec, its parents' results and specs), not the whole run.
    (replayed,) = await store.finish_steps([(run_id, "m199", "c", b"1", "application/json", "")])
    assert replayed is not None and (replayed.state, replayed.to_start) == ("running", ["reduce"])
    assert replayed.run is not None
    fields = replayed.run.fields
    assert (
        "spec:reduce" in fields and fields["r:m0"] == b"1" and "spec:m199" in fields and "order" not in fields
    )
    assert await engine.redis.hget(key, "dc:reduce") == b"200"
    if not stored_before_counts:  # the last map's also reads what starting the reduce needs (one HMGET)
        assert max(costs[:-1]) <= 12 and costs[-1] <= 16, costs
    await workflows.start_steps(run_id, ["reduce"])
    assert await engine.redis.hget(key, "go") == b""
    job = await engine.get_job("second", step_job_id(run_id, "reduce"))
    assert len(types_pb2.Job.FromString(job.raw("par") or b"").parents) == 200
    state, _ = await step_outcome(store, run_id, "reduce", result=b"2")
    assert state == "completed"


async def test_steps_to_start_are_kept_as_they_are_armed_started_finished_or_cancelled(
    engine: Engine,
) -> None:
    """The run's go field holds exactly the steps in state g: a branch armed on success joins it, a step
    started or finished before it was marked started leaves it, and a cancel empties it."""
    workflows = await in_two_queues(engine)
    store = workflows.store
    run_id, _ = await workflows.execute(branching("b", "c", roots=("d",)), "go")
    key = store.key(run_id)
    assert await engine.redis.hget(key, "go") == b""
    assert await step_outcome(store, run_id, "a") == ("running", ["b", "c"])
    assert await engine.redis.hget(key, "go") == b"b c"
    # c's job runs and ends before its hand-off marked it started: it leaves go all the same.
    assert await step_outcome(store, run_id, "c") == ("running", ["b"])
    assert await store.started([(run_id, ["b"])]) == [[]]
    assert await engine.redis.hget(key, "go") == b""
    code, started = await store.cancel(run_id, "stop")
    assert (code, sorted(started)) == (1, ["b", "d"])
    assert await engine.redis.hget(key, "go") == b""


async def test_steps_listed_to_start_are_checked_against_their_state(engine: Engine) -> None:
    """A server of an older version starts steps without keeping go: a step it started is not returned as
    one to start, and marking it started (a replayed hand-off) takes it out of go."""
    workflows = await in_two_queues(engine)
    store = workflows.store
    run_id, _ = await workflows.execute(branching("b", "c"), "mixed")
    key = store.key(run_id)
    assert await step_outcome(store, run_id, "a") == ("running", ["b", "c"])
    await engine.redis.hset(key, "s:b", "s")  # started by the older server; go still lists it
    assert await step_outcome(store, run_id, "a") == ("running", ["c"])
    assert await store.started([(run_id, ["b", "c"])]) == [[]]
    assert await engine.redis.hget(key, "go") == b""
    assert await store.started([("no-such-run", ["b"])]) == [[]]
    assert not await engine.redis.exists(store.key("no-such-run"))


async def test_a_step_that_starts_the_next_reads_no_more_of_the_run_than_it_needs(engine: Engine) -> None:
    """Finishing a step that starts the next one reads the run once, in the script that records the outcome
    (the next step's spec, its parent's result): no read of the whole run."""
    workflows = await in_two_queues(engine)
    wf = branching("b")
    wf.metadata.correlation_id = "c-9"
    run_id, _ = await workflows.execute(wf, "lean")
    stats = await engine.redis.info("commandstats")
    before = int(stats.get("cmdstat_hgetall", {}).get("calls", 0))
    refs = await workflows.step_finished(run_id, "a", "completed", {"res": b'{"n": 1}', "rct": b""})
    stats = await engine.redis.info("commandstats")
    assert int(stats.get("cmdstat_hgetall", {}).get("calls", 0)) == before
    assert [r.job_id for r in refs] == [step_job_id(run_id, "b")]
    b = await engine.get_job("second", step_job_id(run_id, "b"))
    view = types_pb2.Job.FromString(b.raw("par") or b"")
    (parent,) = view.parents
    assert parent.step_key == "a" and parent.job.queue_name == "first"
    assert parent.result.WhichOneof("body") == "raw" and json.loads(parent.result.raw) == {"n": 1}
    assert types_pb2.JobMetadata.FromString(b.raw("md") or b"").correlation_id == "c-9"
