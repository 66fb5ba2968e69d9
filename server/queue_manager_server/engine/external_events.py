"""External events: a running job waits for an event of one of some keys (WaitForEvent), a push wakes the
jobs waiting for its key (PushEvent).

One method per Lua script, with the script's name and argument order (as in engine.py);
lua/includes/external_events.lua describes the fields they keep on the job's hash and the waiters sets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from queue_manager_server.engine.engine import Engine, _i, _s
from queue_manager_server.engine.keys import (
    event_pushed,
    event_triggers_version,
    event_waiters,
    queue_event_waiters,
)
from queue_manager_server.engine.records import NewJob
from queue_manager_server.errors import JobNotFound, LeaseNotHeld

NOT_FOUND, LEASE_LOST = -2, -3
# What event_wait.lua answers besides a refusal; STALE_INDEX: on a Cluster, the queue's index entry is too old
# (services/event_pushes.py indexes it again).
PARKED, CANCELLED, STALE_INDEX = 1, 3, -5


@dataclass(slots=True)
class EventParked:
    """What ending a run to wait for an event did: a code (PARKED or CANCELLED) and the wait's deadline
    (Redis ms; None without a timeout)."""

    code: int
    until_ms: int | None


@dataclass(slots=True)
class Pushed:
    """What a push did: whether its event id had been pushed already (then the rest is the first push's),
    when it was recorded (Redis ms), the jobs it woke and those its triggers added, as (queue, job id)."""

    duplicate: bool
    pushed_ms: int
    woken: list[tuple[str, str]] = field(default_factory=list)
    added: list[tuple[str, str]] = field(default_factory=list)


class ExternalEvents:
    """The scripts of external events."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def event_wait(
        self,
        queue: str,
        job_id: str,
        lease_token: str,
        content_type: str,
        data: bytes,
        timeout_ms: int,
        wait: bytes,
        keys: Sequence[str],
        indexed_ms: int = -1,
        max_age_ms: int = 0,
    ) -> EventParked:
        """Ends the run and parks the job until an event of one of `keys` (or `timeout_ms`, -1 for none);
        `wait` is the encoded EventWait holding the keys. With `content_type`, its data is replaced in the
        same step. On a Cluster, `indexed_ms` is when the queue was indexed for the keys
        (services/event_pushes.py): the job joins the queue's own waiters sets, and the answer is STALE_INDEX,
        with nothing written, when that is more than `max_age_ms` ago.

        Raises:
            JobNotFound, LeaseNotHeld: as the names say.
        """
        k = self.engine.keys(queue)
        p = self.engine.prefix
        sets = [
            queue_event_waiters(p, queue, key) if indexed_ms >= 0 else event_waiters(p, key) for key in keys
        ]
        r = await self.engine.scripts.run(
            "event_wait",
            [k.meta, k.active, k.delayed, *sets],
            [
                k.job_prefix,
                self.engine.channel,
                queue,
                job_id,
                lease_token,
                content_type,
                data,
                timeout_ms,
                wait,
                indexed_ms,
                max_age_ms,
                *keys,
            ],
        )
        code = _i(r[0])
        if code == NOT_FOUND:
            raise JobNotFound(queue, job_id)
        if code == LEASE_LOST:
            raise LeaseNotHeld.lost(queue, job_id, "the job does not wait for the event")
        until = _i(r[1])
        return EventParked(code, until if until >= 0 else None)

    async def push_event(
        self,
        key: str,
        event: bytes,
        event_id: str,
        keep_ms: int,
        version: str,
        adds: Sequence[tuple[str, Sequence[NewJob]]],
    ) -> Pushed | None:
        """Pushes an event of `key` (`event`: the encoded ExternalEvent without its time) and adds the jobs of
        the triggers that match it, `adds` by queue, planned on the triggers at `version`; with `event_id`, a
        repeat within `keep_ms` of its first push changes nothing. Returns None, having written nothing,
        when the triggers changed since `version` was read."""
        keys = [event_waiters(self.engine.prefix, key), event_triggers_version(self.engine.prefix)]
        args: list[str | bytes | int] = [self.engine.channel, key, event, keep_ms, version, len(adds)]
        for queue, jobs in adds:
            k = self.engine.keys(queue)
            keys += [k.meta, k.waiting, k.delayed]
            args += [k.job_prefix, queue, len(jobs)]
            for job in jobs:
                args += job.argv()
        if event_id:
            keys.append(event_pushed(self.engine.prefix, event_id))
        r = await self.engine.scripts.run("push_event", keys, args)
        if _i(r[0]) < 0:
            return None
        refs = [(_s(r[i]), _s(r[i + 1])) for i in range(3, len(r), 2)]
        woken = _i(r[2])
        return Pushed(_i(r[0]) == 1, _i(r[1]), refs[:woken], refs[woken:])
