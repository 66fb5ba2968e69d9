"""QueueConfig.priority_bounds in, validated, as the (level, max wait ms) pairs engine/aging.py stores."""

from __future__ import annotations

from collections.abc import Sequence

from queue_manager.v1 import types_pb2
from queue_manager_server import validate
from queue_manager_server.errors import InvalidArgument

# A bound shorter than a second would be checked no sooner than the next sweep (1 s by default), and one
# longer than 30 days is no bound a person means (retention forgets most jobs sooner).
MIN_MAX_WAIT_MS = 1000
MAX_MAX_WAIT_MS = 30 * 24 * 3600 * 1000
# HIGH to BACKGROUND: CRITICAL runs first already, so it has nothing to wait behind.
BOUNDED_LEVELS = range(2, 6)


def _level_name(level: int) -> str:
    return types_pb2.JobPriority.Name(level).removeprefix("JOB_PRIORITY_")  # type: ignore[arg-type]


def priority_bounds(
    bounds: Sequence[types_pb2.PriorityBound], field: str = "config.priority_bounds"
) -> list[tuple[int, int]]:
    """The bounds as (level, max wait ms), by level; raises InvalidArgument naming the entry at fault."""
    seen: dict[int, int] = {}
    for i, bound in enumerate(bounds):
        at = f"{field}[{i}]"
        level = int(bound.priority)
        if level == types_pb2.JOB_PRIORITY_CRITICAL:
            raise InvalidArgument(
                f"{at}.priority",
                "CRITICAL jobs run first already and wait behind no other level: bound HIGH, NORMAL, LOW or "
                "BACKGROUND",
            )
        validate.enum_value(level, BOUNDED_LEVELS, f"{at}.priority", types_pb2.JobPriority)
        if level in seen:
            raise InvalidArgument(
                f"{at}.priority",
                f"{_level_name(level)} is bounded twice (also at {field}[{seen[level]}]): give each level "
                "once",
            )
        seen[level] = i
        if not bound.HasField("max_wait"):
            raise InvalidArgument(f"{at}.max_wait", "is required: from 1 second to 30 days")
        ms = validate.duration_ms(bound.max_wait, f"{at}.max_wait")
        if not MIN_MAX_WAIT_MS <= ms <= MAX_MAX_WAIT_MS:
            raise InvalidArgument(
                f"{at}.max_wait",
                f"{ms} ms is out of range: a bound is from 1 second (1000 ms) to 30 days (2592000000 ms)",
            )
    return sorted(
        (level, validate.duration_ms(bounds[i].max_wait, f"{field}[{i}].max_wait"))
        for level, i in seen.items()
    )
