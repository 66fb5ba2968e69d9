"""WatchJobEvents end to end: a real server (or two) on a real Valkey, the Python client and its worker."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

import grpc
import pytest
from redis.asyncio import Redis

from queue_manager import (
    JobContext,
    JobEvent,
    JobEventStream,
    JobEventType,
    NotFoundError,
    QueueManager,
    ResourceExhaustedError,
    SyncQueueManager,
)
from queue_manager.cli import main
from queue_manager.v1 import jobs_pb2, queue_service_pb2_grpc
from queue_manager_server.engine import Engine
from queue_manager_server.engine.records import NewJob
from tests.conftest import RunningServer, ServerFactory

WAIT = 20.0  # generous bound for anything the test awaits
T = JobEventType


@pytest.fixture
async def qm(server: RunningServer) -> AsyncIterator[QueueManager]:
    client = QueueManager(address=server.address, concurrency=4, shutdown_grace=5.0)
    yield client
    await client.shutdown()


async def collect(stream: JobEventStream, done: Callable[[list[JobEvent]], bool]) -> list[JobEvent]:
    """The stream's events until `done` says the list is complete."""
    seen: list[JobEvent] = []
    async with asyncio.timeout(WAIT):
        async for ev in stream:
            seen.append(ev)
            if done(seen):
                return seen
    raise AssertionError(f"the stream ended after {seen}")


def finished(ids: set[str]) -> Callable[[list[JobEvent]], bool]:
    ends = {T.COMPLETED, T.FAILED}
    return lambda seen: {e.job_id for e in seen if e.type in ends} >= ids


def per_job(seen: list[JobEvent], job_id: str) -> list[tuple[JobEventType | None, int]]:
    return [(e.type, e.attempt) for e in seen if e.job_id == job_id]


async def run_two_jobs(qm: QueueManager, queue: str) -> tuple[str, str]:
    """Adds a job that completes and one that fails on both its attempts, and runs them."""

    @qm.processor(queue)
    async def work(job: JobContext) -> str:
        if job.name == "bad":
            raise RuntimeError(f"no luck on attempt {job.attempts_made + 1}")
        return "ok"

    good = await qm.add_job(queue, "good", {})
    bad = await qm.add_job(queue, "bad", {}, {"attempts": 2})
    await qm.start_workers()
    return good.id, bad.id


async def test_a_jobs_events_come_in_order(qm: QueueManager) -> None:
    await qm.register_queue("events")
    async with qm.watch_job_events("events") as stream:
        good, bad = await run_two_jobs(qm, "events")
        seen = await collect(stream, finished({good, bad}))
    assert per_job(seen, good) == [(T.ADDED, 0), (T.ACTIVE, 1), (T.COMPLETED, 1)]
    assert per_job(seen, bad) == [(T.ADDED, 0), (T.ACTIVE, 1), (T.RETRYING, 1), (T.ACTIVE, 2), (T.FAILED, 2)]
    retry, failed = (e for e in seen if e.job_id == bad and e.type in (T.RETRYING, T.FAILED))
    assert retry.failed_reason.endswith("no luck on attempt 1") and retry.run_at is not None
    assert failed.failed_reason.endswith("no luck on attempt 2")
    assert {e.job_name for e in seen if e.job_id == bad} == {"bad"}
    assert all(e.queue_name == "events" for e in seen)
    times = [e.time for e in seen if e.job_id == bad]
    assert times == sorted(times)


async def test_filters_by_type_and_job_name(qm: QueueManager) -> None:
    await qm.register_queue("filtered")
    ends = qm.watch_job_events("filtered", types=["completed", T.FAILED])
    named = qm.watch_job_events("filtered", job_names="bad")
    async with ends, named:
        good, bad = await run_two_jobs(qm, "filtered")
        seen = await collect(ends, finished({good, bad}))
        of_bad = await collect(named, lambda s: s[-1].type == T.FAILED)
    assert [(e.job_id, e.type) for e in sorted(seen, key=lambda e: e.job_id != good)] == [
        (good, T.COMPLETED),
        (bad, T.FAILED),
    ]
    assert [e.type for e in of_bad] == [T.ADDED, T.ACTIVE, T.RETRYING, T.ACTIVE, T.FAILED]


async def test_two_watchers_see_the_same_events(qm: QueueManager) -> None:
    await qm.register_queue("shared")
    async with qm.watch_job_events("shared") as a, qm.watch_job_events("shared") as b:
        good, bad = await run_two_jobs(qm, "shared")
        seen_a = await collect(a, finished({good, bad}))
        seen_b = await collect(b, finished({good, bad}))
    assert seen_a == seen_b


async def test_a_watcher_on_one_server_sees_jobs_run_through_another(server_factory: ServerFactory) -> None:
    a, b = await server_factory(), await server_factory()
    watcher = QueueManager(address=a.address)
    producer = QueueManager(address=b.address, concurrency=2, shutdown_grace=5.0)
    try:
        await producer.register_queue("across")
        async with watcher.watch_job_events("across", types=["completed", "failed"]) as stream:
            good, bad = await run_two_jobs(producer, "across")
            seen = await collect(stream, finished({good, bad}))
        assert sorted((e.job_id, e.type) for e in seen) == sorted([(good, T.COMPLETED), (bad, T.FAILED)])
    finally:
        await producer.shutdown()
        await watcher.shutdown()


async def watching(redis: Redis, meta: str) -> None:
    """Returns once a server watches the queue (its watch deadline is set): nothing announces it to a
    caller that cannot await the stream's headers (the blocking client, the CLI)."""
    async with asyncio.timeout(WAIT):
        while True:
            if await redis.hexists(meta, "evw"):
                return
            await asyncio.sleep(0.01)


async def publishes(redis: Redis) -> int:
    info = await redis.info("commandstats")
    return int(info.get("cmdstat_publish", {}).get("calls", 0))


async def test_the_watch_lapses_once_the_watcher_leaves(server_factory: ServerFactory, redis: Redis) -> None:
    server = await server_factory(events_ttl_ms=300)
    engine = Engine(redis, server.prefix)
    qm = QueueManager(address=server.address)
    try:
        await qm.register_queue("lapse")
        await qm.add_job("lapse", "warm", {})  # a new queue's first add wakes its workers ('w')
        async with qm.watch_job_events("lapse") as stream:
            await qm.add_job("lapse", "seen", {})
            [ev] = await collect(stream, lambda s: True)
            assert (ev.type, ev.job_name) == (T.ADDED, "seen")
        meta = engine.keys("lapse").meta
        watchers = server.app.queue_service.event_watchers  # type: ignore[union-attr]
        async with asyncio.timeout(WAIT):
            while True:  # the server's watcher is gone, and the deadline it renewed has passed
                deadline = int(await redis.hget(meta, "evw") or 0)
                seconds, micros = await redis.time()
                if not len(watchers) and seconds * 1000 + micros // 1000 > deadline:
                    break
                await asyncio.sleep(0.05)
        before = await publishes(redis)
        await engine.add_jobs("lapse", [NewJob(id="", name="unseen", data=b"{}")])
        assert await publishes(redis) == before
    finally:
        await qm.shutdown()


async def test_a_watcher_that_falls_behind_ends_with_resource_exhausted(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(events_buffer=20)
    qm = QueueManager(address=server.address)
    try:
        await qm.register_queue("burst")
        async with (
            qm.watch_job_events("burst") as slow,
            qm.watch_job_events("burst", types=["removed"]) as other,
        ):
            await qm.add_bulk("burst", [{"name": "n", "data": {"i": i}} for i in range(50)])
            with pytest.raises(
                ResourceExhaustedError, match="events dropped: the watcher fell behind by 50 "
            ):
                await collect(slow, lambda s: False)
            # The other watcher (its filter left the burst out) goes on.
            job = await qm.add_job("burst", "gone", {})
            await qm.remove_job("burst", job.id)
            [removed] = await collect(other, lambda s: True)
            assert (removed.type, removed.job_id) == (T.REMOVED, job.id)
    finally:
        await qm.shutdown()


async def test_bad_requests_get_precise_statuses(qm: QueueManager, server: RunningServer) -> None:
    with pytest.raises(NotFoundError, match="queue 'nowhere' is not registered"):
        async with qm.watch_job_events("nowhere"):
            pass
    with pytest.raises(ValueError, match="unknown job event type 'finished'"):
        qm.watch_job_events("nowhere", types=["finished"])
    # A number in place of a filter failed in iteration ("'int' object is not iterable"), naming neither.
    with pytest.raises(TypeError, match="types must be a JobEventType, a name or a list of them, not int"):
        qm.watch_job_events("nowhere", types=5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="job_names must be a job name or a list of names, not int"):
        qm.watch_job_events("nowhere", job_names=5)  # type: ignore[arg-type]
    await qm.register_queue("strict")
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = queue_service_pb2_grpc.QueueServiceStub(channel)
        call = stub.WatchJobEvents(jobs_pb2.WatchJobEventsRequest(queue_name="strict", types=[99]))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call.read()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "types[0]: 99 is not a known JobEventType value" in str(info.value.details())


async def test_the_blocking_client_yields_events(server: RunningServer, redis: Redis) -> None:
    qm = SyncQueueManager(address=server.address)
    meta = Engine(redis, server.prefix).keys("blocking").meta
    try:
        await asyncio.to_thread(qm.register_queue, "blocking")
        events = qm.watch_job_events("blocking", types="added")
        first = asyncio.create_task(asyncio.to_thread(next, events))
        await watching(redis, meta)
        job = await asyncio.to_thread(qm.add_job, "blocking", "sync", {})
        ev = await asyncio.wait_for(first, WAIT)
        await asyncio.to_thread(events.close)
    finally:
        await asyncio.to_thread(qm.close)
    assert (ev.type, ev.job_id, ev.job_name) == (T.ADDED, job.id, "sync")


async def test_qm_events_prints_a_line_per_event(
    server: RunningServer, redis: Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    qm = QueueManager(address=server.address)
    meta = Engine(redis, server.prefix).keys("cli-ev").meta
    try:
        await qm.register_queue("cli-ev")
        for output in ("json", "table"):
            await redis.hdel(meta, "evw")
            argv = ["--server", server.address, "-o", output, "events", "cli-ev", "--state", "added"]
            command = asyncio.create_task(
                asyncio.to_thread(main, [*argv, "--state", "removed", "--count", "2"])
            )
            await watching(redis, meta)
            job = await qm.add_job("cli-ev", "mail", {}, {"delay": 60_000})
            await qm.remove_job("cli-ev", job.id)
            assert await asyncio.wait_for(command, WAIT) == 0
            lines = capsys.readouterr().out.splitlines()
            if output == "json":
                added, removed = (json.loads(line) for line in lines)
                assert (added["type"], added["job_id"], added["job_name"]) == ("added", job.id, "mail")
                assert added["run_at"] is not None
                assert (removed["type"], removed["job_id"]) == ("removed", job.id)
            else:
                assert [line.split()[1:4] for line in lines] == [
                    ["added", job.id, "mail"],
                    ["removed", job.id, "mail"],
                ]
                assert "run_at=" in lines[0]
        status = await asyncio.to_thread(main, ["--server", server.address, "events", "nowhere"])
        assert status == 1
        assert "error: NOT_FOUND: queue 'nowhere' is not registered" in capsys.readouterr().err
        # With nothing after it, `events push` follows a queue named push: a forgotten key is told so.
        for word, hint in (
            ("push", "push an external event, give its key: qm events push KEY"),
            ("triggers", "qm events triggers list"),
        ):
            status = await asyncio.to_thread(main, ["--server", server.address, "events", word])
            err = capsys.readouterr().err
            assert status == 1 and f"queue '{word}' is not registered" in err and hint in err, err
    finally:
        await qm.shutdown()


def test_qm_events_help_names_push_and_triggers(capsys: pytest.CaptureFixture[str]) -> None:
    # `qm --help` lists them, but `qm events --help` did not say they exist.
    with pytest.raises(SystemExit) as done:
        main(["events", "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "'qm events push KEY' pushes an external event" in text, text
    assert "'qm events triggers set|list|delete' manages event triggers" in text, text


async def test_whole_number_progress_comes_as_an_integer(qm: QueueManager) -> None:
    """A progress of 50 (a double on the wire, as every worker sends it) is the JSON text "50", not "50.0":
    what the Python client reads from GetJob, and an integer where Go and TypeScript parse it."""
    await qm.register_queue("whole")
    release = asyncio.Event()

    @qm.processor("whole")
    async def work(job: JobContext) -> None:
        await job.update_progress(50)
        await job.update_progress({"pct": 75, "of": 2.5})
        await release.wait()

    async with qm.watch_job_events("whole", types=["progress"]) as stream:
        job = await qm.add_job("whole", "w", {})
        await qm.start_workers()
        seen = await collect(stream, lambda s: len(s) == 2)
        release.set()
    assert seen[0].progress == "50"
    assert '"pct":75' in seen[1].progress and json.loads(seen[1].progress) == {"pct": 75, "of": 2.5}
    assert (await qm.wait_for_job("whole", job.id, timeout=WAIT)).progress == {"pct": 75, "of": 2.5}


async def test_a_deleted_queues_watchers_end_at_once(server_factory: ServerFactory) -> None:
    """Obliterating a watched queue ends its watchers on every server with NOT_FOUND "was deleted" at once,
    well before the watch's next renewal (a minute here)."""
    a, b = await server_factory(events_ttl_ms=180_000), await server_factory(events_ttl_ms=180_000)
    near, far = QueueManager(address=a.address), QueueManager(address=b.address)
    try:
        await near.register_queue("doomed")
        async with near.watch_job_events("doomed") as here, far.watch_job_events("doomed") as there:
            await near.obliterate_queue("doomed")
            for stream in (here, there):
                with pytest.raises(NotFoundError, match="queue 'doomed' was deleted"):
                    async with asyncio.timeout(10):
                        await collect(stream, lambda s: False)
    finally:
        await near.shutdown()
        await far.shutdown()
