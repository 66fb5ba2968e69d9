"""Maintenance windows (QueueConfig.maintenance_windows): when each queue's windows hold, and applying that.

A window starts at each occurrence of its cron expression (in its IANA time zone, read as schedules read
theirs: recurrence.py) and lasts its duration; windows that overlap or follow each other count as one. While
the Redis clock is inside one, set_window.lua holds the queue paused for the reason "window" (meta ``pwin``:
when it ends), beside the pause an operator gives (``pman``, set_paused.lua); the queue's ``paused`` flag,
which every other script reads, is set while either holds. So a window ending never lifts a pause given by
hand, and a resume by hand inside a window ends only the hand's pause.

Python computes the span from the queue's config; set_window.lua stores it as a compare-and-set on the
windows it was computed from (meta ``mwin``, a digest the registration writes) and on the span still being
current by the script's own clock, so any number of servers may apply it at once and a late one writes
nothing stale. components/pause_timer.py applies each queue's windows at their next boundary (meta ``mwb``)
and RegisterQueue applies them at once.

A fairness group's own windows (GroupLimits.maintenance_windows, given by SetGroupLimits) work the same way
one level down: they are stored apart from its limits (keys ``group_windows``), set_group_window.lua holds
the group paused for the reason "window" beside an operator's pause (lua/includes/pause.lua) as a
compare-and-set on the stored windows, and each group's next boundary sits in the queue's
``group_window_bounds``, which the pause timer reads with the queue's own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from queue_manager.v1 import types_pb2
from queue_manager_server.engine import Engine
from queue_manager_server.engine.groups import GroupInfo, group_info
from queue_manager_server.errors import InvalidArgument, QueueNotFound
from queue_manager_server.recurrence import Recurrence, check_cron, time_zone
from queue_manager_server.validate import duration_ms

# Most windows a queue or a group may have; a maintenance calendar longer than this is better kept by a
# schedule.
MAX_WINDOWS = 16
MIN_WINDOW_MS = 1000
MAX_WINDOW_MS = 31 * 24 * 3600 * 1000
# Windows joined into one span at most (overlapping occurrences, say an hourly window two hours long);
# beyond it the span ends early and the next application finds the queue still inside a window.
MERGE_STEPS = 64
# Groups whose windows one call applies per round, and rounds per call: a queue with more due is visited
# again at once (its next boundary is then not later than now).
GROUP_CHUNK = 100
GROUP_ROUNDS = 4
# set_window.lua's and set_group_window.lua's codes.
STALE = -2
NO_QUEUE = -1


@dataclass(frozen=True, slots=True)
class Window:
    """One window: the starts its cron gives, each lasting duration_ms."""

    starts: Recurrence
    duration_ms: int

    def first_ending_after(self, t: int) -> tuple[int, int] | None:
        """The first occurrence [start, end) whose end is after t (holding at t, or the next)."""
        start = self.starts.first_at_or_after(t - self.duration_ms + 1)
        return None if start is None else (start, start + self.duration_ms)


@dataclass(frozen=True, slots=True)
class Span:
    """The maintenance holding at a time, or the next: [start_ms, end_ms), and the start of the one after
    it (0: none)."""

    start_ms: int
    end_ms: int
    next_start_ms: int


def check_windows(windows: Sequence[types_pb2.MaintenanceWindow], field: str) -> None:
    """Raises InvalidArgument (naming the field) unless every window is valid."""
    if len(windows) > MAX_WINDOWS:
        raise InvalidArgument(field, f"has {len(windows)} windows; at most {MAX_WINDOWS} are allowed")
    for i, w in enumerate(windows):
        at = f"{field}[{i}]"
        try:
            zone = time_zone(w.timezone)
        except ValueError as exc:
            raise InvalidArgument(f"{at}.timezone", str(exc)) from None
        if not w.cron:
            raise InvalidArgument(f"{at}.cron", "is required: when each window starts, such as '0 2 * * SUN'")
        try:
            check_cron(w.cron, zone)
        except ValueError as exc:
            raise InvalidArgument(f"{at}.cron", str(exc)) from None
        if not w.HasField("duration"):
            raise InvalidArgument(f"{at}.duration", "is required: how long each window lasts, 1 s to 31 days")
        ms = duration_ms(w.duration, f"{at}.duration")
        if not MIN_WINDOW_MS <= ms <= MAX_WINDOW_MS:
            raise InvalidArgument(f"{at}.duration", f"{ms} ms is not between 1 s and 31 days")


def digest(windows: Sequence[types_pb2.MaintenanceWindow]) -> str:
    """What the queue's windows are, in short (meta ``mwin``): "" for none."""
    if not windows:
        return ""
    text = b"".join(w.SerializeToString(deterministic=True) + b"\x00" for w in windows)
    return hashlib.sha1(text).hexdigest()[:16]


def parse(windows: Sequence[types_pb2.MaintenanceWindow]) -> list[Window]:
    """The stored (valid) windows as `Window`s."""
    return [
        Window(Recurrence(cron=w.cron, zone=time_zone(w.timezone)), duration_ms(w.duration, "duration"))
        for w in windows
    ]


def span_at(windows: Sequence[Window], now_ms: int) -> Span | None:
    """The maintenance holding at now_ms, or the next one; None when no window ever comes again."""
    first = _current_or_next(windows, now_ms)
    if first is None:
        return None
    start, end = first
    following = _current_or_next(windows, end) if start <= now_ms else first
    return Span(start, end, following[0] if following is not None else 0)


def _current_or_next(windows: Sequence[Window], t: int) -> tuple[int, int] | None:
    """The span [start, end) holding at t, or else the next, its overlapping windows joined."""
    found = [o for o in (w.first_ending_after(t) for w in windows) if o is not None]
    if not found:
        return None
    start, end = min(found)
    for _ in range(MERGE_STEPS):
        # An occurrence starting in (end - duration, end] runs past the end: the span goes on with it.
        later = [o[1] for w in windows if (o := w.first_ending_after(end)) is not None and o[0] <= end]
        if not later:
            break
        end = max(later)
    return start, end


class MaintenanceWindows:
    """Applies queues' windows through set_window.lua."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def due(self, queues: Sequence[str]) -> tuple[int, list[str], dict[str, int]]:
        """Redis's clock, the queues whose windows or whose groups' windows need applying now (a next
        boundary passed, or the windows changed since), and the next boundary of each other queue with
        windows, its own or its groups' (one round trip)."""
        pipe = self.engine.store.pipeline()
        for queue in queues:
            k = self.engine.keys(queue)
            pipe.hmget(k.meta, "mwin", "mwapplied", "mwb")
            pipe.zrange(k.group_window_bounds, 0, 0, withscores=True)
        rows = await self.engine.store.execute(pipe)
        now = await self.engine.redis_time_ms()
        apply: list[str] = []
        later: dict[str, int] = {}
        for queue, (mwin, applied, boundary), first in zip(queues, rows[::2], rows[1::2], strict=True):
            times = [int(boundary)] if boundary is not None else []
            times += [int(score) for _, score in first]
            if (mwin or b"") != (applied or b"") or any(t <= now for t in times):
                apply.append(queue)
            elif times:
                later[queue] = min(times)
        return now, apply, later

    async def apply(self, queue: str) -> tuple[int, int]:
        """Holds or frees the queue as its windows say now; returns (Redis's clock, the next boundary: when
        the window it is in ends or the next one starts; -1 for none)."""
        for _ in range(3):  # stale: the windows changed, or a boundary passed, while this computed
            code, now, boundary = await self._apply_once(queue)
            if code != STALE:
                return now, boundary
        return now, now  # changing under it still: the timer comes back at once

    async def apply_groups(self, queue: str) -> tuple[int, int]:
        """Holds or frees each group of the queue whose window boundary passed as its windows say now;
        returns (Redis's clock, the next boundary of any of the queue's groups; -1 for none)."""
        bounds = self.engine.keys(queue).group_window_bounds
        now = await self.engine.redis_time_ms(queue)
        for _ in range(GROUP_ROUNDS):
            due = await self.engine.redis.zrangebyscore(bounds, "-inf", now, start=0, num=GROUP_CHUNK)
            for group in due:
                now, _, _ = await self.apply_group(queue, _s(group))
            if len(due) < GROUP_CHUNK:
                break
        first = await self.engine.redis.zrange(bounds, 0, 0, withscores=True)
        return now, int(first[0][1]) if first else -1

    async def apply_group(self, queue: str, group: str) -> tuple[int, int, GroupInfo]:
        """Holds or frees one group as its windows say now; returns (Redis's clock, the group's next
        boundary (-1 for none), the group after it)."""
        for _ in range(3):  # stale: the windows changed, or a boundary passed, while this computed
            r = await self._apply_group_once(queue, group)
            if int(r[0]) != STALE:
                break
        if int(r[0]) == NO_QUEUE:
            raise QueueNotFound(queue)
        boundary = int(r[2]) if int(r[0]) != STALE else int(r[1])  # changing under it still: come back
        return int(r[1]), boundary, group_info(queue, group, r[3:])

    async def _apply_group_once(self, queue: str, group: str) -> Any:
        k = self.engine.keys(queue)
        stored = await self.engine.redis.hget(k.group_windows, group)
        now = await self.engine.redis_time_ms(queue)
        blob = stored if isinstance(stored, bytes) else b""
        given = types_pb2.GroupLimits.FromString(blob).maintenance_windows
        span = span_at(parse(given), now) if blob else None
        args: list[Any] = [group, blob, 0, 0, 0]
        if span is not None:
            args[2:] = [span.start_ms, span.end_ms, span.next_start_ms]
        return await self.engine.scripts.run("set_group_window", [k.meta], args)

    async def _apply_once(self, queue: str) -> tuple[int, int, int]:
        meta = self.engine.keys(queue).meta
        config, mwin = await self.engine.redis.hmget(meta, "config", "mwin")
        now = await self.engine.redis_time_ms(queue)
        cfg = types_pb2.QueueConfig.FromString(config if isinstance(config, bytes) else b"")
        span = span_at(parse(cfg.maintenance_windows), now) if mwin else None
        args: list[Any] = [_s(mwin), 0, 0, 0]
        if span is not None:
            args[1:] = [span.start_ms, span.end_ms, span.next_start_ms]
        r = await self.engine.scripts.run("set_window", [meta], args)
        return int(r[0]), int(r[1]), int(r[2])


def _s(v: Any) -> str:
    if v is None:
        return ""
    return v.decode() if isinstance(v, bytes) else str(v)
