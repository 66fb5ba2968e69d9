"""Reads a queue's whole state from Redis and lists every broken invariant.

Read with plain Redis commands (not the server's scripts), so a bug in a script cannot hide itself. The
invariants (engine/keys.py and engine/records.py name the keys and fields):

- a job is in at most one state set (waiting, delayed, active, completed, failed, cancelled), every member
  of a state set has a job hash, every job hash is in the set its ``st`` names; a waiting job is in the
  waiting list of its priority level, once;
- an active job holds a lease: token and worker fields, and its expiry (its score in ``active``) is not
  older than the reaper's grace (a job that is not active may keep its last run's token and worker: they
  mean nothing then, common.lua lease_check);
- every run of a finished job is accounted for: starts = finished runs + stalls (``ats = atm + stc``),
  and a completed job has a result;
- the timeout deadlines name active jobs only;
- counters agree with the sets (exact only while no retention or removal ran): jobs added = job hashes,
  completions counted = completed jobs, failures for good counted = failed jobs, the queue's stalled total
  = the jobs' stalled counts;
- once the system has settled: the dead-letter and flow outboxes are empty, no flow entry and no staged
  bulk stream is left.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from redis.asyncio import Redis

from queue_manager_server.engine.keys import PRIORITY_LEVELS, QueueKeys, workflow_starting

SETS = ("waiting", "delayed", "active", "completed", "failed", "cancelled")
FINAL = ("completed", "failed", "cancelled")
LEASE_FIELDS = ("tok", "wid")


def _text(value: bytes | None) -> str:
    return value.decode() if value is not None else ""


def _int(value: bytes | None) -> int:
    return int(float(value)) if value not in (None, b"") else 0


@dataclass
class QueueScan:
    """One queue as Redis holds it, and what is wrong with it."""

    queue: str
    jobs: dict[str, dict[str, bytes]] = field(default_factory=dict)
    members: dict[str, dict[str, float]] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)
    stalled_total: int = 0
    violations: list[str] = field(default_factory=list)

    def state(self, job_id: str) -> str:
        """The job's ``st`` field ("" when it has no hash)."""
        return _text(self.jobs.get(job_id, {}).get("st"))

    def ids(self, state: str) -> set[str]:
        return set(self.members.get(state, {}))


async def scan_queue(
    redis: Redis,
    prefix: str,
    queue: str,
    *,
    settled: bool,
    exact_counters: bool = True,
    lease_grace_ms: int = 5_000,
) -> QueueScan:
    """Reads one queue and checks it.

    Args:
        redis: A client of the Redis the servers use.
        prefix: The servers' key prefix.
        queue: The queue.
        settled: No work is in flight any more: outboxes, flow entries and staged streams must be gone.
        exact_counters: No retention rule or removal deleted jobs, so counters equal set sizes.
        lease_grace_ms: How far past its expiry an active job's lease may be (the reaper's interval and
            the time the scan takes), before the job counts as held without a lease.
    """
    k = QueueKeys(prefix, queue)
    scan = QueueScan(queue)
    bad = scan.violations.append
    pipe = redis.pipeline(transaction=True)  # one consistent snapshot of the sets and counters
    for level in k.waiting_levels:
        pipe.lrange(level, 0, -1)
    for state in SETS[1:]:
        pipe.zrange(k.state_set(state), 0, -1, withscores=True)
    pipe.zrange(k.deadlines, 0, -1)
    pipe.hgetall(k.stats)
    pipe.hget(k.meta, "stalled_total")
    pipe.time()
    replies = await pipe.execute()
    # Waiting jobs: the level lists, each member scored by its level.
    scan.members["waiting"] = {}
    for level, ids in zip(PRIORITY_LEVELS, replies[: len(PRIORITY_LEVELS)], strict=True):
        for m in ids:
            if _text(m) in scan.members["waiting"]:
                bad(f"{queue}/{_text(m)} is in the waiting lists twice")
            scan.members["waiting"][_text(m)] = float(level)
    replies = replies[len(PRIORITY_LEVELS) :]
    for state, members in zip(SETS[1:], replies[: len(SETS) - 1], strict=True):
        scan.members[state] = {_text(m): float(s) for m, s in members}
    replies = replies[len(SETS) - 1 :]
    deadlines = {_text(m) for m in replies[0]}
    scan.stats = {_text(f): _int(v) for f, v in replies[1].items()}
    scan.stalled_total = _int(replies[2])
    sec, usec = replies[3]
    now_ms = int(sec) * 1000 + int(usec) // 1000

    job_keys = [key async for key in redis.scan_iter(match=f"{k.job_prefix}*", count=1000)]
    pipe = redis.pipeline(transaction=False)
    for key in job_keys:
        pipe.hgetall(key)
    for key, fields in zip(job_keys, await pipe.execute(), strict=True):
        if fields:
            scan.jobs[_text(key)[len(k.job_prefix) :]] = {_text(f): v for f, v in fields.items()}

    where: dict[str, list[str]] = defaultdict(list)
    for state, members in scan.members.items():
        for job_id in members:
            where[job_id].append(state)
    for job_id, states in sorted(where.items()):
        if len(states) > 1:
            bad(f"{queue}/{job_id} is in {len(states)} state sets: {', '.join(states)}")
        if job_id not in scan.jobs:
            bad(f"{queue}/{job_id} is in {states[0]} but has no job hash")
    for job_id, fields in sorted(scan.jobs.items()):
        _check_job(scan, job_id, fields, where.get(job_id, []), now_ms, lease_grace_ms)
    for job_id in sorted(deadlines - scan.ids("active")):
        bad(f"{queue}/{job_id} has a timeout deadline but is not active")
    if exact_counters:
        _check_counters(scan)
    if settled:
        await _check_settled(redis, k, scan)
    return scan


def _check_job(
    scan: QueueScan, job_id: str, f: dict[str, bytes], states: list[str], now_ms: int, grace_ms: int
) -> None:
    bad = scan.violations.append
    name = f"{scan.queue}/{job_id}"
    st = _text(f.get("st")) or "waiting"  # a job added waiting has no 'st' (includes/add.lua)
    if not states:
        bad(f"{name} has st={st!r} but is in no state set")
    elif st != states[0]:
        bad(f"{name} has st={st!r} but is in {states[0]}")
    elif st == "waiting" and (level := int(scan.members["waiting"][job_id])) != _int(f.get("pri") or b"3"):
        bad(f"{name} has priority {_text(f.get('pri')) or 3} but waits in level {level}")
    if st == "active":
        held = [x for x in LEASE_FIELDS if f.get(x)]
        if len(held) < len(LEASE_FIELDS):
            bad(f"{name} is active without a full lease (has {held or 'none'})")
        score = scan.members["active"].get(job_id)
        if score is not None and int(score) < now_ms - grace_ms:
            bad(f"{name}: lease expired {now_ms - int(score)} ms ago and was not recovered")
    # Attempts started are not stored (claim.lua counts a start as the finished runs and stalls before it,
    # plus one); no 'atm' on a completed job is its one finished run and no 'res' a run that returned
    # nothing (complete.lua).
    if st == "completed" and "atm" in f and _int(f["atm"]) < 1:
        bad(f"{name} is completed without a finished run")
    if st == "failed" and _int(f.get("atm")) + _int(f.get("stc")) < 1:
        bad(f"{name} is failed without a failed run or a stall")


def _check_counters(scan: QueueScan) -> None:
    bad = scan.violations.append
    pairs = (
        ("jobs added", scan.stats.get("a", 0), "job hashes", len(scan.jobs)),
        ("completions counted", scan.stats.get("c", 0), "completed jobs", len(scan.members["completed"])),
        ("failures for good counted", scan.stats.get("f", 0), "failed jobs", len(scan.members["failed"])),
        (
            "stalled total",
            scan.stalled_total,
            "stalls of its jobs",
            sum(_int(f.get("stc")) for f in scan.jobs.values()),
        ),
    )
    for what, counted, of, actual in pairs:
        if counted != actual:
            bad(f"{scan.queue}: {what} {counted} != {of} {actual}")


async def _check_settled(redis: Redis, k: QueueKeys, scan: QueueScan) -> None:
    bad = scan.violations.append
    for what, key in (("dead-letter outbox", k.outbox), ("flow outbox", k.flow_outbox)):
        if n := await redis.llen(key):
            bad(f"{scan.queue}: {n} entries left in the {what}")
    if flows := [key async for key in redis.scan_iter(match=f"{k.base}:flow:*", count=1000)]:
        bad(f"{scan.queue}: {len(flows)} flow entries never cleared")
    if streams := await redis.hlen(k.bulk):
        bad(f"{scan.queue}: {streams} bulk streams still staged")
    if staged := [key async for key in redis.scan_iter(match=f"{k.staged_prefix}*", count=1000)]:
        bad(f"{scan.queue}: {len(staged)} staged lists left")


async def scan_globals(redis: Redis, prefix: str) -> list[str]:
    """What must be gone from the keys shared by all queues once the system has settled."""
    bad: list[str] = []
    if starting := await redis.zcard(workflow_starting(prefix)):
        bad.append(f"{starting} workflow runs still waiting for their first steps")
    return bad
