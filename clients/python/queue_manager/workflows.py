"""Workflows on the client side: the definition as plain mappings, and the run as dataclasses.

A workflow is the seed's shape, in Python names::

    {
        "id": "user-onboarding",
        "name": "User onboarding",
        "steps": [
            {
                "queue_name": "user-processing",
                "job_name": "create-user-profile",
                "data": {"user_id": 42},
                "options": {"attempts": 3},
                "on_success": [{"queue_name": "email-notifications", "job_name": "send-welcome-email"}],
                "on_failure": [{"queue_name": "admin-alerts", "job_name": "alert-admin"}],
            }
        ],
        "metadata": {"created_by": "signup", "correlation_id": "req-1", "tags": ["onboarding"]},
    }

A step may also name a ``key`` (to be referred to) and ``depends_on`` (keys of steps that must all complete
before it starts: fan-in; their results reach its processor as ``job.parents``), and ``run_if``: conditions on
its predecessors' results (``[when("validate", "total", ">", 100)]``, see `queue_manager.conditions`); a due
step whose conditions do not all hold is skipped, and so is what follows it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeAlias

from queue_manager.conditions import conditions_to_proto
from queue_manager.convert import decode_payload, encode_payload, timestamp_to_datetime
from queue_manager.enums import STATE_BY_NUMBER, JobState
from queue_manager.options import check_page, job_options_to_proto, validate_job_name, validate_queue_name
from queue_manager.v1 import workflows_pb2

__all__ = [
    "WorkflowLike",
    "WorkflowRun",
    "WorkflowState",
    "WorkflowStepRun",
    "WorkflowStepState",
    "workflow_run_from_proto",
    "workflow_to_proto",
]

WorkflowLike: TypeAlias = Mapping[str, Any]
"""A workflow definition as a mapping (see the module docstring)."""

_WORKFLOW_KEYS = frozenset({"id", "name", "steps", "metadata"})
_STEP_KEYS = frozenset(
    {"key", "queue_name", "job_name", "data", "options", "on_success", "on_failure", "depends_on", "run_if"}
)
_METADATA_KEYS = frozenset({"created_by", "correlation_id", "tags", "attributes"})


class WorkflowState(enum.StrEnum):
    """Where a workflow run is; equal to its name as a string (`run.state == "completed"`), as JobState is."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class WorkflowStepState(enum.StrEnum):
    """Where one step of a run is."""

    PENDING = "pending"
    STARTED = "started"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


_RUN_STATES = {
    workflows_pb2.WORKFLOW_STATE_RUNNING: WorkflowState.RUNNING,
    workflows_pb2.WORKFLOW_STATE_COMPLETED: WorkflowState.COMPLETED,
    workflows_pb2.WORKFLOW_STATE_FAILED: WorkflowState.FAILED,
    workflows_pb2.WORKFLOW_STATE_CANCELLED: WorkflowState.CANCELLED,
}
_STEP_STATES = {
    workflows_pb2.WORKFLOW_STEP_STATE_PENDING: WorkflowStepState.PENDING,
    workflows_pb2.WORKFLOW_STEP_STATE_STARTED: WorkflowStepState.STARTED,
    workflows_pb2.WORKFLOW_STEP_STATE_COMPLETED: WorkflowStepState.COMPLETED,
    workflows_pb2.WORKFLOW_STEP_STATE_FAILED: WorkflowStepState.FAILED,
    workflows_pb2.WORKFLOW_STEP_STATE_SKIPPED: WorkflowStepState.SKIPPED,
    workflows_pb2.WORKFLOW_STEP_STATE_CANCELLED: WorkflowStepState.CANCELLED,
}
_BRANCHES = {
    workflows_pb2.WORKFLOW_BRANCH_ROOT: "root",
    workflows_pb2.WORKFLOW_BRANCH_ON_SUCCESS: "on_success",
    workflows_pb2.WORKFLOW_BRANCH_ON_FAILURE: "on_failure",
}


@dataclass(slots=True)
class WorkflowStepRun:
    """One step of a run.

    Attributes:
        key: The step's key.
        queue_name: Queue of its job.
        job_name: Job name.
        job_id: Id of its job, once started.
        state: Where the step is.
        job_state: State of its job while started.
        result: Result, once completed.
        error: Failure reason, once failed (or why it was skipped or cancelled; for a step skipped by its
            run_if, the condition that failed and the value seen: ``run_if: validate.total > 100 is false
            (42)``).
        parent_key: Key of the step whose on_success or on_failure holds it ("" for a root step).
        branch: ``"root"``, ``"on_success"`` or ``"on_failure"``.
        depends_on: Keys it waits for.
    """

    key: str
    queue_name: str
    job_name: str
    job_id: str = ""
    state: WorkflowStepState = WorkflowStepState.PENDING
    job_state: JobState | None = None
    result: Any = None
    error: str = ""
    parent_key: str = ""
    branch: str = "root"
    depends_on: list[str] = field(default_factory=list)


@dataclass(slots=True)
class WorkflowRun:
    """A workflow run: its state and (from `get_workflow`) every step.

    Attributes:
        run_id: Run id.
        workflow_id: Id of the workflow definition.
        name: Workflow name.
        state: Where the run is.
        created_by, correlation_id, tags, attributes: The metadata given at execution (attributes include the
            trace context of a traced `execute_workflow`).
        steps: Every step, in definition order (empty in `list_workflows`).
        created_at: When the run started.
        finished_at: When it finished.
        cancel_reason: Why it was cancelled.
        step_count: Number of steps.
        finished_step_count: Steps completed, failed, skipped or cancelled.
    """

    run_id: str
    workflow_id: str = ""
    name: str = ""
    state: WorkflowState = WorkflowState.RUNNING
    created_by: str = ""
    correlation_id: str = ""
    tags: list[str] = field(default_factory=list)
    attributes: dict[str, str] = field(default_factory=dict)
    steps: list[WorkflowStepRun] = field(default_factory=list)
    created_at: datetime | None = None
    finished_at: datetime | None = None
    cancel_reason: str = ""
    step_count: int = 0
    finished_step_count: int = 0

    def step(self, key: str) -> WorkflowStepRun:
        """The step with this key (KeyError if there is none)."""
        for s in self.steps:
            if s.key == key:
                return s
        raise KeyError(key)


def workflow_to_proto(workflow: WorkflowLike) -> workflows_pb2.Workflow:
    """Validates a workflow mapping and builds its protobuf form (ValueError/TypeError on bad input)."""
    if not isinstance(workflow, Mapping):
        raise TypeError(f"a workflow is a mapping, not {type(workflow).__name__}")
    _known(workflow, _WORKFLOW_KEYS, "workflow")
    msg = workflows_pb2.Workflow(id=str(workflow.get("id") or ""), name=str(workflow.get("name") or ""))
    steps = workflow.get("steps")
    if not steps:
        raise ValueError("a workflow needs at least one step in 'steps'")
    _fill_steps(msg.steps, steps, "steps")
    metadata = workflow.get("metadata") or {}
    _known(metadata, _METADATA_KEYS, "workflow metadata")
    msg.metadata.created_by = str(metadata.get("created_by") or "")
    msg.metadata.correlation_id = str(metadata.get("correlation_id") or "")
    msg.metadata.tags.extend(_strings(metadata.get("tags"), "workflow metadata tags", "tags"))
    attributes = metadata.get("attributes") or {}
    if not isinstance(attributes, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in attributes.items()
    ):
        raise TypeError("workflow metadata attributes must be a mapping of str to str")
    msg.metadata.attributes.update(attributes)
    return msg


def _fill_steps(target: Any, steps: Sequence[Mapping[str, Any]], at: str) -> None:
    if isinstance(steps, str | bytes | Mapping):
        raise TypeError(f"{at} must be a list of steps")
    for i, step in enumerate(steps):
        where = f"{at}[{i}]"
        if not isinstance(step, Mapping):
            raise TypeError(f"{where} must be a mapping")
        _known(step, _STEP_KEYS, where)
        msg = target.add()
        try:
            msg.key = str(step.get("key") or "")
            msg.queue_name = validate_queue_name(step.get("queue_name", ""), f"{where}.queue_name")
            msg.job_name = validate_job_name(step.get("job_name", ""))
            encode_payload(step.get("data"), msg.data)
            job_options_to_proto(step.get("options"), into=msg.options)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{where}: {exc}") from None
        msg.depends_on.extend(_strings(step.get("depends_on"), f"{where}.depends_on", "step keys"))
        msg.run_if.extend(conditions_to_proto(step.get("run_if") or [], f"{where}.run_if"))
        _fill_steps(msg.on_success, step.get("on_success") or [], f"{where}.on_success")
        _fill_steps(msg.on_failure, step.get("on_failure") or [], f"{where}.on_failure")


def _strings(value: Any, where: str, what: str) -> list[str]:
    """A list of strings; a lone string is refused, since iterating it would give one name per letter
    (``"depends_on": "a-b"`` waited for steps "a", "-" and "b")."""
    if isinstance(value, str | bytes | Mapping):
        raise TypeError(f"{where} must be a list of {what}, not {type(value).__name__}: write [{value!r}]")
    return [str(v) for v in value or ()]


def _known(value: Mapping[str, Any], allowed: frozenset[str], what: str) -> None:
    unknown = sorted(str(k) for k in value if k not in allowed)
    if unknown:
        raise ValueError(
            f"unknown key(s) in {what}: {', '.join(unknown)}; expected {', '.join(sorted(allowed))}"
        )


def check_run_id(run_id: str) -> str:
    """A run id's type, checked before the call (the server checks its characters): protobuf refused an int
    with "bad argument type for built-in operation", naming nothing."""
    if not isinstance(run_id, str):
        raise TypeError(f"run_id must be a str, not {type(run_id).__name__}")
    return run_id


def list_workflows_request(page_size: int, page_token: str) -> workflows_pb2.ListWorkflowsRequest:
    """Builds and validates a ListWorkflowsRequest, as `list_jobs` checks its page: a negative or huge page
    size used to fail in protobuf with a bare "Value out of range: -1"."""
    page_size, page_token = check_page(page_size, page_token)
    return workflows_pb2.ListWorkflowsRequest(page_size=page_size, page_token=page_token)


def workflow_run_from_proto(msg: workflows_pb2.WorkflowRun) -> WorkflowRun:
    return WorkflowRun(
        run_id=msg.run_id,
        workflow_id=msg.workflow_id,
        name=msg.name,
        state=_RUN_STATES.get(msg.state, WorkflowState.RUNNING),
        created_by=msg.metadata.created_by,
        correlation_id=msg.metadata.correlation_id,
        tags=list(msg.metadata.tags),
        attributes=dict(msg.metadata.attributes),
        steps=[
            WorkflowStepRun(
                key=s.key,
                queue_name=s.queue_name,
                job_name=s.job_name,
                job_id=s.job_id,
                state=_STEP_STATES.get(s.state, WorkflowStepState.PENDING),
                job_state=STATE_BY_NUMBER.get(s.job_state),
                result=decode_payload(s.result),
                error=s.error,
                parent_key=s.parent_key,
                branch=_BRANCHES.get(s.branch, "root"),
                depends_on=list(s.depends_on),
            )
            for s in msg.steps
        ],
        created_at=timestamp_to_datetime(msg.create_time) if msg.HasField("create_time") else None,
        finished_at=timestamp_to_datetime(msg.finish_time) if msg.HasField("finish_time") else None,
        cancel_reason=msg.cancel_reason,
        step_count=msg.step_count,
        finished_step_count=msg.finished_step_count,
    )
