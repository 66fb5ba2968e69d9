"""Conditions on workflow steps (a step's ``run_if``): `when` and the mapping form, as protobuf.

A step runs, once due, only if every condition on its predecessors' results holds; otherwise it is skipped
(its ``error`` says which condition failed), and so is everything after it::

    {"key": "ship", "queue_name": "shipping", "job_name": "ship",
     "run_if": [when("validate", "total", ">", 100), {"path": "status", "operator": "==", "value": "ok"}]}

A step on an on_failure branch can look at why its parent failed instead (``source="error"``: the error
message, a string)::

    {"key": "notify", ..., "run_if": [when("charge", "", "contains", "card declined", source="error")]}

``step`` may be left out when the step has one predecessor (its parent, or the one step it depends on).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from queue_manager.convert import python_to_value
from queue_manager.v1 import workflows_pb2

__all__ = ["OPERATORS", "Condition", "when"]

_ALL = {
    "==": workflows_pb2.CONDITION_OPERATOR_EQUAL,
    "!=": workflows_pb2.CONDITION_OPERATOR_NOT_EQUAL,
    ">": workflows_pb2.CONDITION_OPERATOR_GREATER_THAN,
    ">=": workflows_pb2.CONDITION_OPERATOR_GREATER_OR_EQUAL,
    "<": workflows_pb2.CONDITION_OPERATOR_LESS_THAN,
    "<=": workflows_pb2.CONDITION_OPERATOR_LESS_OR_EQUAL,
    "exists": workflows_pb2.CONDITION_OPERATOR_EXISTS,
    "not_exists": workflows_pb2.CONDITION_OPERATOR_NOT_EXISTS,
    "in": workflows_pb2.CONDITION_OPERATOR_IN,
    "contains": workflows_pb2.CONDITION_OPERATOR_CONTAINS,
}
OPERATORS: Mapping[str, workflows_pb2.ConditionOperator.ValueType] = {
    **_ALL,
    **{
        workflows_pb2.ConditionOperator.Name(number).removeprefix("CONDITION_OPERATOR_").lower(): number
        for number in _ALL.values()
    },
}
"""Operator spellings accepted: symbols and lower-case names (``">="``, ``"greater_or_equal"``)."""

_NEEDS_NO_VALUE = {workflows_pb2.CONDITION_OPERATOR_EXISTS, workflows_pb2.CONDITION_OPERATOR_NOT_EXISTS}
_CONDITION_KEYS = frozenset({"step", "path", "operator", "value", "source"})
_MISSING: Any = object()
_SOURCES = {"result": workflows_pb2.CONDITION_SOURCE_RESULT, "error": workflows_pb2.CONDITION_SOURCE_ERROR}


@dataclass(frozen=True, slots=True)
class Condition:
    """One condition of a step's run_if (build it with `when`).

    Attributes:
        step: Key of the predecessor whose result it looks at ("" for the only one).
        path: Dotted path into that result ("order.total", "items.0.sku"); "" for the whole result.
        operator: One of `OPERATORS`.
        value: What to compare with (a list for ``in``); unset for ``exists`` / ``not_exists``.
        source: ``"result"`` (the predecessor's result) or ``"error"`` (its error message; path "").
    """

    step: str
    path: str
    operator: str
    value: Any = _MISSING
    source: str = "result"


def when(step: str, path: str, operator: str, value: Any = _MISSING, *, source: str = "result") -> Condition:
    """A run_if condition: ``when("validate", "total", ">", 100)``; see `OPERATORS` for the operators.

    Args:
        step: Key of a predecessor (the step whose on_success / on_failure holds this one, or one it
            depends on); "" for the only one.
        path: Dotted path into its JSON result; "" for the whole result.
        operator: ``==``, ``!=``, ``>``, ``>=``, ``<``, ``<=``, ``exists``, ``not_exists``, ``in`` or
            ``contains`` (or their names: ``equal``, ``greater_than``, …).
        value: What to compare with; leave it out for ``exists`` and ``not_exists``.
        source: ``"result"`` compares the predecessor's result (at path); ``"error"`` its error message, a
            string, missing unless it failed (for a step on its on_failure branch; path must be "").

    Raises:
        ValueError: An unknown operator or source, a path with source "error", or a value missing or given
            where it does not belong.
    """
    condition = Condition(str(step), str(path), operator, value, source)
    condition_to_proto(condition, "when()")
    return condition


def conditions_to_proto(
    conditions: Sequence[Condition | Mapping[str, Any]], at: str
) -> list[workflows_pb2.StepCondition]:
    """A step's run_if as protobuf; each item a `Condition` or a mapping with the same keys."""
    if isinstance(conditions, str | bytes | Mapping) or not isinstance(conditions, Sequence):
        raise TypeError(f"{at} must be a list of conditions (when(...) or mappings)")
    return [condition_to_proto(c, f"{at}[{i}]") for i, c in enumerate(conditions)]


def condition_to_proto(condition: Condition | Mapping[str, Any], at: str) -> workflows_pb2.StepCondition:
    if isinstance(condition, Mapping):
        unknown = sorted(str(k) for k in condition if k not in _CONDITION_KEYS)
        if unknown:
            raise ValueError(
                f"unknown key(s) in {at}: {', '.join(unknown)}; expected {', '.join(sorted(_CONDITION_KEYS))}"
            )
        condition = Condition(
            str(condition.get("step") or ""),
            str(condition.get("path") or ""),
            condition.get("operator", ""),
            condition.get("value", _MISSING),
            condition.get("source") or "result",
        )
    elif not isinstance(condition, Condition):
        raise TypeError(f"{at} must be when(...) or a mapping, not {type(condition).__name__}")
    number = OPERATORS.get(condition.operator) if isinstance(condition.operator, str) else None
    if number is None:
        raise ValueError(
            f"{at}: unknown operator {condition.operator!r}; use one of {', '.join(_ALL)} (or their names)"
        )
    source = _SOURCES.get(condition.source) if isinstance(condition.source, str) else None
    if source is None:
        raise ValueError(f"{at}: unknown source {condition.source!r}; use 'result' or 'error'")
    if source == workflows_pb2.CONDITION_SOURCE_ERROR and condition.path:
        raise ValueError(f"{at}: an error message has no fields; leave the path empty with source 'error'")
    msg = workflows_pb2.StepCondition(
        step=condition.step, path=condition.path, operator=number, source=source
    )
    if number in _NEEDS_NO_VALUE:
        if condition.value is not _MISSING:
            raise ValueError(f"{at}: {condition.operator!r} takes no value")
        return msg
    if condition.value is _MISSING:
        raise ValueError(f"{at}: {condition.operator!r} needs a value to compare with")
    if number == workflows_pb2.CONDITION_OPERATOR_IN and not isinstance(condition.value, list | tuple):
        raise ValueError(f"{at}: 'in' needs a list of values")
    msg.value.CopyFrom(
        python_to_value(list(condition.value) if isinstance(condition.value, tuple) else condition.value)
    )
    return msg
