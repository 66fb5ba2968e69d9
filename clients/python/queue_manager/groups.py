"""Fairness groups (`JobOptions.group`): a queue's groups and their limits (docs/jobs.md, "Fairness groups").

The ready jobs of different groups of a queue take turns; `GroupLimits` bound each group on its own: the
queue's ``group_limits`` apply to every group, and a group given limits of its own
(`QueueManager.set_group_limits`) has those instead, with its own maintenance windows if it is given any.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeAlias

from queue_manager.maintenance import (
    MaintenanceWindow,
    MaintenanceWindowLike,
    windows_from_proto,
    windows_to_proto,
)
from queue_manager.options import (
    DurationLike,
    GroupLimits,
    RateLimit,
    _fill_rate_limit,
    _uint,
    check_page,
    size_limit,
    validate_group,
    validate_queue_name,
)
from queue_manager.pauses import set_resume_time
from queue_manager.v1 import queue_service_pb2, types_pb2

__all__ = [
    "GroupInfo",
    "GroupLimitsLike",
    "RateLimitLike",
    "group_info_from_proto",
    "group_limits_from_proto",
    "group_limits_to_proto",
    "list_groups_request",
    "pause_group_request",
    "queue_group_limits_from_proto",
    "resume_group_request",
    "set_group_limits_request",
]

RateLimitLike: TypeAlias = RateLimit | Mapping[str, Any]
"""A `RateLimit` or ``{"max": n, "duration": ms or timedelta, "burst": n}`` (burst optional)."""

GroupLimitsLike: TypeAlias = GroupLimits | Mapping[str, Any]
"""A `GroupLimits` or ``{"concurrency": n, "rate_limit": RateLimit or {"max": n, "duration": ms},
"max_size": n}``."""

_LIMIT_KEYS = frozenset({"concurrency", "rate_limit", "max_size"})


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """One fairness group of a queue.

    Attributes:
        name: The group (`JobOptions.group`).
        waiting: Its jobs ready to run.
        active: Its jobs leased to workers.
        limits: The limits that apply to it: its own, else the queue's ``group_limits``; ``GroupLimits()``
            (concurrency 0, no rate limit, max_size 0) when none applies.
        custom_limits: Whether ``limits`` are the group's own (`QueueManager.set_group_limits`).
        paused: Whether the group is paused: by `QueueManager.pause_group` (its jobs are added but none
            starts until it is resumed), or by one of its maintenance windows, or both.
        paused_until: When its timed pause lifts by itself (UTC); None for a pause until it is resumed.
        maintenance_windows: Its own maintenance windows (`QueueManager.set_group_limits`).
        maintenance_until: While one of its windows holds it (``paused`` is then True): when the window ends
            (UTC); None outside its windows.
        next_maintenance_time: When its next window starts (UTC); None without windows.
    """

    name: str
    waiting: int = 0
    active: int = 0
    limits: GroupLimits = field(default_factory=GroupLimits)
    custom_limits: bool = False
    paused: bool = False
    paused_until: datetime | None = None
    maintenance_windows: list[MaintenanceWindow] = field(default_factory=list)
    maintenance_until: datetime | None = None
    next_maintenance_time: datetime | None = None


def group_limits_to_proto(value: GroupLimitsLike, into: types_pb2.GroupLimits, what: str) -> None:
    """Validates group limits and fills ``into`` (which is marked set even when the limits are none).

    Args:
        value: A `GroupLimits` or a mapping with its keys.
        into: The message to fill.
        what: The argument's name, for error messages (``group_limits``).

    Raises:
        TypeError: A value of the wrong kind.
        ValueError: An unknown key, a negative or too large concurrency or max_size, a rate limit without its
            window.
    """
    if isinstance(value, Mapping):
        unknown = sorted(str(key) for key in value if key not in _LIMIT_KEYS)
        if unknown:
            names = ", ".join(map(repr, unknown))
            raise ValueError(f"unknown {what} key {names}; expected concurrency, rate_limit, max_size")
        value = GroupLimits(**value)
    if not isinstance(value, GroupLimits):
        raise TypeError(f"{what} must be a GroupLimits or a mapping, not {type(value).__name__}")
    _fill(into, value.concurrency, value.rate_limit, value.max_size, what)


def _fill(
    into: types_pb2.GroupLimits,
    concurrency: int,
    rate_limit: RateLimitLike | None,
    max_size: int,
    what: str = "",
) -> None:
    """Fills the limits; errors name ``what`` (``group_limits``) before the field, or the field alone."""
    into.SetInParent()
    into.concurrency = _uint(concurrency, f"{what} concurrency" if what else "concurrency")
    into.max_size = size_limit(max_size, f"{what} max_size" if what else "max_size")
    if rate_limit is not None:
        try:
            _fill_rate_limit(into.rate_limit, rate_limit)
        except (TypeError, ValueError) as exc:
            if not what:
                raise
            raise type(exc)(f"{what}: {exc}") from None


def group_limits_from_proto(msg: types_pb2.GroupLimits) -> GroupLimits:
    """A `GroupLimits` from its message; a rate limit of 0 jobs is none."""
    rate = None
    if msg.HasField("rate_limit") and msg.rate_limit.max:
        rate = RateLimit(
            max=msg.rate_limit.max,
            duration=msg.rate_limit.duration.ToTimedelta(),
            burst=msg.rate_limit.burst,
        )
    return GroupLimits(concurrency=msg.concurrency, rate_limit=rate, max_size=msg.max_size)


def queue_group_limits_from_proto(config: types_pb2.QueueConfig) -> GroupLimits | None:
    """A queue's ``group_limits``: None when the queue limits no group."""
    limits = group_limits_from_proto(config.group_limits)
    return limits if limits != GroupLimits() else None


def group_info_from_proto(msg: types_pb2.GroupInfo) -> GroupInfo:
    """A public `GroupInfo` from a `queue_manager.v1.GroupInfo`."""
    next_time = msg.next_maintenance_time
    return GroupInfo(
        name=msg.group,
        waiting=msg.waiting,
        active=msg.active,
        limits=group_limits_from_proto(msg.limits),
        custom_limits=msg.custom_limits,
        paused=msg.paused,
        paused_until=msg.paused_until.ToDatetime(tzinfo=UTC) if msg.HasField("paused_until") else None,
        maintenance_windows=windows_from_proto(msg.limits.maintenance_windows),
        maintenance_until=(
            msg.maintenance_until.ToDatetime(tzinfo=UTC) if msg.HasField("maintenance_until") else None
        ),
        next_maintenance_time=(
            next_time.ToDatetime(tzinfo=UTC) if msg.HasField("next_maintenance_time") else None
        ),
    )


def list_groups_request(
    queue_name: str, page_size: int, page_token: str
) -> queue_service_pb2.ListGroupsRequest:
    """Builds and validates a ListGroupsRequest."""
    page_size, page_token = check_page(page_size, page_token)
    return queue_service_pb2.ListGroupsRequest(
        queue_name=validate_queue_name(queue_name), page_size=page_size, page_token=page_token
    )


def set_group_limits_request(
    queue_name: str,
    group: str,
    concurrency: int = 0,
    rate_limit: RateLimitLike | None = None,
    max_size: int = 0,
    maintenance_windows: Iterable[MaintenanceWindowLike] = (),
    *,
    clear: bool = False,
) -> queue_service_pb2.SetGroupLimitsRequest:
    """Builds and validates a SetGroupLimitsRequest: the group's own limits and windows, or ``clear`` to
    remove them."""
    request = queue_service_pb2.SetGroupLimitsRequest(
        queue_name=validate_queue_name(queue_name), group=validate_group(group)
    )
    if clear:
        request.clear = True
    else:
        _fill(request.limits, concurrency, rate_limit, max_size)
        windows_to_proto(maintenance_windows, request.limits)
    return request


def pause_group_request(
    queue_name: str, group: str, resume_after: DurationLike | None = None, resume_at: datetime | None = None
) -> queue_service_pb2.PauseGroupRequest:
    """Builds and validates a PauseGroupRequest."""
    request = queue_service_pb2.PauseGroupRequest(
        queue_name=validate_queue_name(queue_name), group=validate_group(group)
    )
    set_resume_time(request, resume_after, resume_at)
    return request


def resume_group_request(queue_name: str, group: str) -> queue_service_pb2.ResumeGroupRequest:
    """Builds and validates a ResumeGroupRequest."""
    return queue_service_pb2.ResumeGroupRequest(
        queue_name=validate_queue_name(queue_name), group=validate_group(group)
    )
