"""Fairness groups (JobOptions.group): a queue's groups with their counts and limits; a group's own limits.

One method per Lua script (list_groups.lua, set_group_limits.lua), as in engine.py. The rotation itself is
in the claim (lua/includes/claim.lua pop_groups); common.lua documents the keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from queue_manager_server.engine.engine import Engine
from queue_manager_server.errors import QueueNotFound

NO_QUEUE = -1


@dataclass(frozen=True, slots=True)
class Limits:
    """A group's limits: most active jobs, a token bucket of rate_max starts per rate_ms holding rate_burst
    (0: the default), and most jobs waiting (0: none)."""

    concurrency: int = 0
    rate_max: int = 0
    rate_ms: int = 0
    max_size: int = 0
    rate_burst: int = 0

    @classmethod
    def parse(cls, raw: Any) -> Limits | None:
        """The scripts' "concurrency rate-max rate-ms max-size burst" (limits set before burst have no
        fifth, before max_size no fourth); None for "" (no limits of its own)."""
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        if not text:
            return None
        return cls(*(int(v) for v in text.split()))


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """One group: its waiting and active jobs, its own limits (None: the queue's apply), the queue's, and
    whether it is paused."""

    name: str
    waiting: int
    active: int
    own: Limits | None
    default: Limits
    paused: bool = False
    paused_until_ms: int = 0  # when its timed pause lifts (Redis time); 0 for none
    maintenance_until_ms: int = 0  # when the maintenance window holding it ends; 0 outside one
    next_maintenance_ms: int = 0  # when its next maintenance window starts; 0 for none
    windows: bytes = b""  # its maintenance windows as stored (a serialized GroupLimits); b"" for none

    @property
    def limits(self) -> Limits:
        return self.own if self.own is not None else self.default


class Groups:
    """The group operations on top of an `Engine`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.scripts = engine.scripts

    async def list_groups(self, queue: str, after: str, count: int) -> tuple[list[GroupInfo], int]:
        """A page of the queue's groups by name, from the first after `after` ("": from the first), and how
        many it knows."""
        k = self.engine.keys(queue)
        r = await self.scripts.run("list_groups", [k.meta], [after, count])
        if int(r[0]) == NO_QUEUE:
            raise QueueNotFound(queue)
        default = Limits.parse(r[1]) or Limits()
        out = [
            GroupInfo(
                _s(r[i]),
                int(r[i + 1]),
                int(r[i + 2]),
                Limits.parse(r[i + 3]),
                default,
                int(r[i + 4]) == 1,
                _ms(r[i + 5]),
                _ms(r[i + 6]),
                _ms(r[i + 7]),
                _b(r[i + 8]),
            )
            for i in range(2, len(r), 9)
        ]
        return out, int(r[0])

    async def set_group_limits(
        self, queue: str, group: str, limits: Limits | None, windows: bytes = b""
    ) -> GroupInfo:
        """Gives the group limits of its own and its maintenance windows (serialized, b"" for none:
        windows.py applies them), or with None takes both away (the queue's limits apply again)."""
        k = self.engine.keys(queue)
        own = limits or Limits()
        args: list[Any] = [
            group,
            "1" if limits is None else "0",
            own.concurrency,
            own.rate_max,
            own.rate_ms,
            own.max_size,
            own.rate_burst,
            windows if limits is not None else b"",
        ]
        return group_info(queue, group, await self.scripts.run("set_group_limits", [k.meta], args))

    async def set_group_paused(self, queue: str, group: str, paused: bool, until_ms: int = 0) -> GroupInfo:
        """Pauses the group (its jobs are added, none starts), until `until_ms` (Redis time) when not 0
        (engine/pauses.py lifts it), or resumes it; a resume or a pause without a time clears the time."""
        k = self.engine.keys(queue)
        args = [group, "1" if paused else "0", until_ms if paused else 0]
        r = await self.scripts.run("set_group_paused", [k.meta], args)
        return group_info(queue, group, r)


def group_info(queue: str, group: str, r: Any) -> GroupInfo:
    """A group as set_group_limits.lua, set_group_paused.lua and set_group_window.lua answer it
    (includes/pause.lua group_row)."""
    if int(r[0]) == NO_QUEUE:
        raise QueueNotFound(queue)
    return GroupInfo(
        group,
        int(r[0]),
        int(r[1]),
        Limits.parse(r[2]),
        Limits.parse(r[3]) or Limits(),
        int(r[4]) == 1,
        _ms(r[5]),
        _ms(r[6]),
        _ms(r[7]),
        _b(r[8]),
    )


def _ms(v: Any) -> int:
    """A resume time as the scripts answer it (a score, "" for none) in whole ms; 0 for none."""
    text = _s(v)
    return int(float(text)) if text else 0


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _b(v: Any) -> bytes:
    return v if isinstance(v, bytes) else str(v).encode()
