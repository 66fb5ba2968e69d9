"""Priority bounds (anti-starvation aging) of a queue: how long a job of a level waits at most behind the
levels above it before the server moves it ahead of every level (docs/jobs.md, "Priorities")."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import TypeAlias

from queue_manager.enums import JobPriority
from queue_manager.options import DurationLike, duration_ms, parse_priority
from queue_manager.v1 import types_pb2

__all__ = ["PriorityBoundsLike", "priority_bounds_from_proto", "priority_bounds_to_proto"]

PriorityBoundsLike: TypeAlias = Mapping[JobPriority | int | str, DurationLike]
"""Levels (a `JobPriority`, 1 to 5 or a level name) to their longest wait: milliseconds or a `timedelta`,
as every duration of the client."""

# The server's range for a bound (it checks too; these give the message before the call).
_MIN_MS, _MAX_MS = 1000, 30 * 24 * 3600 * 1000


def priority_bounds_to_proto(bounds: PriorityBoundsLike, into: types_pb2.QueueConfig) -> None:
    """Validates the bounds and adds them to a QueueConfig's ``priority_bounds``, by level.

    Raises:
        TypeError: A level or a duration of the wrong type.
        ValueError: An unknown level, CRITICAL, a level given twice, or a wait outside 1 s to 30 days.
    """
    if not isinstance(bounds, Mapping):
        raise TypeError(
            f"priority_bounds must be a mapping of levels to durations, not {type(bounds).__name__}"
        )
    levels: dict[JobPriority, float] = {}
    for key, wait in bounds.items():
        level = parse_priority(key)
        if level is JobPriority.CRITICAL:
            raise ValueError("priority_bounds: CRITICAL jobs run first already; bound HIGH to BACKGROUND")
        if level in levels:
            raise ValueError(f"priority_bounds: {level.name} is given twice ({key!r})")
        ms = _bound_ms(wait, level)
        if not _MIN_MS <= ms <= _MAX_MS:
            shown = f"{ms:.0f}" if ms == int(ms) else f"{ms}"
            raise ValueError(
                f"priority_bounds[{level.name}] is {shown} ms: a bound is from 1 second to 30 days, in "
                f"milliseconds or a timedelta (60 seconds is 60000 or timedelta(seconds=60))"
            )
        levels[level] = ms
    for level in sorted(levels):
        bound = into.priority_bounds.add(priority=int(level))
        bound.max_wait.FromNanoseconds(round(levels[level] * 1_000_000))


def _bound_ms(wait: DurationLike, level: JobPriority) -> float:
    """A bound's milliseconds; a negative one is let through, for the range message to name."""
    what = f"priority_bounds[{level.name}]"
    if isinstance(wait, timedelta):
        return wait / timedelta(milliseconds=1)
    if isinstance(wait, int | float) and not isinstance(wait, bool) and wait < 0:
        return float(wait)
    return duration_ms(wait, what)


def priority_bounds_from_proto(config: types_pb2.QueueConfig) -> dict[JobPriority, timedelta]:
    """A QueueConfig's bounds by level (levels this client does not know are left out)."""
    known = {int(p) for p in JobPriority}
    return {
        JobPriority(b.priority): b.max_wait.ToTimedelta()
        for b in config.priority_bounds
        if b.priority in known
    }
