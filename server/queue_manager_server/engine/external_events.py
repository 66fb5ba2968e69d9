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
    event_push,
    event_push_waiters,
    event_pushed,
    event_pushes,
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
    when it was recorded (Redis ms), the jobs it woke and those its triggers added, as (queue, job id), and
    how many it woke (more than `woken` lists past the answer's bound)."""

    duplicate: bool
    pushed_ms: int
    woken: list[tuple[str, str]] = field(default_factory=list)
    added: list[tuple[str, str]] = field(default_factory=list)
    woken_count: int = 0


@dataclass(slots=True)
class Batched:
    """A push with too many waiters for one step (push_event.lua): its id, to wake them in batches
    (wake_event_batch), and whether it is an earlier push of the same event id."""

    push_id: str
    duplicate: bool


def _pushed(duplicate: bool, r: list[object]) -> Pushed:
    """A finished push's answer: {code, pushed ms, listed W, woken, W pairs woken, the added pairs}."""
    refs = [(_s(r[i]), _s(r[i + 1])) for i in range(4, len(r), 2)]
    listed = _i(r[2])
    return Pushed(duplicate, _i(r[1]), refs[:listed], refs[listed:], _i(r[3]))


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
        push_id: str,
        batch: int,
    ) -> Pushed | Batched | None:
        """Pushes an event of `key` (`event`: the encoded ExternalEvent without its time) and adds the jobs of
        the triggers that match it, `adds` by queue, planned on the triggers at `version`; with `event_id`, a
        repeat within `keep_ms` of its first push changes nothing. With more than `batch` waiters the wake is
        left to wake_event_batch under `push_id` (Batched). Returns None, having written nothing, when the
        triggers changed since `version` was read."""
        p = self.engine.prefix
        keys = [
            event_waiters(p, key),
            event_triggers_version(p),
            event_push_waiters(p, push_id),
            event_pushes(p),
            event_push(p, push_id),
        ]
        args: list[str | bytes | int] = [
            self.engine.channel,
            key,
            event,
            keep_ms,
            version,
            len(adds),
            push_id,
            batch,
            event_id,
        ]
        for queue, jobs in adds:
            k = self.engine.keys(queue)
            keys += [k.meta, k.waiting, k.delayed]
            args += [k.job_prefix, queue, len(jobs)]
            for job in jobs:
                args += job.argv()
        if event_id:
            keys.append(event_pushed(p, event_id))
        r = await self.engine.scripts.run("push_event", keys, args)
        code = _i(r[0])
        if code < 0:
            return None
        if code == 2:
            return Batched(_s(r[1]), _i(r[2]) == 1)
        return _pushed(code == 1, r)

    async def wake_event_batch(
        self, push_id: str, event_id: str, batch: int, limit: int, keep_ms: int
    ) -> tuple[bool, Pushed | None]:
        """Wakes up to `batch` more of the jobs a push carried out in batches found waiting. Returns whether
        the push is done, and then its answer (listing up to `limit` woken jobs), or None when no such push
        is recorded (its record, kept `keep_ms` after it finished, is gone)."""
        p = self.engine.prefix
        keys = [event_push_waiters(p, push_id), event_pushes(p), event_push(p, push_id)]
        if event_id:
            keys.append(event_pushed(p, event_id))
        r = await self.engine.scripts.run(
            "wake_event_batch", keys, [self.engine.channel, push_id, batch, limit, keep_ms]
        )
        code = _i(r[0])
        return code != 0, _pushed(False, r) if code == 1 else None
