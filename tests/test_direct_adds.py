"""The engine's held connections (engine/direct.py): the coalesced adds', the claims' and the run outcomes',
against a real Valkey: what they do when Redis lost its scripts, when the connection is killed, and when a
second batch comes while busy."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from queue_manager_server.engine import Engine
from queue_manager_server.engine.direct import DirectConnection
from queue_manager_server.engine.engine import FAILED, HELD_CONNECTIONS
from queue_manager_server.engine.records import NewJob


def jobs(prefix: str, n: int) -> list[NewJob]:
    return [NewJob(id=f"{prefix}-{i}", name="j", data=b'{"i":%d}' % i) for i in range(n)]


async def test_adds_go_out_on_the_engines_own_connection(engine: Engine) -> None:
    await engine.register_queue("q", {})
    r = await engine.add_jobs("q", jobs("a", 3), fetch=True)
    assert r.created == [True, True, True]
    conn = engine.direct._conn
    assert conn is not None and conn.is_connected
    assert [rec.text("name") for rec in r.records] == ["j", "j", "j"]


async def test_adds_after_redis_lost_its_scripts_load_them_and_are_written_once(
    engine: Engine, redis: Redis
) -> None:
    await engine.register_queue("q", {})
    await engine.add_jobs("q", jobs("before", 1))
    await redis.script_flush()
    r = await engine.add_jobs("q", jobs("after", 5), fetch=True)
    # Refused NOSCRIPT, then sent again once the scripts were loaded: each job created by this call.
    assert r.created == [True] * 5
    assert await redis.llen(engine.keys("q").waiting_levels[2]) == 6
    # The same while the connection is busy: the second batch goes as a pipeline, which loads them too.
    await redis.script_flush()
    both = await asyncio.gather(*(engine.add_jobs("q", jobs(f"busy{k}", 3), fetch=True) for k in range(2)))
    assert [b.created for b in both] == [[True] * 3, [True] * 3]


async def test_a_killed_connection_falls_back_to_the_pipeline_and_reconnects(
    engine: Engine, redis: Redis
) -> None:
    await engine.register_queue("q", {})
    await engine.add_jobs("q", jobs("first", 1))
    conn = engine.direct._conn
    assert conn is not None
    own_id = int(await redis.execute_command("CLIENT", "ID"))
    # Every other client's connection goes, the engine's own included.
    await redis.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    assert own_id == int(await redis.execute_command("CLIENT", "ID"))
    r = await engine.add_jobs("q", jobs("second", 2), fetch=True)
    assert r.created == [True, True]
    r = await engine.add_jobs("q", jobs("third", 2), fetch=True)
    assert r.created == [True, True]
    assert engine.direct._conn is conn and conn.is_connected  # the same connection, connected again
    assert await redis.llen(engine.keys("q").waiting_levels[2]) == 5


async def test_a_batch_that_comes_while_the_connection_is_busy_goes_as_a_pipeline(engine: Engine) -> None:
    await engine.register_queue("q", {})
    results = await asyncio.gather(*(engine.add_jobs("q", jobs(f"b{k}", 50), fetch=True) for k in range(4)))
    assert [r.created for r in results] == [[True] * 50] * 4
    assert sorted(r.ids[0] for r in results) == ["b0-0", "b1-0", "b2-0", "b3-0"]


async def test_claims_go_out_on_a_held_connection_and_survive_lost_scripts(
    engine: Engine, redis: Redis
) -> None:
    """Claims have a held connection of their own too (one job per claim at a low rate: its round trip is on
    the way from add to start); after Redis lost its scripts a claim loads them, and a claim made while
    another is under way goes the usual way."""
    await engine.register_queue("q", {})
    await engine.add_jobs("q", jobs("a", 6))
    first = await engine.claim("q", 1, "t1", "w", 30_000)
    assert [j.id for j in first.jobs] == ["a-0"]
    conn = engine.claims._conn
    assert conn is not None and conn.is_connected and conn is not engine.direct._conn
    await redis.script_flush()
    again = await engine.claim("q", 2, "t2", "w", 30_000)
    assert [j.id for j in again.jobs] == ["a-1", "a-2"]
    both = await asyncio.gather(*(engine.claim("q", 1, f"t{k}", "w", 30_000) for k in (3, 4)))
    assert sorted(j.id for r in both for j in r.jobs) == ["a-3", "a-4"]
    assert engine.claims._conn is conn


async def test_outcomes_go_out_on_a_held_connection_and_survive_lost_scripts(
    engine: Engine, redis: Redis
) -> None:
    """Completions and failures have a held connection of their own (at a low rate each job is its own
    completion); after Redis lost its scripts they load them, and the engine holds no connection but the
    ones the server's pool floor counts (config.py MIN_REDIS_CONNECTIONS)."""
    await engine.register_queue("q", {})
    for round_ in range(2):  # the second round: the held connection in use before the scripts are lost
        await redis.script_flush()
        await engine.add_jobs("q", jobs(f"r{round_}", 2))
        token = f"t{round_}"
        done, failed = (await engine.claim("q", 2, token, "w", 30_000)).jobs
        codes, _ = await engine.complete("q", [(done.id, token, b'"ok"', "application/json")])
        assert codes == [0], round_
        assert await engine.fail("q", [(failed.id, token, "on purpose", "", True)]) == [(FAILED, -1)], round_
        assert await redis.hget(engine.keys("q").job_prefix + done.id, "st") == b"completed"
    conn = engine.outcomes._conn
    assert conn is not None and conn.is_connected
    held = [c._conn for c in vars(engine).values() if isinstance(c, DirectConnection)]
    assert len(held) == HELD_CONNECTIONS and len({id(c) for c in held}) == HELD_CONNECTIONS
