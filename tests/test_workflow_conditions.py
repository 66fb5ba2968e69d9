"""Workflow step conditions (run_if): each operator, skipped subtrees and dependents, refusals, a crash."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from queue_manager import JobContext, QueueManager, WorkflowState, WorkflowStepState, when
from queue_manager.v1 import queue_service_pb2_grpc, workflows_pb2
from queue_manager_server.engine import Engine
from queue_manager_server.engine.keys import workflow_registry, workflow_starting
from tests.conftest import RunningServer
from tests.procs import Procs
from tests.rawworker import eventually
from tests.test_cli import qm_cli
from tests.test_workflows import (
    QUEUES,
    WAIT,
    finished,
    in_two_queues,
    killed_after_first_step,
    step_outcome,
)

Op = workflows_pb2.ConditionOperator
RESULT = {
    "status": "ok",
    "total": 150,
    "name": "alice",
    "tags": ["vip", "new"],
    "items": [{"sku": "A1"}, {"sku": "B2"}],
    "nothing": None,
}
_MISSING = object()


@pytest.fixture
async def qm(server: RunningServer) -> AsyncIterator[QueueManager]:
    client = QueueManager(address=server.address, concurrency=8)
    for name in QUEUES:
        await client.register_queue(name)
    yield client
    await client.shutdown()


def _value(v: Any) -> struct_pb2.Value:
    out = struct_pb2.Value()
    if v is None:
        out.null_value = struct_pb2.NULL_VALUE
    elif isinstance(v, bool):
        out.bool_value = v
    elif isinstance(v, int | float):
        out.number_value = v
    elif isinstance(v, str):
        out.string_value = v
    else:
        out.list_value.values.extend(_value(x) for x in v)
    return out


def condition(path: str, op: int, value: Any = _MISSING, step: str = "") -> workflows_pb2.StepCondition:
    c = workflows_pb2.StepCondition(step=step, path=path, operator=op)
    if value is not _MISSING:
        c.value.CopyFrom(_value(value))
    return c


def gated(*conditions: workflows_pb2.StepCondition) -> workflows_pb2.Workflow:
    """Step "a" (queue first) whose success arms "b" (queue second, with the conditions); "c" follows "b"."""
    b = workflows_pb2.WorkflowStep(key="b", queue_name="second", job_name="b", run_if=conditions)
    b.on_success.append(workflows_pb2.WorkflowStep(key="c", queue_name="second", job_name="c"))
    a = workflows_pb2.WorkflowStep(key="a", queue_name="first", job_name="a", on_success=[b])
    return workflows_pb2.Workflow(steps=[a])


CASES: list[tuple[str, int, Any, bool]] = [
    ("status", Op.CONDITION_OPERATOR_EQUAL, "ok", True),
    ("status", Op.CONDITION_OPERATOR_EQUAL, "no", False),
    ("tags", Op.CONDITION_OPERATOR_EQUAL, ["vip", "new"], True),
    ("nothing", Op.CONDITION_OPERATOR_EQUAL, None, True),
    ("total", Op.CONDITION_OPERATOR_EQUAL, "150", False),  # mixed types
    ("status", Op.CONDITION_OPERATOR_NOT_EQUAL, "no", True),
    ("status", Op.CONDITION_OPERATOR_NOT_EQUAL, "ok", False),
    ("status", Op.CONDITION_OPERATOR_NOT_EQUAL, 5, False),  # mixed types
    ("total", Op.CONDITION_OPERATOR_GREATER_THAN, 100, True),
    ("total", Op.CONDITION_OPERATOR_GREATER_THAN, 150, False),
    ("total", Op.CONDITION_OPERATOR_GREATER_THAN, "100", False),  # mixed types
    ("name", Op.CONDITION_OPERATOR_GREATER_THAN, "al", True),  # strings as strings
    ("total", Op.CONDITION_OPERATOR_GREATER_OR_EQUAL, 150, True),
    ("total", Op.CONDITION_OPERATOR_GREATER_OR_EQUAL, 150.5, False),
    ("total", Op.CONDITION_OPERATOR_LESS_THAN, 1000, True),
    ("total", Op.CONDITION_OPERATOR_LESS_THAN, 20, False),  # numbers as numbers, not "150" < "20"
    ("total", Op.CONDITION_OPERATOR_LESS_OR_EQUAL, 150, True),
    ("total", Op.CONDITION_OPERATOR_LESS_OR_EQUAL, 149, False),
    ("items.1.sku", Op.CONDITION_OPERATOR_EXISTS, _MISSING, True),
    ("nothing", Op.CONDITION_OPERATOR_EXISTS, _MISSING, True),
    ("items.2.sku", Op.CONDITION_OPERATOR_EXISTS, _MISSING, False),
    ("order.total", Op.CONDITION_OPERATOR_NOT_EXISTS, _MISSING, True),
    ("total", Op.CONDITION_OPERATOR_NOT_EXISTS, _MISSING, False),
    ("status", Op.CONDITION_OPERATOR_IN, ["ok", "done"], True),
    ("status", Op.CONDITION_OPERATOR_IN, ["failed", 1], False),
    ("tags", Op.CONDITION_OPERATOR_CONTAINS, "vip", True),
    ("tags", Op.CONDITION_OPERATOR_CONTAINS, "old", False),
    ("name", Op.CONDITION_OPERATOR_CONTAINS, "lic", True),
    ("name", Op.CONDITION_OPERATOR_CONTAINS, "bob", False),
    ("total", Op.CONDITION_OPERATOR_CONTAINS, 1, False),
    ("missing", Op.CONDITION_OPERATOR_NOT_EQUAL, 1, False),  # a missing path: false but for NOT_EXISTS
    ("items.0.sku", Op.CONDITION_OPERATOR_EQUAL, "A1", True),
]


@pytest.mark.parametrize(("path", "op", "value", "holds"), CASES)
async def test_each_operator_runs_or_skips_the_step(
    engine: Engine, path: str, op: int, value: Any, holds: bool
) -> None:
    workflows = await in_two_queues(engine)
    run_id, _ = await workflows.execute(gated(condition(path, op, value)), "ops")
    state, to_start = await step_outcome(workflows.store, run_id, "a", result=json.dumps(RESULT).encode())
    run = await workflows.get(run_id)
    b, c = run.steps[1], run.steps[2]
    if holds:
        assert (state, to_start, b.state) == ("running", ["b"], workflows_pb2.WORKFLOW_STEP_STATE_STARTED)
        assert b.error == ""
    else:
        assert (state, to_start) == ("completed", [])
        assert b.state == c.state == workflows_pb2.WORKFLOW_STEP_STATE_SKIPPED
        assert b.error.startswith(f"run_if: a.{path} ") and " is false (" in b.error
        assert c.error == ""  # skipped as a branch not taken
        assert run.state == workflows_pb2.WORKFLOW_STATE_COMPLETED


@pytest.mark.parametrize(
    ("result", "content_type", "path", "op", "value", "holds"),
    [
        (b"7", "application/json", "", Op.CONDITION_OPERATOR_EQUAL, 7, True),
        (b"7", "application/json; charset=utf-8", "", Op.CONDITION_OPERATOR_GREATER_THAN, 7, False),
        (b"hello", "text/plain", "", Op.CONDITION_OPERATOR_CONTAINS, "ell", True),
        (b"hello", "text/plain", "a", Op.CONDITION_OPERATOR_EXISTS, _MISSING, False),
        (b"", "", "", Op.CONDITION_OPERATOR_NOT_EXISTS, _MISSING, True),  # completed without a result
        (b"", "", "", Op.CONDITION_OPERATOR_EQUAL, None, False),
    ],
)
async def test_the_whole_result_and_results_that_are_not_json(
    engine: Engine, result: bytes, content_type: str, path: str, op: int, value: Any, holds: bool
) -> None:
    workflows = await in_two_queues(engine)
    run_id, _ = await workflows.execute(gated(condition(path, op, value, step="a")), "whole")
    (done,) = await workflows.store.finish_steps([(run_id, "a", "c", result, content_type, "")])
    assert done is not None and done.to_start == (["b"] if holds else [])


async def test_a_skip_reason_names_the_condition_and_the_value_seen(engine: Engine) -> None:
    workflows = await in_two_queues(engine)
    wf = gated(
        condition("total", Op.CONDITION_OPERATOR_LESS_THAN, 1000),
        condition("total", Op.CONDITION_OPERATOR_GREATER_THAN, 100),
    )
    wf.steps[0].key = "validate"
    wf.steps[0].on_success[0].run_if[1].step = "validate"
    run_id, _ = await workflows.execute(wf, "reason")
    await step_outcome(workflows.store, run_id, "validate", result=b'{"total": 42}')
    run = await workflows.get(run_id)
    assert run.steps[1].error == "run_if: validate.total > 100 is false (42)"
    run_id, _ = await workflows.execute(
        gated(condition("order.id", Op.CONDITION_OPERATOR_IN, ["x", "y"])), "r2"
    )
    await step_outcome(workflows.store, run_id, "a", result=b"{}")
    run = await workflows.get(run_id)
    assert run.steps[1].error == 'run_if: a.order.id in ["x","y"] is false (missing)'


async def test_a_skipped_step_skips_its_subtree_and_dependents_while_a_sibling_branch_runs(
    qm: QueueManager,
) -> None:
    ran: list[str] = []

    @qm.processor("user-processing")
    async def validate(job: JobContext) -> dict[str, Any]:
        ran.append(job.name)
        return {"order": {"total": 42}}

    for queue in ("email-notifications", "analytics", "reduce"):

        @qm.processor(queue)
        async def step(job: JobContext) -> None:
            ran.append(job.name)

    await qm.start_workers()
    workflow = {
        "steps": [
            {
                "key": "validate",
                "queue_name": "user-processing",
                "job_name": "validate",
                "on_success": [
                    {
                        "key": "ship",
                        "queue_name": "email-notifications",
                        "job_name": "ship",
                        "run_if": [when("validate", "order.total", ">", 100)],
                        "on_success": [{"key": "notify", "queue_name": "analytics", "job_name": "notify"}],
                    },
                    {
                        "key": "hold",
                        "queue_name": "analytics",
                        "job_name": "hold",
                        "run_if": [{"path": "order.total", "operator": "<=", "value": 100}],
                    },
                ],
            },
            {"key": "report", "queue_name": "reduce", "job_name": "report", "depends_on": ["ship"]},
            {"key": "audit", "queue_name": "reduce", "job_name": "audit", "depends_on": ["hold"]},
        ]
    }
    run = await finished(qm, await qm.execute_workflow(workflow))
    assert run.state == WorkflowState.COMPLETED
    assert sorted(ran) == ["audit", "hold", "validate"]
    states = {s.key: s.state for s in run.steps}
    assert states == {
        "validate": WorkflowStepState.COMPLETED,
        "ship": WorkflowStepState.SKIPPED,
        "notify": WorkflowStepState.SKIPPED,
        "hold": WorkflowStepState.COMPLETED,
        "report": WorkflowStepState.SKIPPED,
        "audit": WorkflowStepState.COMPLETED,
    }
    assert run.step("ship").error == "run_if: validate.order.total > 100 is false (42)"
    assert run.step("ship").job_id == "" and run.step("report").job_id == ""
    assert run.finished_step_count == run.step_count == 6


async def test_qm_workflows_get_shows_why_a_step_was_skipped(
    qm: QueueManager,
    server: RunningServer,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    @qm.processor("user-processing")
    async def validate(job: JobContext) -> dict[str, Any]:
        return {"total": 42}

    await qm.start_workers()
    definition = tmp_path / "wf.json"
    step = {"key": "ship", "queue_name": "analytics", "job_name": "ship"}
    step["run_if"] = [{"step": "validate", "path": "total", "operator": ">", "value": 100}]  # type: ignore[assignment]
    root = {"key": "validate", "queue_name": "user-processing", "job_name": "v", "on_success": [step]}
    definition.write_text(json.dumps({"steps": [root]}))
    status, _, err = await qm_cli(
        capsys, "--server", server.address, "workflows", "run", f"@{definition}", "--run-id", "cond-cli"
    )
    assert status == 0, err
    await finished(qm, "cond-cli")
    status, out, err = await qm_cli(capsys, "--server", server.address, "workflows", "get", "cond-cli")
    assert status == 0, err
    assert "run_if: validate.total > 100 is false (42)" in out


def _refusals() -> list[tuple[workflows_pb2.Workflow, str]]:
    def step(key: str, *conds: workflows_pb2.StepCondition, **more: Any) -> workflows_pb2.WorkflowStep:
        return workflows_pb2.WorkflowStep(key=key, queue_name="maps", job_name=key, run_if=conds, **more)

    gt = Op.CONDITION_OPERATOR_GREATER_THAN

    def under_a(*conds: workflows_pb2.StepCondition) -> workflows_pb2.Workflow:
        return workflows_pb2.Workflow(steps=[step("a", on_success=[step("b", *conds)]), step("other")])

    fan_in = step("c", condition("x", gt, 1), depends_on=["a", "other"])
    return [
        (under_a(condition("x", gt, 1, step="other")), "'other' is not a predecessor of this step"),
        (under_a(condition("x", gt, 1, step="b")), "'b' is not a predecessor"),
        (workflows_pb2.Workflow(steps=[step("a"), step("other"), fan_in]), "several predecessors"),
        (workflows_pb2.Workflow(steps=[step("a", condition("x", gt, 1))]), "no predecessor"),
        (
            workflows_pb2.Workflow(steps=[step("a", condition("x", gt, 1, step="a"))]),
            "root step has no result to look at",
        ),
        (under_a(condition("order..total", gt, 1)), "empty segment"),
        (under_a(condition("x.", gt, 1)), "empty segment"),
        (under_a(condition("x", Op.CONDITION_OPERATOR_UNSPECIFIED, 1)), "set an operator"),
        (under_a(condition("x", gt)), "needs a value"),
        (under_a(condition("x", Op.CONDITION_OPERATOR_IN, "ok")), "IN needs a list"),
        (under_a(condition("x", Op.CONDITION_OPERATOR_EXISTS, 1)), "EXISTS takes no value"),
        (under_a(*[condition("x", gt, n) for n in range(17)]), "at most 16 conditions"),
        (
            under_a(workflows_pb2.StepCondition(path="x", operator=gt, source=2, value=_value(1))),
            "leave the path empty with source ERROR",
        ),
        (under_a(workflows_pb2.StepCondition(operator=gt, source=9, value=_value(1))), "unknown source 9"),
    ]


async def test_bad_conditions_are_refused_and_nothing_is_written(
    server: RunningServer, engine: Engine
) -> None:
    await engine.register_queue("maps", {})
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = queue_service_pb2_grpc.QueueServiceStub(channel)
        for n, (workflow, message) in enumerate(_refusals()):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.ExecuteWorkflow(
                    workflows_pb2.ExecuteWorkflowRequest(workflow=workflow, run_id=f"r{n}")
                )
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
            details = refused.value.details() or ""
            assert message in details and ".run_if" in details and "step '" in details, details
    for key in (workflow_registry(engine.prefix), workflow_starting(engine.prefix)):
        assert await engine.redis.zcard(key) == 0
    assert await engine.redis.keys(f"{engine.prefix}:{{wf:*") == []
    assert (await engine.metrics("maps")).waiting == 0


def test_the_client_builder_checks_conditions() -> None:
    assert when("validate", "total", ">", 100).operator == ">"
    with pytest.raises(ValueError, match="needs a value"):
        when("validate", "total", ">")
    with pytest.raises(ValueError, match="takes no value"):
        when("validate", "total", "exists", 1)
    with pytest.raises(ValueError, match="unknown operator '=>'"):
        when("validate", "total", "=>", 1)
    with pytest.raises(ValueError, match="'in' needs a list"):
        when("", "status", "in", "ok")
    assert when("", "total", "greater_or_equal", 1).operator == "greater_or_equal"


@pytest.mark.parametrize("point", ["before-hand-off", "after-successor"])
async def test_server_killed_between_a_step_and_its_conditions_decides_once(
    procs: Procs, redis_url: str, prefix: str, engine: Engine, point: str
) -> None:
    workflow = {
        "steps": [
            {
                "key": "validate",
                "queue_name": "user-processing",
                "job_name": "validate",
                "on_success": [
                    {
                        "key": "ship",
                        "queue_name": "email-notifications",
                        "job_name": "ship",
                        "run_if": [when("", "total", ">", 100)],
                    },
                    {
                        "key": "hold",
                        "queue_name": "analytics",
                        "job_name": "hold",
                        "run_if": [when("", "total", "<=", 100)],
                    },
                ],
            }
        ]
    }
    run_id, survivor = await killed_after_first_step(procs, redis_url, prefix, point, workflow, {"total": 42})

    async def hold_started() -> bool:
        return (await survivor.get_workflow(run_id)).step("hold").state == WorkflowStepState.STARTED

    await eventually(hold_started, timeout=WAIT)
    run = await survivor.get_workflow(run_id)
    assert run.step("ship").state == WorkflowStepState.SKIPPED
    assert run.step("ship").error == "run_if: validate.total > 100 is false (42)"
    assert run.finished_step_count == 2  # validate and ship, each counted once
    _, total = await engine.list_jobs("analytics", "waiting", 0, 10)
    assert total == 1
    assert (await engine.metrics("email-notifications")).waiting == 0
    await survivor.shutdown()


async def test_a_step_skipped_by_its_conditions_loses_the_reason_when_a_retry_brings_it_back(
    engine: Engine,
) -> None:
    """An on_failure step skipped by run_if is pending again when its failed parent is retried; when the
    parent then completes, it is skipped as a branch not taken, without the old reason."""
    workflows = await in_two_queues(engine)
    alert = workflows_pb2.WorkflowStep(
        key="alert",
        queue_name="second",
        job_name="alert",
        run_if=[condition("", Op.CONDITION_OPERATOR_EXISTS)],
    )
    a = workflows_pb2.WorkflowStep(key="a", queue_name="first", job_name="a", on_failure=[alert])
    run_id, _ = await workflows.execute(workflows_pb2.Workflow(steps=[a]), "revive")
    assert await step_outcome(workflows.store, run_id, "a", "f") == ("failed", [])
    assert (await workflows.get(run_id)).steps[1].error == "run_if: a exists is false (missing)"
    assert await step_outcome(workflows.store, run_id, "a", "r") == ("running", [])
    assert (await workflows.get(run_id)).steps[1].state == workflows_pb2.WORKFLOW_STEP_STATE_PENDING
    assert await step_outcome(workflows.store, run_id, "a", "c") == ("completed", [])
    step = (await workflows.get(run_id)).steps[1]
    assert (step.state, step.error) == (workflows_pb2.WORKFLOW_STEP_STATE_SKIPPED, "")


def on_its_error(*conditions: workflows_pb2.StepCondition) -> workflows_pb2.Workflow:
    """Step "a" (queue first) whose failure arms "b" (queue second, with the conditions)."""
    b = workflows_pb2.WorkflowStep(key="b", queue_name="second", job_name="b", run_if=conditions)
    a = workflows_pb2.WorkflowStep(key="a", queue_name="first", job_name="a", on_failure=[b])
    return workflows_pb2.Workflow(steps=[a])


def error_condition(op: int, value: Any = _MISSING) -> workflows_pb2.StepCondition:
    c = condition("", op, value)
    c.source = workflows_pb2.CONDITION_SOURCE_ERROR
    return c


@pytest.mark.parametrize(
    ("op", "value", "holds"),
    [
        (Op.CONDITION_OPERATOR_CONTAINS, "declined", True),
        (Op.CONDITION_OPERATOR_CONTAINS, "timeout", False),
        (Op.CONDITION_OPERATOR_EQUAL, "card declined", True),
        (Op.CONDITION_OPERATOR_IN, ["card declined", "expired"], True),
        (Op.CONDITION_OPERATOR_EXISTS, _MISSING, True),
        (Op.CONDITION_OPERATOR_NOT_EXISTS, _MISSING, False),
    ],
)
async def test_a_failure_branch_step_looks_at_its_parents_error(
    engine: Engine, op: int, value: Any, holds: bool
) -> None:
    workflows = await in_two_queues(engine)
    run_id, _ = await workflows.execute(on_its_error(error_condition(op, value)), "on-error")
    (done,) = await workflows.store.finish_steps([(run_id, "a", "f", b"", "", "card declined")])
    assert done is not None and done.to_start == (["b"] if holds else [])
    b = (await workflows.get(run_id)).steps[1]
    if not holds:
        assert b.state == workflows_pb2.WORKFLOW_STEP_STATE_SKIPPED
        assert b.error.startswith("run_if: the error of a ")
        assert b.error.endswith(' is false ("card declined")')


async def test_an_error_condition_sees_no_error_after_a_success(engine: Engine) -> None:
    """On an on_success branch the parent has no error: NOT_EXISTS holds, anything else does not; a result
    that holds an "error" field is not the error."""
    workflows = await in_two_queues(engine)
    ok = json.dumps({"error": "in the result"}).encode()
    for n, (op, holds) in enumerate(
        [(Op.CONDITION_OPERATOR_NOT_EXISTS, True), (Op.CONDITION_OPERATOR_EXISTS, False)]
    ):
        run_id, _ = await workflows.execute(gated(error_condition(op)), f"no-error-{n}")
        state, to_start = await step_outcome(workflows.store, run_id, "a", result=ok)
        assert to_start == (["b"] if holds else []), (op, state)
    run = await workflows.get(run_id)
    assert run.steps[1].error == "run_if: the error of a exists is false (missing)"


async def test_a_failure_branch_runs_on_the_error_its_processor_raised(qm: QueueManager) -> None:
    ran: list[str] = []

    @qm.processor("user-processing")
    async def charge(job: JobContext) -> None:
        raise RuntimeError("card declined by the bank")

    for queue in ("email-notifications", "analytics"):

        @qm.processor(queue)
        async def step(job: JobContext) -> None:
            ran.append(job.name)

    await qm.start_workers()
    workflow = {
        "steps": [
            {
                "key": "charge",
                "queue_name": "user-processing",
                "job_name": "charge",
                "on_failure": [
                    {
                        "key": "tell-customer",
                        "queue_name": "email-notifications",
                        "job_name": "tell-customer",
                        "run_if": [when("", "", "contains", "card declined", source="error")],
                    },
                    {
                        "key": "page-oncall",
                        "queue_name": "analytics",
                        "job_name": "page-oncall",
                        "run_if": [{"operator": "contains", "value": "timeout", "source": "error"}],
                    },
                ],
            }
        ]
    }
    run = await finished(qm, await qm.execute_workflow(workflow))
    assert ran == ["tell-customer"]
    assert run.step("tell-customer").state == WorkflowStepState.COMPLETED
    assert run.step("page-oncall").state == WorkflowStepState.SKIPPED
    reason = run.step("page-oncall").error
    assert reason.startswith('run_if: the error of charge contains "timeout" is false ('), reason
    assert "card declined by the bank" in reason


def test_the_client_builder_checks_error_conditions() -> None:
    assert when("charge", "", "contains", "declined", source="error").source == "error"
    with pytest.raises(ValueError, match="leave the path empty"):
        when("charge", "code", "==", 1, source="error")
    with pytest.raises(ValueError, match="unknown source 'errors'"):
        when("charge", "", "exists", source="errors")
