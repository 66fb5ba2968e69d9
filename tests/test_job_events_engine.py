"""Job events at the scripts (engine/job_events.py): nothing is published while nobody watches a queue, and a
watched queue's script call publishes one message for all the jobs it changed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from queue_manager_server.engine import Engine
from queue_manager_server.engine.job_events import EventBatch, JobEvents, decode
from queue_manager_server.engine.records import NewJob
from queue_manager_server.engine.search import JobFilter, JobSearch

_JSON = "application/json"
ADDED, WAITING, ACTIVE, PROGRESS, COMPLETED, FAILED, RETRYING = 1, 2, 3, 4, 5, 6, 7
CANCELLED, REMOVED = 10, 11


async def publishes(redis: Redis) -> int:
    """PUBLISH commands Valkey has run (every script's, this test's only: the tests run one at a time)."""
    info = await redis.info("commandstats")
    return int(info.get("cmdstat_publish", {}).get("calls", 0))


async def work_through(engine: Engine, queue: str, n: int, tag: str) -> None:
    """Adds n jobs, claims them in one call, reports progress on one, fails it (retried at once: it has
    attempts left and no backoff), claims it again and completes them all: six script calls of the job
    path."""
    jobs = [NewJob(id=f"{tag}{i}", name="send", data=b"{}", attempts=2) for i in range(n)]
    await engine.add_jobs(queue, jobs)
    claim = await engine.claim(queue, n, f"tok-{tag}", "w", 60_000)
    assert [j.id for j in claim.jobs] == [j.id for j in jobs]
    assert await engine.progress(queue, [(jobs[0].id, f"tok-{tag}", "50")]) == [0]
    [(code, _)] = await engine.fail(queue, [(jobs[0].id, f"tok-{tag}", "boom", "", False)])
    assert code == 0  # back to waiting at once
    again = await engine.claim(queue, 1, f"tok2-{tag}", "w", 60_000)
    assert [j.id for j in again.jobs] == [jobs[0].id]
    items = [(jobs[0].id, f"tok2-{tag}", b"null", _JSON)]
    items += [(j.id, f"tok-{tag}", b"null", _JSON) for j in jobs[1:]]
    codes, _ = await engine.complete(queue, items)
    assert codes == [0] * n


@pytest.fixture
async def channel(redis: Redis, engine: Engine) -> AsyncIterator[asyncio.Queue[EventBatch]]:
    """The events channel's ``e`` messages, decoded."""
    got: asyncio.Queue[EventBatch] = asyncio.Queue()
    ps = redis.pubsub(ignore_subscribe_messages=True)
    await ps.subscribe(engine.channel)

    async def listen() -> None:
        while True:
            m = await ps.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if m is not None and m["data"].startswith(b"e "):
                batch = decode(m["data"])
                assert batch is not None
                got.put_nowait(batch)

    task = asyncio.create_task(listen())
    yield got
    task.cancel()
    await ps.aclose()


async def test_no_publish_at_all_while_nobody_watches(engine: Engine, redis: Redis) -> None:
    await engine.register_queue("quiet", {})
    await work_through(engine, "quiet", 5, "warm")  # a new queue's first add wakes its workers ('w')
    before = await publishes(redis)
    await work_through(engine, "quiet", 50, "q")
    assert await publishes(redis) == before


async def test_a_watched_call_publishes_one_message_for_all_its_jobs(
    engine: Engine, redis: Redis, channel: asyncio.Queue[EventBatch]
) -> None:
    await engine.register_queue("loud", {})
    await work_through(engine, "loud", 5, "warm")  # a new queue's first add wakes its workers ('w')
    await JobEvents(engine).watch("loud", 60_000)
    before = await publishes(redis)
    await work_through(engine, "loud", 50, "l")
    # add, claim, progress, fail, claim again, complete: one PUBLISH each, whatever the batch.
    assert await publishes(redis) - before == 6
    batches = [await asyncio.wait_for(channel.get(), 10) for _ in range(6)]
    assert all(b.queue == "loud" for b in batches)
    added, claimed, progress, failed, again, completed = (b.events for b in batches)
    assert [(e.type, e.job_id, e.name) for e in added] == [(ADDED, f"l{i}", "send") for i in range(50)]
    assert [(e.type, e.job_id, e.attempt) for e in claimed] == [(ACTIVE, f"l{i}", 1) for i in range(50)]
    assert [(e.type, e.job_id, e.text) for e in progress] == [(PROGRESS, "l0", "50")]
    [retry] = failed
    assert (retry.type, retry.job_id, retry.attempt, retry.text) == (RETRYING, "l0", 1, "boom")
    assert retry.run_at_ms == batches[3].time_ms  # no backoff: runs again at once
    assert [(e.type, e.job_id, e.attempt) for e in again] == [(ACTIVE, "l0", 2)]
    assert [(e.type, e.job_id, e.attempt) for e in completed] == [(COMPLETED, "l0", 2)] + [
        (COMPLETED, f"l{i}", 1) for i in range(1, 50)
    ]


async def test_a_failure_for_good_names_its_attempts_and_reason(
    engine: Engine, channel: asyncio.Queue[EventBatch]
) -> None:
    await engine.register_queue("fails", {})
    await JobEvents(engine).watch("fails", 60_000)
    await engine.add_jobs("fails", [NewJob(id="f", name="charge", data=b"{}", attempts=2)])
    for attempt in (1, 2):
        claim = await engine.claim("fails", 1, f"t{attempt}", "w", 60_000)
        assert [j.id for j in claim.jobs] == ["f"]
        await engine.fail("fails", [("f", f"t{attempt}", "card declined " + "x" * 300, "", False)])
    seen = []
    while len(seen) < 5:
        seen += (await asyncio.wait_for(channel.get(), 10)).events
    assert [(e.type, e.attempt) for e in seen] == [
        (ADDED, 0),
        (ACTIVE, 1),
        (RETRYING, 1),
        (ACTIVE, 2),
        (FAILED, 2),
    ]
    assert seen[-1].name == "charge"
    assert (
        seen[-1].text.startswith("card declined x") and len(seen[-1].text) == 200
    )  # the reason is cut short


async def test_the_watch_deadline_lapses(engine: Engine, redis: Redis) -> None:
    await engine.register_queue("brief", {})
    await work_through(engine, "brief", 5, "warm")  # a new queue's first add wakes its workers ('w')
    deadline = await JobEvents(engine).watch("brief", 200)
    # A shorter renewal never moves the deadline back (another server's may be later).
    assert await JobEvents(engine).watch("brief", 1) == deadline
    while True:  # Redis time passes the deadline
        seconds, micros = await redis.time()
        if seconds * 1000 + micros // 1000 > deadline:
            break
        await asyncio.sleep(0.02)
    before = await publishes(redis)
    await work_through(engine, "brief", 3, "b")
    assert await publishes(redis) == before


async def test_bulk_actions_by_filter_publish_their_jobs_events(
    engine: Engine, channel: asyncio.Queue[EventBatch]
) -> None:
    await engine.register_queue("bulk", {})
    await JobEvents(engine).watch("bulk", 60_000)
    await engine.add_jobs(
        "bulk", [NewJob(id=f"b{i}", name="a" if i % 2 else "b", data=b"{}") for i in range(6)]
    )
    await asyncio.wait_for(channel.get(), 10)  # the adds'
    search = JobSearch(engine)
    removed = await search.remove_matching("bulk", "waiting", JobFilter(name="a"), None)
    cancelled = await search.cancel_matching("bulk", "waiting", JobFilter(name="b"), None)
    assert (removed.count, cancelled.count) == (3, 3)
    batches = [await asyncio.wait_for(channel.get(), 10) for _ in range(2)]
    assert [(e.type, e.job_id) for e in batches[0].events] == [(REMOVED, f"b{i}") for i in (1, 3, 5)]
    assert [(e.type, e.job_id) for e in batches[1].events] == [(CANCELLED, f"b{i}") for i in (0, 2, 4)]


async def test_a_replace_add_that_makes_its_holder_due_is_a_waiting_event(
    engine: Engine, channel: asyncio.Queue[EventBatch]
) -> None:
    await engine.register_queue("debounce", {})
    await JobEvents(engine).watch("debounce", 60_000)
    dedup = {"dedup_key": "doc", "dedup_mode": 3}  # REPLACE
    await engine.add_jobs("debounce", [NewJob(id="d", name="index", data=b"1", delay_ms=60_000, **dedup)])
    (added,) = (await asyncio.wait_for(channel.get(), 10)).events
    assert (added.type, added.job_id) == (ADDED, "d") and added.run_at_ms > 0
    # A duplicate due now: the holder takes its data and is waiting, not added again.
    await engine.add_jobs("debounce", [NewJob(id="e", name="index", data=b"2", delay_ms=0, **dedup)])
    due = (await asyncio.wait_for(channel.get(), 10)).events
    assert [(e.type, e.job_id) for e in due] == [(WAITING, "d")]
