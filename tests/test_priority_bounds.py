"""Anti-starvation aging (QueueConfig.priority_bounds): a job of a bounded level that has waited its bound
runs next, even under a steady stream of higher jobs; a moved job stays a job of its own priority for every
other operation; bad bounds are refused; several servers sweeping one queue move each job once.

A real server (or two) on a real Valkey, driven through the Python client; the waiting lists and job
hashes are read and seeded directly where a test must see or set their exact state.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from redis.asyncio import Redis

from queue_manager import JobContext, JobPriority, JobState, QueueManager
from queue_manager.v1 import queue_service_pb2, queue_service_pb2_grpc, types_pb2
from queue_manager_server import convert
from queue_manager_server.engine import Engine
from queue_manager_server.engine.aging import Aging
from queue_manager_server.engine.records import NewJob
from tests.conftest import RunningServer, ServerFactory
from tests.rawworker import eventually

WAIT = 30.0
SWEEP_MS = 100


@pytest.fixture
async def sweeping(server_factory: ServerFactory) -> RunningServer:
    return await server_factory(priority_sweep_ms=SWEEP_MS)


@pytest.fixture
async def qm(sweeping: RunningServer) -> AsyncIterator[QueueManager]:
    client = QueueManager(address=sweeping.address, shutdown_grace=5.0)
    yield client
    await client.shutdown()


def _level(prefix: str, queue: str, level: int) -> str:
    return f"{prefix}:{{{queue}}}:waiting:{level}"


def _job(prefix: str, queue: str, job_id: str) -> str:
    return f"{prefix}:{{{queue}}}:job:{job_id}"


async def _lists(redis: Redis, prefix: str, queue: str) -> list[list[str]]:
    return [[i.decode() for i in await redis.lrange(_level(prefix, queue, p), 0, -1)] for p in range(1, 6)]


async def _age(redis: Redis, prefix: str, queue: str, ids: list[str], seconds: float) -> None:
    """Makes the jobs look ready since `seconds` ago (the first the oldest), as if they had waited."""
    now_ms = int(time.time() * 1000)
    for n, job_id in enumerate(ids):
        await redis.hset(_job(prefix, queue, job_id), "ts", now_ms - int(seconds * 1000) + n)


# ---- the bound under a stream of higher jobs ------------------------------------------------------------


async def _background_under_high_stream(
    qm: QueueManager,
    queue: str,
    high_runs: int,
    background_ran: asyncio.Event,
    groups: tuple[str, str] = ("", ""),
) -> tuple[bool, float]:
    """A worker of concurrency 1 kept busy by HIGH jobs that each add another (5 always waiting), and one
    BACKGROUND job added once the stream runs (groups: the fairness groups of the HIGH jobs and of the
    BACKGROUND one, "" for none). Returns whether the BACKGROUND job ran before `high_runs` HIGH jobs
    completed after it was added, and how long after its add it started (`background_ran` is set when it
    does)."""
    high: dict[str, Any] = {"priority": JobPriority.HIGH, **({"group": groups[0]} if groups[0] else {})}
    background: dict[str, Any] = {
        "priority": JobPriority.BACKGROUND,
        **({"group": groups[1]} if groups[1] else {}),
    }
    started = asyncio.Event()
    ran_high = 0
    enough = asyncio.Event()
    background_at: list[float] = []
    added_at = 0.0

    async def work(job: JobContext) -> None:
        nonlocal ran_high
        if job.name == "background":
            assert job.priority is JobPriority.BACKGROUND  # it keeps its priority when moved ahead
            background_at.append(time.monotonic())
            background_ran.set()
            return
        if not started.is_set():
            started.set()
        elif added_at:
            ran_high += 1
            if ran_high >= high_runs:
                enough.set()
        await asyncio.sleep(0.02)  # the job's own work
        if not enough.is_set():
            await qm.add_job(queue, "high", None, high)

    qm.register_processor(queue, work)
    for _ in range(5):
        await qm.add_job(queue, "high", None, high)
    await qm.start_workers(concurrency=1)
    await asyncio.wait_for(started.wait(), WAIT)
    added_at = time.monotonic()
    await qm.add_job(queue, "background", None, background)
    done = asyncio.create_task(enough.wait())
    while not background_at and not done.done():
        await asyncio.wait([done], timeout=0.05)
    ran_first = bool(background_at)
    await asyncio.wait_for(done, WAIT)
    return ran_first, (background_at[0] - added_at) if background_at else -1.0


async def test_a_bounded_background_job_runs_within_its_bound_under_a_stream_of_high_jobs(
    qm: QueueManager,
) -> None:
    await qm.register_queue("bounded", priority_bounds={JobPriority.BACKGROUND: timedelta(seconds=1)})
    # 200 HIGH runs of 20 ms or more take 4 s at least: far past the bound and a few sweeps.
    ran, after = await _background_under_high_stream(qm, "bounded", 200, asyncio.Event())
    assert ran, "the BACKGROUND job did not run while HIGH jobs kept coming"
    assert 1.0 <= after < 1.0 + 10 * SWEEP_MS / 1000, after


async def test_a_grouped_background_job_runs_within_its_bound_under_a_stream_of_another_groups_high_jobs(
    qm: QueueManager,
) -> None:
    await qm.register_queue("bounded-groups", priority_bounds={JobPriority.BACKGROUND: timedelta(seconds=1)})
    ran, after = await _background_under_high_stream(
        qm, "bounded-groups", 200, asyncio.Event(), groups=("flood", "tenant")
    )
    assert ran, "the grouped BACKGROUND job did not run while another group's HIGH jobs kept coming"
    assert 1.0 <= after < 1.0 + 10 * SWEEP_MS / 1000, after


async def test_without_a_bound_background_waits_while_high_jobs_keep_coming(qm: QueueManager) -> None:
    await qm.register_queue("strict")
    background_ran = asyncio.Event()
    ran, _ = await _background_under_high_stream(qm, "strict", 200, background_ran)
    assert not ran
    # Once the stream stops, it runs (or already ran after the last HIGH job).
    await asyncio.wait_for(background_ran.wait(), WAIT)


# ---- a moved job is still a job of its priority -----------------------------------------------------------


async def test_a_moved_job_keeps_its_priority_for_listing_metrics_and_every_operation(
    qm: QueueManager, sweeping: RunningServer, redis: Redis
) -> None:
    prefix, q = sweeping.prefix, "moved"
    await qm.register_queue(q, priority_bounds={"background": 60_000})
    critical = (await qm.add_job(q, "c", None, {"priority": "critical"})).id
    old = [(await qm.add_job(q, f"b{i}", None, {"priority": "background"})).id for i in range(4)]
    young = (await qm.add_job(q, "young", None, {"priority": "background"})).id
    normal = (await qm.add_job(q, "n", None)).id
    await _age(redis, prefix, q, old, seconds=120)

    engine = Engine(redis, prefix)
    await Aging(engine).age_waiting(q)  # the sweep's call, now (the server's own sweep may come first)
    assert await _lists(redis, prefix, q) == [[*old, critical], [], [normal], [], [young]]

    jobs, _ = await qm.list_jobs(q, "waiting")
    assert [j.id for j in jobs] == [*old, critical, normal, young]  # the order they run in
    assert [j.priority for j in jobs[:4]] == [JobPriority.BACKGROUND] * 4
    m = await qm.get_queue_metrics(q)
    assert [(lv.priority, lv.waiting) for lv in m.levels] == [
        (JobPriority.CRITICAL, 1),
        (JobPriority.HIGH, 0),
        (JobPriority.NORMAL, 1),
        (JobPriority.LOW, 0),
        (JobPriority.BACKGROUND, 5),
    ]
    oldest = m.levels[JobPriority.BACKGROUND - 1].oldest_waiting_age
    assert oldest is not None and oldest >= timedelta(seconds=119)
    assert m.levels[JobPriority.CRITICAL - 1].oldest_waiting_age < timedelta(seconds=60)  # type: ignore[operator]
    assert m.oldest_waiting_age == oldest
    assert m.levels[JobPriority.HIGH - 1].oldest_waiting_age is None

    assert await qm.remove_job(q, old[0]) is JobState.WAITING
    assert (await qm.cancel_job(q, old[1], "not needed")).state is JobState.CANCELLED
    assert (await qm.change_priority(q, old[2], JobPriority.HIGH)).priority is JobPriority.HIGH
    assert await _lists(redis, prefix, q) == [[old[3], critical], [old[2]], [normal], [], [young]]
    # The two old ones left (one moved, one re-prioritised) are the only waiting jobs over 60 s old.
    assert await qm.clean_queue(q, 60_000, "waiting") == 2
    assert await _lists(redis, prefix, q) == [[critical], [], [normal], [], [young]]


async def test_a_claimed_moved_job_reports_its_own_priority(
    qm: QueueManager, sweeping: RunningServer, redis: Redis
) -> None:
    prefix, q = sweeping.prefix, "claimed"
    await qm.register_queue(q, priority_bounds={JobPriority.LOW: 1000, JobPriority.BACKGROUND: 2000})
    low = (await qm.add_job(q, "low", None, {"priority": "low"})).id
    background = (await qm.add_job(q, "background", None, {"priority": "background"})).id
    high = (await qm.add_job(q, "high", None, {"priority": "high"})).id
    await _age(redis, prefix, q, [background], seconds=30)
    await _age(redis, prefix, q, [low], seconds=20)
    await Aging(Engine(redis, prefix)).age_waiting(q)
    assert await _lists(redis, prefix, q) == [[background, low], [high], [], [], []]  # oldest first

    seen: list[tuple[str, JobPriority]] = []
    all_ran = asyncio.Event()

    def work(job: JobContext) -> None:
        seen.append((job.id, job.priority))
        if len(seen) == 3:
            all_ran.set()

    qm.register_processor(q, work)
    await qm.start_workers(concurrency=1)
    await asyncio.wait_for(all_ran.wait(), WAIT)
    assert seen == [
        (background, JobPriority.BACKGROUND),
        (low, JobPriority.LOW),
        (high, JobPriority.HIGH),
    ]


async def test_later_moves_line_up_behind_earlier_ones_and_paused_queues_wait(
    qm: QueueManager, sweeping: RunningServer, redis: Redis
) -> None:
    prefix, q = sweeping.prefix, "lineup"
    await qm.register_queue(q, priority_bounds={JobPriority.NORMAL: 5000, JobPriority.BACKGROUND: 5000})
    critical = (await qm.add_job(q, "c", None, {"priority": "critical"})).id
    first = (await qm.add_job(q, "first", None, {"priority": "background"})).id
    second = (await qm.add_job(q, "second", None)).id
    aging = Aging(Engine(redis, prefix))
    await _age(redis, prefix, q, [first], seconds=60)
    await aging.age_waiting(q)
    await qm.pause_queue(q)
    await _age(redis, prefix, q, [second], seconds=90)  # older, but past its bound later
    assert (await aging.age_waiting(q)).moved == 0  # paused: nothing moves
    await qm.resume_queue(q)
    await aging.age_waiting(q)
    assert await _lists(redis, prefix, q) == [[first, second, critical], [], [], [], []]


# ---- fairness groups ----------------------------------------------------------------------------------


async def _register_bounded(engine: Engine, queue: str, *levels: int) -> None:
    bounds = [types_pb2.PriorityBound(priority=p, max_wait=Duration(seconds=1)) for p in levels]  # type: ignore[arg-type]
    fields, _ = convert.queue_meta(types_pb2.QueueConfig(disable_dead_letter=True, priority_bounds=bounds))
    await engine.register_queue(queue, fields)


def _new(name: str, priority: int, group: str = "") -> NewJob:
    return NewJob(id="", name=name, data=b"null", priority=priority, group=group)


async def _group_list(redis: Redis, prefix: str, queue: str, level: int, group: str) -> list[str]:
    return [i.decode() for i in await redis.lrange(f"{prefix}:{{{queue}}}:gwait:{level}:{group}", 0, -1)]


async def test_a_groups_job_past_its_bound_moves_to_its_groups_first_level_and_takes_turns_there(
    engine: Engine, redis: Redis, prefix: str
) -> None:
    q = "grouped"
    await _register_bounded(engine, q, types_pb2.JOB_PRIORITY_LOW)
    ids = (
        await engine.add_jobs(
            q,
            [
                _new("a-low-1", 4, "a"),
                _new("a-low-2", 4, "a"),
                _new("a-low-3", 4, "a"),
                _new("b-high-1", 2, "b"),
                _new("b-high-2", 2, "b"),
                _new("normal", 3),
            ],
        )
    ).ids
    await _age(redis, prefix, q, [ids[1], ids[0]], seconds=30)  # a-low-2 the older of the two
    aged = await Aging(engine).age_waiting(q)
    assert (aged.moved, aged.go_on, aged.more) == (2, "", False)
    assert await _group_list(redis, prefix, q, 1, "a") == [ids[1], ids[0]]  # oldest first
    assert await _group_list(redis, prefix, q, 4, "a") == [ids[2]]
    assert await redis.hget(f"{prefix}:{{{q}}}:gwaiting", "a") == b"3"  # still the group's waiting jobs
    # They run before every lower level (the group's turn at the first level), with their own priority.
    order = []
    for _ in range(6):
        claimed = (await engine.claim(q, 1, "t", "w", 30_000)).jobs
        order += [(j.name, j.priority) for j in claimed]
    assert order == [
        ("a-low-2", 4),
        ("a-low-1", 4),
        ("b-high-1", 2),
        ("b-high-2", 2),
        ("normal", 3),
        ("a-low-3", 4),
    ]


async def test_the_groups_are_swept_a_few_per_call_and_a_call_stops_at_its_limit(
    engine: Engine, redis: Redis, prefix: str
) -> None:
    q = "many-groups"
    await _register_bounded(engine, q, types_pb2.JOB_PRIORITY_BACKGROUND)
    names = ["e", "d", "c", "b", "a"]
    ids = (await engine.add_jobs(q, [_new(f"{g}{n}", 5, g) for g in names for n in range(3)])).ids
    by_group = {g: ids[i * 3 : i * 3 + 3] for i, g in enumerate(names)}
    await _age(redis, prefix, q, ids, seconds=30)
    aging = Aging(engine)
    # Two groups per call, by name: "a" and "b" first; the next call goes on after "b".
    aged = await aging.age_waiting(q, visits=2)
    assert (aged.moved, aged.go_on, aged.more) == (6, "b", True)
    assert await aging.go_on(q, aged, visits=2) == 9
    for g in names:
        assert await _group_list(redis, prefix, q, 1, g) == by_group[g]
        assert await _group_list(redis, prefix, q, 5, g) == []
    # A call that reaches its limit inside a group leaves the rest of it to the next call, from that group.
    more = (await engine.add_jobs(q, [_new(f"c-late-{n}", 5, "c") for n in range(5)])).ids
    await _age(redis, prefix, q, more, seconds=20)
    aged = await aging.age_waiting(q, limit=3, after="b")
    assert (aged.moved, aged.go_on, aged.more) == (3, "b", True)
    assert await aging.go_on(q, aged, limit=3) == 2
    # Later moves line up behind the earlier ones, oldest first.
    assert await _group_list(redis, prefix, q, 1, "c") == by_group["c"] + more
    assert (await aging.age_waiting(q)).moved == 0


# ---- when a wait starts -----------------------------------------------------------------------------------


async def test_a_promoted_or_retried_job_waits_from_when_it_became_ready_again(
    qm: QueueManager, sweeping: RunningServer, redis: Redis
) -> None:
    prefix, q = sweeping.prefix, "again"
    await qm.register_queue(q, priority_bounds={JobPriority.BACKGROUND: 30_000})
    delayed = (await qm.add_job(q, "later", None, {"priority": "background", "delay": 3_600_000})).id
    await _age(redis, prefix, q, [delayed], seconds=600)  # added long ago
    await qm.promote_job(q, delayed)
    assert (await Aging(Engine(redis, prefix)).age_waiting(q)).moved == 0
    m = await qm.get_queue_metrics(q)
    assert m.oldest_waiting_age is not None and m.oldest_waiting_age < timedelta(seconds=30)

    await qm.remove_job(q, delayed)
    failed = (await qm.add_job(q, "fails", None, {"priority": "background", "attempts": 1})).id
    ran = asyncio.Event()

    def work(job: JobContext) -> None:
        ran.set()
        raise RuntimeError("no")

    worker = QueueManager(address=sweeping.address)
    worker.register_processor(q, work)
    await worker.start_workers(concurrency=1)
    await asyncio.wait_for(ran.wait(), WAIT)
    assert (await qm.wait_for_job(q, failed, timeout=WAIT)).state is JobState.FAILED
    await worker.shutdown()
    await _age(redis, prefix, q, [failed], seconds=600)
    await qm.retry_job(q, failed)
    assert (await Aging(Engine(redis, prefix)).age_waiting(q)).moved == 0
    m = await qm.get_queue_metrics(q)
    assert m.oldest_waiting_age is not None and m.oldest_waiting_age < timedelta(seconds=30)


# ---- two servers ------------------------------------------------------------------------------------------


async def test_two_servers_sweeping_one_queue_move_each_job_once(
    server_factory: ServerFactory, redis: Redis
) -> None:
    a = await server_factory(priority_sweep_ms=20)
    await server_factory(priority_sweep_ms=20)
    prefix, q = a.prefix, "shared"
    qm = QueueManager(address=a.address)
    try:
        await qm.register_queue(q, priority_bounds={JobPriority.LOW: 1000, JobPriority.BACKGROUND: 1000})
        critical = (await qm.add_job(q, "c", None, {"priority": "critical"})).id
        ids = await qm.add_bulk(
            q, [{"name": "b", "options": {"priority": "background" if i % 2 else "low"}} for i in range(600)]
        )
        # Aged all at once, while both servers sweep and this test calls the script too, in small bites.
        pipe = redis.pipeline()
        now_ms = int(time.time() * 1000)
        for n, job_id in enumerate(ids):
            pipe.hset(_job(prefix, q, job_id), "ts", now_ms - 60_000 + n)
        await pipe.execute()
        aging = Aging(Engine(redis, prefix))
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            await asyncio.gather(*(aging.age_waiting(q, limit=7) for _ in range(8)))
            lists = await _lists(redis, prefix, q)
            if not lists[3] and not lists[4]:
                break
        lists = await _lists(redis, prefix, q)
        assert lists[1:] == [[], [], [], []]
        assert len(lists[0]) == len(set(lists[0])) == 601
        assert set(lists[0]) == {*ids, critical}
        assert lists[0][-1] == critical
        # Each level's jobs keep their order: the moves line up one behind the other.
        moved = lists[0][:-1]
        for level in (ids[0::2], ids[1::2]):
            assert [i for i in moved if i in set(level)] == level
    finally:
        await qm.shutdown()


# ---- the config ---------------------------------------------------------------------------------------


async def test_bounds_are_stored_by_level_and_read_back(qm: QueueManager) -> None:
    queue = await qm.register_queue(
        "conf", priority_bounds={"background": timedelta(minutes=5), 2: 1500, JobPriority.LOW: 60_000}
    )
    assert queue.config.priority_bounds == {
        JobPriority.HIGH: timedelta(milliseconds=1500),
        JobPriority.LOW: timedelta(minutes=1),
        JobPriority.BACKGROUND: timedelta(minutes=5),
    }
    assert list((await qm.get_queue("conf")).config.priority_bounds) == [
        JobPriority.HIGH,
        JobPriority.LOW,
        JobPriority.BACKGROUND,
    ]
    assert (await qm.register_queue("conf")).config.priority_bounds == {}


@pytest.mark.parametrize(
    ("bounds", "field", "words"),
    [
        ([{"priority": 0, "seconds": 60}], "config.priority_bounds[0].priority", "is required"),
        ([{"priority": 9, "seconds": 60}], "config.priority_bounds[0].priority", "not a known JobPriority"),
        ([{"priority": 1, "seconds": 60}], "config.priority_bounds[0].priority", "CRITICAL jobs run first"),
        (
            [{"priority": 5, "seconds": 60}, {"priority": 5, "seconds": 5}],
            "config.priority_bounds[1].priority",
            "BACKGROUND is bounded twice (also at config.priority_bounds[0])",
        ),
        (
            [{"priority": 4, "nanos": 500_000_000}],
            "config.priority_bounds[0].max_wait",
            "500 ms is out of range",
        ),
        ([{"priority": 4, "seconds": 31 * 86400}], "config.priority_bounds[0].max_wait", "30 days"),
        ([{"priority": 4}], "config.priority_bounds[0].max_wait", "is required"),
        ([{"priority": 4, "seconds": -1}], "config.priority_bounds[0].max_wait", "must not be negative"),
    ],
)
async def test_bad_bounds_are_invalid_argument_naming_the_entry(
    sweeping: RunningServer, bounds: list[dict[str, Any]], field: str, words: str
) -> None:
    config = types_pb2.QueueConfig()
    for b in bounds:
        entry = config.priority_bounds.add(priority=b["priority"])
        if "seconds" in b or "nanos" in b:
            entry.max_wait.CopyFrom(Duration(seconds=b.get("seconds", 0), nanos=b.get("nanos", 0)))
    async with grpc.aio.insecure_channel(sweeping.address) as channel:
        stub = queue_service_pb2_grpc.QueueServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.RegisterQueue(queue_service_pb2.RegisterQueueRequest(name="bad", config=config))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (caught.value.details() or "")
    assert words in (caught.value.details() or "")


@pytest.mark.parametrize(
    ("bounds", "words"),
    [
        ({JobPriority.CRITICAL: 5000}, "CRITICAL jobs run first already"),
        ({"background": 60}, "60 ms: a bound is from 1 second to 30 days"),
        ({"low": timedelta(days=31)}, r"priority_bounds\[LOW\] is 2678400000 ms: a bound is from 1 second"),
        ({"low": -5}, r"priority_bounds\[LOW\] is -5 ms: a bound is from 1 second"),
        ({"low": timedelta(seconds=-1)}, r"is -1000 ms: a bound is from 1 second"),
        ({"low": 999.5}, r"is 999.5 ms: a bound"),
        ({"background": 5000, 5: 6000}, "BACKGROUND is given twice"),
        ({"urgent": 5000}, "is not one of"),
    ],
)
async def test_the_client_refuses_bad_bounds_before_the_call(
    qm: QueueManager, bounds: dict[Any, Any], words: str
) -> None:
    with pytest.raises(ValueError, match=words):
        await qm.register_queue("never", priority_bounds=bounds)


async def test_a_run_retried_at_once_waits_from_its_failure(
    qm: QueueManager, sweeping: RunningServer, redis: Redis
) -> None:
    prefix, q = sweeping.prefix, "at-once"
    await qm.register_queue(q, priority_bounds={JobPriority.BACKGROUND: 30_000})
    job = (await qm.add_job(q, "flaky", None, {"priority": "background", "attempts": 2})).id
    claimed, fail = asyncio.Event(), asyncio.Event()

    async def work(ctx: JobContext) -> None:
        claimed.set()
        await fail.wait()
        raise RuntimeError("once")

    worker = QueueManager(address=sweeping.address)
    worker.register_processor(q, work)
    await worker.start_workers(concurrency=1)
    try:
        await asyncio.wait_for(claimed.wait(), WAIT)
        await qm.pause_queue(q)  # the retry stays waiting (paused) for the test to look at
        await _age(redis, prefix, q, [job], seconds=600)
        fail.set()

        async def retried() -> bool:
            return (await qm.get_job(q, job)).state is JobState.PAUSED

        await eventually(retried, WAIT)
        m = await qm.get_queue_metrics(q)
        assert m.oldest_waiting_age is not None and m.oldest_waiting_age < timedelta(seconds=30)
    finally:
        await worker.shutdown()


async def test_the_cli_merges_max_wait_flags_and_shows_the_levels(
    sweeping: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.test_cli import qm_cli, qm_json, usage_error

    def bounds(queue: Any) -> Any:
        return queue["config"]["priority_bounds"]

    first = await qm_json(
        capsys, sweeping, "queues", "register", "c", "--max-wait", "background=5m", "--max-wait", "LOW=1500ms"
    )
    assert bounds(first) == {"low": 1500, "background": 300_000}
    other = await qm_json(capsys, sweeping, "queues", "register", "c", "--concurrency", "2")
    assert bounds(other) == {"low": 1500, "background": 300_000}  # kept: the CLI merges
    changed = await qm_json(
        capsys, sweeping, "queues", "register", "c", "--max-wait", "low=off", "--max-wait", "high=2h"
    )
    assert bounds(changed) == {"high": 7_200_000, "background": 300_000}
    status, out, err = await qm_cli(capsys, "--server", sweeping.address, "queues", "list")
    assert status == 0, err
    assert "MAX_WAIT" in out and "high=2h,background=5m" in out  # as --max-wait takes them
    await qm_json(
        capsys, sweeping, "queues", "register", "c", "--max-wait", "normal=1500ms", "--max-wait", "low=90s"
    )
    status, out, err = await qm_cli(capsys, "--server", sweeping.address, "queues", "list")
    assert "high=2h,normal=1500ms,low=90s,background=5m" in out, out
    status, out, err = await qm_cli(capsys, "--server", sweeping.address, "queues", "metrics", "c")
    assert status == 0, err
    assert "PRIORITY" in out and "background" in out

    for flag, says in (
        ("critical=5s", "critical jobs run first already"),
        ("background=500ms", "500ms is out of range: a bound is from 1s to 30d"),
        ("background=60", "'60' is not a duration"),
        ("urgent=5s", "is not one of"),
        ("background", "is not LEVEL=DURATION"),
    ):
        err = await usage_error(capsys, sweeping, "queues", "register", "c", "--max-wait", flag)
        assert says in err, err
