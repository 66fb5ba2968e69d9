"""Redriving dead-letter copies at the engine (engine/redrive.py): what becomes of the original in each state,
the filters, and the steps' idempotence when a server dies half-way (the steps run one by one here, as a
server that died between them leaves them). A real Valkey; docs/durability.md describes the behaviour."""

from __future__ import annotations

import json

from queue_manager_server.engine import Engine
from queue_manager_server.engine.records import NewJob
from queue_manager_server.engine.redrive import REPLAY_AFTER_MS, DeadLetters
from tests.test_engine import register

DLQ = "dead-letter-queue"


async def failed_job(engine: Engine, queue: str, data: object, name: str = "job", **kw: object) -> str:
    """A job of `queue` run once and failed for good, its copy in the dead-letter queue."""
    added = await engine.add_jobs(queue, [NewJob(id="", name=name, data=json.dumps(data).encode(), **kw)])  # type: ignore[arg-type]
    (job_id,) = added.ids
    claimed = await engine.claim(queue, 1, "tok", "w", 30_000)
    assert [j.id for j in claimed.jobs] == [job_id]
    assert await engine.fail(queue, [(job_id, "tok", "boom", "", True)]) == [(2, -1)]
    return job_id


async def copy_body(engine: Engine, copy_id: str) -> dict[str, object]:
    return json.loads((await engine.get_job(DLQ, copy_id)).raw("data") or b"")  # type: ignore[no-any-return]


async def test_a_failed_original_runs_again_and_its_copy_leaves(engine: Engine) -> None:
    await register(engine, "orders")
    job_id = await failed_job(engine, "orders", {"n": 1})
    dl = DeadLetters(engine)
    result = await dl.redrive(DLQ)
    assert (result.count, result.queues["orders"].retried) == (1, 1)
    job = await engine.get_job("orders", job_id)
    assert (
        job.text("st") == "waiting" and job.int("atm") == 0 and json.loads(job.raw("data") or b"") == {"n": 1}
    )
    assert not await engine.redis.exists(engine.keys(DLQ).job(f"orders:{job_id}"))
    assert await engine.redis.zcard(engine.keys(DLQ).redrive) == 0
    assert await engine.redis.zcard(engine.keys("orders").redriven) == 0
    assert (await engine.metrics(DLQ)).waiting == 0
    claimed = await engine.claim("orders", 5, "t2", "w", 30_000)
    assert [j.id for j in claimed.jobs] == [job_id]


async def test_replace_data_takes_the_edited_copy(engine: Engine) -> None:
    await register(engine, "orders")
    job_id = await failed_job(engine, "orders", {"n": 1})
    copy_id = f"orders:{job_id}"
    body = await copy_body(engine, copy_id)
    body["original_data"] = {"n": 2, "fixed": True}
    from queue_manager_server.engine.job_control import JobControl

    await JobControl(engine).update_job_data(DLQ, copy_id, json.dumps(body).encode(), "application/json")
    dl = DeadLetters(engine)
    kept = await failed_job(engine, "orders", {"n": 3})
    # Without replace_data the original keeps the data it failed with.
    assert (await dl.redrive(DLQ, job_ids=[f"orders:{kept}"])).count == 1
    assert json.loads((await engine.get_job("orders", kept)).raw("data") or b"") == {"n": 3}
    result = await dl.redrive(DLQ, job_ids=[copy_id], replace=True)
    assert result.queues["orders"].retried == 1 and not result.skipped
    assert json.loads((await engine.get_job("orders", job_id)).raw("data") or b"") == {"n": 2, "fixed": True}


async def test_a_gone_original_is_added_anew_and_a_rerun_one_is_left(engine: Engine) -> None:
    await register(engine, "orders")
    gone = await failed_job(engine, "orders", {"n": 1}, name="gone-job")
    raw = NewJob(id="", name="raw-job", data=b"\x00\x01bytes", content_type="application/x-thing")
    (raw_id,) = (await engine.add_jobs("orders", [raw])).ids
    await engine.claim("orders", 1, "tok", "w", 30_000)
    await engine.fail("orders", [(raw_id, "tok", "boom", "", True)])
    rerun = await failed_job(engine, "orders", {"n": 3})
    await engine.remove_job("orders", gone)
    await engine.remove_job("orders", raw_id)
    from queue_manager_server.engine.job_control import JobControl

    await JobControl(engine).retry_job("orders", rerun)  # run again by hand meanwhile
    added_before = (await engine.metrics("orders")).added_total
    result = await DeadLetters(engine).redrive(DLQ)
    counts = result.queues["orders"]
    assert (counts.retried, counts.added, counts.unchanged) == (0, 2, 1)
    again = await engine.get_job("orders", gone)
    assert (again.text("name"), json.loads(again.raw("data") or b"")) == ("gone-job", {"n": 1})
    assert await engine.job_states([("orders", gone), ("orders", raw_id)]) == ["waiting", "waiting"]
    back = await engine.get_job("orders", raw_id)
    assert (back.raw("data"), back.text("ct")) == (b"\x00\x01bytes", "application/x-thing")
    assert (await engine.metrics("orders")).added_total == added_before + 2
    assert (await engine.metrics(DLQ)).waiting == 0
    claimed = await engine.claim("orders", 5, "t3", "w", 30_000)
    assert sorted(j.id for j in claimed.jobs) == sorted([gone, raw_id, rerun])
    by_id = {j.id: j for j in claimed.jobs}
    assert by_id[raw_id].data == b"\x00\x01bytes" and by_id[raw_id].content_type == "application/x-thing"


async def test_filters_one_queue_a_limit_and_named_copies(engine: Engine) -> None:
    await register(engine, "a")
    await register(engine, "b")
    a_ids = [await failed_job(engine, "a", {"i": i}) for i in range(5)]
    b_ids = [await failed_job(engine, "b", {"i": i}) for i in range(3)]
    dl = DeadLetters(engine)
    result = await dl.redrive(DLQ, original_queue="b", limit=2)
    assert (result.count, list(result.queues)) == (2, ["b"])
    assert [(await engine.get_job("b", i)).text("st") for i in b_ids] == ["waiting", "waiting", "failed"]
    assert await engine.job_states([("a", i) for i in a_ids]) == ["failed"] * 5
    named = await dl.redrive(DLQ, job_ids=[f"a:{a_ids[3]}", "a:nope", f"b:{b_ids[0]}"])
    assert named.count == 1
    assert named.skipped == [
        ("a:nope", "no such job in the dead-letter queue"),
        (f"b:{b_ids[0]}", "no such job in the dead-letter queue"),
    ]
    rest = await dl.redrive(DLQ)
    assert {q: c.count for q, c in rest.queues.items()} == {"a": 4, "b": 1}
    assert (await engine.metrics(DLQ)).waiting == 0


async def test_copies_of_a_queue_that_is_gone_stay(engine: Engine) -> None:
    await register(engine, "keep")
    await register(engine, "doomed")
    kept = await failed_job(engine, "keep", {})
    doomed = [await failed_job(engine, "doomed", {"i": i}) for i in range(3)]
    await engine.obliterate("doomed", force=True)
    result = await DeadLetters(engine).redrive(DLQ)
    assert (result.count, result.missing_queues) == (1, ["doomed"])
    assert (await engine.get_job("keep", kept)).text("st") == "waiting"
    for job_id in doomed:
        assert (await engine.get_job(DLQ, f"doomed:{job_id}")).text("st") == "waiting"
    assert (await engine.metrics(DLQ)).waiting == 3
    assert await engine.redis.zcard(engine.keys(DLQ).redrive) == 0


async def test_a_server_dying_between_the_steps_leaves_no_double(engine: Engine) -> None:
    await register(engine, "orders")
    retried = await failed_job(engine, "orders", {"n": 1})
    gone = await failed_job(engine, "orders", {"n": 2})
    await engine.remove_job("orders", gone)
    dl = DeadLetters(engine)
    # Step 1 and 2 ran, then the server died: the outbox still holds both copies.
    _, taken, _ = await dl.redrive_take(DLQ, "crash", "", 10, 100, 0, False, None, [], [])
    assert sorted(t.copy_id for t in taken) == sorted([f"orders:{retried}", f"orders:{gone}"])
    from queue_manager_server.engine.redrive import original_job

    items = [(t, original_job(t)) for t in taken]
    assert await dl.redrive_jobs_many([("orders", False, items)]) == [[1, 2]]  # type: ignore[list-item]
    # The original runs and completes; the added job is removed by hand: a replay must bring back neither.
    claimed = await engine.claim("orders", 5, "t2", "w", 30_000)
    assert sorted(j.id for j in claimed.jobs) == sorted([retried, gone])
    await engine.complete(
        "orders", [(retried, "t2", b"1", "application/json"), (gone, "t2", b"1", "application/json")]
    )
    await engine.remove_job("orders", gone)
    # Too young for the janitor: a live redrive may still be under way.
    assert await dl.resume(DLQ) == 0
    outbox = engine.keys(DLQ).redrive
    await engine.redis.zadd(outbox, {t.copy_id: 0 for t in taken})  # as if taken long ago
    assert await dl.resume(DLQ) == 2
    assert (await engine.get_job("orders", retried)).text("st") == "completed"
    assert not await engine.redis.exists(engine.keys("orders").job(gone))
    assert await engine.redis.zcard(outbox) == 0
    assert await engine.redis.zcard(engine.keys("orders").redriven) == 0
    assert REPLAY_AFTER_MS >= 10_000


async def test_a_copy_a_worker_holds_is_not_taken(engine: Engine) -> None:
    await register(engine, "orders")
    job_id = await failed_job(engine, "orders", {"n": 1})
    copy_id = f"orders:{job_id}"
    claimed = await engine.claim(DLQ, 1, "dlq-tok", "dlq-worker", 30_000)
    assert [j.id for j in claimed.jobs] == [copy_id]
    result = await DeadLetters(engine).redrive(DLQ, job_ids=[copy_id])
    assert (result.count, result.skipped) == (0, [(copy_id, "a worker of the dead-letter queue holds it")])
    assert (await engine.get_job("orders", job_id)).text("st") == "failed"
    assert await engine.complete(DLQ, [(copy_id, "dlq-tok", b"1", "application/json")]) == ([0], 0)
    assert (await engine.get_job(DLQ, copy_id)).text("st") == "completed"


# ---- one copy with new data (RedriveDeadLettersRequest.data) --------------------------------------------


async def test_one_copy_with_new_data_in_one_call(engine: Engine) -> None:
    await register(engine, "orders")
    failed = await failed_job(engine, "orders", {"n": 1})
    gone = await failed_job(engine, "orders", {"n": 2}, name="gone-job")
    await engine.remove_job("orders", gone)
    dl = DeadLetters(engine)
    # No UpdateJobData first: the copy's data is as the failure wrote it; the one call brings the new data.
    result = await dl.redrive(DLQ, job_ids=[f"orders:{failed}"], data=(b'{"n":10}', "application/json"))
    assert (result.queues["orders"].retried, result.skipped) == (1, [])
    job = await engine.get_job("orders", failed)
    assert (job.text("st"), json.loads(job.raw("data") or b"")) == ("waiting", {"n": 10})
    raw = (b"\x00raw", "application/x-thing")
    result = await dl.redrive(DLQ, job_ids=[f"orders:{gone}"], data=raw)
    assert result.queues["orders"].added == 1
    again = await engine.get_job("orders", gone)
    assert (again.text("name"), again.raw("data"), again.text("ct")) == ("gone-job", *raw)
    assert await engine.redis.zcard(engine.keys(DLQ).redrive) == 0


async def test_a_replay_of_a_copy_taken_with_new_data_runs_it(engine: Engine) -> None:
    """The take records the new data in the copy's outbox entry: a server that dies right after it leaves
    the janitor what it needs to run the original with that data."""
    await register(engine, "orders")
    job_id = await failed_job(engine, "orders", {"n": 1})
    copy_id = f"orders:{job_id}"
    dl = DeadLetters(engine)
    new = (b'{"n":20}', "application/json")
    _, taken, codes = await dl.redrive_take(DLQ, "crash", "", 0, 0, 0, True, new, [], [copy_id])
    assert codes == ["ok"] and [t.edit for t in taken] == [new]
    entry = engine.keys(DLQ).redrive_entry_prefix + copy_id
    assert await engine.redis.hmget(entry, ["rdd", "rdc", "rdr"]) == [new[0], new[1].encode(), b"1"]
    assert json.loads(await engine.redis.hget(entry, "data") or b"")["original_data"] == {"n": 1}
    await engine.redis.zadd(engine.keys(DLQ).redrive, {copy_id: 0})  # as if taken long ago
    assert await dl.resume(DLQ) == 1
    job = await engine.get_job("orders", job_id)
    assert (job.text("st"), json.loads(job.raw("data") or b"")) == ("waiting", {"n": 20})


async def test_new_data_changes_no_copy_that_stays(engine: Engine) -> None:
    await register(engine, "orders")
    await register(engine, "doomed")
    held = await failed_job(engine, "orders", {"n": 1})
    doomed = await failed_job(engine, "doomed", {"n": 2})
    await engine.obliterate("doomed", force=True)
    before = await copy_body(engine, f"doomed:{doomed}")
    dl = DeadLetters(engine)
    new = (b'{"n":30}', "application/json")
    # Its original queue is gone: taken, then put back as it was.
    result = await dl.redrive(DLQ, job_ids=[f"doomed:{doomed}"], data=new)
    assert (result.count, result.missing_queues) == (0, ["doomed"])
    assert await copy_body(engine, f"doomed:{doomed}") == before
    back = await engine.get_job(DLQ, f"doomed:{doomed}")
    assert back.text("st") == "waiting" and back.raw("rdd") is None and back.raw("rdc") is None
    # Held by a worker of the dead-letter queue, or not there at all: skipped, nothing written.
    copy_id = f"orders:{held}"
    claimed = await engine.claim(DLQ, 5, "dlq-tok", "dlq-worker", 30_000)
    assert copy_id in [j.id for j in claimed.jobs]
    held_before = await copy_body(engine, copy_id)
    result = await dl.redrive(DLQ, job_ids=[copy_id], data=new)
    assert result.skipped == [(copy_id, "a worker of the dead-letter queue holds it")]
    assert await copy_body(engine, copy_id) == held_before
    assert json.loads((await engine.get_job("orders", held)).raw("data") or b"") == {"n": 1}
    result = await dl.redrive(DLQ, job_ids=["orders:nope"], data=new)
    assert result.skipped == [("orders:nope", "no such job in the dead-letter queue")]
    assert not await engine.redis.exists(engine.keys(DLQ).job("orders:nope"))
