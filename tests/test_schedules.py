"""Repeatable schedules against a real Valkey and real servers: firing on time once per occurrence with two
servers, limits, start and end, catch-up after an outage, upsert, delete, validation, obliterate, the CLI.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import grpc
import pytest
from redis.asyncio import Redis

from queue_manager import JobPriority, NotFoundError, QueueManager, Schedule, SyncQueueManager
from queue_manager.cli import main
from queue_manager.v1 import jobs_pb2, schedules_pb2, types_pb2
from queue_manager.v1 import queue_service_pb2_grpc as qrpc
from queue_manager_server import convert
from queue_manager_server.engine import Engine
from queue_manager_server.engine.keys import QueueKeys
from queue_manager_server.recurrence import Recurrence, check_cron, plan
from queue_manager_server.services.schedules import ScheduleHandlers
from tests.conftest import RunningServer, ServerFactory

WAIT = 20.0  # generous bound for anything a test awaits
HOUR = 3_600_000
T = TypeVar("T")


async def until(probe: Callable[[], Awaitable[T | None]], what: str, timeout: float = WAIT) -> T:
    """Polls `probe` until it returns something other than None (bounded)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await probe()
        if value is not None:
            return value
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def redis_ms(redis: Redis) -> int:
    sec, usec = await redis.time()
    return int(sec) * 1000 + int(usec) // 1000


def at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def ms(moment: datetime | None) -> int:
    assert moment is not None
    return round(moment.timestamp() * 1000)


async def waiting_ids(redis: Redis, k: QueueKeys) -> list[bytes]:
    """A queue's waiting job ids in the order they run (the priority levels' lists one after another)."""
    return [i for level in k.waiting_levels for i in await redis.lrange(level, 0, -1)]


async def fired(redis: Redis, prefix: str, queue: str, schedule_id: str) -> dict[int, dict[str, str]]:
    """The waiting jobs a schedule added, in queue order: occurrence ms -> job fields (name, ts…)."""
    k = QueueKeys(prefix, queue)
    mark = f"schedule:{schedule_id}:"
    out: dict[int, dict[str, str]] = {}
    for raw in await waiting_ids(redis, k):
        job_id = raw.decode()
        if job_id.startswith(mark):
            fields = await redis.hgetall(k.job(job_id))
            out[int(job_id[len(mark) :])] = {f.decode(): v.decode() for f, v in fields.items()}
    return out


async def wait_over(qm: QueueManager, queue: str, schedule_id: str) -> Schedule:
    """Waits until a schedule has no next run (limit reached or past its end)."""

    async def over() -> Schedule | None:
        s = await qm.get_schedule(queue, schedule_id)
        return s if s.next_run_at is None else None

    return await until(over, f"schedule {schedule_id} to be over")


# ---- firing -------------------------------------------------------------------------------------


async def test_cron_fires_each_occurrence_once_on_time_with_two_servers(
    server_factory: ServerFactory, redis: Redis, prefix: str
) -> None:
    a = await server_factory()
    await server_factory()  # a second server, whose scheduler races the first for every occurrence
    async with QueueManager(a.address) as qm:
        await qm.register_queue("ticks")
        created = await qm.add_schedule(
            "ticks", "every-second", cron="* * * * * *", job_name="tick", data={"n": 1}
        )
        assert (created.timezone, created.catch_up, created.run_count) == ("UTC", "skip", 0)
        assert ms(created.next_run_at) % 1000 == 0

        async def four() -> dict[int, dict[str, str]] | None:
            jobs = await fired(redis, prefix, "ticks", "every-second")
            return jobs if len(jobs) >= 4 else None

        await until(four, "four runs")
        final = await qm.delete_schedule("ticks", "every-second")
    jobs = await fired(redis, prefix, "ticks", "every-second")
    assert len(await waiting_ids(redis, QueueKeys(prefix, "ticks"))) == len(jobs)  # no other job was added
    occurrences = sorted(jobs)
    # Every second once, none skipped; the run count says no occurrence was fired twice (each firing of
    # an occurrence, even one whose job id already existed, counts a run).
    assert occurrences == list(range(occurrences[0], occurrences[-1] + 1000, 1000))
    assert final.run_count == len(occurrences)
    assert final.last_job_id == f"schedule:every-second:{occurrences[-1]}"
    assert all(job["name"] == "tick" and json.loads(job["data"]) == {"n": 1} for job in jobs.values())
    lateness = [int(job["ts"]) - occurrence for occurrence, job in jobs.items()]
    assert all(0 <= late < 250 for late in lateness), lateness  # measured: a few ms


async def test_interval_with_limit_and_job_options(server: RunningServer, redis: Redis, prefix: str) -> None:
    start = await redis_ms(redis) + 300
    async with QueueManager(server.address) as qm:
        await qm.register_queue("pings")
        await qm.register_queue("after-ping")
        chain = [{"queue_name": "after-ping", "job_name": "log"}]
        created = await qm.add_schedule(
            "pings",
            "thrice",
            every=timedelta(seconds=1),
            start=at(start),
            limit=3,
            job_name="ping",
            options={"priority": "high", "attempts": 2, "chain_to": chain},
        )
        assert (created.every, created.limit, ms(created.next_run_at)) == (timedelta(seconds=1), 3, start)
        over = await wait_over(qm, "pings", "thrice")
        job = await qm.get_job("pings", over.last_job_id)
    jobs = await fired(redis, prefix, "pings", "thrice")
    assert list(jobs) == [start, start + 1000, start + 2000]
    assert (over.run_count, over.last_job_id) == (3, f"schedule:thrice:{start + 2000}")
    assert ms(over.last_run_at) >= start + 2000
    # The template's options reach each job, chain_to included (the add is the normal insert).
    assert (job.priority, job.max_attempts) == (JobPriority.HIGH, 2)
    assert job.options.chain_to and job.options.chain_to[0].queue_name == "after-ping"


async def test_dedup_in_the_template_prevents_overlapping_runs(
    server: RunningServer, redis: Redis, prefix: str
) -> None:
    # No worker takes the first run's job, so it holds its dedup key: the later occurrences add nothing.
    async with QueueManager(server.address) as qm:
        await qm.register_queue("sync")
        await qm.add_schedule("sync", "d", every=1000, job_name="sync", options={"dedup": "sync-all"})

        async def two_runs() -> Schedule | None:
            s = await qm.get_schedule("sync", "d")
            return s if s.run_count >= 2 else None

        s = await until(two_runs, "two runs")
    jobs = await fired(redis, prefix, "sync", "d")
    assert len(jobs) == 1
    assert s.last_job_id == f"schedule:d:{next(iter(jobs))}"  # each run answered by the holder


async def test_start_and_end_bound_the_runs(server: RunningServer, redis: Redis, prefix: str) -> None:
    start = await redis_ms(redis) + 1200
    end = start + 2000
    expected = list(range(-(-start // 1000) * 1000, end + 1, 1000))  # whole seconds in [start, end]
    async with QueueManager(server.address) as qm:
        await qm.register_queue("window")
        created = await qm.add_schedule(
            "window", "w", cron="* * * * * *", start=at(start), end=at(end), job_name="tick"
        )
        assert ms(created.next_run_at) == expected[0]
        over = await wait_over(qm, "window", "w")
    assert list(await fired(redis, prefix, "window", "w")) == expected
    assert over.run_count == len(expected)


async def test_cron_time_zone(server: RunningServer) -> None:
    async with QueueManager(server.address) as qm:
        await qm.register_queue("tz")
        s = await qm.add_schedule(
            "tz", "nine", cron="0 9 * * *", timezone="America/New_York", job_name="standup"
        )
    assert s.timezone == "America/New_York"
    assert s.next_run_at is not None
    local = s.next_run_at.astimezone(ZoneInfo("America/New_York"))
    assert (local.hour, local.minute, local.second) == (9, 0, 0)


def test_upsert_event_arms_the_scheduler_and_wakes_no_dispatcher() -> None:
    """``s <queue> <due>`` (published by upsert_schedule.lua) arms a timer in every server's scheduler."""
    from queue_manager_server.components.notifier import Notifier

    armed: list[tuple[str, int]] = []
    woken: list[str] = []
    dispatcher = SimpleNamespace(wake=woken.append)
    scheduler = SimpleNamespace(schedule=lambda queue, due: armed.append((queue, due)))
    notifier = Notifier(None, "ch", dispatcher, SimpleNamespace(), scheduler)  # type: ignore[arg-type]
    notifier._dispatch(b"s reports 1700000000000".split(b" "))
    assert (armed, woken) == ([("reports", 1_700_000_000_000)], [])


# ---- catch-up after an outage -------------------------------------------------------------------


async def outage(
    server_factory: ServerFactory, redis: Redis, prefix: str, policy: str, every_ms: int, missed: float
) -> tuple[int, Schedule]:
    """Creates an interval schedule whose occurrences started `missed` intervals ago, then simulates an
    outage: the server stops, and the schedule's due time stays at its first occurrence, as when no
    server ran since. A new server then starts. Returns (the first occurrence, the schedule once the
    new server has caught up)."""
    server = await server_factory()
    start = await redis_ms(redis) - int(missed * every_ms)
    async with QueueManager(server.address) as qm:
        await qm.register_queue("reports")
        s = await qm.add_schedule(
            "reports", "r", every=every_ms, start=at(start), job_name="report", catch_up=policy
        )
    following = start + (int(missed) + 1) * every_ms
    assert ms(s.next_run_at) == following  # creating a schedule never back-fills its past
    await server.stop()
    await redis.zadd(QueueKeys(prefix, "reports").schedule_due, {"r": start})
    async with QueueManager((await server_factory()).address) as qm:

        async def caught_up() -> Schedule | None:
            s = await qm.get_schedule("reports", "r")
            return s if ms(s.next_run_at) == following else None

        return start, await until(caught_up, "the catch-up")


async def test_same_upsert_again_keeps_a_missed_run_due(engine: Engine, redis: Redis, prefix: str) -> None:
    """Applications upsert their schedules at every start: doing so after an outage must not drop the
    catch-up, while a real change starts the schedule afresh. (No server runs here, so nothing fires.)"""
    handlers = ScheduleHandlers()
    handlers.engine, handlers.max_payload = engine, 1 << 20
    fields, _ = convert.queue_meta(types_pb2.QueueConfig())
    await engine.register_queue("q", fields)
    start = await redis_ms(redis) - int(10.5 * HOUR)
    request = schedules_pb2.UpsertScheduleRequest()
    s = request.schedule
    s.id, s.queue_name, s.job.name, s.catch_up = "r", "q", "x", schedules_pb2.SCHEDULE_CATCH_UP_ONE
    s.every.FromMilliseconds(HOUR)
    s.start_time.FromMilliseconds(start)
    first = await handlers.UpsertSchedule(request, None)
    await redis.zadd(QueueKeys(prefix, "q").schedule_due, {"r": start})  # the outage
    again = await handlers.UpsertSchedule(request, None)
    assert not again.created
    assert again.schedule.next_run_time.ToMilliseconds() == start
    assert again.schedule.update_time == first.schedule.update_time
    s.job.name = "y"
    changed = await handlers.UpsertSchedule(request, None)
    assert changed.schedule.next_run_time.ToMilliseconds() == start + 11 * HOUR
    assert changed.schedule.create_time == first.schedule.create_time


@pytest.mark.parametrize(("policy", "runs"), [("skip", []), ("one", [10]), ("all", list(range(11)))])
async def test_catch_up_after_outage(
    server_factory: ServerFactory, redis: Redis, prefix: str, policy: str, runs: list[int]
) -> None:
    # Hourly runs, the first 10.5 hours ago: 11 occurrences were missed, the last one half an hour ago.
    start, s = await outage(server_factory, redis, prefix, policy, HOUR, 10.5)
    jobs = await fired(redis, prefix, "reports", "r")
    assert list(jobs) == [start + k * HOUR for k in runs]  # in order, oldest first
    assert s.run_count == len(runs)


async def test_catch_up_all_is_bounded(server_factory: ServerFactory, redis: Redis, prefix: str) -> None:
    # 1,501 missed minutes: the most recent 1,000 run, oldest first, and the schedule goes on.
    start, s = await outage(server_factory, redis, prefix, "all", 60_000, 1500.5)
    jobs = await fired(redis, prefix, "reports", "r")
    assert list(jobs) == [start + k * 60_000 for k in range(501, 1501)]
    assert s.run_count == 1000


def test_plan_policies() -> None:
    rec = Recurrence(every_ms=1000, anchor_ms=10_000)
    # On time: the due occurrence runs whatever the policy.
    for policy in ("skip", "one", "all"):
        assert plan(rec, 12_000, 12_030, policy, None, 500).occurrences == [12_000]
    # A stall of a few seconds: skip and one run the latest occurrence, all runs each.
    assert plan(rec, 12_000, 15_500, "skip", None, 500).occurrences == [15_000]
    assert plan(rec, 12_000, 15_500, "all", None, 500).occurrences == [12_000, 13_000, 14_000, 15_000]
    # A catch-up larger than one firing's chunk leaves the rest due; a limit ends the schedule.
    chunked = plan(rec, 12_000, 15_500, "all", None, 2)
    assert (chunked.occurrences, chunked.next_due_ms) == ([12_000, 13_000], 14_000)
    limited = plan(rec, 12_000, 15_500, "all", 3, 500)
    assert (limited.occurrences, limited.next_due_ms) == ([12_000, 13_000, 14_000], -1)


def test_cron_across_daylight_saving_changes() -> None:
    paris = Recurrence(cron="30 2 * * *", zone=ZoneInfo("Europe/Paris"))
    # Clocks go back on 2025-10-26: 02:30 happens twice that night and the job runs once (Debian cron).
    autumn = paris.between(
        ms(datetime(2025, 10, 25, 12, tzinfo=UTC)), ms(datetime(2025, 10, 27, 12, tzinfo=UTC)), 10
    )
    assert [at(o).isoformat() for o in autumn] == ["2025-10-26T00:30:00+00:00", "2025-10-27T01:30:00+00:00"]
    # Clocks go forward on 2025-03-30: 02:30 does not exist, and the job runs at 03:00 local instead.
    spring = paris.first_at_or_after(ms(datetime(2025, 3, 29, 12, tzinfo=UTC)))
    assert spring is not None and at(spring).isoformat() == "2025-03-30T01:00:00+00:00"


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("0 0 30 2 *", r"'0 0 30 2 \*' never matches: none of the months it names has the day of the month"),
        ("0 0 0 31 4,6 *", "never matches: none of the months"),  # six fields, seconds first
        ("0 0 32 * *", r"'0 0 32 \* \*' is not a valid cron expression: Bad day-of-month"),
        ("0 0 1 13 *", "is not a valid cron expression: Bad month"),
    ],
)
def test_a_cron_that_never_matches_is_told_from_a_malformed_one(cron: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_cron(cron, UTC)


async def test_cron_with_no_occurrence_before_year_10000(server: RunningServer) -> None:
    """A start in the year 9999 after its last occurrence (a yearly run on 1 January) left cronsim stepping
    past datetime's range: an INTERNAL error. The schedule is stored, with no next run."""
    last = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
    yearly = Recurrence(cron="0 0 1 1 *", start_ms=ms(datetime(9999, 6, 1, tzinfo=UTC)))
    assert yearly.first_at_or_after(yearly.start_ms) is None
    hourly = Recurrence(cron="0 * * * *")
    assert hourly.first_at_or_after(ms(last) - 1000) is None
    assert hourly.between(ms(last) - 7_200_000, ms(last), 5) == [
        ms(datetime(9999, 12, 31, 22, tzinfo=UTC)),
        ms(datetime(9999, 12, 31, 23, tzinfo=UTC)),
    ]
    async with QueueManager(server.address) as qm:
        await qm.register_queue("far")
        s = await qm.add_schedule(
            "far", "y", cron="0 0 1 1 *", start=datetime(9999, 6, 1, tzinfo=UTC), job_name="j"
        )
        assert s.next_run_at is None
        assert (await qm.get_schedule("far", "y")).next_run_at is None


# ---- managing schedules -------------------------------------------------------------------------


async def test_upsert_replaces(server: RunningServer, redis: Redis, prefix: str) -> None:
    async with grpc.aio.insecure_channel(server.address) as channel, QueueManager(server.address) as qm:
        stub = qrpc.QueueServiceStub(channel)
        await qm.register_queue("up")
        yearly = schedules_pb2.Schedule(
            id="s", queue_name="up", cron="0 0 1 1 *", job=jobs_pb2.NewJob(name="v1")
        )
        first = await stub.UpsertSchedule(schedules_pb2.UpsertScheduleRequest(schedule=yearly))
        assert first.created
        second = await qm.add_schedule("up", "s", every=1000, job_name="v2", data={"v": 2})
        assert (second.cron, second.every, second.job_name) == (None, timedelta(seconds=1), "v2")
        assert second.created_at == first.schedule.create_time.ToDatetime(UTC)
        assert second.updated_at is not None and second.updated_at >= second.created_at
        await until(lambda: _some(fired(redis, prefix, "up", "s")), "a run of the replacement")
        ran = await qm.get_schedule("up", "s")
        again = await stub.UpsertSchedule(schedules_pb2.UpsertScheduleRequest(schedule=yearly))
        assert not again.created
        listed = await qm.list_schedules("up")
    assert [(s.id, s.cron, s.job_name) for s in listed] == [("s", "0 0 1 1 *", "v1")]
    assert listed[0].run_count >= ran.run_count >= 1  # replacing keeps the run count
    assert {job["name"] for job in (await fired(redis, prefix, "up", "s")).values()} == {"v2"}


async def test_add_schedule_says_whether_it_created_the_schedule(server: RunningServer) -> None:
    # The RPC answered `created`, but add_schedule returned the schedule alone (Go and Java give the flag).
    async with QueueManager(server.address) as qm:
        await qm.register_queue("made")
        made = await qm.add_schedule("made", "s", cron="0 0 1 1 *", job_name="v1")
        replaced = await qm.add_schedule("made", "s", cron="0 0 1 1 *", job_name="v2")
        unchanged = await qm.add_schedule("made", "s", cron="0 0 1 1 *", job_name="v2")
        assert (made.created, replaced.created, unchanged.created) == (True, False, False)
        assert dataclasses.replace(unchanged, created=True) == unchanged  # not compared, as Job.created
        assert (await qm.get_schedule("made", "s")).created is None
        assert [s.created for s in await qm.list_schedules("made")] == [None]

    def sync_adds() -> tuple[bool | None, bool | None]:
        with SyncQueueManager(server.address) as client:
            first = client.add_schedule("made", "t", every=60_000, job_name="x")
            return first.created, client.add_schedule("made", "t", every=120_000, job_name="x").created

    assert await asyncio.to_thread(sync_adds) == (True, False)


async def _some(jobs: Awaitable[dict[int, Any]]) -> dict[int, Any] | None:
    found = await jobs
    return found or None


async def test_delete_stops_the_runs(server: RunningServer, redis: Redis, prefix: str) -> None:
    async with QueueManager(server.address) as qm:
        await qm.register_queue("del")
        await qm.add_schedule("del", "gone", every=1000, job_name="x")
        await until(lambda: _some(fired(redis, prefix, "del", "gone")), "a first run")
        deleted = await qm.delete_schedule("del", "gone")
        count = len(await fired(redis, prefix, "del", "gone"))
        assert deleted.run_count == count
        with pytest.raises(NotFoundError):
            await qm.get_schedule("del", "gone")
        with pytest.raises(NotFoundError):
            await qm.delete_schedule("del", "gone")
        # Another schedule of the same period runs twice: the deleted one would have run again meanwhile.
        await qm.add_schedule("del", "marker", every=1000, job_name="x")

        async def twice() -> dict[int, Any] | None:
            marks = await fired(redis, prefix, "del", "marker")
            return marks if len(marks) >= 2 else None

        await until(twice, "two runs of the marker")
        assert [s.id for s in await qm.list_schedules()] == ["marker"]
    assert len(await fired(redis, prefix, "del", "gone")) == count


def _bad(**fields: Any) -> schedules_pb2.Schedule:
    base: dict[str, Any] = {
        "id": "s",
        "queue_name": "v",
        "cron": "* * * * *",
        "job": jobs_pb2.NewJob(name="j"),
    }
    base.update(fields)
    return schedules_pb2.Schedule(**{k: v for k, v in base.items() if v is not None})


def _ts(seconds: int) -> Any:
    from google.protobuf.timestamp_pb2 import Timestamp

    return Timestamp(seconds=seconds)


def _dur(seconds: float) -> Any:
    from google.protobuf.duration_pb2 import Duration

    return Duration(seconds=int(seconds), nanos=int(seconds % 1 * 1e9))


@pytest.mark.parametrize(
    ("schedule", "field"),
    [
        (_bad(cron="61 * * * *"), "schedule.cron"),
        (_bad(cron="* * * * * * *"), "schedule.cron"),
        (_bad(cron="0 0 30 2 *"), "schedule.cron"),
        (_bad(cron=None), "schedule.cron"),
        (_bad(every=_dur(5)), "schedule.every"),
        (_bad(cron=None, every=_dur(0.5)), "schedule.every"),
        (_bad(timezone="Mars/Olympus_Mons"), "schedule.timezone"),
        (_bad(cron=None, every=_dur(5), timezone="Europe/Paris"), "schedule.timezone"),
        (_bad(start_time=_ts(2_000_000_000), end_time=_ts(1_900_000_000)), "schedule.end_time"),
        (
            _bad(job=jobs_pb2.NewJob(name="j", options=types_pb2.JobOptions(job_id="fixed"))),
            "schedule.job.options.job_id",
        ),
        (_bad(job=None), "schedule.job"),
        (_bad(job=jobs_pb2.NewJob(name="")), "schedule.job.name"),
        (_bad(id="no spaces"), "schedule.id"),
        (_bad(queue_name="a:b"), "schedule.queue_name"),
        (_bad(catch_up=9), "schedule.catch_up"),
    ],
)
async def test_invalid_schedules_are_rejected(
    server: RunningServer, schedule: schedules_pb2.Schedule, field: str
) -> None:
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = qrpc.QueueServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.UpsertSchedule(schedules_pb2.UpsertScheduleRequest(schedule=schedule))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith(f"{field}: "), info.value.details()


async def test_unknown_queue_and_schedule_are_not_found(server: RunningServer) -> None:
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = qrpc.QueueServiceStub(channel)
        calls = [
            stub.UpsertSchedule(schedules_pb2.UpsertScheduleRequest(schedule=_bad(queue_name="nope"))),
            stub.ListSchedules(schedules_pb2.ListSchedulesRequest(queue_name="nope")),
            stub.GetSchedule(schedules_pb2.GetScheduleRequest(queue_name="nope", schedule_id="s")),
        ]
        for call in calls:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call
            assert info.value.code() == grpc.StatusCode.NOT_FOUND, info.value.details()
    async with QueueManager(server.address) as qm:
        await qm.register_queue("known")
        with pytest.raises(NotFoundError, match="schedule 'missing' not found"):
            await qm.get_schedule("known", "missing")
        # A schedule id or queue name of the wrong type is named before the call (protobuf's own words were
        # "bad argument type for built-in operation"); a malformed id as add_schedule names it.
        for call in (qm.get_schedule, qm.delete_schedule):
            with pytest.raises(TypeError, match=r"^schedule id must be a str, not int$"):
                await call("known", 5)  # type: ignore[arg-type]
            with pytest.raises(TypeError, match=r"^queue name must be a str, not int$"):
                await call(5, "s")  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="schedule id 'a b' must be 1 to 100 letters"):
                await call("known", "a b")


def test_client_rejects_bad_schedules_before_sending() -> None:
    qm = QueueManager("127.0.0.1:1")
    for kwargs, message in [
        ({}, "either cron"),
        ({"cron": "* * * * *", "every": 1000}, "either cron"),
        ({"every": 999}, "at least 1 s"),
        ({"every": 1000, "timezone": "UTC"}, "cron schedules only"),
        ({"cron": "* * * * *", "options": {"job_id": "x"}}, "job_id"),
        ({"cron": "* * * * *", "catch_up": "most"}, "catch_up"),
        ({"cron": "* * * * *", "start": at(2000), "end": at(1000)}, "end"),
    ]:
        with pytest.raises(ValueError, match=message):
            asyncio.run(qm.add_schedule("q", "s", job_name="j", **kwargs))


async def test_obliterate_drops_the_queues_schedules(
    server: RunningServer, redis: Redis, prefix: str
) -> None:
    k = QueueKeys(prefix, "gone")
    async with QueueManager(server.address) as qm:
        await qm.register_queue("gone")
        await qm.register_queue("kept")
        await qm.add_schedule("gone", "a", cron="0 0 1 1 *", job_name="x")
        await qm.add_schedule("gone", "b", every=HOUR, job_name="x")
        await qm.add_schedule("kept", "c", every=HOUR, job_name="x")
        assert await redis.exists(k.schedules, k.schedule_due, k.schedule_runs) == 3
        await qm.obliterate_queue("gone")
        assert await redis.exists(k.schedules, k.schedule_due, k.schedule_runs) == 0
        await qm.register_queue("gone")
        assert await qm.list_schedules("gone") == []
        assert [(s.queue_name, s.id) for s in await qm.list_schedules()] == [("kept", "c")]


async def test_cli(server: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    async def qm_json(*argv: str) -> Any:
        capsys.readouterr()
        status = await asyncio.to_thread(main, ["--server", server.address, "-o", "json", *argv])
        out, err = capsys.readouterr()
        assert status == 0, err
        return json.loads(out)

    async with QueueManager(server.address) as qm:
        await qm.register_queue("cli")
    added = await qm_json(
        "schedules",
        "add",
        "cli",
        "nightly",
        "build",
        "--cron",
        "0 3 * * *",
        "--timezone",
        "Europe/Paris",
        "--data",
        '{"kind": "daily"}',
        "--catch-up",
        "one",
        "--priority",
        "high",
    )
    assert (added["cron"], added["timezone"], added["catch_up"], added["data"]) == (
        "0 3 * * *",
        "Europe/Paris",
        "one",
        {"kind": "daily"},
    )
    assert added["options"]["priority"] == "high"
    assert (await qm_json("schedules", "get", "cli", "nightly"))["next_run_at"] == added["next_run_at"]
    assert [s["id"] for s in await qm_json("schedules", "list")] == ["nightly"]
    assert (await qm_json("schedules", "delete", "cli", "nightly"))["id"] == "nightly"
    assert await qm_json("schedules", "list", "cli") == []
    capsys.readouterr()
    status = await asyncio.to_thread(
        main, ["--server", server.address, "schedules", "add", "cli", "x", "j", "--cron", "61 * * * *"]
    )
    assert status == 1
    assert "INVALID_ARGUMENT: schedule.cron:" in capsys.readouterr().err
