"""Finding the jobs of one state by what they are, and acting on those found (retry, cancel, remove).

No index is kept for a filter, so adds, claims and completions cost what they always did: a call reads the
state's members after a cursor and tests each job (lua/includes/filter.lua), at most SCAN_CHUNK members
per Redis call and SCAN_BUDGET per call of these methods. A page or an action may therefore come back with
few matches, or none, and a cursor to continue from; only a pass that reached the state's end is done.

A ListJobs page (filtered or not), a count and a bulk action go on from a cursor, the last member the call
before read (lua/includes/filter.lua members_after; paging.py says what a caller can expect of each state),
so jobs joining or leaving the state ahead of it meanwhile shift nothing. A bulk action takes the jobs it acts
on out of the state (but an active job asked to stop), the cursor's own job too, perhaps: in a sorted set the
next call still starts strictly after its (score, id); in the waiting lists the cursor is the last job read
that stayed in its list (lua/includes/filter.lua bulk_cursor), since a cursor whose job left its list sends
the next read back to that list's head. Each script call is atomic: a job is tested and acted on in the same
call, so a job that stopped matching is never acted on; one acted on has left the state or, an active job
asked to stop, was read before the cursor, so no later call acts on it again (unless a lease extended past
the cursor moved it there meanwhile).

One method per Lua script, with the script's name and argument order (as in engine.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from queue_manager_server.engine.engine import Engine, job_fields
from queue_manager_server.engine.keys import QueueKeys
from queue_manager_server.engine.records import JobRecord
from queue_manager_server.errors import QueueNotFound

# Members one Redis call reads (each costs Valkey about a microsecond, ~2 with metadata to read): every call
# stays short, however large the state.
SCAN_CHUNK = 1000
# Members one page or one bulk call reads, in SCAN_CHUNK calls: a rare match in a large state is found in a
# few round trips per page, and no request holds the server long.
SCAN_BUDGET = 4000
# Most jobs one bulk call acts on (its limit's maximum and default).
MAX_ACTION = 1000

NO_QUEUE = -1

# Where a ListJobs page, a count or a bulk action goes on: the last member the call before read (a bulk
# action's: lua/includes/filter.lua bulk_cursor), as (c1, c2) of lua/includes/filter.lua read_cursor: a
# sorted set's (score, job id), or a waiting job's (index in its list,
# "<level>\n<group>\n<job id>"; paging.py WAITING_CURSOR).
Cursor = tuple[int, str]
_FINISHED = ("completed", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class JobFilter:
    """What the jobs sought are; empty fields (and None times) match every job.

    Attributes:
        name: The job name, or its prefix when name_prefix.
        name_prefix: True when name is a prefix ("send-*" without its "*").
        group: The fairness group.
        tag: A tag of the job's metadata.
        correlation_id: The job's correlation id.
        created_after_ms: Created at or after (ms since the epoch).
        created_before_ms: Created before (ms since the epoch).
    """

    name: str = ""
    name_prefix: bool = False
    group: str = ""
    tag: str = ""
    correlation_id: str = ""
    created_after_ms: int | None = None
    created_before_ms: int | None = None

    def argv(self) -> list[str | int]:
        """The seven script arguments (lua/includes/filter.lua read_filter)."""
        after, before = self.created_after_ms, self.created_before_ms
        return [
            self.name,
            "1" if self.name_prefix else "0",
            self.group,
            self.tag,
            self.correlation_id,
            "" if after is None else after,
            "" if before is None else before,
        ]


@dataclass(slots=True)
class Found:
    """A page of matching jobs.

    Attributes:
        records: The jobs, in the state's order.
        cursor: The last member read, where the next page starts; None once the state's end was read.
        total: The state's size (matching or not).
    """

    records: list[JobRecord]
    cursor: Cursor | None
    total: int


@dataclass(slots=True)
class Counted:
    """The matches counted in one bounded read.

    Attributes:
        count: Jobs that match among those read.
        cursor: The last member read, where the next count starts; None once the state's end was read.
        total: The state's size (matching or not).
    """

    count: int
    cursor: Cursor | None
    total: int


@dataclass(slots=True)
class Acted:
    """What one bounded bulk call did.

    Attributes:
        count: Jobs retried, cancelled or removed.
        requested: Active jobs asked to stop (cancel only).
        cursor: Where the next call goes on; None once the state's end was read.
        handed: Flow hand-offs queued for removed jobs that parents waited for (remove only).
    """

    count: int = 0
    requested: int = 0
    cursor: Cursor | None = None
    handed: int = 0


class JobSearch:
    """Filtered listing and bulk actions on the keys of one queue (the engine's scripts)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def _source(self, queue: str, state: str) -> tuple[QueueKeys, str, str] | None:
        """The keys, the scripts' state name and the key to read; None when the state is empty by definition
        (waiting while the queue is paused, paused while it is not)."""
        k = self.engine.keys(queue)
        if state in ("waiting", "paused"):
            q = await self.engine.get_queue(queue)  # QueueNotFound for an unregistered queue
            if q.paused != (state == "paused"):
                return None
            return k, "waiting", k.waiting
        return k, state, k.state_set(state)

    async def list_matching(
        self, queue: str, state: str, flt: JobFilter | None, after: Cursor | None, count: int
    ) -> Found:
        """Up to `count` jobs of `state` that match (no filter: every job), from the member after `after` on
        (None: from the first), reading at most SCAN_BUDGET members.

        Raises:
            QueueNotFound: The queue is not registered.
        """
        source = await self._source(queue, state)
        if source is None:
            return Found([], None, 0)
        k, name, key = source
        if name != "waiting":
            await self.engine.get_queue(queue)  # QueueNotFound, for an empty state too
        ids: list[bytes] = []
        total, read, more, argv = 0, 0, True, (flt or JobFilter()).argv()
        while more and read < SCAN_BUDGET and len(ids) < count:
            # Without a filter every member read is listed: the page's size is read, no more.
            chunk = min(SCAN_CHUNK, SCAN_BUDGET - read, SCAN_CHUNK if flt else count - len(ids))
            args = [k.job_prefix, name, *_cursor_argv(after), chunk, count - len(ids), *argv]
            r = await self.engine.scripts.run("list_matching", [key], args)
            more, total, last = bool(int(r[0])), int(r[1]), _cursor(r[2], r[3])
            ids += r[4:]
            read, after = read + chunk, last or after
        pipe = self.engine.store.pipeline()
        for i in ids:
            pipe.hgetall(k.job(i.decode()))
        rows = await self.engine.store.execute(pipe) if ids else []
        records = [
            JobRecord(queue, i.decode(), job_fields(row)) for i, row in zip(ids, rows, strict=True) if row
        ]
        return Found(records, after if more else None, total)

    async def count_matching(
        self, queue: str, state: str, flt: JobFilter | None, after: Cursor | None
    ) -> Counted:
        """How many jobs of `state` match from the member after `after` on (None: from the first), reading at
        most SCAN_BUDGET members (no filter: the state's jobs after `after`, with no member read).

        Raises:
            QueueNotFound: The queue is not registered.
        """
        source = await self._source(queue, state)
        if source is None:
            return Counted(0, None, 0)
        k, name, key = source
        if name != "waiting":
            await self.engine.get_queue(queue)  # QueueNotFound, for an empty state too
        if flt is None:
            args: list[Any] = [k.job_prefix, name, *_cursor_argv(after), 0, *JobFilter().argv()]
            r = await self.engine.scripts.run("count_matching", [key], args)
            return Counted(int(r[2]), None, int(r[1]))
        count, total, read, more = 0, 0, 0, True
        while more and read < SCAN_BUDGET:
            chunk = min(SCAN_CHUNK, SCAN_BUDGET - read)
            args = [k.job_prefix, name, *_cursor_argv(after), chunk, *flt.argv()]
            r = await self.engine.scripts.run("count_matching", [key], args)
            more, total, last = bool(int(r[0])), int(r[1]), _cursor(r[3], r[4])
            count += int(r[2])
            read, after = read + chunk, last or after
        return Counted(count, after if more else None, total)

    async def _act(
        self,
        queue: str,
        script: str,
        key_of: str,
        state: str,
        flt: JobFilter,
        after: Cursor | None,
        limit: int,
        extra: list[Any],
        keys: list[str],
    ) -> Acted:
        """Calls an action script in SCAN_CHUNK reads until SCAN_BUDGET members were read, `limit` jobs acted
        on, or the state's end reached. Replies: {done, requested, 1 when members follow, the cursor to go on
        from (c1, c2), flow hand-offs queued}."""
        k = self.engine.keys(queue)
        out = Acted()
        read = 0
        while read < SCAN_BUDGET and out.count + out.requested < limit:
            chunk = min(SCAN_CHUNK, SCAN_BUDGET - read)
            want = limit - out.count - out.requested
            args = [k.job_prefix, state, *_cursor_argv(after), chunk, want, *flt.argv(), *extra]
            r = await self.engine.scripts.run(script, [*keys, key_of], args)
            if int(r[0]) == NO_QUEUE:
                raise QueueNotFound(queue)
            out.count += int(r[0])
            out.requested += int(r[1])
            out.handed += int(r[5])
            after, read = _cursor(r[3], r[4]) or after, read + chunk
            if not int(r[2]):  # the state's end was read
                out.cursor = None
                return out
            out.cursor = after
        return out

    async def retry_matching(
        self, queue: str, state: str, flt: JobFilter, after: Cursor | None, limit: int = MAX_ACTION
    ) -> Acted:
        """Runs the failed (or cancelled) jobs that match again, at most `limit`, from the member after
        `after` on (None: from the first; one bounded pass)."""
        k = self.engine.keys(queue)
        acted = await self._act(
            queue, "retry_matching", k.state_set(state), state, flt, after, limit, [], [k.meta, k.waiting]
        )
        if acted.count:
            await self.engine.notify_waiting(queue)
            # A retried workflow step's job re-opens its run (retry_matching.lua): hand it off now.
            await self.engine.after_flow_finish(queue, wait=True)
        return acted

    async def cancel_matching(
        self,
        queue: str,
        state: str,
        flt: JobFilter,
        after: Cursor | None,
        limit: int = MAX_ACTION,
        reason: str = "",
    ) -> Acted:
        """Cancels the waiting (or paused), delayed or active jobs that match, at most `limit`, from the
        member after `after` on (None: from the first; one bounded pass); active ones are asked to stop
        (cancel_job.lua)."""
        source = await self._source(queue, state)
        if source is None:
            return Acted()
        k, name, key = source
        extra: list[Any] = [reason, self.engine.channel, queue]
        acted = await self._act(
            queue, "cancel_matching", key, name, flt, after, limit, extra, [k.meta, k.waiting]
        )
        if acted.count:
            await self.engine.after_flow_finish(queue)
        return acted

    async def remove_matching(
        self, queue: str, state: str, flt: JobFilter, after: Cursor | None, limit: int = MAX_ACTION
    ) -> Acted:
        """Removes the jobs of `state` (not active) that match, at most `limit`, from the member after `after`
        on (None: from the first; one bounded pass)."""
        source = await self._source(queue, state)
        if source is None:
            return Acted()
        k, name, key = source
        keys = [k.meta, k.waiting]
        acted = await self._act(queue, "remove_matching", key, name, flt, after, limit, [], keys)
        if acted.handed:  # unfinished jobs that parents waited for: they end for them (common.lua on_removed)
            await self.engine.after_flow_finish(queue)
        return acted


def _cursor_argv(after: Cursor | None) -> list[str | int]:
    """A cursor as the scripts' two arguments (c1 '' for none)."""
    return ["", ""] if after is None else [after[0], after[1]]


def _cursor(c1: Any, c2: Any) -> Cursor | None:
    """The cursor a script answered for the last member it read (None: it read none)."""
    if c1 in (b"", ""):
        return None
    return int(c1), c2.decode() if isinstance(c2, bytes) else str(c2)
