"""Engine behaviour against a real Valkey: ordering, delays, retries, dead letters, leases, retention."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from importlib import resources

import pytest

from queue_manager.v1 import types_pb2
from queue_manager_server import convert
from queue_manager_server.components.maintenance import Reaper
from queue_manager_server.components.timeouts import Timeouts
from queue_manager_server.engine import Engine
from queue_manager_server.engine.bulk import BulkStreams
from queue_manager_server.engine.control import Control
from queue_manager_server.engine.engine import ADD_CHUNK, ADMIN_CHUNK, SWEEP_CHUNK
from queue_manager_server.engine.job_control import JobControl
from queue_manager_server.engine.keys import PRIORITY_LEVELS, QueueKeys
from queue_manager_server.engine.records import (
    STORED_ATTEMPTS,
    STORED_PRIORITY,
    AddResult,
    ClaimedJob,
    ClaimRequest,
    NewJob,
)
from queue_manager_server.errors import JobActive, JobNotFound, QueueNotFound


async def register(engine: Engine, name: str = "q", **cfg: object) -> None:
    fields, _ = convert.queue_meta(types_pb2.QueueConfig(**cfg))  # type: ignore[arg-type]
    await engine.register_queue(name, fields)
    if fields["dlq"]:
        dlq_fields, _ = convert.queue_meta(types_pb2.QueueConfig(disable_dead_letter=True))
        await engine.register_queue(str(fields["dlq"]), dlq_fields, only_if_missing=True)


def job(name: str = "j", data: object = None, **kw: object) -> NewJob:
    return NewJob(id=str(kw.pop("id", "")), name=name, data=json.dumps(data).encode(), **kw)  # type: ignore[arg-type]


async def test_priority_order_and_fifo_within_level(engine: Engine) -> None:
    await register(engine)
    specs = [("n1", 3), ("b1", 5), ("c1", 1), ("n2", 3), ("h1", 2), ("c2", 1), ("l1", 4), ("n3", 3)]
    await engine.add_jobs("q", [job(n, priority=p) for n, p in specs])
    claimed = await engine.claim("q", 100, "tok", "w", 30_000)
    assert [j.name for j in claimed.jobs] == ["c1", "c2", "h1", "n1", "n2", "n3", "l1", "b1"]


async def test_claim_hands_out_at_most_n_and_leases_each(engine: Engine) -> None:
    await register(engine)
    await engine.add_jobs("q", [job(str(i)) for i in range(10)])
    c = await engine.claim("q", 4, "tok", "w", 30_000)
    assert len(c.jobs) == 4
    assert all(j.lease_expiry_ms == c.now_ms + 30_000 for j in c.jobs)
    m = await engine.metrics("q")
    assert (m.waiting, m.active) == (6, 4)


async def test_unknown_queue_is_not_found(engine: Engine) -> None:
    with pytest.raises(QueueNotFound):
        await engine.add_jobs("nope", [job()])
    with pytest.raises(QueueNotFound):
        await engine.claim("nope", 10, "t", "w", 30_000)
    with pytest.raises(QueueNotFound):
        await engine.metrics("nope")
    # A queue is its registration: a meta hash some other write left behind (a counter of a queue obliterated
    # meanwhile) holds no 'created' time, and adds and claims still find no queue.
    await engine.redis.hincrby(engine.keys("ghost").meta, "stalled_total", 1)
    with pytest.raises(QueueNotFound):
        await engine.add_jobs("ghost", [job()])
    with pytest.raises(QueueNotFound):
        await engine.claim("ghost", 10, "t", "w", 30_000)


async def commands_of(engine: Engine, call: Callable[[], Awaitable[object]]) -> Counter[str]:
    """The Valkey commands a call ran, by name (those its scripts ran included, the scripts' EVALSHAs not)."""

    async def counts() -> Counter[str]:
        stats = await engine.redis.info("commandstats")
        return Counter({name.removeprefix("cmdstat_"): int(s["calls"]) for name, s in stats.items()})

    before = await counts()
    await call()
    ran = await counts() - before
    for name in ("evalsha", "info"):
        ran.pop(name, None)
    return ran


async def test_a_lone_add_with_its_claim_and_its_completion_stay_within_their_command_budgets(
    engine: Engine,
) -> None:
    """A job at a time (a producer and a worker at a few hundred jobs/s) pays every command of its
    scripts alone, and in Valkey each command a script runs costs ~1-2 µs of overhead whatever it does:
    the add with its folded claim read the queue's meta hash three times (an EXISTS, the defaults, the
    claim's settings), the delayed set twice with nothing due and re-armed the minute's expiry each time;
    the completion read the retention defaults twice and the cap once more, and re-armed two expiries
    (22 and 17 commands). The claim read back the job the add had just written (another HMGET)."""
    await register(engine)
    request = ClaimRequest(take=100, token="t0", worker_id="w", lease_ms=30_000)
    # A first job writes this minute's and second's counters (their expiries set as they are created).
    (first,) = await engine.add_jobs_many([("q", [job("warm")])], fetch=True, claims=[request])
    assert isinstance(first, AddResult) and first.claim is not None
    await engine.complete("q", [(first.claim.jobs[0].id, "t0", b"null", "application/json")], [500])

    claimed: list[ClaimedJob] = []

    async def add() -> None:
        (r,) = await engine.add_jobs_many(
            [("q", [job("lone")])], fetch=True, claims=[dataclasses.replace(request, token="t1")]
        )
        assert isinstance(r, AddResult) and r.claim is not None
        claimed.extend(r.claim.jobs)

    added = await commands_of(engine, add)
    assert [j.name for j in claimed] == ["lone"]
    # One read of the meta hash and one of the limiter: the job just added is not read back; the delayed set
    # read once (nothing due); no EXISTS on the queue; an expiry only if a new minute began meanwhile.
    assert added["hmget"] == 2 and added["zrange"] == 1 and "zrangebyscore" not in added, added
    assert added["exists"] == 1 and added.get("expire", 0) <= 1, added  # the job's own idempotency check
    assert sum(added.values()) <= 18, added

    async def complete() -> None:
        assert await engine.complete("q", [(claimed[0].id, "t1", b"null", "application/json")], [500]) == (
            [0],
            0,
        )

    done = await commands_of(engine, complete)
    # The job's lease check and the queue's settings (retention and cap) in one read each.
    assert done["hmget"] == 2 and "hget" not in done and done.get("expire", 0) <= 2, done
    assert sum(done.values()) <= 15, done


async def test_retries_and_promotions_push_once_per_level_and_a_retried_completion_writes_once(
    engine: Engine,
) -> None:
    """Runs failed with attempts left go back to waiting with one RPUSH per priority level for the whole
    batch, as due delayed jobs do when a claim promotes them, and a retried job's completion writes its
    outcome and its attempt count in one HSET: a command per job each, at ~1-2 µs of Valkey per command."""
    await register(engine)
    await engine.add_jobs("q", [job(f"j{i}", priority=2 + i % 2, attempts=2) for i in range(20)])
    claimed = (await engine.claim("q", 20, "t", "w", 30_000)).jobs

    async def fail() -> None:
        outcomes = await engine.fail("q", [(j.id, "t", "boom", "", False) for j in claimed])
        assert [code for code, _ in outcomes] == [0] * 20

    failed = await commands_of(engine, fail)
    assert failed["rpush"] == 2 and failed["hset"] == 20, failed
    # Back at the end of their levels in the order they failed: claimed again as before.
    again = (await engine.claim("q", 20, "t2", "w", 30_000)).jobs
    assert [j.id for j in again] == [j.id for j in claimed]
    assert all(j.attempts_made == 1 for j in again)

    async def complete() -> None:
        results = [b'{"ok":1}' if k % 2 else b"null" for k in range(len(again))]
        items = [(j.id, "t2", r, "application/json") for j, r in zip(again, results, strict=True)]
        assert (await engine.complete("q", items))[0] == [0] * 20

    done = await commands_of(engine, complete)
    assert done["hset"] == 20, done
    views = [convert.job_out(await engine.get_job("q", j.id)) for j in again[:2]]
    assert [(v.state, v.attempts_made) for v in views] == [(types_pb2.JOB_STATE_COMPLETED, 2)] * 2
    assert views[1].result.json.struct_value.fields["ok"].number_value == 1

    await register(engine, "p")
    later = (await engine.add_jobs("p", [job(f"d{i}", delay_ms=60_000) for i in range(10)])).ids
    # Due now, in the order they were added (the delayed set's scores are their run-at times).
    await engine.redis.zadd(engine.keys("p").delayed, {job_id: k for k, job_id in enumerate(later)})
    promoted: list[ClaimedJob] = []

    async def claim() -> None:
        promoted.extend((await engine.claim("p", 10, "t", "w", 30_000)).jobs)

    ran = await commands_of(engine, claim)
    assert [j.id for j in promoted] == later
    assert ran["rpush"] == 1, ran


async def test_lost_and_handed_back_runs_go_back_with_one_push_per_level(engine: Engine) -> None:
    """Recovering a dead worker's runs (the reaper) or taking back a draining worker's unstarted jobs costs a
    read and a write per job; the pushes to each level, the active set and the queue's stall count go once
    for the batch (recovering a worker that held 500 jobs ran ~4,500 commands, each ~1-2 µs of Valkey)."""
    await register(engine)
    await engine.add_jobs("q", [job(f"j{i}", priority=2 + i % 2) for i in range(20)])
    claimed = (await engine.claim("q", 20, "t", "w", 30_000)).jobs
    # Their leases expire now, in the order they were taken (the active set's scores are the expiries).
    await engine.redis.zadd(engine.keys("q").active, {j.id: k for k, j in enumerate(claimed)})
    reaped = await commands_of(engine, lambda: engine.reap("q"))
    # A read per job and one of the queue's settings (its stall limit and cap); a write per job.
    assert (reaped["lpush"], reaped["hmget"], reaped["hset"], reaped["hincrby"]) == (2, 21, 20, 1), reaped
    assert "exists" not in reaped and "hget" not in reaped, reaped
    # Back at the head of their levels in the order they were taken, each with its stall counted.
    again = (await engine.claim("q", 20, "t2", "w", 30_000)).jobs
    assert [j.id for j in again] == [j.id for j in claimed]
    assert all(j.redelivery and j.stalled_count == 1 for j in again)
    assert (await engine.metrics("q")).stalled_total == 20

    async def release() -> None:
        assert await engine.release("q", [(j.id, "t2") for j in again], stalled=False) == [1] * 20

    released = await commands_of(engine, release)
    assert (released["lpush"], released["zrem"], released["hset"]) == (2, 1, 20), released
    third = (await engine.claim("q", 20, "t3", "w", 30_000)).jobs
    assert [j.id for j in third] == [j.id for j in claimed]
    assert all(j.stalled_count == 1 for j in third)  # handed back unstarted: no stall counted
    assert (await engine.metrics("q")).stalled_total == 20


async def test_a_claim_folded_into_an_add_answers_its_new_jobs_as_a_claim_that_reads_them_would(
    engine: Engine,
) -> None:
    """The folded claim takes the jobs its add just wrote from what the add wrote, not by reading them back:
    each job comes out as a claim of its own would give it (every option, defaults or not)."""
    await register(engine)
    await register(engine, "apart")
    specs = [
        dict(name="plain", data={"i": 1}),
        dict(name="rich", data=[1, "two"], priority=1, attempts=4, timeout_ms=9_000, backoff_type=1,
             backoff_delay_ms=50, keep_completed="r", content_type="text/plain", metadata=b"md-bytes",
             extra={"par": b"flow-view"}),
        dict(name="low", data=None, priority=5, max_stalled=3),
    ]  # fmt: skip

    def jobs(prefix: str) -> list[NewJob]:
        out = []
        for i, spec in enumerate(specs):
            kw = dict(spec)
            data = kw.pop("data")
            ct = kw.get("content_type")
            body = b"raw text" if ct == "text/plain" else json.dumps(data).encode()
            out.append(NewJob(id=f"{prefix}{i}", data=body, **kw))  # type: ignore[arg-type]
        return out

    request = ClaimRequest(take=10, token="t", worker_id="w", lease_ms=30_000)
    (folded,) = await engine.add_jobs_many([("q", jobs("f"))], fetch=True, claims=[request])
    assert isinstance(folded, AddResult) and folded.claim is not None
    await engine.add_jobs("apart", jobs("a"))
    read = await engine.claim("apart", 10, "t", "w", 30_000)
    assert [j.name for j in folded.claim.jobs] == [j.name for j in read.jobs] == ["rich", "plain", "low"]
    for a, b in zip(folded.claim.jobs, read.jobs, strict=True):
        mine = dataclasses.replace(a, id=b.id, created_ms=b.created_ms, lease_expiry_ms=b.lease_expiry_ms)
        assert mine == b
    # Their leases are written as a read claim's are: the token completes them.
    items = [(j.id, "t", b"null", "application/json") for j in folded.claim.jobs]
    codes, _ = await engine.complete("q", items)
    assert codes == [0, 0, 0]


async def test_the_activity_counters_expire_from_their_first_write(engine: Engine) -> None:
    """The per-minute and per-second counter hashes get their expiry when a write creates them (not on every
    write), so they never stay forever."""
    await register(engine)
    r = await engine.add_jobs("q", [job("a")])
    (j,) = (await engine.claim("q", 1, "t", "w", 30_000)).jobs
    await engine.complete("q", [(j.id, "t", b"null", "application/json")], [500])
    k = engine.keys("q")
    for minute in {r.now_ms // 60_000, (r.now_ms // 60_000) + 1}:
        if await engine.redis.exists(k.minute(minute)):
            assert 0 < await engine.redis.ttl(k.minute(minute)) <= 3900
        if await engine.redis.exists(k.seconds(minute)):
            assert 0 < await engine.redis.ttl(k.seconds(minute)) <= 180
    assert await engine.redis.exists(k.minute(r.now_ms // 60_000))


async def test_idempotent_job_id_returns_existing(engine: Engine) -> None:
    await register(engine)
    first = await engine.add_jobs("q", [job("a", {"v": 1}, id="order-42")])
    again = await engine.add_jobs("q", [job("a", {"v": 2}, id="order-42")])
    assert first.created == [True] and again.created == [False]
    assert again.ids == ["order-42"]
    rec = await engine.get_job("q", "order-42")
    assert json.loads(rec.raw("data") or b"") == {"v": 1}
    assert (await engine.metrics("q")).waiting == 1


async def test_delayed_job_waits_until_due(engine: Engine) -> None:
    await register(engine)
    r = await engine.add_jobs("q", [job("later", delay_ms=400), job("much later", delay_ms=600_000)])
    assert r.earliest_delayed_ms == r.now_ms + 400
    assert (await engine.claim("q", 10, "t", "w", 30_000)).jobs == []
    c = await engine.claim("q", 10, "t", "w", 30_000)
    assert c.next_delayed_ms == r.now_ms + 400
    await asyncio.sleep((c.next_delayed_ms - c.now_ms) / 1000 + 0.02)
    c = await engine.claim("q", 10, "t", "w", 30_000)
    assert [j.name for j in c.jobs] == ["later"]
    assert c.now_ms >= r.now_ms + 400
    # The one due was promoted; the next run-at is the one left's.
    assert c.next_delayed_ms == r.now_ms + 600_000
    assert (await engine.claim("q", 10, "t", "w", 30_000)).jobs == []


async def test_stale_token_is_rejected_and_changes_nothing(engine: Engine) -> None:
    await register(engine)
    await engine.add_jobs("q", [job("a")])
    (j,) = (await engine.claim("q", 1, "good", "w", 30_000)).jobs
    assert (await engine.complete("q", [(j.id, "bad", b"1", "application/json")]))[0] == [-3]
    assert await engine.fail("q", [(j.id, "bad", "x", "", False)]) == [(-3, -1)]
    assert await engine.extend("q", [(j.id, "bad")], 1000) == [(-3, -1)]
    rec = await engine.get_job("q", j.id)
    assert rec.text("st") == "active" and rec.raw("res") is None
    assert (await engine.complete("q", [(j.id, "good", b"1", "application/json")]))[0] == [0]
    assert (await engine.get_job("q", j.id)).text("st") == "completed"
    # A second completion of a finished job is rejected too.
    assert (await engine.complete("q", [(j.id, "good", b"2", "application/json")]))[0] == [-3]


async def test_a_report_on_a_job_never_claimed_is_a_lease_not_held_and_a_missing_job_not_found(
    engine: Engine,
) -> None:
    await register(engine)
    (waiting,) = (await engine.add_jobs("q", [job("a")])).ids  # stored without 'st' (includes/add.lua)
    assert (await engine.complete("q", [(waiting, "t", b"1", "application/json")]))[0] == [-3]
    assert await engine.fail("q", [(waiting, "t", "x", "", False)]) == [(-3, -1)]
    assert (await engine.complete("q", [("no-such-job", "t", b"1", "application/json")]))[0] == [-2]
    assert (await engine.get_job("q", waiting)).state == "waiting"  # and nothing was written to it
    assert [j.id for j in (await engine.claim("q", 5, "t", "w", 30_000)).jobs] == [waiting]


async def test_retries_with_exponential_backoff_then_dead_letter(engine: Engine) -> None:
    await register(engine)
    await engine.add_jobs("q", [job("x", {"k": 1}, attempts=3, backoff_type=2, backoff_delay_ms=100)])
    gaps = []
    for attempt in range(3):
        deadline = asyncio.get_running_loop().time() + 5
        while not (c := await engine.claim("q", 1, f"t{attempt}", "w", 30_000)).jobs:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
        (j,) = c.jobs
        assert j.attempts_made == attempt
        ((code, run_at),) = await engine.fail("q", [(j.id, f"t{attempt}", f"boom {attempt}", "stack", False)])
        if attempt < 2:
            assert code == 1
            gaps.append(run_at - c.now_ms)
        else:
            assert code == 2
    assert gaps[0] >= 100 and gaps[1] >= 200
    rec = await engine.get_job("q", j.id)
    assert rec.text("st") == "failed" and rec.int("atm") == 3 and rec.text("err") == "boom 2"
    dead = await engine.get_job("dead-letter-queue", f"q:{j.id}")
    body = json.loads(dead.raw("data") or b"")
    assert body == {
        "original_queue": "q",
        "original_job_id": j.id,
        "original_name": "x",
        "original_data": {"k": 1},
        "original_content_type": "application/json",
        "failure_reason": "boom 2",
        "attempts_made": 3,
    }
    assert await engine.redis.llen(engine.keys("q").outbox) == 0


async def test_dead_letter_hand_off_of_a_burst_reads_and_clears_in_one_call(engine: Engine) -> None:
    """A burst of jobs failed for good is handed off together: every copy written, the outbox cleared and the
    jobs to remove on failure deleted, by one script call per hand-off (not one per job)."""
    await register(engine)
    specs = [job(f"x{i}", {"i": i}, id=f"j{i}", keep_failed="r" if i % 3 == 0 else "") for i in range(130)]
    await engine.add_jobs("q", specs)
    claimed = (await engine.claim("q", 200, "t", "w", 30_000)).jobs
    assert len(claimed) == 130
    codes = await engine.fail("q", [(j.id, "t", f"boom {j.id}", "", True) for j in claimed])
    assert {code for code, _ in codes} == {2}
    k = engine.keys("q")
    assert await engine.redis.llen(k.outbox) == 30  # one hand-off takes 100: the rest waits for the next

    async def script_calls() -> int:
        stats = await engine.redis.info("commandstats")
        return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))

    before = await script_calls()
    assert await engine.hand_off_dead_letters("q") == 30
    assert await script_calls() - before == 2  # the copies' add and the outbox's clearing
    assert await engine.redis.llen(k.outbox) == 0
    for i in range(130):
        dead = await engine.get_job("dead-letter-queue", f"q:j{i}")
        body = json.loads(dead.raw("data") or b"")
        assert (body["original_data"], body["failure_reason"]) == ({"i": i}, f"boom j{i}")
        removed = i % 3 == 0
        assert (await engine.redis.exists(k.job(f"j{i}")) == 0) == removed
        assert (await engine.redis.zscore(k.failed, f"j{i}") is None) == removed


async def test_a_dead_letter_copy_that_fails_for_good_is_not_copied_again(engine: Engine) -> None:
    """Two queues that dead-letter into each other: the first failure's copy lands in the other queue, and
    when that copy fails for good it stays failed there (it used to bounce back and forth for ever, each
    copy nesting the last one's data under a longer id)."""
    await register(engine, "x1", dead_letter_queue="x2")
    await register(engine, "x2", dead_letter_queue="x1")
    await engine.add_jobs("x1", [job("n", {"k": 1}, id="a")])
    (j,) = (await engine.claim("x1", 1, "t1", "w", 30_000)).jobs
    assert await engine.fail("x1", [(j.id, "t1", "boom", "", True)]) == [(2, -1)]
    (copy,) = (await engine.claim("x2", 1, "t2", "w", 30_000)).jobs
    assert copy.id == "x1:a"
    assert await engine.fail("x2", [(copy.id, "t2", "boom again", "", True)]) == [(2, -1)]
    await engine.hand_off_dead_letters("x2")  # (fail hands off at once; a second pass finds nothing)
    assert await engine.redis.llen(engine.keys("x2").outbox) == 0
    assert (await engine.metrics("x1")).waiting == 0
    assert not await engine.redis.exists(engine.keys("x1").job("x2:x1:a"))
    assert (await engine.get_job("x2", "x1:a")).text("st") == "failed"


async def test_do_not_retry_skips_remaining_attempts(engine: Engine) -> None:
    await register(engine)
    await engine.add_jobs("q", [job("x", attempts=5)])
    (j,) = (await engine.claim("q", 1, "t", "w", 30_000)).jobs
    assert await engine.fail("q", [(j.id, "t", "fatal", "", True)]) == [(2, -1)]
    assert (await engine.metrics("q")).failed == 1


async def test_fixed_backoff_zero_delay_goes_straight_back_to_waiting(engine: Engine) -> None:
    await register(engine)
    await engine.add_jobs("q", [job("x", attempts=2)])
    (j,) = (await engine.claim("q", 1, "t", "w", 30_000)).jobs
    assert (await engine.fail("q", [(j.id, "t", "e", "", False)]))[0][0] == 0
    (again,) = (await engine.claim("q", 1, "t2", "w", 30_000)).jobs
    assert again.id == j.id and again.attempts_made == 1 and not again.redelivery


async def test_pause_and_resume(engine: Engine) -> None:
    await register(engine)
    await engine.set_paused("q", True)
    await engine.add_jobs("q", [job()])
    c = await engine.claim("q", 1, "t", "w", 30_000)
    assert c.code == 1 and c.jobs == []
    m = await engine.metrics("q")
    assert (m.waiting, m.paused) == (0, 1)
    await engine.set_paused("q", False)
    assert len((await engine.claim("q", 1, "t", "w", 30_000)).jobs) == 1


async def test_rate_limit_token_bucket(engine: Engine) -> None:
    # 30 per second: the bucket holds a tenth of that (the burst, 3), refilled at one token per 33.3 ms.
    await register(engine, rate_limit=types_pb2.RateLimit(max=30, duration=convert.ms_duration(1000)))
    await engine.add_jobs("q", [job(str(i)) for i in range(10)])
    first = await engine.claim("q", 10, "t", "w", 30_000)
    assert len(first.jobs) == 3
    assert first.code == 0 and 0 < first.retry_after_ms <= 34  # jobs held back: when to come back
    limited = await engine.claim("q", 10, "t", "w", 30_000)
    assert limited.code == 2 and 0 < limited.retry_after_ms <= 34


async def test_release_unstarted_and_stalled(engine: Engine) -> None:
    await register(engine, default_job_options=types_pb2.JobOptions(max_stalled=1))
    await engine.add_jobs("q", [job("a"), job("b")])
    a, b = (await engine.claim("q", 2, "t", "w", 30_000)).jobs
    assert await engine.release("q", [(a.id, "t")], stalled=False) == [1]
    assert (await engine.get_job("q", a.id)).int("stc") == 0
    assert await engine.release("q", [(b.id, "t")], stalled=True) == [1]
    again = {j.id: j for j in (await engine.claim("q", 2, "t2", "w", 30_000)).jobs}
    assert not again[a.id].redelivery
    assert again[b.id].redelivery and again[b.id].stalled_count == 1
    # A second stall passes max_stalled = 1: the job fails for good.
    assert await engine.release("q", [(b.id, "t2")], stalled=True) == [2]
    rec = await engine.get_job("q", b.id)
    assert rec.text("st") == "failed" and "stalled" in rec.text("err")
    assert (await engine.metrics("q")).stalled_total == 2


async def test_reaper_recovers_expired_leases_and_rejects_late_completion(engine: Engine) -> None:
    await register(engine)
    await engine.add_jobs("q", [job("a")])
    (j,) = (await engine.claim("q", 1, "t", "w", 100)).jobs
    assert await engine.reap("q") == (0, 0, j.lease_expiry_ms)
    await asyncio.sleep(0.15)
    assert (await engine.metrics("q")).stalled == 1
    back, lost, _ = await engine.reap("q")
    assert (back, lost) == (1, 0)
    assert (await engine.complete("q", [(j.id, "t", b"1", "application/json")]))[0] == [-3]
    (again,) = (await engine.claim("q", 1, "t2", "w", 30_000)).jobs
    assert again.redelivery
    assert (await engine.complete("q", [(j.id, "t2", b"1", "application/json")]))[0] == [0]
    assert (await engine.metrics("q")).completed == 1


async def test_the_periodic_sweeps_visit_every_queue_and_keep_each_queues_error_its_own(
    engine: Engine,
) -> None:
    """The reaper, promoter and timeout scans run their script for every queue in shared round trips (one
    round trip per queue cost an idle server with 2,000 queues a quarter of a core): each queue gets its
    own answer in order, more queues than one round trip holds included, and a queue whose keys are broken
    fails alone."""
    names = [f"sweep-{i:03d}" for i in range(SWEEP_CHUNK + 5)]
    for name in names:
        await register(engine, name)
    expiring, delayed, timed = names[0], names[SWEEP_CHUNK + 1], names[-1]
    await engine.add_jobs(expiring, [job("a")])
    await engine.claim(expiring, 1, "t", "w", 1)
    await engine.add_jobs(delayed, [job("d", delay_ms=1)])
    await engine.add_jobs(timed, [job("slow", timeout_ms=1)])
    await engine.claim(timed, 1, "t", "w", 30_000)
    broken = names[3]
    await engine.redis.set(engine.keys(broken).active, "not a sorted set")
    await engine.redis.set(engine.keys(broken).delayed, "not a sorted set")
    await engine.redis.set(engine.keys(broken).deadlines, "not a sorted set")
    await asyncio.sleep(0.05)  # the lease, the delay and the timeout are all past

    reaped = await engine.reap_all(names)
    assert isinstance(reaped[3], Exception) and "WRONGTYPE" in str(reaped[3])
    assert reaped[0][:2] == (1, 0)
    assert all(
        r[:2] == (0, 0) for i, r in enumerate(reaped) if i not in (0, 3) and not isinstance(r, Exception)
    )
    promoted = await engine.promote_all(names)
    assert isinstance(promoted[3], Exception)
    assert [r[0] for i, r in enumerate(promoted) if i != 3] == [
        1 if name == delayed else 0 for i, name in enumerate(names) if i != 3
    ]
    timed_out = await Control(engine).time_out_all(names)
    assert isinstance(timed_out[3], Exception)
    outcome = timed_out[-1]
    assert not isinstance(outcome, Exception) and len(outcome.outcomes) == 1
    assert all(not r.outcomes for r in timed_out[:-1] if not isinstance(r, Exception))
    assert (await engine.metrics(expiring)).waiting == 1
    assert (await engine.metrics(delayed)).waiting == 1
    # The reaper's tick goes past the broken queue (it used to stop there: the queues after it waited).
    late = names[-2]
    await engine.add_jobs(late, [job("b")])
    await engine.claim(late, 1, "t", "w", 1)
    await asyncio.sleep(0.05)
    await Reaper(engine, 1.0, lease_ms=30_000).tick()
    assert (await engine.metrics(late)).waiting == 1


async def test_the_reaper_looks_at_a_queue_holding_no_lease_less_often(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A queue that held no lease is looked at again after IDLE_LOOKS ticks (a lease taken meanwhile cannot
    expire sooner); a queue holding one is looked at every tick, and its expired lease recovered on time."""
    for name in ("busy", "idle"):
        await register(engine, name)
    looked: list[list[str]] = []
    reap_all = engine.reap_all

    async def spy(queues: list[str], limit: int = 1000) -> list[object]:
        looked.append(sorted(queues))
        return await reap_all(queues, limit)  # type: ignore[return-value]

    monkeypatch.setattr(engine, "reap_all", spy)
    reaper = Reaper(engine, 0.2, lease_ms=5_000)  # an idle queue waits min(5 × 0.2 s, 5 s) = 1 s
    assert reaper.looks.idle == 1.0
    await engine.add_jobs("busy", [job("a")])
    await engine.claim("busy", 1, "t", "w", 300)
    start = asyncio.get_running_loop().time()
    await reaper.tick()
    await reaper.tick()
    assert looked == [["busy", "dead-letter-queue", "idle"], ["busy"]]
    await asyncio.sleep(0.4)  # the lease ran out: the next tick recovers the job
    await reaper.tick()
    assert looked[-1] == ["busy"] and (await engine.metrics("busy")).waiting == 1
    await asyncio.sleep(max(0.0, start + 1.1 - asyncio.get_running_loop().time()))
    await reaper.tick()
    # The idle queues' second look; busy, idle since its recovery, waits its turn.
    assert looked[-1] == ["dead-letter-queue", "idle"]


async def test_the_timeout_scan_looks_at_a_queue_without_deadlines_less_often(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A queue whose last scan found no deadline is scanned again after IDLE_LOOKS ticks (a deadline set
    meanwhile has the timer of the server that set it); a queue with one is scanned every tick, so a run
    whose server died (no timer armed here) still times out on time."""
    for name in ("busy", "idle"):
        await register(engine, name)
    timeouts = Timeouts(engine, 0.2)  # an idle queue waits 5 × 0.2 s = 1 s
    looked: list[list[str]] = []
    time_out_all = timeouts.control.time_out_all

    async def spy(queues: list[str], limit: int = 1000) -> list[object]:
        looked.append(sorted(queues))
        return await time_out_all(queues, limit)  # type: ignore[return-value]

    monkeypatch.setattr(timeouts.control, "time_out_all", spy)
    (job_id,) = (await engine.add_jobs("busy", [job("a", timeout_ms=300)])).ids
    await engine.claim("busy", 1, "t", "w", 30_000)
    start = asyncio.get_running_loop().time()
    await timeouts.tick()
    await timeouts.tick()
    assert looked == [["busy", "dead-letter-queue", "idle"], ["busy"]]
    await asyncio.sleep(0.4)  # past the deadline: the next tick fails the run
    await timeouts.tick()
    assert looked[-1] == ["busy"] and (await engine.get_job("busy", job_id)).text("st") == "failed"
    await asyncio.sleep(max(0.0, start + 1.1 - asyncio.get_running_loop().time()))
    await timeouts.tick()
    # The idle queues' second scan; busy, without a deadline since its run failed, waits its turn.
    assert looked[-1] == ["dead-letter-queue", "idle"]


async def test_extend_keeps_lease_alive(engine: Engine) -> None:
    await register(engine)
    await engine.add_jobs("q", [job("a")])
    (j,) = (await engine.claim("q", 1, "t", "w", 200)).jobs
    for _ in range(3):
        await asyncio.sleep(0.1)
        ((code, _),) = await engine.extend("q", [(j.id, "t")], 200)
        assert code == 0
        assert (await engine.reap("q"))[:2] == (0, 0)
    assert (await engine.get_job("q", j.id)).text("st") == "active"


async def test_a_reap_stopped_by_a_broken_job_leaves_every_run_leased(engine: Engine) -> None:
    """A script stopped by an error midway keeps what it wrote (Redis has no rollback). The reaper takes runs
    out of the active set only once it has put them all back, so a broken job key stops the call with every
    run still leased, for the next call, rather than some of them in no list at all."""
    await register(engine)
    await engine.add_jobs("q", [job(f"j{i}") for i in range(3)])
    claimed = (await engine.claim("q", 3, "t", "w", 30_000)).jobs
    k = engine.keys("q")
    await engine.redis.zadd(k.active, {j.id: n for n, j in enumerate(claimed)})
    broken = claimed[1].id
    await engine.redis.delete(k.job(broken))
    await engine.redis.set(k.job(broken), "not a hash")
    with pytest.raises(Exception, match="WRONGTYPE"):
        await engine.reap("q")
    assert {m.decode() for m in await engine.redis.zrange(k.active, 0, -1)} == {j.id for j in claimed}
    # Mended (the broken one gone), the next call brings the others back.
    await engine.redis.delete(k.job(broken))
    assert (await engine.reap("q"))[:2] == (2, 0)
    again = (await engine.claim("q", 3, "t2", "w", 30_000)).jobs
    assert [j.id for j in again] == [claimed[0].id, claimed[2].id]
    assert all(j.stalled_count == 1 for j in again)  # the one the stopped call had put back counted once
    assert (await engine.metrics("q")).stalled_total == 2


async def test_timed_out_runs_leave_their_sets_once_and_only_after_their_pushes(engine: Engine) -> None:
    """The timeout scan fails each run past its deadline: its deadline goes with the run (one ZREM each, it
    was removed twice), the retries go back with one RPUSH per level and the runs leave the active set in one
    ZREM, after the pushes: a scan stopped by a broken job key leaves every run leased (the reaper brings the
    ones it had put back home when their leases expire), none in no list."""
    await register(engine)
    await engine.add_jobs("q", [job(f"j{i}", attempts=2, timeout_ms=60_000) for i in range(4)])
    claimed = (await engine.claim("q", 4, "t", "w", 30_000)).jobs
    k = engine.keys("q")
    # Past their deadlines now, in the order they were taken (the deadline set's scores).
    await engine.redis.zadd(k.deadlines, {j.id: n for n, j in enumerate(claimed[:2])})
    control = Control(engine)

    async def time_out() -> None:
        assert [code for _, code, _ in (await control.time_out("q")).outcomes] == [0, 0]

    ran = await commands_of(engine, time_out)
    assert (ran["zrem"], ran["rpush"]) == (3, 1), ran  # the two deadlines, the active set once; one push
    assert [j.id for j in (await engine.claim("q", 4, "t2", "w", 30_000)).jobs] == [j.id for j in claimed[:2]]

    # A scan stopped midway by a broken job key.
    await engine.redis.zadd(k.deadlines, {j.id: n for n, j in enumerate(claimed[2:])})
    await engine.redis.delete(k.job(claimed[3].id))
    await engine.redis.set(k.job(claimed[3].id), "not a hash")
    with pytest.raises(Exception, match="WRONGTYPE"):
        await control.time_out("q")
    leased = {m.decode() for m in await engine.redis.zrange(k.active, 0, -1)}
    assert {claimed[2].id, claimed[3].id} <= leased
    # Mended, the reaper brings back the run the stopped scan had put back once its lease is past.
    await engine.redis.delete(k.job(claimed[3].id))
    await engine.redis.zadd(k.active, {claimed[2].id: 0, claimed[3].id: 0})
    assert (await engine.reap("q"))[:2] == (1, 0)
    (back,) = (await engine.claim("q", 4, "t3", "w", 30_000)).jobs
    assert back.id == claimed[2].id and back.attempts_made == 1 and back.stalled_count == 0


async def test_retention_by_count_and_remove_on_complete(engine: Engine) -> None:
    await register(engine, completed_retention=types_pb2.KeepJobs(count=3))
    await engine.add_jobs("q", [job(str(i)) for i in range(5)] + [job("gone", keep_completed="r")])
    claimed = (await engine.claim("q", 10, "t", "w", 30_000)).jobs
    for j in claimed:
        await engine.complete("q", [(j.id, "t", b"1", "application/json")])
    assert (await engine.metrics("q")).completed == 3
    gone = next(j for j in claimed if j.name == "gone")
    with pytest.raises(JobNotFound):
        await engine.get_job("q", gone.id)
    # Trimmed jobs are deleted, not just unlisted.
    kept = [await engine.redis.exists(engine.keys("q").job(j.id)) for j in claimed if j.name != "gone"]
    assert sorted(kept) == [0, 0, 1, 1, 1]


async def test_the_queues_retention_of_failed_and_of_completed_jobs_are_read_apart(engine: Engine) -> None:
    """The queue's defaults for failed and for completed jobs sit side by side in one read of its settings
    (common.lua queue_settings): each kind trims by its own count, and a job's own policy still wins."""
    await register(
        engine,
        completed_retention=types_pb2.KeepJobs(count=3),
        failed_retention=types_pb2.KeepJobs(count=1),
        disable_dead_letter=True,
    )
    await engine.add_jobs("q", [job(f"c{i}", id=f"c{i}") for i in range(5)])
    await engine.add_jobs("q", [job(f"f{i}", id=f"f{i}") for i in range(4)])
    await engine.add_jobs("q", [job("own", id="own", keep_failed="0:3")])
    claimed = (await engine.claim("q", 20, "t", "w", 30_000)).jobs
    assert len(claimed) == 10
    fails = [(j.id, "t", "boom", "", True) for j in claimed if j.name.startswith("f")]
    assert {code for code, _ in await engine.fail("q", fails)} == {2}
    done = [(j.id, "t", b"1", "application/json") for j in claimed if j.name[0] == "c"]
    codes, _ = await engine.complete("q", done)
    assert codes == [0] * 5
    k = engine.keys("q")
    assert await engine.redis.zcard(k.completed) == 3  # the completed default
    assert await engine.redis.zcard(k.failed) == 1  # the failed default, not the completed one's 3
    # A job's own policy: its failure trims the failed jobs to its own count of 3.
    assert await engine.fail("q", [("own", "t", "boom", "", True)]) == [(2, -1)]
    assert await engine.redis.zcard(k.failed) == 2


async def test_every_job_failed_for_good_is_copied_before_retention_trims_it(engine: Engine) -> None:
    """A burst of failures in a queue that keeps 2 failed jobs (and jobs that keep 5 of their own): each
    failure trimmed the failed set at once, deleting jobs whose dead-letter copy was not written yet, so
    most copies were lost. Now the trim waits for the hand-off: every copy is written, then the set is
    trimmed by the jobs' own policies."""
    await register(engine, failed_retention=types_pb2.KeepJobs(count=2))
    await engine.add_jobs("q", [job(f"f{i}", {"i": i}, id=f"f{i}") for i in range(30)])
    await engine.add_jobs("q", [job(f"o{i}", {"i": i}, id=f"o{i}", keep_failed="0:5") for i in range(20)])
    claimed = (await engine.claim("q", 100, "t", "w", 30_000)).jobs
    assert len(claimed) == 50
    for j in claimed:  # one failure per call, as workers report them at a low rate
        assert await engine.fail("q", [(j.id, "t", "boom", "", True)]) == [(2, -1)]
    k = engine.keys("q")
    assert await engine.redis.llen(k.outbox) == 0
    for j in claimed:
        copy = await engine.get_job("dead-letter-queue", f"q:{j.id}")
        assert json.loads(copy.raw("data") or b"")["original_job_id"] == j.id
    assert await engine.redis.zcard(k.failed) == 5  # the last job's own policy (as when it trimmed at once)
    # Age-based retention leaves failed jobs alone while their hand-off is pending.
    await register(engine, "aged", failed_retention=types_pb2.KeepJobs(age=convert.ms_duration(1)))
    await engine.add_jobs("aged", [job("a", id="a")])
    (a,) = (await engine.claim("aged", 1, "t", "w", 30_000)).jobs
    await engine.redis.rpush(engine.keys("aged").outbox, "pending-elsewhere")  # a hand-off not done yet
    engine_hand_off, engine.hand_off_dead_letters = engine.hand_off_dead_letters, _no_hand_off
    try:
        await engine.fail("aged", [(a.id, "t", "boom", "", True)])
        await asyncio.sleep(0.01)
        assert await engine.apply_retention("aged") == 0
        assert (await engine.get_job("aged", "a")).text("st") == "failed"
    finally:
        engine.hand_off_dead_letters = engine_hand_off  # type: ignore[method-assign]


async def _no_hand_off(queue: str, limit: int = 100) -> int:
    return 0


async def test_retention_by_age(engine: Engine) -> None:
    await register(engine, completed_retention=types_pb2.KeepJobs(age=convert.ms_duration(100)))
    await engine.add_jobs("q", [job("a")])
    (j,) = (await engine.claim("q", 1, "t", "w", 30_000)).jobs
    await engine.complete("q", [(j.id, "t", b"1", "application/json")])
    await asyncio.sleep(0.15)
    assert await engine.apply_retention("q") == 1
    assert (await engine.metrics("q")).completed == 0


async def test_clean_by_state_and_grace(engine: Engine) -> None:
    await register(engine)
    await engine.add_jobs("q", [job(str(i)) for i in range(4)])
    for j in (await engine.claim("q", 4, "t", "w", 30_000)).jobs:
        await engine.complete("q", [(j.id, "t", b"1", "application/json")])
    await engine.add_jobs("q", [job("w1"), job("w2")])
    assert await engine.clean("q", "completed", 60_000, 0) == 0
    await asyncio.sleep(0.05)
    assert await engine.clean("q", "completed", 10, 3) == 3
    assert await engine.clean("q", "waiting", 10, 0) == 2
    m = await engine.metrics("q")
    assert (m.completed, m.waiting) == (1, 0)


async def test_remove_job_refuses_active(engine: Engine) -> None:
    await register(engine)
    await engine.add_jobs("q", [job("a"), job("b", id="keep")])
    (a,) = (await engine.claim("q", 1, "t", "w", 30_000)).jobs
    with pytest.raises(JobActive):
        await engine.remove_job("q", a.id)
    assert await engine.remove_job("q", "keep") == "waiting"
    with pytest.raises(JobNotFound):
        await engine.remove_job("q", "keep")


async def test_drain_and_obliterate(engine: Engine) -> None:
    await register(engine)
    await engine.add_jobs("q", [job(str(i)) for i in range(2500)] + [job("d", delay_ms=60_000)])
    assert await engine.drain("q", include_delayed=False) == 2500
    assert (await engine.metrics("q")).delayed == 1
    await engine.add_jobs("q", [job("a")])
    await engine.claim("q", 1, "t", "w", 30_000)
    with pytest.raises(JobActive):
        await engine.obliterate("q", force=False)
    assert await engine.obliterate("q", force=True) == 2
    with pytest.raises(QueueNotFound):
        await engine.metrics("q")
    assert "q" not in await engine.queue_names()
    assert await engine.redis.keys(f"{engine.prefix}:{{q}}:*") == []


async def test_list_jobs_pages(engine: Engine) -> None:
    await register(engine)
    await engine.add_jobs("q", [job(f"j{i}", priority=3) for i in range(5)])
    page, total = await engine.list_jobs("q", "waiting", 0, 2)
    assert total == 5 and [r.text("name") for r in page] == ["j0", "j1"]
    page, _ = await engine.list_jobs("q", "waiting", 4, 2)
    assert [r.text("name") for r in page] == ["j4"]


async def test_queue_default_metadata_applies_to_jobs_without_their_own(engine: Engine) -> None:
    default = types_pb2.JobMetadata(correlation_id="from-queue", tags=["q"])
    await register(engine, default_job_options=types_pb2.JobOptions(metadata=default))
    own = types_pb2.JobMetadata(correlation_id="from-job").SerializeToString()
    r = await engine.add_jobs("q", [job("a"), job("b", metadata=own)])
    a, b = [await engine.get_job("q", i) for i in r.ids]
    assert types_pb2.JobMetadata.FromString(a.raw("md") or b"").correlation_id == "from-queue"
    assert types_pb2.JobMetadata.FromString(b.raw("md") or b"").correlation_id == "from-job"


async def test_waiting_jobs_are_held_in_one_list_per_priority_level(engine: Engine) -> None:
    await register(engine)
    r = await engine.add_jobs("q", [job("a", priority=2), job("b"), job("c", priority=2)])
    k = engine.keys("q")
    lists = [[i.decode() for i in await engine.redis.lrange(level, 0, -1)] for level in k.waiting_levels]
    assert lists == [[], [r.ids[0], r.ids[2]], [r.ids[1]], [], []]
    assert not await engine.redis.exists(k.waiting)  # the base name holds no key of its own


async def test_a_handed_back_run_returns_to_the_head_of_its_level_in_order(engine: Engine) -> None:
    await register(engine)
    await engine.add_jobs("q", [job(n) for n in "abcde"])
    first = await engine.claim("q", 3, "t1", "w", 30_000)
    assert await engine.release("q", [(j.id, "t1") for j in first.jobs], False) == [1, 1, 1]
    again = await engine.claim("q", 10, "t2", "w", 30_000)
    assert [j.name for j in again.jobs] == ["a", "b", "c", "d", "e"]


async def test_waiting_pages_run_across_the_levels(engine: Engine) -> None:
    await register(engine)
    specs = [("n1", 3), ("c1", 1), ("b1", 5), ("n2", 3), ("c2", 1)]
    await engine.add_jobs("q", [job(n, priority=p) for n, p in specs])
    order = ["c1", "c2", "n1", "n2", "b1"]
    for offset, count in ((0, 5), (0, 2), (1, 3), (3, 10), (5, 2)):
        page, total = await engine.list_jobs("q", "waiting", offset, count)
        assert total == 5
        assert [j.text("name") for j in page] == order[offset : offset + count]


async def cut_between_adds() -> float:
    """Waits between two adds and returns the moment midway, 0.2 s from each: a clean whose grace reaches back
    to it (`grace_since`) takes the first add's jobs and not the second's, however long the adds and the clean
    take (a fixed 40 ms grace 50 ms after the first add also took the second's on a loaded machine)."""
    await asyncio.sleep(0.2)
    midway = time.time()
    await asyncio.sleep(0.2)
    return midway


def grace_since(moment: float) -> int:
    """A clean's grace (ms) that reaches back to `moment`."""
    return int((time.time() - moment) * 1000)


async def test_clean_removes_only_old_waiting_jobs_across_levels(engine: Engine) -> None:
    await register(engine)
    old = await engine.add_jobs("q", [job(f"old{i}", priority=1 + i % 5) for i in range(7)])
    midway = await cut_between_adds()
    await engine.add_jobs("q", [job(f"new{i}", priority=1 + i % 3) for i in range(4)])
    assert await engine.clean("q", "waiting", grace_since(midway), 0) == 7
    page, total = await engine.list_jobs("q", "waiting", 0, 100)
    assert total == 4 and sorted(j.text("name") for j in page) == ["new0", "new1", "new2", "new3"]
    assert not any([await engine.redis.exists(engine.keys("q").job(i)) for i in old.ids])
    assert await engine.clean("q", "waiting", 0, 3) == 3  # a limit stops it
    assert (await engine.metrics("q")).waiting == 1


async def test_start_up_moves_an_older_servers_waiting_set_into_the_lists(engine: Engine) -> None:
    await register(engine)
    k = engine.keys("q")
    old = await engine.add_jobs("q", [job(n, priority=p) for n, p in (("o1", 3), ("o2", 1), ("o3", 3))])
    # As an older server kept them: one sorted set, score = priority * 2^40 + FIFO seq.
    for level in k.waiting_levels:
        await engine.redis.delete(level)
    scores = {old.ids[0]: 3 * 2**40 + 1, old.ids[1]: 1 * 2**40 + 2, old.ids[2]: 3 * 2**40 + 3}
    await engine.redis.zadd(k.waiting, scores)
    await register(engine, "big")  # more than one call's chunk, in two levels
    big = QueueKeys(engine.prefix, "big")
    await engine.redis.zadd(big.waiting, {f"b{i}": (1 + i % 2) * 2**40 + i for i in range(ADMIN_CHUNK + 5)})
    assert await engine.migrate() == {"q": 3, "big": ADMIN_CHUNK + 5}
    assert [await engine.redis.llen(level) for level in big.waiting_levels[:2]] == [503, 502]
    assert (await engine.redis.lrange(big.waiting_levels[1], 0, 1)) == [b"b1", b"b3"]
    assert not await engine.redis.exists(k.waiting)
    assert await engine.migrate() == {}  # nothing left to move
    await engine.add_jobs("q", [job("new")])
    claimed = await engine.claim("q", 10, "t", "w", 30_000)
    assert [j.name for j in claimed.jobs] == ["o2", "o1", "o3", "new"]


def test_lua_and_python_share_the_priority_levels() -> None:
    lua = (resources.files("queue_manager_server.engine") / "lua" / "includes" / "common.lua").read_text()
    found = re.search(r"^local LEVELS = (\d+)$", lua, re.MULTILINE)
    assert found is not None and list(PRIORITY_LEVELS) == list(range(1, int(found.group(1)) + 1))
    named = [v for v in types_pb2.JobPriority.values() if v != types_pb2.JOB_PRIORITY_UNSPECIFIED]
    assert sorted(named) == list(PRIORITY_LEVELS)


async def test_clean_drain_and_obliterate_walk_every_level_past_a_chunk(engine: Engine) -> None:
    await register(engine)
    old = 2 * ADMIN_CHUNK + 300
    await engine.add_jobs("q", [job(f"old{i}", priority=1 + i % 5) for i in range(old)])
    midway = await cut_between_adds()
    await engine.add_jobs("q", [job(f"new{i}", priority=1 + i % 5) for i in range(ADMIN_CHUNK + 50)])
    assert await engine.clean("q", "waiting", grace_since(midway), 0) == old
    page, total = await engine.list_jobs("q", "waiting", 0, 10_000)
    assert total == ADMIN_CHUNK + 50 and all(j.text("name").startswith("new") for j in page)
    assert await engine.drain("q", include_delayed=False) == ADMIN_CHUNK + 50
    assert [await engine.redis.llen(level) for level in engine.keys("q").waiting_levels] == [0] * 5
    await engine.add_jobs("q", [job(str(i), priority=1 + i % 5) for i in range(ADMIN_CHUNK + 7)])
    assert await engine.obliterate("q", force=False) == ADMIN_CHUNK + 7
    assert await engine.redis.keys(f"{engine.prefix}:{{q}}:*") == []


async def test_cancel_and_remove_take_a_waiting_job_out_of_its_own_level(engine: Engine) -> None:
    await register(engine)
    r = await engine.add_jobs("q", [job(n, priority=p) for n, p in (("a", 1), ("b", 5), ("c", 1), ("d", 5))])
    a, b, c, d = r.ids
    assert await Control(engine).cancel_job("q", c, "") is False  # cancelled at once, not requested
    assert await engine.remove_job("q", b) == "waiting"
    lists = [
        [i.decode() for i in await engine.redis.lrange(level, 0, -1)]
        for level in engine.keys("q").waiting_levels
    ]
    assert lists == [[a], [], [], [], [d]]
    assert [j.id for j in (await engine.claim("q", 10, "t", "w", 30_000)).jobs] == [a, d]


async def test_an_add_publishes_its_wakeup_only_after_a_claim_found_the_queue_empty(engine: Engine) -> None:
    """An add's reply says whether it published the queue's `w` event: a new queue is hungry, a claim left
    short marks it so again, and the first add after either publishes and clears the mark."""
    await register(engine)

    async def published(*jobs: NewJob) -> bool:
        (result,) = await engine.add_jobs_many([("q", list(jobs))])
        assert not isinstance(result, Exception)
        return result.published

    assert await published(job("first"))  # a new queue: workers may have waited for it
    assert not await published(job("second"), job("third"))
    assert len((await engine.claim("q", 2, "t", "w", 30_000)).jobs) == 2  # full: the queue is not marked
    assert not await published(job("fourth"))
    assert len((await engine.claim("q", 5, "t", "w", 30_000)).jobs) == 2  # short: marked
    assert await published(job("fifth"))
    assert not await published(job("sixth"))
    delayed = await engine.add_jobs_many([("q", [job("later", delay_ms=60_000)])])
    assert (await engine.claim("q", 5, "t", "w", 30_000)).jobs[0].name == "fifth"  # short again
    assert not isinstance(delayed[0], Exception) and not delayed[0].published  # a delay is not a wake-up
    assert await published(job("seventh"))


async def test_claims_of_an_idle_queue_write_nothing_once_it_is_marked(engine: Engine) -> None:
    """An idle queue's re-checks (empty claims) write nothing after the first marked it hungry: nothing for
    the append-only file or the replicas."""
    await register(engine)
    assert (await engine.claim("q", 5, "t", "w", 30_000)).jobs == []

    async def changes() -> int:
        return int((await engine.redis.info("persistence"))["rdb_changes_since_last_save"])

    before = await changes()
    for _ in range(3):
        assert (await engine.claim("q", 5, "t", "w", 30_000)).jobs == []
    assert await changes() == before


# One option set at a time (NewJob field, value) and the job-hash field it must be stored as.
_ONE_OPTION = [
    ({"content_type": "text/plain"}, "ct", "text/plain"),
    ({"priority": 1}, "pri", "1"),
    ({"delay_ms": 60_000}, "st", "delayed"),
    ({"run_at_ms": 4_000_000_000_000}, "run", "4000000000000"),
    ({"attempts": 4}, "att", "4"),
    ({"backoff_type": 2, "backoff_delay_ms": 50}, "bd", "50"),
    ({"timeout_ms": 900}, "to", "900"),
    ({"max_stalled": 2}, "ms", "2"),
    ({"keep_completed": "r"}, "kc", "r"),
    ({"keep_failed": "60000:5"}, "kf", "60000:5"),
    ({"dedup_key": "k1"}, "ddk", "k1"),
    ({"dedup_key": "k2", "dedup_mode": 2}, "ddm", "2"),
    ({"expire_after_ms": 60_000}, "exa", "60000"),
    ({"group": "tenant-1"}, "grp", "tenant-1"),
    ({"lifo": True}, "lf", "1"),
]


@pytest.mark.parametrize(("options", "stored", "value"), _ONE_OPTION, ids=[o[1] for o in _ONE_OPTION])
async def test_a_job_with_one_option_sends_the_whole_header_and_stores_it(
    engine: Engine, options: dict[str, object], stored: str, value: str
) -> None:
    await register(engine)
    j = job("one", {"i": 1}, **options)
    assert j.argv()[0].count("\0") == 22  # every header field, not the short form
    r = await engine.add_jobs("q", [j], fetch=True)
    assert (await engine.get_job("q", r.ids[0])).text(stored) == value
    assert r.records[0].fields == (await engine.get_job("q", r.ids[0])).fields  # the add's answer


async def test_a_job_with_every_option_at_its_default_sends_id_and_name_and_takes_the_queue_defaults(
    engine: Engine,
) -> None:
    await register(engine, default_job_options=types_pb2.JobOptions(attempts=3, priority=2))
    plain, ready = job("plain", {"i": 1}), job("ready", {"i": 2})
    assert plain.argv()[0] == f"{plain.id}\0plain\0"
    r = await engine.add_jobs("q", [plain, ready], fetch=True)
    stored = await engine.get_job("q", r.ids[0])
    assert (stored.text("name"), stored.int("att"), stored.int("pri")) == ("plain", 3, 2)
    assert stored.raw("data") == b'{"i": 1}' and stored.text("ct") == ""  # JSON: no 'ct' field
    assert r.records[0].fields == stored.fields
    claimed = await engine.claim("q", 10, "tok", "w", 30_000)
    assert [c.name for c in claimed.jobs] == ["plain", "ready"]


async def test_a_plain_job_is_answered_from_the_reply_time_without_its_fields(engine: Engine) -> None:
    """add_jobs.lua answers a job holding its name and time only with 1; the engine rebuilds its fields. The
    scripts' plain mark (common.lua PLAIN) is in the hash but in no record: not the answer, GetJob's, a page's
    or a job view's."""
    await register(engine)
    r = await engine.add_jobs("q", [job("a", {"i": 1}), job("b", {"i": 2}, priority=1)], fetch=True)
    assert await engine.redis.hget(engine.keys("q").job(r.ids[0]), "p") == b"1"
    page, _ = await engine.list_jobs("q", "waiting", 0, 10)
    paged = {rec.id: rec.fields for rec in page}
    for answered, job_id in zip(r.records, r.ids, strict=True):
        assert answered.fields == (await engine.get_job("q", job_id)).fields == paged[job_id]
        assert (await JobControl(engine).job_view("q", job_id)).record.fields == answered.fields
    assert r.records[0].fields.keys() == {"name", "ts", "data"}
    assert r.records[0].int("ts") == r.now_ms


async def test_plain_jobs_and_jobs_with_options_of_one_call_keep_their_order_and_answers(
    engine: Engine,
) -> None:
    """add_jobs.lua stores a plain job (short header) without insert_job: it shares its level with the jobs
    that take the general path in add order, a taken id is answered as the holder, and each answer is the
    job as stored."""
    await register(engine)
    await engine.add_jobs("q", [job("held", {"v": 0}, id="taken")])
    jobs = [
        job("p1"),
        job("n1", priority=3),  # the default level, written by insert_job
        job("again", {"v": 1}, id="taken"),
        job("p2", id="mine"),
        job("n2", attempts=2),
        job("p3"),
    ]
    r = await engine.add_jobs("q", jobs, fetch=True)
    assert r.created == [True, True, False, True, True, True]
    assert r.ids[2:4] == ["taken", "mine"]
    for answered, job_id in zip(r.records, r.ids, strict=True):
        assert answered.fields == (await engine.get_job("q", job_id)).fields
    assert r.records[2].raw("name") == b"held"
    claimed = await engine.claim("q", 100, "tok", "w", 30_000)
    assert [j.name for j in claimed.jobs] == ["held", "p1", "n1", "p2", "n2", "p3"]


async def test_the_three_ways_a_plain_job_is_stored_write_the_same_job(engine: Engine) -> None:
    """A plain job is written by add_jobs.lua's own loop, by insert_job's plain path (a staged bulk write,
    publish_staged.lua) and, sent with its default priority spelled out, by insert_job's general path: the
    same hash (but its time), marked plain, in the same waiting list."""
    await register(engine)
    inline = await engine.add_jobs("q", [job("p", {"v": 1}, id="inline")])
    staged = [job("p", {"v": 1}, id=f"staged{i}") for i in range(ADD_CHUNK + 1)]  # over a chunk: staged
    await BulkStreams(engine).write([("q", staged)])
    general = await engine.add_jobs("q", [job("p", {"v": 1}, id="general", priority=STORED_PRIORITY)])
    assert inline.created == general.created == [True]
    k = engine.keys("q")
    stored = [await engine.redis.hgetall(k.job(i)) for i in ("inline", "staged0", "general")]
    for fields in stored:
        assert fields.pop(b"ts")
    assert stored[0] == stored[1] == stored[2] == {b"name": b"p", b"data": b'{"v": 1}', b"p": b"1"}
    level = await engine.redis.lrange(k.waiting_levels[STORED_PRIORITY - 1], 0, -1)
    assert [level[0], level[1], level[-1]] == [b"inline", b"staged0", b"general"]


async def test_a_claimed_number_stored_as_a_float_is_read(engine: Engine) -> None:
    """The claim reply's numbers are read with int(); one a writer stored in float form (as Lua's tostring
    writes large numbers) falls back to _i for its job."""
    await register(engine)
    r = await engine.add_jobs("q", [job("a"), job("b")])
    await engine.redis.hset(engine.keys("q").job(r.ids[0]), "ts", "1.7333e+12")
    claimed = await engine.claim("q", 10, "tok", "w", 30_000)
    assert [c.name for c in claimed.jobs] == ["a", "b"]
    assert claimed.jobs[0].created_ms == 1_733_300_000_000
    assert claimed.jobs[1].created_ms > 1_733_300_000_000


def test_lua_and_python_share_the_defaults_a_job_hash_leaves_out() -> None:
    lua = (resources.files("queue_manager_server.engine") / "lua" / "includes" / "common.lua").read_text()
    pri = re.search(r"^local DEFAULT_PRI = (\d+)$", lua, re.MULTILINE)
    att = re.search(r"^local DEFAULT_ATT = (\d+)$", lua, re.MULTILINE)
    assert pri is not None and int(pri.group(1)) == STORED_PRIORITY
    assert att is not None and int(att.group(1)) == STORED_ATTEMPTS


async def test_a_job_stored_with_the_defaults_is_claimed_from_a_short_record_with_the_same_fields(
    engine: Engine,
) -> None:
    """claim.lua answers a job holding no field but its name, data and time with 4 fields, and one with
    options stored with those plus a (code, value) pair per stored field; the engine fills in the rest at
    their defaults."""

    async def add(queue: str) -> list[str]:
        await register(engine, queue)
        jobs = [job("plain", {"i": 1}), job("twin", {"i": 1}), job("p1", priority=1)]
        r = await engine.add_jobs(queue, jobs)
        # The twin holds one field more, at its default (written as every writer of such a field writes it,
        # with the job marked not plain): it is answered with the whole record.
        await engine.redis.hset(engine.keys(queue).job(r.ids[1]), mapping={"atm": "0", "p": "0"})
        return r.ids

    await add("raw")
    k = engine.keys("raw")
    reply = await engine.scripts.run(
        "claim", [k.meta, k.waiting, k.delayed, k.active, k.limiter], [k.job_prefix, 3, "t", "w", 30_000, 10]
    )
    sizes, i = [], 7  # the header: code, now, next delayed, retry-after, bucket fill, hand-offs, unmatched
    while i < len(reply):
        sizes.append(reply[i])
        i += 1 + reply[i]
    assert sizes == [6, 4, 6]  # priority 1 first, then the plain job and its twin (each one field stored)

    ids = await add("q")
    c = await engine.claim("q", 3, "t", "w", 30_000)
    _, plain, twin = c.jobs
    created = (await engine.get_job("q", ids[0])).int("ts")
    assert plain == ClaimedJob(
        ids[0], "plain", b'{"i": 1}', "application/json", STORED_PRIORITY, STORED_ATTEMPTS, 0, 1, 0, created,
        b"", 0, c.now_ms + 30_000, b"",
    )  # fmt: skip
    assert dataclasses.replace(twin, id=ids[0], name="plain", created_ms=created) == plain


async def test_a_plain_job_of_another_level_is_claimed_with_that_levels_priority(engine: Engine) -> None:
    """A job whose only option a claim reads is its priority is marked plain (common.lua PLAIN): the claim
    reads its 4 fields and takes the priority from the level it came from; a changed priority marks the job
    not plain, so its claim reads the field (the change moved it, and it is right either way)."""
    await register(engine)
    k = engine.keys("q")
    jobs = [job("low", priority=5), job("high", priority=1), job("mid"), job("moved", priority=5)]
    ids = (await engine.add_jobs("q", jobs)).ids
    assert [await engine.redis.hget(k.job(i), "p") for i in ids] == [b"1"] * 4
    await JobControl(engine).change_priority("q", ids[3], 2)
    assert await engine.redis.hget(k.job(ids[3]), "p") == b"0"
    claimed = await engine.claim("q", 10, "t", "w", 30_000)
    assert [(c.name, c.priority) for c in claimed.jobs] == [("high", 1), ("moved", 2), ("mid", 3), ("low", 5)]


async def test_a_claim_record_carries_every_stored_field_and_defaults_the_rest(engine: Engine) -> None:
    """Each field a record carries only when stored (includes/claim.lua RECORD_CODES) comes back as stored,
    alone or with all the others, read from the job hash or, for a job its own add's claim takes, from what
    the add wrote; a job marked not plain (as every writer of such a field marks it: common.lua PLAIN) and one
    an older server wrote (no mark) alike."""
    await register(engine)
    k = engine.keys("q")
    stored = {
        "ct": ("content_type", b"text/plain", "text/plain"),
        "pri": ("priority", b"1", 1),
        "att": ("max_attempts", b"4", 4),
        "atm": ("attempts_made", b"2", 2),
        "stc": ("stalled_count", b"1", 1),
        "md": ("metadata", b"\x01meta", b"\x01meta"),
        "to": ("timeout_ms", b"5000", 5000),
        "par": ("flow", b"\x02flow", b"\x02flow"),
    }
    cases = [{name} for name in stored] + [set(stored)]
    for n, names in enumerate(cases):
        (job_id,) = (await engine.add_jobs("q", [job(f"j{n}", {"n": n})])).ids
        await engine.redis.hset(k.job(job_id), mapping={name: stored[name][1] for name in names})
        if n % 2:
            await engine.redis.hset(k.job(job_id), "p", "0")
        else:
            await engine.redis.hdel(k.job(job_id), "p")
        (c,) = (await engine.claim("q", 1, f"t{n}", "w", 30_000)).jobs
        expected = {attr: value for name, (attr, _, value) in stored.items() if name in names}
        atm, stc = expected.get("attempts_made", 0), expected.get("stalled_count", 0)
        assert c == ClaimedJob(
            job_id, f"j{n}", b'{"n": %d}' % n, expected.get("content_type", "application/json"),
            expected.get("priority", STORED_PRIORITY), expected.get("max_attempts", STORED_ATTEMPTS), atm,
            atm + stc + 1, stc, c.created_ms, expected.get("metadata", b""), expected.get("timeout_ms", 0),
            c.lease_expiry_ms, expected.get("flow", b""),
        ), names  # fmt: skip


async def test_a_job_its_own_adds_claim_takes_has_its_options_in_the_record(engine: Engine) -> None:
    """The claim folded into an add reads a job it inserted from what the insert wrote (numbers as numbers),
    not from the job hash; the record is the same."""
    await register(engine)
    options = {"content_type": "text/plain", "priority": 2, "attempts": 5, "timeout_ms": 9000}
    new = job("opts", {"i": 1}, metadata=b"\x01md", **options)
    (added,) = await engine.add_jobs_many([("q", [new])], claims=[ClaimRequest(1, "t", "w", 30_000)])
    assert isinstance(added, AddResult) and added.claim is not None
    (c,) = added.claim.jobs
    assert (c.content_type, c.priority, c.max_attempts, c.timeout_ms, c.metadata) == (
        "text/plain",
        2,
        5,
        9000,
        b"\x01md",
    )
    assert (c.attempts_made, c.attempts_started, c.stalled_count, c.flow) == (0, 1, 0, b"")


async def test_a_runs_worker_and_start_are_one_field_and_an_older_servers_two_are_read(
    engine: Engine,
) -> None:
    """claim.lua writes the worker id and the run's start in 'wid' (one job-hash entry, not two)."""
    await register(engine)
    (job_id,) = (await engine.add_jobs("q", [job("x")])).ids
    claimed = await engine.claim("q", 1, "t1", "a worker 7", 30_000)
    rec = await engine.get_job("q", job_id)
    assert "pts" not in rec.fields
    assert convert.worker_and_start(rec) == ("a worker 7", claimed.now_ms)
    view = convert.job_out(rec)
    assert (view.worker_id, view.process_time.ToMilliseconds()) == ("a worker 7", claimed.now_ms)
    # A job an older server leased: the worker id alone in 'wid', the start in 'pts'.
    await engine.redis.hset(engine.keys("q").job(job_id), mapping={"wid": "w 12", "pts": "1700000000000"})
    rec = await engine.get_job("q", job_id)
    assert convert.worker_and_start(rec) == ("w 12", 1_700_000_000_000)
    assert convert.job_out(rec).process_time.ToMilliseconds() == 1_700_000_000_000
    # A job never started has neither.
    (waiting,) = (await engine.add_jobs("q", [job("y")])).ids
    assert convert.worker_and_start(await engine.get_job("q", waiting)) == ("", 0)
    assert not convert.job_out(await engine.get_job("q", waiting)).HasField("process_time")


async def test_a_runs_lease_fields_stay_after_it_ends_and_count_only_while_the_job_is_active(
    engine: Engine,
) -> None:
    """No script deletes a lease's token and worker id when a run ends (common.lua lease_check): the job's
    state fences every report, and the job's view names a worker only while one holds it."""
    await register(engine)
    (job_id,) = (await engine.add_jobs("q", [job("x", attempts=2)])).ids

    async def view() -> types_pb2.Job:
        return convert.job_out(await engine.get_job("q", job_id))

    await engine.claim("q", 1, "t1", "w1", 30_000)
    assert (await view()).worker_id == "w1"
    assert (await engine.fail("q", [(job_id, "t1", "boom", "", False)]))[0][0] == 0  # retried at once
    rec = await engine.get_job("q", job_id)
    assert (rec.state, rec.text("tok"), convert.worker_and_start(rec)[0]) == ("waiting", "t1", "w1")  # kept
    assert (await view()).worker_id == ""
    assert (await engine.complete("q", [(job_id, "t1", b"1", "application/json")]))[0] == [-3]
    assert await engine.fail("q", [(job_id, "t1", "late", "", False)]) == [(-3, -1)]
    assert await engine.extend("q", [(job_id, "t1")], 1000) == [(-3, -1)]

    await engine.claim("q", 1, "t2", "w2", 30_000)
    assert (await view()).worker_id == "w2"
    assert (await engine.complete("q", [(job_id, "t1", b"1", "application/json")]))[0] == [-3]
    assert (await engine.complete("q", [(job_id, "t2", b"2", "application/json")]))[0] == [0]
    done = await view()
    assert (done.state, done.worker_id, done.attempts_made) == (types_pb2.JOB_STATE_COMPLETED, "", 2)
    assert (await engine.complete("q", [(job_id, "t2", b"3", "application/json")]))[0] == [-3]
    assert (await engine.get_job("q", job_id)).raw("res") == b"2"


async def test_a_claim_folded_into_an_add_leases_what_is_waiting_in_the_same_call(engine: Engine) -> None:
    """add_jobs_many with a ClaimRequest runs the claim once the jobs are in, in the same script call: the
    jobs already waiting come first, the lease is the request's, and a paused queue or an unknown one answers
    as a claim of its own would (code 1; the queue's error, no claim)."""
    await register(engine)
    await register(engine, "other")
    (first,) = (await engine.add_jobs("q", [job("first")])).ids
    request = ClaimRequest(take=2, token="tok-f", worker_id="w-f", lease_ms=30_000)
    groups = [("q", [job("second"), job("third")]), ("other", [job("alone")])]
    (here, there) = await engine.add_jobs_many(groups, fetch=True, claims=[request, None])
    assert isinstance(here, AddResult) and isinstance(there, AddResult) and there.claim is None
    assert here.claim is not None and here.claim.code == 0
    assert [j.name for j in here.claim.jobs] == ["first", "second"]
    assert here.claim.jobs[0].id == first and here.claim.jobs[1].id == here.ids[0]
    assert all(j.lease_expiry_ms == here.claim.now_ms + 30_000 for j in here.claim.jobs)
    # The leases are the request's: the token completes them, and the third job still waits.
    codes, _ = await engine.complete("q", [(first, "tok-f", b"null", "application/json")])
    assert codes == [0]
    assert [j.name for j in (await engine.claim("q", 5, "t", "w", 30_000)).jobs] == ["third"]
    await engine.set_paused("q", True)
    (paused,) = await engine.add_jobs_many([("q", [job("held")])], claims=[request])
    assert isinstance(paused, AddResult) and paused.claim is not None
    assert paused.claim.code == 1 and paused.claim.jobs == []
    (missing,) = await engine.add_jobs_many([("nope", [job("x")])], claims=[request])
    assert isinstance(missing, QueueNotFound)
