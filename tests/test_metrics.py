"""Queue metrics, the metrics stream and the worker registry: exact figures, read from Redis, the same on
every server; real servers, real workers, a real Valkey."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import socket
import time
from datetime import timedelta
from importlib import resources
from typing import Any

import pytest
from redis.asyncio import Redis

from queue_manager import (
    InvalidArgumentError,
    NotFoundError,
    QueueManager,
    RateLimit,
    SyncQueueManager,
)
from queue_manager.cli import main
from queue_manager.v1 import worker_service_pb2 as pb
from queue_manager_server.engine import Engine
from queue_manager_server.engine.records import NewJob
from queue_manager_server.engine.stats import DURATION_BOUNDS_MS, quantile_ms
from queue_manager_server.services.reports import _duration_us
from tests.conftest import RunningServer, ServerFactory
from tests.metrics_workload import (
    ADDED,
    COMPLETED,
    COMPLETED_MS,
    FAILED,
    MEAN_MS,
    P95_MS,
    known_workload,
)
from tests.procs import Procs
from tests.rawworker import RawWorker, eventually, lease

WAIT = 10.0


async def test_every_figure_after_a_known_workload_is_exact_on_both_servers(
    server_factory: ServerFactory,
) -> None:
    a, b = await server_factory(), await server_factory()
    await known_workload(add_via=b.address, work_via=a.address)
    answers = []
    for s in (a, b):
        qm = QueueManager(s.address)
        answers.append(await qm.get_queue_metrics("work", include_history=True))
        await qm.shutdown()
    for m in answers:
        assert (m.added_total, m.completed_total, m.failed_total) == (ADDED, COMPLETED, FAILED)
        assert (m.waiting, m.active, m.completed, m.failed) == (0, 0, COMPLETED, FAILED)
        assert (m.completed_last_minute, m.failed_last_minute) == (COMPLETED, FAILED)
        assert m.completed_per_second == pytest.approx(COMPLETED / 60)
        assert m.failed_per_second == pytest.approx(FAILED / 60)
        assert m.error_rate == pytest.approx(0.1)
        assert m.average_processing_time == timedelta(milliseconds=MEAN_MS)
        assert m.p95_processing_time == timedelta(milliseconds=P95_MS)
        assert m.oldest_waiting_age is None and m.workers == 0 and m.free_capacity == 0
        assert not m.is_paused and m.held_until is None and m.rate_limit_tokens == 0
        # The hour in one-minute buckets, oldest first, ending with the current minute.
        assert len(m.history) == 60 and m.sample_time is not None
        starts = [h.start_time for h in m.history]
        assert starts == sorted(starts) and starts[-1] <= m.sample_time < starts[-1] + timedelta(minutes=1)
        assert sum(h.added for h in m.history) == ADDED
        assert (sum(h.completed for h in m.history), sum(h.failed for h in m.history)) == (COMPLETED, FAILED)
        weighted = sum(
            ((h.average_processing_time or timedelta()) * (h.completed + h.failed) for h in m.history),
            timedelta(),
        )
        assert weighted / ADDED == timedelta(milliseconds=MEAN_MS)
    # Both servers read the same Redis: they agree on everything but the moment of reading.
    assert dataclasses.replace(answers[0], sample_time=None) == dataclasses.replace(
        answers[1], sample_time=None
    )
    qm = QueueManager(a.address)
    every = {m.queue_name: m for m in await qm.get_all_metrics()}
    await qm.shutdown()
    assert set(every) == {"work", "dead-letter-queue"}
    assert dataclasses.replace(every["work"], sample_time=None) == dataclasses.replace(
        answers[0], history=[], sample_time=None
    )
    assert every["dead-letter-queue"].added_total == FAILED  # each job failed for good was copied there


@pytest.mark.parametrize(
    ("seconds", "nanos", "expected"),
    [(None, None, -1), (0, 0, 0), (0, 999, 0), (0, 1_500, 1), (2, 250_000_000, 2_250_000), (-1, 0, 0)],
)
def test_a_reported_duration_is_read_in_microseconds_and_none_is_not_counted(
    seconds: int | None, nanos: int | None, expected: int
) -> None:
    """A completion or failure without a duration is not counted (-1); one of zero or less counts as 0."""
    for outcome in (pb.JobCompletion(), pb.JobFailure()):
        if seconds is not None:
            outcome.duration.seconds, outcome.duration.nanos = seconds, nanos or 0
        assert _duration_us(outcome) == expected


async def test_durations_are_counted_once_per_accepted_run(engine: Engine) -> None:
    """A stale completion changes nothing, not even the processing-time figures."""
    await engine.register_queue("runs", {"d_att": 1})
    await engine.add_jobs("runs", [NewJob(id="j1", name="n", data=b"{}")])
    claimed = await engine.claim("runs", 1, "tok", "w", 30_000)
    assert claimed.jobs
    codes, _ = await engine.complete("runs", [("j1", "stale", b"1", "application/json")], [5_000])
    assert codes == [-3]
    codes, _ = await engine.complete("runs", [("j1", "tok", b"1", "application/json")], [7_000])
    assert codes == [0]
    m = await engine.metrics("runs")
    assert (m.completed_total, sum(m.all_runs), m.all_run_us) == (1, 1, 7_000)
    assert m.all_runs[DURATION_BOUNDS_MS.index(10)] == 1  # 7 ms: the (5, 10] bucket


async def test_the_last_minute_is_exactly_the_last_60_seconds(engine: Engine, redis: Redis) -> None:
    """Seeded per-second counts: the current minute counts in full, the one before from the second after
    the current one on (second s of the previous minute counts s + 1 completions, s + 101 failures)."""
    await engine.register_queue("rates", {})
    k = engine.keys("rates")
    sec, _ = await redis.time()
    minute = int(sec) // 60
    for m in (minute, minute + 1):  # the next minute too, in case the clock turns meanwhile
        await redis.hset(k.minute(m), mapping={"c": 7, "f": 3})
        await redis.hset(k.seconds(m - 1), mapping={f"c{s}": s + 1 for s in range(60)})
        await redis.hset(k.seconds(m - 1), mapping={f"f{s}": s + 101 for s in range(60)})
    m = await engine.metrics("rates")
    second = m.sample_ms // 1000 % 60
    later = range(second + 1, 60)
    assert m.completed_last_minute == 7 + sum(s + 1 for s in later)
    assert m.failed_last_minute == 3 + sum(s + 101 for s in later)


async def test_oldest_waiting_age_is_the_longest_ready_job_across_priorities(
    server: RunningServer, redis: Redis
) -> None:
    qm = QueueManager(server.address)
    await qm.register_queue("aging")
    old = await qm.add_job("aging", "old", None, {"priority": "LOW"})
    # The next job must be younger by at least a millisecond of the store's clock.
    await eventually(lambda: _redis_ms_after(redis, old.created_at))
    await qm.add_job("aging", "new", None, {"priority": "CRITICAL"})
    await qm.add_job("aging", "later", None, {"delay": 3_600_000})
    m = await qm.get_queue_metrics("aging")
    assert m.sample_time is not None and old.created_at is not None
    # The LOW job waits behind the CRITICAL one, but it is the one that has waited longest.
    assert m.oldest_waiting_age == m.sample_time - old.created_at > timedelta(0)
    await qm.pause_queue("aging")  # jobs of a paused queue still wait
    m = await qm.get_queue_metrics("aging")
    assert m.sample_time is not None and m.oldest_waiting_age == m.sample_time - old.created_at
    await qm.register_queue("only-delayed")
    await qm.add_job("only-delayed", "later", None, {"delay": 3_600_000})
    assert (await qm.get_queue_metrics("only-delayed")).oldest_waiting_age is None
    await qm.shutdown()


async def _redis_ms_after(redis: Redis, when: object) -> bool:
    sec, usec = await redis.time()
    return bool(int(sec) * 1000 + int(usec) // 1000 > when.timestamp() * 1000)  # type: ignore[attr-defined]


async def test_rate_limit_tokens_and_retry_after_hold(server: RunningServer, redis: Redis) -> None:
    qm = QueueManager(server.address)
    await qm.register_queue("limited", rate_limit=RateLimit(max=20, duration=timedelta(seconds=1)))
    m = await qm.get_queue_metrics("limited")
    assert m.rate_limit_tokens == 2.0  # an unused bucket is full: its burst, a tenth of max
    hold_ms = int(time.time() * 1000) + 3_600_000
    await redis.hset(Engine(redis, server.prefix).keys("limited").limiter, "hold", hold_ms)
    m = await qm.get_queue_metrics("limited")
    assert m.held_until is not None and round(m.held_until.timestamp() * 1000) == hold_ms
    await qm.shutdown()


async def test_obliterated_queue_starts_its_counts_afresh(engine: Engine) -> None:
    await engine.register_queue("gone", {})
    await engine.add_jobs("gone", [NewJob(id=f"j{i}", name="n", data=b"{}") for i in range(3)])
    assert (await engine.metrics("gone")).added_total == 3
    await engine.obliterate("gone", force=True)
    await engine.register_queue("gone", {})
    m = await engine.metrics("gone", history=True)
    assert m.added_total == 0 and sum(h.added for h in m.history) == 0


async def test_workers_and_free_capacity_across_two_servers(server_factory: ServerFactory) -> None:
    a, b = await server_factory(), await server_factory()
    qm = QueueManager(a.address)
    await qm.register_queue("shared")
    await qm.add_bulk("shared", [{"name": f"j{i}"} for i in range(5)])
    busy, idle = RawWorker(a.address, ["shared"], "busy"), RawWorker(b.address, ["shared"], "idle")
    try:
        await busy.connect(credits=3)
        held = await busy.jobs(3)
        await idle.connect()

        async def capacity(workers: int, free: int) -> bool:
            m = await qm.get_queue_metrics("shared")
            return (m.workers, m.free_capacity) == (workers, free)

        await eventually(lambda: capacity(2, 10 - 3 + 10), WAIT)  # each says concurrency 10
        listed = {w.worker_id: w for w in await qm.list_workers("shared")}
        assert set(listed) == {"busy", "idle"}
        assert (listed["busy"].server_id, listed["busy"].in_flight) == (a.settings.server_id, 3)
        assert (listed["idle"].server_id, listed["idle"].in_flight) == (b.settings.server_id, 0)
        assert listed["busy"].concurrency == 10 and listed["busy"].queues == ["shared"]
        busy.report(pb.WorkerReport(completions=[pb.JobCompletion(**_ref(j)) for j in held]))
        await eventually(lambda: capacity(2, 20), WAIT)
        await idle.close()  # its stream ends: it is no longer listed
        await eventually(lambda: capacity(1, 10), WAIT)
        assert [w.worker_id for w in await qm.list_workers()] == ["busy"]
    finally:
        await busy.close()
        await idle.close()
        await qm.shutdown()


def _ref(j: pb.LeasedJob) -> dict[str, str]:
    ref = lease(j)
    return {"queue_name": ref.queue_name, "job_id": ref.job_id, "lease_token": ref.lease_token}


async def test_a_python_worker_shows_its_cpu_and_memory(server_factory: ServerFactory) -> None:
    server = await server_factory(lease_ms=600)  # heartbeats every 200 ms
    qm = QueueManager(server.address, concurrency=2)
    await qm.register_queue("cpu")

    def burn(job: object) -> str:
        end = time.process_time() + 0.6
        while time.process_time() < end:
            pass
        return "done"

    qm.register_processor("cpu", burn)
    await qm.start_workers()
    try:
        await qm.add_job("cpu", "burn")

        async def busy() -> bool:
            workers = await qm.list_workers("cpu")
            return bool(workers) and workers[0].cpu_percent > 20

        await eventually(busy, WAIT)
        (w,) = await qm.list_workers("cpu")
        assert w.language == "python" and w.version and w.host == socket.gethostname()
        assert w.memory_bytes > 10_000_000 and w.labels["host"] == socket.gethostname()
        assert w.connect_time is not None and w.last_heartbeat_time is not None and w.uptime is not None
        assert w.last_heartbeat_time >= w.connect_time
    finally:
        await qm.shutdown()


async def test_a_worker_without_psutil_works_and_reports_no_stats(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import queue_manager.stats

    monkeypatch.setattr(queue_manager.stats, "psutil", None)
    qm = QueueManager(server.address)
    await qm.register_queue("plain")
    qm.register_processor("plain", lambda job: "ok")
    await qm.start_workers()
    try:
        job = await qm.add_job("plain", "n")
        assert (await qm.wait_for_job("plain", job.id, timeout=WAIT)).result == "ok"
        (w,) = await qm.list_workers("plain")
        assert (w.cpu_percent, w.memory_bytes) == (0, 0)
    finally:
        await qm.shutdown()


async def test_workers_of_a_killed_server_expire(
    server: RunningServer, procs: Procs, redis_url: str, prefix: str
) -> None:
    doomed = await procs.server(redis_url, prefix, 0, "--lease-ms", "900")  # entries live 900 ms
    qm = QueueManager(server.address)
    await qm.register_queue("orphans")
    worker = RawWorker(doomed.address, ["orphans"], "orphan")
    try:
        await worker.connect()
        assert [w.worker_id for w in await qm.list_workers()] == ["orphan"]
        doomed.kill()  # SIGKILL: nobody removes the entry
        await doomed.wait()

        async def gone() -> bool:
            return not await qm.list_workers()

        await eventually(gone, WAIT)
    finally:
        await worker.close()
        await qm.shutdown()


# ---- the metrics stream -------------------------------------------------------------------------


async def test_watch_sends_a_snapshot_at_once_then_each_change_within_the_interval(
    server: RunningServer,
) -> None:
    qm = QueueManager(server.address)
    await qm.register_queue("live")
    loop = asyncio.get_running_loop()
    start = loop.time()
    stream = qm.watch_metrics("live", interval=1.0, include_workers=True)
    first = await anext(stream)
    assert loop.time() - start < 0.5  # at once, not after an interval
    assert [m.queue_name for m in first.metrics] == ["live"] and first.metrics[0].waiting == 0
    assert first.time is not None and first.workers == []
    await qm.add_job("live", "n")
    added = loop.time()
    while (await anext(stream)).metrics[0].waiting != 1:
        pass
    assert loop.time() - added <= 1.0 + 0.3
    await stream.aclose()
    await qm.shutdown()


async def test_watchers_of_one_server_share_one_read_per_interval(server: RunningServer) -> None:
    qm = QueueManager(server.address)
    await qm.register_queue("shared-read")
    reader = server.app.queue_service.metrics_reader  # type: ignore[union-attr]
    streams = [qm.watch_metrics(interval=0.2) for _ in range(10)]
    firsts = await asyncio.gather(*(anext(s) for s in streams))
    before = reader.reads
    rounds = 5
    for _ in range(rounds):
        snaps = await asyncio.gather(*(anext(s) for s in streams))
        assert len({s.time for s in snaps}) == 1  # the same snapshot for every watcher
    # Ten watchers, five more snapshots each: about five reads (a sixth may be under way), not fifty.
    assert rounds <= reader.reads - before <= rounds + 1
    assert all([m.queue_name for m in s.metrics] == ["dead-letter-queue", "shared-read"] for s in firsts)
    for s in streams:
        await s.aclose()
    await qm.shutdown()


async def test_watch_stops_reading_when_the_last_watcher_leaves(server: RunningServer) -> None:
    qm = QueueManager(server.address)
    await qm.register_queue("leave")
    sampler = server.app.sampler
    assert sampler is not None
    stream = qm.watch_metrics(["leave"], interval=0.1)
    await anext(stream)
    (group,) = sampler.groups.values()
    await stream.aclose()  # the client leaves: the call is cancelled

    async def stopped() -> bool:
        return not sampler.groups and group._task is not None and group._task.done()

    await eventually(stopped, WAIT)  # its loop has ended: no more reads
    handled = server.app.grpc_metrics.handled
    assert handled[("server_stream", "queue_manager.v1.QueueService", "WatchMetrics", "Canceled")] == 1
    await qm.shutdown()


async def test_the_sync_client_watches_as_a_generator(server: RunningServer) -> None:
    def watch() -> list[int]:
        with SyncQueueManager(server.address) as qm:
            qm.register_queue("sync-watch")
            qm.add_job("sync-watch", "n")
            stream = qm.watch_metrics(["sync-watch"], interval=0.1)
            waiting = [next(stream).metrics[0].waiting for _ in range(2)]
            stream.close()
            return waiting

    assert await asyncio.to_thread(watch) == [1, 1]


async def test_bad_metrics_requests_get_clear_statuses(server: RunningServer) -> None:
    qm = QueueManager(server.address)
    await qm.register_queue("known")
    for interval in (0.05, 61.0, -1.0):
        with pytest.raises(InvalidArgumentError, match="interval"):
            await anext(qm.watch_metrics(interval=interval))
    # Values of the wrong kind, refused before the call: "1" was read as a number, NaN failed in round() and
    # a number for the queues in list(), naming nothing.
    for bad_interval in ("1", True, None):
        with pytest.raises(TypeError, match=r"^interval must be seconds"):
            await anext(qm.watch_metrics(interval=bad_interval))  # type: ignore[arg-type]
    for huge in (float("nan"), float("inf"), 1e300):
        with pytest.raises(ValueError, match=r"^interval must be 0\.1 to 60 seconds"):
            await anext(qm.watch_metrics(interval=huge))
    with pytest.raises(TypeError, match=r"^queues must be a queue name, a list of names or None, not int"):
        await anext(qm.watch_metrics(5))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^queues must hold queue names \(str\), not int"):
        await anext(qm.watch_metrics(["known", 5]))  # type: ignore[list-item]
    with pytest.raises(NotFoundError, match="nope"):
        await anext(qm.watch_metrics(["known", "nope"]))
    with pytest.raises(InvalidArgumentError, match=re.escape("queue_names[0]")):
        await anext(qm.watch_metrics(["bad name"]))
    with pytest.raises(NotFoundError, match="nope"):
        await qm.get_queue_metrics("nope")
    with pytest.raises(NotFoundError, match="nope"):
        await qm.list_workers("nope")
    await qm.shutdown()


# ---- the histogram --------------------------------------------------------------------------------


def test_lua_and_python_share_the_duration_buckets() -> None:
    lua = (resources.files("queue_manager_server.engine") / "lua" / "includes" / "stats.lua").read_text()
    found = re.search(r"local DURATION_BOUNDS_MS = \{([^}]*)\}", lua)
    assert found is not None
    assert tuple(int(v) for v in found.group(1).replace("\n", " ").split(",")) == DURATION_BOUNDS_MS


def test_quantiles_interpolate_inside_the_bucket() -> None:
    counts = [0] * (len(DURATION_BOUNDS_MS) + 1)
    assert quantile_ms(counts, 0.95) is None
    counts[DURATION_BOUNDS_MS.index(25)] = COMPLETED  # (10, 25]
    counts[DURATION_BOUNDS_MS.index(500)] = FAILED  # (250, 500]
    assert quantile_ms(counts, 0.95) == P95_MS
    assert quantile_ms(counts, 0.5) == 10 + 15 * 50 / 90
    counts[-1] = 1000  # runs past the last bound count as the last bound
    assert quantile_ms(counts, 0.99) == DURATION_BOUNDS_MS[-1]
    assert COMPLETED_MS <= 25


# ---- the command line -----------------------------------------------------------------------------


async def test_cli_shows_metrics_and_workers(
    server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    await known_workload(add_via=server.address, work_via=server.address, queue="cli")
    worker = RawWorker(server.address, ["cli"], "cli-worker")
    await worker.connect()
    try:
        one = await qm_json(capsys, server, "queues", "metrics", "cli", "--history")
        assert (one["completed_total"], one["failed_total"], one["average_processing_time"]) == (
            90,
            10,
            MEAN_MS,
        )
        assert one["p95_processing_time"] == P95_MS and len(one["history"]) == 60 and one["workers"] == 1
        every = await qm_json(capsys, server, "queues", "metrics")
        assert {m["queue_name"] for m in every} == {"cli", "dead-letter-queue"}
        status, table, _ = await qm_cli(capsys, "--server", server.address, "queues", "metrics")
        assert status == 0 and table.splitlines()[0].split()[:3] == ["QUEUE_NAME", "WAITING", "ACTIVE"]
        workers = await qm_json(capsys, server, "workers", "list", "--queue", "cli")
        assert [(w["worker_id"], w["queues"], w["concurrency"]) for w in workers] == [
            ("cli-worker", ["cli"], 10)
        ]
        status, table, _ = await qm_cli(capsys, "--server", server.address, "workers", "list")
        assert status == 0 and "cli-worker" in table.splitlines()[1]
    finally:
        await worker.close()


async def qm_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Runs ``qm ARGV`` in a thread (the server shares this event loop)."""
    capsys.readouterr()
    status = await asyncio.to_thread(main, list(argv))
    out, err = capsys.readouterr()
    return status, out, err


async def qm_json(capsys: pytest.CaptureFixture[str], server: RunningServer, *argv: str) -> Any:
    status, out, err = await qm_cli(capsys, "--server", server.address, "-o", "json", *argv)
    assert status == 0, err
    return json.loads(out)
