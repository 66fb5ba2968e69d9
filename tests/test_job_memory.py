"""What a job hash stores (engine/records.py): defaults left out, and every reader still seeing them."""

from __future__ import annotations

import json

import pytest
from redis.asyncio import Redis

from queue_manager_server.engine import Engine
from queue_manager_server.engine.job_control import JobControl
from queue_manager_server.engine.records import NewJob
from queue_manager_server.errors import WrongState
from tests.test_engine import register


def job(name: str, **kw: object) -> NewJob:
    return NewJob(id="", name=name, data=json.dumps({"i": 1}).encode(), **kw)  # type: ignore[arg-type]


async def fields(redis: Redis, engine: Engine, job_id: str) -> set[str]:
    return {f.decode() for f in await redis.hkeys(engine.keys("q").job(job_id))}


async def test_a_waiting_job_with_default_options_stores_four_fields(engine: Engine, redis: Redis) -> None:
    await register(engine)
    added = await engine.add_jobs("q", [job("plain"), job("urgent", priority=1, attempts=3)])
    plain, urgent = added.ids
    # The state (waiting), the priority (3), max attempts (1) and JSON content type are left out; 'x' says
    # whether a claim and a completion must read more than every job has.
    assert await fields(redis, engine, plain) == {"name", "data", "ts", "x"}
    assert await fields(redis, engine, urgent) == {"name", "data", "ts", "pri", "att", "x"}
    assert [await redis.hget(engine.keys("q").job(i), "x") for i in (plain, urgent)] == [b"0", b"0"]
    rec = await engine.get_job("q", plain)
    assert (rec.state, rec.int("pri", 3), rec.int("att", 1)) == ("waiting", 3, 1)
    assert await engine.job_states([("q", plain), ("q", "no-such-job")]) == ["waiting", ""]
    first, second = (await engine.claim("q", 2, "t", "w", 30_000)).jobs
    assert (first.id, first.priority, first.max_attempts) == (urgent, 1, 3)
    assert (second.id, second.priority, second.max_attempts) == (plain, 3, 1)
    assert second.content_type == "application/json"


async def test_a_lost_run_goes_back_to_its_place_a_retry_to_the_back(engine: Engine, redis: Redis) -> None:
    await register(engine)
    a, b, c = (await engine.add_jobs("q", [job("a"), job("b"), job("c")])).ids
    (claimed,) = (await engine.claim("q", 1, "t", "w", 30_000)).jobs
    assert claimed.id == a and "seq" not in await fields(redis, engine, a)  # its place: the head of its level
    assert await engine.release("q", [(a, "t")], stalled=True) == [1]
    assert [j.id for j in (await engine.claim("q", 3, "t2", "w", 30_000)).jobs] == [a, b, c]
    # A failed run with attempts left (and no backoff) goes to the back of its level.
    await register(engine, "r")
    x, y = (await engine.add_jobs("r", [job("x", attempts=2), job("y")])).ids
    (run,) = (await engine.claim("r", 1, "t", "w", 30_000)).jobs
    assert run.id == x
    assert (await engine.fail("r", [(x, "t", "boom", "", False)]))[0][0] == 0
    assert [j.id for j in (await engine.claim("r", 2, "t2", "w", 30_000)).jobs] == [y, x]


async def test_change_priority_keeps_the_age_and_stores_a_non_default(engine: Engine, redis: Redis) -> None:
    await register(engine)
    early, late = (await engine.add_jobs("q", [job("early", priority=5), job("late")])).ids
    control = JobControl(engine)
    await control.change_priority("q", early, 3)
    assert "pri" not in await fields(redis, engine, early)
    assert [j.id for j in (await engine.claim("q", 2, "t", "w", 30_000)).jobs] == [early, late]
    with pytest.raises(WrongState):  # active now: refused
        await control.change_priority("q", late, 2)
    assert "pri" not in await fields(redis, engine, late)


_CLAIM = {"content_type": "text/plain", "priority": 2, "attempts": 3, "metadata": b"md"}
_FINISH = {"keep_completed": "r", "dedup_key": "d1"}


@pytest.mark.parametrize(
    ("options", "mark"),
    [
        ({"priority": 2, "attempts": 3, "keep_completed": "r"}, "0"),  # what every claim and completion read
        (_CLAIM, "1"),
        (_FINISH, "2"),
        ({**_CLAIM, **_FINISH, "timeout_ms": 60_000}, "3"),
        ({**_CLAIM, **_FINISH, "timeout_ms": 60_000}, None),
    ],
    ids=["read-always", "claim-fields", "finish-fields", "both", "added-by-an-older-server"],
)
async def test_a_job_is_claimed_and_completed_with_every_field_it_holds(
    engine: Engine, redis: Redis, options: dict[str, object], mark: str | None
) -> None:
    await register(engine)
    (job_id,) = (await engine.add_jobs("q", [job("opts", **options)])).ids
    k = engine.keys("q")
    if mark is None:  # a server from before 'x' wrote none: its jobs are read whole
        await redis.hdel(k.job(job_id), "x")
    else:
        assert await redis.hget(k.job(job_id), "x") == mark.encode()
    (claimed,) = (await engine.claim("q", 1, "t", "w", 30_000)).jobs
    expected = NewJob(id="", name="", data=b"", **options)  # type: ignore[arg-type]
    assert (claimed.content_type, claimed.max_attempts, claimed.metadata, claimed.timeout_ms) == (
        expected.content_type,
        expected.attempts or 1,
        expected.metadata,
        expected.timeout_ms,
    )
    assert claimed.priority == (expected.priority or 3)
    assert (await redis.zscore(k.deadlines, job_id) is not None) == bool(expected.timeout_ms)
    assert await engine.complete("q", [(job_id, "t", b"", "")]) == ([0], 0)
    # The completion read the timeout (its deadline gone), the keep policy ("r": removed) and the dedup key
    # (released) where the job has them.
    assert await redis.zscore(k.deadlines, job_id) is None
    assert await redis.exists(k.job(job_id)) == (0 if expected.keep_completed == "r" else 1)
    assert await redis.exists(k.dedup("d1")) == 0


async def test_a_priority_set_after_the_add_is_claimed_with_it(engine: Engine, redis: Redis) -> None:
    await register(engine)
    (job_id,) = (await engine.add_jobs("q", [job("later")])).ids
    await JobControl(engine).change_priority("q", job_id, 1)
    # Still read as plain ('x' 0): a claim takes the priority from the level the job waited in.
    assert await redis.hget(engine.keys("q").job(job_id), "x") == b"0"
    (claimed,) = (await engine.claim("q", 1, "t", "w", 30_000)).jobs
    assert claimed.priority == 1
