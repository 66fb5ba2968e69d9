"""The engine: one Python method per Lua script (same name, same argument order), plus admin reads.

Every state change is one atomic script on the keys of one queue. Methods take and return plain
records (engine/records.py); protobuf stays in the services.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from queue_manager_server.engine.clients import Client
from queue_manager_server.engine.keys import QueueKeys, clock_offset, events_channel, registry
from queue_manager_server.engine.memory import (
    memory_estimate_args,
    memory_estimate_keys,
    parse_memory_estimate,
)
from queue_manager_server.engine.metrics import metrics_args, metrics_keys, parse_metrics
from queue_manager_server.engine.records import (
    JSON_TYPE,
    STORED_ATTEMPTS,
    STORED_PRIORITY,
    AddResult,
    ClaimedJob,
    ClaimRequest,
    ClaimResult,
    Housekeeping,
    JobRecord,
    Metrics,
    NewJob,
    QueueRecord,
    is_json_type,
    job_state,
)
from queue_manager_server.engine.scripts import Scripts
from queue_manager_server.engine.store import Held, make_store
from queue_manager_server.errors import (
    JobActive,
    JobNotFound,
    LeaseNotHeld,
    QueueFull,
    QueueNotFound,
    QueueObliterating,
)

# Jobs per add_jobs script call: big enough to amortise the call, small enough to keep Redis responsive.
ADD_CHUNK = 500
# Admin loops (clean, drain, obliterate) delete this many jobs per script call.
ADMIN_CHUNK = 1000
# Script calls per round trip when a periodic loop runs one script for every queue (Engine.sweep).
SWEEP_CHUNK = 200
# Delayed jobs promoted by one claim before it hands out work.
PROMOTE_PER_CLAIM = 1000
DEFAULT_DLQ = "dead-letter-queue"
# The fields of a flow entry (common.lua on_finished), in the order flow_pending.lua answers them.
FLOW_ENTRY_FIELDS = ("st", "res", "rct", "err", "name", "chn", "par", "md", "kup")

NOT_FOUND, LEASE_NOT_HELD, IS_ACTIVE, NO_QUEUE = -2, -3, -4, -1
# A later call of an obliterate run found the queue registered again (obliterate.lua).
REGISTERED_AGAIN = -5
# Another obliterate run holds the queue's name (obliterate.lua, register_queue.lua).
OBLITERATING = -6
# How long an obliterate run holds a queue's name after each of its calls (keys.py obliterating): far longer
# than the round trip between two calls of a live run, and short enough that a RegisterQueue of a name whose
# obliterating server was lost is refused for seconds only (then it, or the janitor, finishes the removal).
OBLITERATE_LEASE_MS = 10_000
# A whole size check found no room (add_jobs.lua, its reply's first element).
NO_ROOM = -2
# What became of a failed run (common.lua fail_attempt; retry_later.lua uses 1 and 3): retried now, retried
# later (delayed), failed for good, cancelled (a cancel was pending).
RETRY_NOW, RETRY_DELAYED, FAILED, CANCELLED = 0, 1, 2, 3
# The kinds fail.lua records a failed run as (common.lua ERR_RAISED / ERR_TIMEOUT; JobErrorKind's numbers).
ERR_RAISED, ERR_TIMEOUT = 1, 2


T = TypeVar("T")


def _finished_sets(k: QueueKeys) -> tuple[str, str, str]:
    """The sets of finished jobs that retention trims: completed, failed, cancelled."""
    return k.completed, k.failed, k.cancelled


def _age_limits(ages: Sequence[Any]) -> tuple[Any, Any, Any]:
    """The age limits of `_finished_sets`, from the queue's (kc_age, kf_age): cancelled jobs are kept like
    failed ones."""
    return ages[0], ages[1], ages[1]


def only(results: Sequence[T | Exception]) -> T:
    """The one result of a sweep of one queue (Engine.sweep), or its error raised."""
    (result,) = results
    if isinstance(result, Exception):
        raise result
    return result


def new_job_id() -> str:
    """A random 96-bit id; collisions are out of reach for any queue size.

    16 characters (URL-safe base64 of 12 random bytes) rather than 24 hex digits: the id is stored twice per
    job (its hash's key and its entry in a state set), so that is about 30 bytes less of Redis memory per
    job. A leading "-" becomes "_", so an id never reads as a command-line flag. Ids are drawn 256 at a time
    (one urandom call and one encoding for all: 12 bytes encode to 16 characters exactly, so the text splits
    into ids); a forked child starts a fresh supply.
    """
    if not _ids:
        text = base64.urlsafe_b64encode(os.urandom(12 * _ID_BATCH)).decode()
        _ids.extend(
            "_" + text[i + 1 : i + 16] if text[i] == "-" else text[i : i + 16]
            for i in range(0, len(text), 16)
        )
    return _ids.pop()


_ID_BATCH = 256
_ids: list[str] = []
os.register_at_fork(after_in_child=_ids.clear)


def _run_token() -> str:
    """The token of one obliterate run (keys.py obliterating): random, so no two runs share one."""
    return os.urandom(12).hex()


def _i(v: Any) -> int:
    try:
        return int(v)  # an integer, or the digits of one (int reads bytes too)
    except ValueError:
        return int(float(v))  # a number Lua formatted as a float


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _b(v: bytes | str) -> bytes:
    return v if isinstance(v, bytes) else v.encode()


def job_fields(raw: dict[Any, Any]) -> dict[str, bytes]:
    """A job hash as read (HGETALL) as a JobRecord's fields, less 'p': the scripts' own mark of which fields
    a claim and a completion need not read (lua/includes/common.lua PLAIN), no part of the job."""
    return {name: _b(v) for f, v in raw.items() if (name := _s(f)) != "p"}


def _claim_result(r: list[Any], lease_ms: int) -> ClaimResult:
    """A claim's reply (claim.lua, or the claim folded into add_jobs.lua) as a ClaimResult."""
    res = ClaimResult(
        code=_i(r[0]),
        now_ms=_i(r[1]),
        next_delayed_ms=_i(r[2]),
        retry_after_ms=_i(r[3]),
        bucket_fill_ms=_i(r[4]),
        handoffs=_i(r[5]),
        unmatched=_i(r[6]),
    )
    # Per job its number of fields, then those (_claimed); every lease expires at now + lease_ms.
    expiry = res.now_ms + lease_ms
    i, end = 7, len(r)
    while i < end:
        size = r[i]
        f = r[i + 1 : i + 1 + size]
        i += 1 + size
        try:
            job = _claimed(f, int, expiry)
        except ValueError:  # a number Lua wrote as a float (none of these fields is expected to be)
            job = _claimed(f, _i, expiry)
        res.jobs.append(job)
    return res


def _claimed(f: Sequence[Any], num: Callable[[Any], int], expiry: int) -> ClaimedJob:
    """A claimed job from its record in claim.lua's reply (its fields after their number); num reads its
    numbers (int() reads integers and their digits, one call per field where _i costs two: 0.3 µs less per
    job). The record is id, name, data and created time, then a (code, value) pair per field the job has
    stored (includes/claim.lua RECORD_CODES); the others are at their defaults. A job with none stored (4
    fields, most jobs) is built at once: the general path costs it 0.2 µs more."""
    if len(f) == 4:
        job_id, name, data, ts = f
        return ClaimedJob(
            _s(job_id), _s(name), data, JSON_TYPE, STORED_PRIORITY, STORED_ATTEMPTS, 0, 1, 0, num(ts), b"", 0,
            expiry, b"",
        )  # fmt: skip
    job_id, name, data, ts = f[0], f[1], f[2], f[3]
    ct, pri, att, atm, stc, md, to, flow, group = (
        JSON_TYPE,
        STORED_PRIORITY,
        STORED_ATTEMPTS,
        0,
        0,
        b"",
        0,
        b"",
        "",
    )
    for i in range(4, len(f), 2):
        code, v = f[i], f[i + 1]
        if code == 4:
            pri = num(v)
        elif code == 5:
            att = num(v)
        elif code == 6:
            atm = num(v)
        elif code == 7:
            stc = num(v)
        elif code == 3:
            ct = _s(v)
        elif code == 9:
            md = v
        elif code == 10:
            to = num(v) if v else 0
        elif code == 11:
            flow = v
        elif code == 15:
            group = _s(v)
    # Attempts started: every start ends as a finished run or a stall, so this one is the next after those
    # (the redelivery flag reads it: records.py ClaimedJob).
    return ClaimedJob(
        _s(job_id),
        _s(name),
        data,
        ct,
        pri,
        att,
        atm,
        atm + stc + 1,
        stc,
        num(ts),
        md,
        to,
        expiry,
        flow,
        group,
    )


def _answer_fields(pairs: list[Any]) -> dict[str, bytes]:
    """A job's fields as add_jobs.lua returns them (name/value pairs; numbers as integers)."""
    it = iter(pairs)
    return {f.decode(): v if isinstance(v, bytes) else b"%d" % v for f, v in zip(it, it, strict=True)}


def _added_fields(answer: dict[str, bytes] | bytes, job: NewJob) -> dict[str, bytes]:
    """An added job's fields: those add_jobs.lua answered (for a job holding its name and time only, the
    time), and the data this call sent."""
    if isinstance(answer, bytes):
        return {"name": job.name.encode(), "ts": answer, "data": job.data}
    return {**answer, "data": job.data}


# The pool connections an engine holds for its lifetime once used (its held connections below), on one server
# or on each node of a Cluster; the pool must leave others for everything else (config.py
# MIN_REDIS_CONNECTIONS; on a Cluster the gate is smaller by as many, app.py).
HELD_CONNECTIONS = 3


class Engine:
    """Queue storage on Redis/Valkey."""

    def __init__(self, redis: Client, prefix: str = "qm", test_clock: bool = False) -> None:
        """Args:
        redis: One server's client, or a Cluster's (RedisCluster; engine/store.py says what differs).
        prefix: The prefix of every key.
        test_clock: Redis's clock as every script and read sees it is moved forward by the test clock's
            offset (engine/clock.py; one server only).

        Raises:
            ValueError: test_clock on a Cluster.
        """
        self.redis = redis
        self.prefix = prefix
        self.test_clock = test_clock
        self.scripts = Scripts(redis, clock_offset(prefix) if test_clock else None)
        self.store = make_store(redis, self.scripts, test_clock)
        # The coalesced adds' own connection, the claims' and the run outcomes' (engine/direct.py): at a low
        # rate each job is its own claim, whose round trip is on the way from add to start, and its own
        # completion (a call through the pool cost the server ~40 µs of CPU more). On a Cluster, one of each
        # per node (engine/nodes.py).
        self.direct = self.store.held()
        self.claims = self.store.held()
        self.outcomes = self.store.held()  # HELD_CONNECTIONS counts these three
        self._keys: dict[str, QueueKeys] = {}
        # Carries out a queue's pending flow hand-offs (services/flows.py); called after a script reports
        # that a job in a flow finished. None: left to the janitor.
        # wait (a retry's caller): when a pass of the queue is already running, return once it has ended.
        self.flow_hook: Callable[[str, bool], Awaitable[object]] | None = None

    @property
    def channel(self) -> str:
        return events_channel(self.prefix)

    def keys(self, queue: str) -> QueueKeys:
        k = self._keys.get(queue)
        if k is None:
            k = self._keys[queue] = QueueKeys(self.prefix, queue)
        return k

    # ---- queues -------------------------------------------------------------------------------

    async def register_queue(
        self, name: str, fields: dict[str, str | int | bytes], only_if_missing: bool = False
    ) -> tuple[bool, int]:
        """Creates or updates a queue's meta fields; returns (created, created_ms).

        Raises:
            QueueObliterating: an obliterate run holds the name (its lease not over).
        """
        args: list[Any] = ["1" if only_if_missing else "0"]
        for field, value in fields.items():
            args += [field, value]
        k = self.keys(name)
        pipe = self.store.pipeline()
        pipe.sismember(registry(self.prefix), name)
        pipe.exists(k.meta)
        listed, exists = await self.store.execute(pipe)
        if listed and not exists:  # an obliterate a lost server left (or a live one: refused)
            await self.finish_obliterate(name)
        reply = await self.scripts.run("register_queue", [k.meta, k.obliterating], args)
        if _i(reply[0]) == OBLITERATING:
            # A run holds a name the check above did not find without its queue (the run began after the
            # check, or holds a name no longer registered): finished now if its lease is over, else refused.
            await self.finish_obliterate(name)
            reply = await self.scripts.run("register_queue", [k.meta, k.obliterating], args)
            if _i(reply[0]) == OBLITERATING:
                raise QueueObliterating(name, OBLITERATE_LEASE_MS)
        created, created_ms = reply
        await self.redis.sadd(registry(self.prefix), name)
        return bool(created), _i(created_ms)

    async def forget_queue(self, name: str) -> None:
        """Takes an obliterated queue's name out of the registry, unless the queue was registered again
        meanwhile: register_queue creates the meta hash before it lists the name, so a registration that
        came after the removal either lists the name after it or has its meta hash seen here."""
        await self.redis.srem(registry(self.prefix), name)
        if await self.redis.exists(self.keys(name).meta):
            await self.redis.sadd(registry(self.prefix), name)

    async def get_queue(self, name: str) -> QueueRecord:
        raw = await self.redis.hgetall(self.keys(name).meta)
        if not raw:
            raise QueueNotFound(name)
        return QueueRecord(name, {_s(k): _b(v) for k, v in raw.items()})

    async def require_queues(self, names: Sequence[str]) -> None:
        """Raises QueueNotFound for the first of the queues that is not registered (one round trip)."""
        pipe = self.store.pipeline()
        for name in names:
            pipe.exists(self.keys(name).meta)
        for name, found in zip(names, await self.store.execute(pipe), strict=True):
            if not found:
                raise QueueNotFound(name)

    async def queue_names(self) -> list[str]:
        return sorted(_s(n) for n in await self.redis.smembers(registry(self.prefix)))

    async def list_queues(self) -> list[QueueRecord]:
        names = await self.queue_names()
        pipe = self.store.pipeline()
        for n in names:
            pipe.hgetall(self.keys(n).meta)
        rows = await self.store.execute(pipe)
        return [
            QueueRecord(n, {_s(k): v for k, v in r.items()}) for n, r in zip(names, rows, strict=True) if r
        ]

    async def set_paused(self, name: str, paused: bool, until_ms: int = 0) -> None:
        """Pauses the queue (until `until_ms`, Redis time, when not 0: engine/pauses.py lifts it) or resumes
        it; a resume, or a pause without a time, clears a timed pause's time."""
        args = ["1" if paused else "0", until_ms if paused else 0]
        if await self.scripts.run("set_paused", [self.keys(name).meta], args) == NO_QUEUE:
            raise QueueNotFound(name)
        await self.notify_waiting(name)

    async def metrics(self, name: str, history: bool = False) -> Metrics:
        """A queue's counts and activity (metrics.lua; engine/metrics.py adds its workers)."""
        r = await self.scripts.run("metrics", metrics_keys(self.keys(name)), metrics_args(history))
        m = parse_metrics(name, r)
        if m is None:
            raise QueueNotFound(name)
        return m

    async def memory_estimate(self, name: str, interval_ms: int, seed: int = 0) -> int:
        """The estimated bytes of the store a queue's keys hold, kept for interval_ms (memory_estimate.lua;
        engine/memory.py); raises QueueNotFound."""
        keys, args = memory_estimate_keys(self.keys(name)), memory_estimate_args(interval_ms, seed)
        r = await self.scripts.run("memory_estimate", keys, args)
        estimate = parse_memory_estimate(r)
        if estimate is None:
            raise QueueNotFound(name)
        return estimate

    async def clean(self, name: str, state: str, grace_ms: int, limit: int) -> int:
        """Removes jobs of `state` older than grace (finish time, or add time for unfinished states)."""
        await self.get_queue(name)
        k = self.keys(name)
        now = await self.redis_time_ms(name)
        if state in ("waiting", "paused"):
            cutoff = now - grace_ms
            removed = await self._clean_loop(name, "clean_waiting", k.waiting, "created", cutoff, limit)
        else:
            mode = "score" if state in ("completed", "failed", "cancelled") else "created"
            removed = await self._clean_loop(name, "clean", k.state_set(state), mode, now - grace_ms, limit)
        return await self._forget_memory(k, removed)

    async def drain(self, name: str, include_delayed: bool) -> int:
        """Removes every waiting job (and delayed ones if asked); active jobs run on."""
        await self.get_queue(name)
        k = self.keys(name)
        removed = await self._clean_loop(name, "clean_waiting", k.waiting, "all", 0, 0)
        if include_delayed:
            removed += await self._clean_loop(name, "clean", k.delayed, "all", 0, 0)
        return await self._forget_memory(k, removed)

    async def _forget_memory(self, k: QueueKeys, removed: int) -> int:
        """After a clean or a drain that removed jobs, the kept memory estimate goes: the next metrics read
        measures the queue again, instead of counting the removed jobs for up to an interval. Returns
        removed."""
        if removed:
            await self.redis.delete(k.memory)
        return removed

    async def _clean_loop(self, queue: str, script: str, key: str, mode: str, cutoff: int, limit: int) -> int:
        removed, cursor, handed = 0, 0, 0
        prefix = self.keys(queue).job_prefix
        while cursor >= 0 and (limit == 0 or removed < limit):
            chunk = ADMIN_CHUNK if limit == 0 else min(ADMIN_CHUNK, limit - removed)
            n, cursor, flows = await self.scripts.run(
                script, [key], [prefix, mode, cutoff, chunk, cursor, ADMIN_CHUNK]
            )
            removed += _i(n)
            cursor = _i(cursor)
            handed += _i(flows)
        if handed:  # unfinished jobs that parents waited for: they end for them (common.lua on_removed)
            await self.after_flow_finish(queue)
        return removed

    async def obliterate(self, name: str, force: bool) -> int:
        """Deletes the queue and all its jobs; refuses while jobs are active unless forced. Its unfinished
        jobs that parents wait for, and its chain links and workflow steps not finished, end as removed
        (obliterate.lua): their hand-offs, and those its finished jobs left pending, are carried out before
        the name leaves the registry, so a server lost meanwhile leaves them to the janitor, which visits
        registered names (readers skip a registered name without a queue) and finishes the removal
        (finish_obliterate).

        The run holds the name under a token and a lease (keys.py obliterating) from its first call until its
        hand-offs are done: RegisterQueue of the name is refused meanwhile, and every call checks the token,
        so a run whose lease ran out and was taken over stops before it deletes anything more (it returns
        what it deleted; the run that took over finishes the removal)."""
        token = _run_token()
        removed, handed = await self._obliterate_chunks(name, token, force, finish=False)
        if handed >= 0:
            await self._obliterated(name, token, handed)
        return removed

    async def finish_obliterate(self, name: str) -> int:
        """Finishes the removal of a queue whose obliterate a lost server left half done (its name registered,
        its meta hash gone): the jobs left are deleted, the hand-offs carried out and the name forgotten, as
        obliterate does, unless the queue is registered again meanwhile. Returns how many jobs it deleted.

        Raises:
            QueueObliterating: a live obliterate run holds the name (its lease not over): it finishes itself.
        """
        token = _run_token()
        removed, handed = await self._obliterate_chunks(name, token, True, finish=True)
        if handed >= 0:
            await self._obliterated(name, token, handed)
        return removed

    async def _obliterate_chunks(self, name: str, token: str, force: bool, finish: bool) -> tuple[int, int]:
        """Runs obliterate.lua until the queue's keys are gone: (jobs deleted, hand-offs queued), the second
        -1 when a later call found the queue registered again or the name held by another run (then this
        run did nothing more)."""
        k = self.keys(name)
        keys = [k.meta, k.waiting, k.delayed, k.active, k.completed, k.failed, k.limiter, k.outbox, k.bulk]
        keys += [k.schedules, k.schedule_due, k.schedule_runs, k.obliterating]
        removed, first, handed = 0, True, 0
        while True:
            r = await self.scripts.run(
                "obliterate",
                keys,
                [
                    k.job_prefix,
                    "1" if force or not first else "0",
                    ADMIN_CHUNK,
                    k.staged_prefix,
                    "removed by ObliterateQueue",
                    "1" if first and not finish else "0",
                    token,
                    OBLITERATE_LEASE_MS,
                ],
            )
            code = _i(r[0])
            if code == IS_ACTIVE:
                raise JobActive(
                    f"queue {name!r} has active jobs; wait for them or obliterate with force=true"
                )
            if code == NO_QUEUE:
                raise QueueNotFound(name)
            if code == OBLITERATING and first:
                raise QueueObliterating(name, OBLITERATE_LEASE_MS)
            if code in (REGISTERED_AGAIN, OBLITERATING):
                return removed, -1
            first = False
            removed += code
            handed += _i(r[2])
            if _i(r[1]) == 1:
                return removed, handed

    async def _obliterated(self, name: str, token: str, handed: int) -> None:
        """Carries out the hand-offs of a queue whose keys are gone, gives up the run's hold on the name,
        then forgets the name; a hand-off left (carried out elsewhere and failed) keeps the name registered,
        so the janitor comes back for it."""
        k = self.keys(name)
        # The entries obliterate.lua queued, and any its finished jobs left pending before: the queue's name
        # is the only way to them once it leaves the registry.
        left = 0
        if handed or await self.redis.llen(k.flow_outbox):
            await self.after_flow_finish(name, wait=True)
            left = await self.redis.llen(k.flow_outbox)
        # Given up before the name is forgotten: a server lost between the two leaves a registered name
        # without a queue, which the janitor visits, never a hold on a name it would not visit.
        await self.scripts.run("release_obliterate", [k.obliterating], [token])
        if not left:
            await self.forget_queue(name)

    # ---- jobs ---------------------------------------------------------------------------------

    async def add_jobs(
        self,
        queue: str,
        jobs: Sequence[NewJob],
        fetch: bool = False,
        limited: bool = False,
        whole: bool = False,
    ) -> AddResult:
        """Adds jobs in chunks pipelined into one round trip; ids are generated where empty.

        The script publishes the wake-up event itself. With fetch, the stored jobs are returned in
        ``AddResult.records``: an added one from the script's reply, an existing one read after it. With
        limited, each job is checked against the queue's size limits (a producer's add; ``AddResult.full``
        names those refused); with whole, the jobs (one script call's worth, ADD_CHUNK at most) are checked
        together first, and none is added unless all fit (QueueFull: a bulk add).
        """
        if whole and len(jobs) > ADD_CHUNK:
            raise ValueError(f"a whole check covers one script call: {ADD_CHUNK} jobs at most")
        (result,) = await self.add_jobs_many([(queue, jobs)], fetch, limited=2 if whole else limited)
        if isinstance(result, Exception):
            raise result
        return result

    async def add_jobs_many(
        self,
        groups: Sequence[tuple[str, Sequence[NewJob]]],
        fetch: bool = False,
        claims: Sequence[ClaimRequest | None] = (),
        limited: bool | int = False,
    ) -> list[AddResult | Exception]:
        """`add_jobs` for several queues in one round trip (AddJob calls coalesced, services/adds.py).

        claims: per group, a claim to run in the same script call once its jobs are in (None, or missing:
        none); its reply is the group's ``AddResult.claim`` (the add's reply and a claim's in one round trip
        and one script call, where a claim sent behind the add cost both again). limited: as add_jobs'.

        Returns:
            Per group, its AddResult or the exception its own commands met (an unknown queue, a script
            error): one queue's failure is not another's. A failed round trip raises.
        """
        folded = [*claims, *[None] * (len(groups) - len(claims))]
        calls: list[tuple[Sequence[str], Sequence[Any]]] = []
        spans: list[tuple[int, int]] = []
        for (queue, jobs), claim in zip(groups, folded, strict=True):
            first = len(calls)
            calls += self._add_calls(queue, jobs, fetch, claim, limited)
            spans.append((first, len(calls)))
        results = await self._held(self.direct, "add_jobs", calls)
        out: list[AddResult | Exception] = []
        for (queue, jobs), claim, (first, last) in zip(groups, folded, spans, strict=True):
            try:
                out.append(await self._add_result(queue, jobs, results[first:last], fetch, claim))
            except Exception as exc:
                out.append(exc)
        return out

    async def _held(
        self, conn: Held, name: str, calls: Sequence[tuple[Sequence[str], Sequence[Any]]]
    ) -> list[Any]:
        """The replies of the script `name` run once per (keys, args) of calls, sent on a held connection
        when it is free (engine/direct.py: no pool, retry or script check on the way), else as a pipeline; an
        error reply is left in its place. Calls refused NOSCRIPT (Redis lost its scripts) are sent again once
        the script is loaded, as `Store.execute` does."""
        commands = [self.scripts.command(name, keys, args) for keys, args in calls]
        replies = await conn.run(commands)
        if replies is None:
            pipe = self.store.pipeline()
            for command in commands:
                pipe.execute_command(*command)
            return await self.store.execute(pipe, raise_on_error=False)
        await self.store.resend(commands, replies)
        return replies

    async def _held_one(self, conn: Held, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """The reply of one call of the script `name`, sent as `_held` sends it; an error reply raised."""
        (reply,) = await self._held(conn, name, [(keys, args)])
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def check_room(self, queue: str, jobs: Sequence[NewJob]) -> None:
        """Raises QueueFull when the jobs would not all fit under the queue's size limits (size_room.lua),
        QueueNotFound when there is no such queue: a bulk add's check, before it writes anything."""
        k = self.keys(queue)
        per_group: dict[str, int] = {}
        for j in jobs:
            if j.group:
                per_group[j.group] = per_group.get(j.group, 0) + 1
        args: list[Any] = [len(jobs)]
        for group, n in per_group.items():
            args += [group, n]
        r = await self.scripts.run("size_room", [k.meta, k.waiting, k.delayed], args)
        code = _i(r[0])
        if code == -3:
            raise QueueNotFound(queue)
        if code in (-1, -2):
            raise QueueFull(queue, _s(r[1]), (_i(r[2]), _i(r[3]), _i(r[4])))

    def _add_calls(
        self,
        queue: str,
        jobs: Sequence[NewJob],
        fetch: bool,
        claim: ClaimRequest | None = None,
        limited: bool | int = False,
    ) -> list[tuple[Sequence[str], Sequence[Any]]]:
        """One queue's add_jobs calls (keys, args), ADD_CHUNK jobs each (with fetch, answering with the added
        jobs' fields; with a claim, the last call runs it)."""
        k = self.keys(queue)
        keys = (k.meta, k.waiting, k.delayed)
        answer = 1 if fetch else 0
        starts = range(0, len(jobs), ADD_CHUNK)
        out: list[tuple[Sequence[str], Sequence[Any]]] = []
        for start in starts:
            chunk = jobs[start : start + ADD_CHUNK]
            args: list[Any] = [k.job_prefix, self.channel, queue, len(chunk), answer, 0, "", "", 0, 0, 0]
            if claim is not None and start == starts[-1]:
                args[5:10] = [claim.take, claim.token, claim.worker_id, claim.lease_ms, PROMOTE_PER_CLAIM]
                out_keys: Sequence[str] = (*keys, k.active, k.limiter)
            else:
                out_keys = keys
            if limited:
                args[10] = int(limited)  # 1: each job against the size limits; 2: the call's jobs whole
            for j in chunk:
                if not j.id:
                    j.id = new_job_id()
                args += j.argv()
            if claim is not None and start == starts[-1]:
                args += claim.labels
            out.append((out_keys, args))
        return out

    async def _add_result(
        self, queue: str, jobs: Sequence[NewJob], results: list[Any], fetch: bool, claim: ClaimRequest | None
    ) -> AddResult:
        for r in results:
            if isinstance(r, Exception):
                raise r
        out = AddResult(now_ms=0, ids=[], created=[], waiting_added=0, earliest_delayed_ms=-1)
        stride = 3 if fetch else 2
        fields: list[dict[str, bytes] | bytes] = []
        for r in results:
            if _i(r[0]) == NO_QUEUE:
                raise QueueNotFound(queue)
            if _i(r[0]) == NO_ROOM:  # a whole check (add_jobs.lua ARGV[11] 2)
                raise QueueFull(queue, _s(r[2]), (_i(r[3]), _i(r[4]), _i(r[5])))
            out.now_ms = _i(r[0])
            out.waiting_added += _i(r[1])
            e = _i(r[2])
            if e >= 0 and (out.earliest_delayed_ms < 0 or e < out.earliest_delayed_ms):
                out.earliest_delayed_ms = e
            out.queue_paused = _i(r[3]) == 1
            out.published = out.published or _i(r[4]) == 1
            if claim is not None and r[5] != 0:
                out.claim = _claim_result(r[5], claim.lease_ms)
            ts = b"%d" % out.now_ms
            ids, created = out.ids, out.created
            for i in range(6, len(r), stride):
                ids.append(_s(r[i]))
                code = r[i + 1]
                created.append(code == 1)
                if code < 0:  # no room (includes/add.lua room_for)
                    out.full[len(ids) - 1] = "queue" if code == -1 else "group"
                elif code > 1:  # its dedup key was held (add_jobs.lua)
                    out.dedup[len(ids) - 1] = "replaced" if code == 3 else "deduplicated"
                if fetch:
                    # A job stored with its name and time only is answered 1: its time is the reply's.
                    row = r[i + 2]
                    fields.append(ts if row == 1 else _answer_fields(row))
        if fetch:
            # An added job answers with the fields its script wrote and the data this call sent; an existing
            # one (the id was taken, or its dedup key held) is read: the holder's (empty if retention removed
            # it meanwhile).
            k = self.keys(queue)
            existing = [answer for answer, created in zip(out.ids, out.created, strict=True) if not created]
            read: dict[str, dict[str, bytes]] = {}
            if existing:  # one round trip for all of them
                pipe = self.store.pipeline()
                for answer in existing:
                    pipe.hgetall(k.job(answer))
                for answer, raw in zip(existing, await self.store.execute(pipe), strict=True):
                    read[answer] = job_fields(raw)
            out.records = [
                JobRecord(queue, answer, _added_fields(row, job) if created else read[answer])
                for job, answer, created, row in zip(jobs, out.ids, out.created, fields, strict=True)
            ]
        if out.claim is not None and out.claim.handoffs:  # expired flow jobs (includes/claim.lua)
            await self.after_flow_finish(queue)
        return out

    async def get_job(self, queue: str, job_id: str) -> JobRecord:
        raw = await self.redis.hgetall(self.keys(queue).job(job_id))
        if not raw:
            if not await self.redis.exists(self.keys(queue).meta):
                raise QueueNotFound(queue)
            raise JobNotFound(queue, job_id)
        return JobRecord(queue, job_id, job_fields(raw))

    async def list_jobs(self, queue: str, state: str, offset: int, count: int) -> tuple[list[JobRecord], int]:
        """A page of jobs of one state: waiting by priority, delayed by run time, finished newest first."""
        q = await self.get_queue(queue)
        k = self.keys(queue)
        if state in ("waiting", "paused"):
            if q.paused != (state == "paused"):
                return [], 0
            total, ids = await self._waiting_page(k, offset, count)
        else:
            zset = k.state_set(state)
            pipe = self.store.pipeline()
            pipe.zcard(zset)
            if state in ("completed", "failed", "cancelled"):  # newest first
                pipe.zrevrange(zset, offset, offset + count - 1)
            else:
                pipe.zrange(zset, offset, offset + count - 1)
            total, ids = await self.store.execute(pipe)
        pipe = self.store.pipeline()
        for i in ids:
            pipe.hgetall(k.job(_s(i)))
        rows = await self.store.execute(pipe)
        records = [JobRecord(queue, _s(i), job_fields(row)) for i, row in zip(ids, rows, strict=True) if row]
        return records, _i(total)

    async def _waiting_page(self, k: QueueKeys, offset: int, count: int) -> tuple[int, list[bytes]]:
        """Waiting jobs [offset, offset + count) in the order of their lists: the levels one after another,
        then each fairness group's levels, the groups by name; and how many wait in all."""
        pipe = self.store.pipeline()
        for level in k.waiting_levels:
            pipe.llen(level)
        pipe.hkeys(k.group_waiting)
        *own, groups = await self.store.execute(pipe)
        lists = list(k.waiting_levels)
        lengths = [_i(n) for n in own]
        if groups:
            pipe = self.store.pipeline()
            for group in sorted(_s(g) for g in groups):
                for level in k.group_levels(group):
                    lists.append(level)
                    pipe.llen(level)
            lengths += [_i(n) for n in await self.store.execute(pipe)]
        pipe = self.store.pipeline()
        start, end = offset, offset + count  # in the lists taken one after another
        for level, n in zip(lists, lengths, strict=True):
            if start < n and end > 0:
                pipe.lrange(level, max(start, 0), min(end, n) - 1)
            start, end = start - n, end - n
        ids = [i for page in await self.store.execute(pipe) for i in page] if len(pipe) else []
        return sum(lengths), ids

    async def migrate(self) -> dict[str, int]:
        """Moves the waiting jobs an older server kept in one sorted set per queue into the level lists
        (migrate_waiting.lua); run at start-up, before jobs are served. Returns the jobs moved per queue."""
        out: dict[str, int] = {}
        left = await self.queue_names()
        while left:  # one round trip per chunk for all the queues left: most have nothing to move
            pipe = self.store.pipeline()
            for queue in left:
                self.scripts.call_in(pipe, "migrate_waiting", [self.keys(queue).waiting], [ADMIN_CHUNK])
            replies = await self.store.execute(pipe)
            for queue, (n, _) in zip(left, replies, strict=True):
                if _i(n):
                    out[queue] = out.get(queue, 0) + _i(n)
            left = [queue for queue, (_, done) in zip(left, replies, strict=True) if _i(done) != 1]
        return out

    async def job_states(self, jobs: Sequence[tuple[str, str]]) -> list[str]:
        """The state field of each (queue, job id); "" for a job that does not exist."""
        if not jobs:
            return []
        pipe = self.store.pipeline()
        for queue, job_id in jobs:
            pipe.hmget(self.keys(queue).job(job_id), ["st", "ts"])
        rows = await self.store.execute(pipe)
        return [job_state(st, ts is not None) for st, ts in rows]  # every job has a 'ts'

    async def remove_job(self, queue: str, job_id: str) -> str:
        k = self.keys(queue)
        r = await self.scripts.run(
            "remove_job", [k.waiting, k.delayed, k.completed, k.failed], [k.job_prefix, job_id]
        )
        code = r[0]
        if not isinstance(code, bytes) and _i(code) == NOT_FOUND:
            await self.get_queue(queue)
            raise JobNotFound(queue, job_id)
        if not isinstance(code, bytes) and _i(code) == IS_ACTIVE:
            raise JobActive(
                f"job {job_id!r} in queue {queue!r} is active; it can be removed once it finishes"
            )
        if _i(r[1]):  # an unfinished job that parents waited for: it ends for them (common.lua on_removed)
            await self.after_flow_finish(queue)
        return _s(code)

    # ---- worker path --------------------------------------------------------------------------

    async def claim(
        self, queue: str, n: int, token: str, worker_id: str, lease_ms: int, labels: Sequence[str] = ()
    ) -> ClaimResult:
        """Leases up to n waiting jobs to a worker; labels: its labels as name, value pairs, for the jobs
        routed by worker labels (JobOptions.worker_labels; none: it takes no routed job)."""
        k = self.keys(queue)
        keys = (k.meta, k.waiting, k.delayed, k.active, k.limiter)
        args = (k.job_prefix, n, token, worker_id, lease_ms, PROMOTE_PER_CLAIM, *labels)
        r = await self._held_one(self.claims, "claim", keys, args)
        if _i(r[0]) == NO_QUEUE:
            raise QueueNotFound(queue)
        res = _claim_result(r, lease_ms)
        if res.handoffs:  # expired flow jobs (includes/claim.lua)
            await self.after_flow_finish(queue)
        return res

    async def complete(
        self,
        queue: str,
        items: Sequence[tuple[str, str, bytes, str]],
        durations_us: Sequence[int] | None = None,
    ) -> tuple[list[int], int]:
        """items: (job id, lease token, result, result content type); durations_us: each run's duration as
        the worker reported it, in µs (-1: not reported), for the queue's processing-time figures.

        Returns:
            A code per item, and how many flow hand-offs were queued (see services/flows.py).
        """
        k = self.keys(queue)
        args: list[Any] = [k.job_prefix, len(items)]
        for i, item in enumerate(items):
            args += item
            args.append(durations_us[i] if durations_us is not None else -1)
        r = await self._held_one(self.outcomes, "complete", [k.meta, k.active, k.completed], args)
        if _i(r[1]):
            await self.after_flow_finish(queue)
        return [_i(c) for c in r[2:]], _i(r[1])

    async def fail(
        self,
        queue: str,
        items: Sequence[tuple[str, str, str, str, bool]],
        durations_us: Sequence[int] | None = None,
        timed_out: Sequence[bool] | None = None,
    ) -> list[tuple[int, int]]:
        """items: (job id, token, message, stack, do_not_retry); durations_us as for `complete`; timed_out:
        per item, whether the run ran out of the job's timeout on its worker (recorded and counted as timed
        out, not raised; None: none did). Returns (code, run-at ms) per item."""
        k = self.keys(queue)
        args: list[Any] = [k.job_prefix, self.channel, queue, len(items)]
        for i, (job_id, token, msg, stack, no_retry) in enumerate(items):
            us = durations_us[i] if durations_us is not None else -1
            kind = ERR_TIMEOUT if timed_out is not None and timed_out[i] else ERR_RAISED
            args += [job_id, token, msg, stack, "1" if no_retry else "0", us, kind]
        # The script publishes the wake-ups of jobs back to waiting or delayed.
        keys = [k.meta, k.active, k.waiting, k.delayed, k.failed, k.outbox]
        r = await self._held_one(self.outcomes, "fail", keys, args)
        out = [(_i(r[i]), _i(r[i + 1])) for i in range(1, len(r), 2)]
        await self.after_failures(queue, [code for code, _ in out])
        return out

    async def after_failures(self, queue: str, codes: Sequence[int]) -> None:
        """What follows failed runs (fail.lua, time_out.lua, retry_later.lua) outside their scripts: the
        dead-letter hand-off of jobs failed for good, and the flows of jobs that ended. The scripts published
        the wake-ups of the jobs they put back themselves."""
        if FAILED in codes:
            await self.hand_off_dead_letters(queue)
        if FAILED in codes or CANCELLED in codes:
            await self.after_flow_finish(queue)

    async def extend(
        self, queue: str, items: Sequence[tuple[str, str]], lease_ms: int
    ) -> list[tuple[int, int]]:
        """items: (job id, token). Returns (code, new expiry ms) per item."""
        k = self.keys(queue)
        args: list[Any] = [k.job_prefix, lease_ms, len(items)]
        for item in items:
            args += item
        r = await self.scripts.run("extend", [k.active], args)
        return [(_i(r[i]), _i(r[i + 1])) for i in range(1, len(r), 2)]

    async def progress(self, queue: str, items: Sequence[tuple[str, str, str]]) -> list[int]:
        """items: (job id, token, progress JSON). Returns a code per item."""
        k = self.keys(queue)
        args: list[Any] = [k.job_prefix, len(items)]
        for item in items:
            args += item
        return [_i(c) for c in await self.scripts.run("progress", [k.meta], args)]

    async def release(self, queue: str, items: Sequence[tuple[str, str]], stalled: bool) -> list[int]:
        """Hands leased jobs back: unstarted (stalled=False) or from a lost worker (stalled=True)."""
        k = self.keys(queue)
        args: list[Any] = [k.job_prefix, "1" if stalled else "0", len(items)]
        for item in items:
            args += item
        r = await self.scripts.run("release", [k.meta, k.active, k.waiting, k.failed, k.outbox], args)
        codes = [_i(c) for c in r[1:]]
        if 1 in codes:
            await self.notify_waiting(queue)
        if 2 in codes:
            await self.hand_off_dead_letters(queue)
        if 2 in codes or 3 in codes:  # failed for good, or cancelled (a cancel was pending)
            await self.after_flow_finish(queue)
        return codes

    # ---- background ---------------------------------------------------------------------------

    async def sweep(
        self,
        name: str,
        queues: Sequence[str],
        call: Callable[[QueueKeys], tuple[list[str], list[Any]]],
        then: Callable[[str, Any], Awaitable[T]],
    ) -> list[T | Exception]:
        """Runs the script `name` once for each queue (`call` gives its keys and arguments), SWEEP_CHUNK
        calls per round trip: the periodic loops visit every queue, and a round trip per queue cost an idle
        server with 2,000 queues a quarter of a core. Each reply goes to `then` (queue, reply); returns what
        it made of each, or the error the queue met (its call's, or its follow-up's): each error its own."""
        replies: list[Any] = []
        for start in range(0, len(queues), SWEEP_CHUNK):
            pipe = self.store.pipeline()
            for queue in queues[start : start + SWEEP_CHUNK]:
                keys, args = call(self.keys(queue))
                self.scripts.call_in(pipe, name, keys, args)
            replies += await self.store.execute(pipe, raise_on_error=False)
        out: list[T | Exception] = []
        for queue, reply in zip(queues, replies, strict=True):
            if isinstance(reply, Exception):
                out.append(reply)
                continue
            try:
                out.append(await then(queue, reply))
            except Exception as exc:  # the script's work stands: the janitor finishes what follows it
                out.append(exc)
        return out

    async def expire_waiting_all(self, queues: Sequence[str], limit: int = 1000) -> list[int | Exception]:
        """Ends each queue's jobs whose expiry passed while nobody claimed them (expire_waiting.lua), in
        shared round trips (`sweep`); returns how many per queue (`limit`: more may be due). Flows of the
        expired jobs are handed on at once."""

        async def expired(queue: str, r: Any) -> int:
            if _i(r[1]):
                await self.after_flow_finish(queue)
            return _i(r[0]) if _i(r[2]) < limit else limit

        return await self.sweep(
            "expire_waiting",
            queues,
            lambda k: ([k.meta, k.waiting, k.delayed], [k.job_prefix, limit]),
            expired,
        )

    async def reap(self, queue: str, limit: int = 1000) -> tuple[int, int, int]:
        """Recovers expired leases. Returns (back to waiting, failed for good, next expiry ms or -1)."""
        return only(await self.reap_all([queue], limit))

    async def reap_all(
        self, queues: Sequence[str], limit: int = 1000
    ) -> list[tuple[int, int, int] | Exception]:
        """`reap` for each queue, in shared round trips (Engine.sweep)."""
        return await self.sweep(
            "reap",
            queues,
            lambda k: ([k.meta, k.active, k.waiting, k.failed, k.outbox], [k.job_prefix, limit]),
            self._reaped,
        )

    async def _reaped(self, queue: str, r: Any) -> tuple[int, int, int]:
        back, lost, cancelled = _i(r[1]), _i(r[2]), _i(r[4])
        if back:
            await self.notify_waiting(queue)
        if lost:
            await self.hand_off_dead_letters(queue)
        if lost or cancelled:  # cancelled: a cancel was pending when the lease ran out
            await self.after_flow_finish(queue)
        return back, lost, _i(r[3])

    async def promote(self, queue: str, limit: int = 1000) -> tuple[int, int, int]:
        """Moves due delayed jobs to waiting. Returns (promoted, next run-at ms or -1, now ms)."""
        return only(await self.promote_all([queue], limit))

    async def promote_all(
        self, queues: Sequence[str], limit: int = 1000
    ) -> list[tuple[int, int, int] | Exception]:
        """`promote` for each queue, in shared round trips (Engine.sweep)."""
        return await self.sweep(
            "promote",
            queues,
            lambda k: ([k.meta, k.delayed, k.waiting], [k.job_prefix, limit]),
            self._promoted,
        )

    async def _promoted(self, queue: str, r: Any) -> tuple[int, int, int]:
        if _i(r[1]):
            await self.notify_waiting(queue)
        return _i(r[1]), _i(r[2]), _i(r[0])

    async def hand_off_dead_letters(self, queue: str, limit: int = 100) -> int:
        """Copies jobs that failed for good into the queue's dead-letter queue, then clears the outbox.

        Idempotent: the copy's job id is derived from the original, so a crash between the two halves
        (copy written, outbox not cleared) only repeats a no-op add. A copy (its 'dlo' field names the queue
        it came from) that fails for good in turn stays failed where it is: copies of copies would nest ever
        larger data under ever longer ids, and two queues dead-lettering into each other would pass one job
        back and forth for ever.
        """
        k = self.keys(queue)
        ids = [_s(i) for i in await self.redis.lrange(k.outbox, 0, limit - 1)]
        if not ids:
            return 0
        # One round trip reads the dead-letter queue's name and every job to copy; one script call then clears
        # the outbox (a round trip per job each way made a burst of failures slow to report).
        pipe = self.store.pipeline()
        pipe.hget(k.meta, "dlq")
        for job_id in ids:
            pipe.hmget(k.job(job_id), ["name", "data", "ct", "atm", "err", "dlo"])
        dlq_name, *rows = await self.store.execute(pipe)
        dlq = _s(dlq_name or DEFAULT_DLQ.encode())
        if not await self.redis.exists(self.keys(dlq).meta):
            try:
                await self.register_queue(dlq, {"dlq": ""}, only_if_missing=True)
            except QueueObliterating:
                # The dead-letter queue is being obliterated: the copies wait in the outbox, and the janitor
                # writes them into the queue registered afresh once the obliterate is done.
                return 0
        copies: list[NewJob] = []
        for job_id, f in zip(ids, rows, strict=True):
            if f[0] is None or f[5] is not None:
                continue  # gone, or a dead-letter copy itself
            data: Any
            ct = _s(f[2]) if f[2] else JSON_TYPE  # a job hash without ct holds JSON
            if is_json_type(ct):
                data = json.loads(f[1] or b"null")
            else:
                data = base64.b64encode(_b(f[1] or b"")).decode()
            body = {
                "original_queue": queue,
                "original_job_id": job_id,
                "original_name": _s(f[0]),
                "original_data": data,
                "original_content_type": ct,
                "failure_reason": _s(f[4] or b""),
                "attempts_made": _i(f[3] or b"0"),
            }
            copies.append(
                NewJob(
                    id=f"{queue}:{job_id}",
                    name=_s(f[0]),
                    data=json.dumps(body).encode(),
                    extra={"dlo": queue.encode()},
                )
            )
        if copies:
            await self.add_jobs(dlq, copies)
        await self.scripts.run("handoff_done", [k.outbox, k.failed, k.meta], [k.job_prefix, *ids])
        return len(ids)

    async def housekeeping_due(self, queues: Sequence[str]) -> list[Housekeeping]:
        """What the janitor has to do in each queue, read for all of them in shared round trips (a round trip
        per queue and task cost an idle server with thousands of queues a share of a core). Retention is due
        where the oldest finished job is older than the queue's age limit; a registered name without a meta
        hash is an obliterate a lost server left, to finish."""
        now = await self.redis_time_ms()
        out: list[Housekeeping] = []
        for start in range(0, len(queues), SWEEP_CHUNK):
            chunk = queues[start : start + SWEEP_CHUNK]
            pipe = self.store.pipeline()
            for queue in chunk:
                k = self.keys(queue)
                pipe.exists(k.bulk)
                pipe.hmget(k.meta, ["kc_age", "kf_age"])
                pipe.llen(k.outbox)
                pipe.llen(k.flow_outbox)
                pipe.exists(k.redrive)
                pipe.exists(k.meta)
                for zset in _finished_sets(k):
                    pipe.zrange(zset, 0, 0, withscores=True)
            replies = await self.store.execute(pipe, raise_on_error=False)
            for i in range(len(chunk)):
                bulk, ages, dead, flows, redrives, exists, *oldest = replies[9 * i : 9 * i + 9]
                if any(isinstance(r, Exception) for r in (bulk, ages, dead, flows, redrives, *oldest)):
                    # A key of the wrong type: every task is tried, so the queue's own error shows.
                    out.append(
                        Housekeeping(bulk=True, retention=True, dead_letters=True, flows=True, redrives=True)
                    )
                    continue
                retention = any(
                    age and _i(age) > 0 and first and first[0][1] < now - _i(age)
                    for age, first in zip(_age_limits(ages), oldest, strict=True)
                )
                out.append(
                    Housekeeping(
                        bulk=bool(bulk),
                        retention=retention,
                        dead_letters=bool(dead),
                        flows=bool(flows),
                        redrives=bool(redrives),
                        gone=not exists,
                    )
                )
        return out

    async def apply_retention(self, queue: str) -> int:
        """Removes finished jobs older than the queue's retention ages (counts are trimmed on finish)."""
        k = self.keys(queue)
        pipe = self.store.pipeline()
        pipe.hmget(k.meta, ["kc_age", "kf_age"])
        pipe.llen(k.outbox)
        ages, pending = await self.store.execute(pipe)
        # Failed jobs still waiting for their dead-letter copy stay: the hand-off trims after it.
        handing_off = _i(pending) > 0
        now = await self.redis_time_ms(queue)
        removed = 0
        for zset, age in zip(_finished_sets(k), _age_limits(ages), strict=True):
            if zset == k.failed and handing_off:
                continue
            if age and _i(age) > 0:
                removed += await self._clean_loop(queue, "clean", zset, "score", now - _i(age), 0)
        return removed

    # ---- flows (the hand-off itself is in services/flows.py) ------------------------------------

    async def after_flow_finish(self, queue: str, wait: bool = False) -> None:
        """A job that may be in a flow finished (or was retried): carry out the hand-off now (the janitor
        retries it). wait: also when another pass of the queue in this process is at it."""
        if self.flow_hook is not None:
            await self.flow_hook(queue, wait)

    async def pending_flows(self, queue: str, limit: int) -> list[tuple[str, dict[str, bytes]]]:
        """The oldest pending flow hand-offs of a queue: (job id, flow entry) pairs, the entry's fields as
        on_finished wrote them ({} for an entry cleared meanwhile)."""
        k = self.keys(queue)
        r = await self.scripts.run("flow_pending", [k.flow_outbox], [k.job_prefix, limit])
        out: list[tuple[str, dict[str, bytes]]] = []
        step = len(FLOW_ENTRY_FIELDS) + 1
        for i in range(0, len(r), step):
            values = r[i + 1 : i + step]
            out.append(
                (
                    _s(r[i]),
                    {f: _b(v) for f, v in zip(FLOW_ENTRY_FIELDS, values, strict=True) if v is not None},
                )
            )
        return out

    async def flows_done(self, queue: str, items: Sequence[tuple[str, bytes, str]]) -> None:
        """Clears carried-out hand-offs of the queue in one script call: items are (job id, the children it
        started as an encoded Job or b"" for none, the entry's state as carried out: an entry rewritten
        since, by a retry, stays for its own turn)."""
        if not items:
            return
        k = self.keys(queue)
        keys = [k.flow_outbox]
        args: list[Any] = []
        for job_id, children, state in items:
            keys += [k.flow(job_id), k.job(job_id)]
            args += [job_id, children, state]
        await self.scripts.run("flow_done", keys, args)

    async def chain_failed(self, queue: str, job_id: str, reason: str) -> bool:
        return bool(await self.scripts.run("chain_failed", [self.keys(queue).job(job_id)], [reason]))

    # ---- events and misc ----------------------------------------------------------------------

    async def notify_waiting(self, queue: str) -> None:
        await self.redis.publish(self.channel, f"w {queue}")

    async def publish_control(self, message: str) -> None:
        """A worker control request or answer (``k <JSON>``) for every server (services/worker_control.py)."""
        await self.redis.publish(self.channel, f"k {message}")

    async def redis_time_ms(self, queue: str | None = None) -> int:
        """Redis's clock (ms), on the node that holds the queue's keys (a Cluster's nodes may disagree a
        little; the queue's scripts read that node's)."""
        return await self.store.time_ms(self.keys(queue).meta if queue is not None else None)

    async def ping(self) -> bool:
        return bool(await self.redis.ping())


__all__ = ["Engine", "LeaseNotHeld", "new_job_id"]
