"""Workflow step conditions (WorkflowStep.run_if): checked at ExecuteWorkflow, stored for wf_step_done.lua.

A condition looks at a predecessor's result or its error message, which live in the run hash (``r:<key>``,
``e:<key>``), and the decision to
start or skip a due step is taken in the same script that records the predecessor's outcome
(includes/workflow.lua ``wf_arm``): the step's start stays atomic with the decision, a replayed hand-off
decides nothing twice, and no round trip is added per step. So the conditions are stored as JSON Lua's
cjson reads (``if:<key>``, `encode`), each with its text for the skip reason.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from queue_manager.v1 import workflows_pb2
from queue_manager_server import convert
from queue_manager_server.errors import InvalidArgument

# Conditions per step: enough for any guard; more is a job's own logic.
MAX_CONDITIONS = 16
# Characters of a path, and of a value as written in a skip reason.
MAX_PATH = 1000
_SHOWN_VALUE = 200
# Operator: (its code for includes/workflow.lua wf_holds, how a reason writes it, whether it takes a value).
_OPERATORS: dict[int, tuple[str, str, bool]] = {
    workflows_pb2.CONDITION_OPERATOR_EQUAL: ("eq", "==", True),
    workflows_pb2.CONDITION_OPERATOR_NOT_EQUAL: ("ne", "!=", True),
    workflows_pb2.CONDITION_OPERATOR_GREATER_THAN: ("gt", ">", True),
    workflows_pb2.CONDITION_OPERATOR_GREATER_OR_EQUAL: ("ge", ">=", True),
    workflows_pb2.CONDITION_OPERATOR_LESS_THAN: ("lt", "<", True),
    workflows_pb2.CONDITION_OPERATOR_LESS_OR_EQUAL: ("le", "<=", True),
    workflows_pb2.CONDITION_OPERATOR_EXISTS: ("ex", "exists", False),
    workflows_pb2.CONDITION_OPERATOR_NOT_EXISTS: ("nx", "does not exist", False),
    workflows_pb2.CONDITION_OPERATOR_IN: ("in", "in", True),
    workflows_pb2.CONDITION_OPERATOR_CONTAINS: ("has", "contains", True),
}

# What a condition may look at: a predecessor's result (unset means it) or its error message.
_SOURCES = frozenset(
    {
        workflows_pb2.CONDITION_SOURCE_UNSPECIFIED,
        workflows_pb2.CONDITION_SOURCE_RESULT,
        workflows_pb2.CONDITION_SOURCE_ERROR,
    }
)


def encode(
    key: str, conditions: Sequence[workflows_pb2.StepCondition], predecessors: list[str], payload_limit: int
) -> str:
    """Checks a step's run_if and returns it as the run hash stores it (empty when there is none).

    Args:
        key: The step's key (named in every refusal).
        conditions: Its run_if.
        predecessors: Its parent's key (if any), then the keys it depends on.
        payload_limit: Largest value accepted, in bytes of JSON.

    Raises:
        InvalidArgument: A condition names no predecessor, has a bad path (any path with source ERROR), no
            operator, a missing or extra value, IN without a list, an unknown source; or there are more than
            MAX_CONDITIONS.
    """
    if not conditions:
        return ""
    if len(conditions) > MAX_CONDITIONS:
        raise InvalidArgument(
            f"step {key!r}.run_if", f"a step has at most {MAX_CONDITIONS} conditions, not {len(conditions)}"
        )
    return json.dumps(
        [_condition(key, i, c, predecessors, payload_limit) for i, c in enumerate(conditions)],
        separators=(",", ":"),
    )


def _condition(
    key: str, i: int, c: workflows_pb2.StepCondition, predecessors: list[str], payload_limit: int
) -> dict[str, object]:
    where = f"step {key!r}.run_if[{i}]"
    step = _step(where, c.step, predecessors)
    if c.source not in _SOURCES:
        raise InvalidArgument(f"{where}.source", f"unknown source {c.source}; use RESULT or ERROR")
    on_error = c.source == workflows_pb2.CONDITION_SOURCE_ERROR
    if on_error and c.path:
        raise InvalidArgument(
            f"{where}.path",
            "an error message is a string with no fields: leave the path empty with source ERROR",
        )
    if len(c.path) > MAX_PATH:
        raise InvalidArgument(f"{where}.path", f"a path has at most {MAX_PATH} characters")
    segments = c.path.split(".") if c.path else []
    if any(not s for s in segments):
        raise InvalidArgument(
            f"{where}.path", f"{c.path!r} has an empty segment; write fields and list indexes as 'a.b.0'"
        )
    if c.operator not in _OPERATORS:
        raise InvalidArgument(
            f"{where}.operator",
            "set an operator: EQUAL, NOT_EQUAL, GREATER_THAN, GREATER_OR_EQUAL, LESS_THAN, LESS_OR_EQUAL, "
            "EXISTS, NOT_EXISTS, IN or CONTAINS",
        )
    code, symbol, takes_value = _OPERATORS[c.operator]
    subject = f"the error of {step}" if on_error else f"{step}.{c.path}" if c.path else step
    out: dict[str, object] = {"s": step, "p": segments, "o": code}
    if on_error:
        out["e"] = 1
    if not takes_value:
        if c.HasField("value"):
            raise InvalidArgument(f"{where}.value", f"{symbol.upper().replace(' ', '_')} takes no value")
        out["t"] = f"{subject} {symbol}"
        return out
    if not c.HasField("value"):
        raise InvalidArgument(f"{where}.value", f"operator {symbol!r} needs a value to compare with")
    if code == "in" and c.value.WhichOneof("kind") != "list_value":
        raise InvalidArgument(f"{where}.value", "IN needs a list of values")
    try:
        text = convert.value_json(c.value)
    except ValueError:
        raise InvalidArgument(
            f"{where}.value", "NaN and Infinity are not JSON; compare with a number"
        ) from None
    if len(text) > payload_limit:
        raise InvalidArgument(f"{where}.value", f"the value is larger than {payload_limit} bytes")
    out["v"] = json.loads(text)
    shown = text if len(text) <= _SHOWN_VALUE else text[: _SHOWN_VALUE - 1] + "…"
    out["t"] = f"{subject} {symbol} {shown}"
    return out


def _step(where: str, step: str, predecessors: list[str]) -> str:
    """The predecessor a condition looks at."""
    if step:
        if step not in predecessors:
            named = ", ".join(repr(p) for p in predecessors) or "none: a root step has no result to look at"
            raise InvalidArgument(
                f"{where}.step",
                f"{step!r} is not a predecessor of this step (its parent or a step it depends on: {named})",
            )
        return step
    if len(predecessors) == 1:
        return predecessors[0]
    if not predecessors:
        raise InvalidArgument(
            f"{where}.step", "a root step without depends_on has no predecessor whose result to look at"
        )
    raise InvalidArgument(
        f"{where}.step",
        f"this step has several predecessors ({', '.join(repr(p) for p in predecessors)}); name one",
    )
