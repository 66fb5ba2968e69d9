"""Maintenance windows (`QueueConfig.maintenance_windows`): recurring spans in which a queue starts no job;
a fairness group may have its own (`QueueManager.set_group_limits`), in which none of its jobs starts.

The server holds the queue paused while its clock is inside one of its windows (running jobs finish, new
jobs are still added) and lets it run outside them; a window never lifts a pause given by hand, and
`QueueManager.resume_queue` inside a window ends only that pause (docs/operations.md, "Maintenance windows
and timed pauses").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeAlias

from queue_manager.options import DurationLike, to_duration
from queue_manager.v1 import types_pb2

__all__ = ["MaintenanceWindow", "MaintenanceWindowLike", "windows_from_proto", "windows_to_proto"]

# The most windows a queue or a group may have (the server refuses more).
MAX_WINDOWS = 16


@dataclass(frozen=True, slots=True)
class MaintenanceWindow:
    """One recurring window.

    Attributes:
        cron: When each window starts: a cron expression, 5 fields (minute hour day-of-month month
            day-of-week) or 6 (seconds first), as schedules take it: ``"0 2 * * SUN"``.
        duration: How long each window lasts: milliseconds or a timedelta, 1 s to 31 days (read back as a
            timedelta).
        timezone: The IANA time zone the cron expression is read in (``"Europe/Paris"``); "" means UTC.
    """

    cron: str
    duration: DurationLike
    timezone: str = ""


MaintenanceWindowLike: TypeAlias = MaintenanceWindow | Mapping[str, Any]
"""A window as a `MaintenanceWindow` or a mapping with the same keys."""


def windows_to_proto(
    windows: Iterable[MaintenanceWindowLike], into: types_pb2.QueueConfig | types_pb2.GroupLimits
) -> None:
    """Checks the windows' form and adds them to ``into``, a queue's config or a group's own limits (the
    server checks the cron and the zone)."""
    items = list(windows)
    if len(items) > MAX_WINDOWS:
        raise ValueError(f"maintenance_windows has {len(items)} windows; the most is {MAX_WINDOWS}")
    for i, item in enumerate(items):
        window = item if isinstance(item, MaintenanceWindow) else _from_mapping(item, i)
        what = f"maintenance_windows[{i}]"
        if not isinstance(window.cron, str) or not window.cron.strip():
            raise ValueError(f"{what}.cron must be a cron expression such as '0 2 * * SUN'")
        if not isinstance(window.timezone, str):
            raise TypeError(f"{what}.timezone must be a str, not {type(window.timezone).__name__}")
        into.maintenance_windows.add(
            cron=window.cron,
            duration=to_duration(window.duration, f"{what}.duration", positive=True),
            timezone=window.timezone,
        )


def _from_mapping(item: Any, index: int) -> MaintenanceWindow:
    if not isinstance(item, Mapping):
        raise TypeError(
            f"maintenance_windows[{index}] must be a MaintenanceWindow or a mapping "
            f"{{cron, duration, timezone}}, not {type(item).__name__}"
        )
    unknown = ", ".join(sorted(map(str, set(item) - {"cron", "duration", "timezone"})))
    if unknown:
        raise ValueError(f"maintenance_windows[{index}] has unknown keys: {unknown}")
    if "cron" not in item or "duration" not in item:
        raise ValueError(f"maintenance_windows[{index}] needs a cron and a duration")
    return MaintenanceWindow(item["cron"], item["duration"], item.get("timezone", ""))


def windows_from_proto(windows: Sequence[types_pb2.MaintenanceWindow]) -> list[MaintenanceWindow]:
    return [
        MaintenanceWindow(
            w.cron, timedelta(seconds=w.duration.seconds, microseconds=w.duration.nanos // 1000), w.timezone
        )
        for w in windows
    ]
