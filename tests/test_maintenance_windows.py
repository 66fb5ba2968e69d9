"""Maintenance windows (QueueConfig.maintenance_windows): the queue starts no job while the clock is inside
one and runs outside them; a window never lifts an operator's pause, and a resume inside a window ends only
that pause. On the test clock (queue_manager_server.testing): nothing waits in real time."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from queue_manager import JobContext, JobState, MaintenanceWindow, QueueManager
from queue_manager.v1 import queue_service_pb2, queue_service_pb2_grpc, types_pb2
from queue_manager_server import windows
from queue_manager_server.engine.clock import TestClockStorage
from queue_manager_server.testing import TestServer
from queue_manager_server.windows import MaintenanceWindows, span_at
from tests.test_cli import qm_cli, usage_error
from tests.test_test_clock import until_state

WAIT = 20.0
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)


@pytest.fixture
async def server(redis_url: str, prefix: str) -> AsyncIterator[TestServer]:
    async with TestServer(redis_url=redis_url, key_prefix=prefix) as s:
        yield s


async def daily_window(server: TestServer, hours_ahead: int = 2) -> tuple[MaintenanceWindow, datetime]:
    """A daily 30-minute window (UTC) starting on a whole hour `hours_ahead` hours or so from the clock's now,
    and that start."""
    now = await server.clock.now()
    start = (now + timedelta(hours=hours_ahead)).replace(minute=0, second=0, microsecond=0)
    return MaintenanceWindow(f"0 {start.hour} * * *", timedelta(minutes=30)), start


async def paused(qm: QueueManager, queue: str) -> bool:
    return (await qm.get_queue(queue)).paused


async def test_a_window_pauses_the_queue_at_its_start_and_resumes_it_at_its_end(server: TestServer) -> None:
    qm = server.queue_manager()
    window, start = await daily_window(server)
    queue = await qm.register_queue("nightly", maintenance_windows=[window])
    assert not queue.paused and queue.maintenance_until is None
    assert queue.next_maintenance_time == start
    assert queue.config.maintenance_windows == [MaintenanceWindow(window.cron, timedelta(minutes=30), "")]

    ran: list[str] = []
    done = asyncio.Event()

    @qm.processor("nightly")
    async def handle(job: JobContext) -> None:
        ran.append(job.name)
        done.set()

    await qm.start_workers()
    await server.clock.advance(start - await server.clock.now() + MINUTE)
    inside = await qm.get_queue("nightly")
    assert inside.paused and inside.paused_until is None
    assert inside.maintenance_until == start + timedelta(minutes=30)
    assert inside.next_maintenance_time == start + timedelta(days=1)
    metrics = await qm.get_queue_metrics("nightly")
    assert metrics.is_paused and metrics.maintenance_until == inside.maintenance_until
    job = await qm.add_job("nightly", "during")
    assert (await qm.get_job("nightly", job.id)).state is JobState.PAUSED

    await server.clock.advance(28 * MINUTE)
    assert await paused(qm, "nightly") and not ran
    await server.clock.advance(2 * MINUTE)
    after = await qm.get_queue("nightly")
    assert not after.paused and after.maintenance_until is None
    assert after.next_maintenance_time == start + timedelta(days=1)
    async with asyncio.timeout(WAIT):
        await done.wait()
    await until_state(qm, "nightly", job.id, JobState.COMPLETED)


async def test_a_queue_registered_inside_a_window_is_held_at_once(server: TestServer) -> None:
    qm = server.queue_manager()
    now = await server.clock.now()
    window = MaintenanceWindow(f"{now.minute} {now.hour} * * *", HOUR)  # started this minute
    queue = await qm.register_queue("late", maintenance_windows=[window])
    assert queue.paused and queue.maintenance_until is not None
    assert timedelta(minutes=59) <= queue.maintenance_until - now <= HOUR
    # Registered again without windows: free at once.
    again = await qm.register_queue("late")
    assert not again.paused and again.maintenance_until is None and again.next_maintenance_time is None


async def test_a_hand_pause_survives_the_end_of_a_window(server: TestServer) -> None:
    qm = server.queue_manager()
    window, start = await daily_window(server)
    await qm.register_queue("held", maintenance_windows=[window])
    await server.clock.advance(start - await server.clock.now() + MINUTE)
    await qm.pause_queue("held")  # during the window
    await server.clock.advance(HOUR)
    after = await qm.get_queue("held")
    assert after.paused and after.maintenance_until is None
    # It holds through the next window as well.
    await server.clock.advance(timedelta(hours=23))
    assert await paused(qm, "held") and (await qm.get_queue("held")).maintenance_until is not None
    await server.clock.advance(HOUR)
    assert await paused(qm, "held")
    assert not (await qm.resume_queue("held")).paused


async def test_a_resume_inside_a_window_ends_only_the_hand_pause(server: TestServer) -> None:
    qm = server.queue_manager()
    window, start = await daily_window(server)
    await qm.register_queue("both", maintenance_windows=[window])
    await qm.pause_queue("both")
    await server.clock.advance(start - await server.clock.now() + MINUTE)
    resumed = await qm.resume_queue("both")
    assert resumed.paused and resumed.maintenance_until == start + timedelta(minutes=30)
    await server.clock.advance(30 * MINUTE)
    assert not await paused(qm, "both")


async def test_a_timed_pause_ending_inside_a_window_leaves_the_window_holding(server: TestServer) -> None:
    qm = server.queue_manager()
    window, start = await daily_window(server)
    await qm.register_queue("overlap", maintenance_windows=[window])
    until = start + timedelta(minutes=10)
    await qm.pause_queue("overlap", resume_at=until)
    await server.clock.advance(start - await server.clock.now() + MINUTE)
    both = await qm.get_queue("overlap")
    assert both.paused_until == until and both.maintenance_until == start + timedelta(minutes=30)
    await server.clock.advance(10 * MINUTE)
    inside = await qm.get_queue("overlap")
    assert inside.paused and inside.paused_until is None and inside.maintenance_until is not None
    await server.clock.advance(30 * MINUTE)
    assert not await paused(qm, "overlap")


async def test_windows_that_overlap_count_as_one_and_zones_are_read(server: TestServer) -> None:
    hourly = windows.parse(
        [
            types_pb2.MaintenanceWindow(cron="0 * * * *", duration=Duration(seconds=90 * 60)),
            types_pb2.MaintenanceWindow(
                cron="30 3 * * *", duration=Duration(seconds=3600), timezone="Asia/Tokyo"
            ),
        ]
    )
    ms = int(datetime(2026, 12, 8, 0, 10, tzinfo=UTC).timestamp() * 1000)
    span = span_at(hourly[:1], ms)
    # Every hour for 90 minutes: always inside, the occurrences joined (a bounded number of them).
    assert span is not None and span.start_ms <= ms and span.end_ms - ms > 24 * 3_600_000
    tokyo = span_at(hourly[1:], ms)
    assert tokyo is not None
    # 03:30 in Tokyo is 18:30 UTC the day before; the next is 18:30 UTC today.
    assert datetime.fromtimestamp(tokyo.start_ms / 1000, UTC) == datetime(2026, 12, 8, 18, 30, tzinfo=UTC)
    assert tokyo.end_ms - tokyo.start_ms == 3_600_000
    assert tokyo.next_start_ms == tokyo.start_ms


async def test_several_servers_apply_a_boundary_once_and_a_stale_one_writes_nothing(
    redis_url: str, prefix: str
) -> None:
    async with (
        TestServer(redis_url=redis_url, key_prefix=prefix) as one,
        TestServer(redis_url=redis_url, key_prefix=prefix) as two,
    ):
        qm = one.queue_manager()
        window, start = await daily_window(one)
        await qm.register_queue("shared", maintenance_windows=[window])
        # Both servers' timers hold the queue's next boundary, learned from the registration's announcement.
        timers = [next(c for c in s.app.components if c.name == "pause_timer") for s in (one, two)]
        async with asyncio.timeout(WAIT):
            while True:
                if all("shared" in t._due for t in timers):
                    break
                await asyncio.sleep(0.02)
        await TestClockStorage(one.app.engine).advance(
            int((start - await one.clock.now()).total_seconds() * 1000) + 60_000
        )
        results = await asyncio.gather(
            *(MaintenanceWindows(s.app.engine).apply("shared") for s in (one, two) for _ in range(4))
        )
        end_ms = int((start + timedelta(minutes=30)).timestamp() * 1000)
        assert {boundary for _, boundary in results} == {end_ms}
        assert await paused(qm, "shared")
        # A span computed before the window started, applied late, is refused and changes nothing.
        meta = one.app.engine.keys("shared").meta
        mwin = await one.app.engine.redis.hget(meta, "mwin")
        before = int(start.timestamp() * 1000)
        stale = await one.app.engine.scripts.run(
            "set_window", [meta], [mwin, before - 1000, before - 1, before]
        )
        assert int(stale[0]) == windows.STALE
        assert await paused(qm, "shared")
        # Out of the window through either server's catch-up.
        await one.clock.advance(30 * MINUTE)
        await two.app.clock_moved()
        assert not await paused(qm, "shared")


def _window(cron: str = "0 2 * * *", seconds: int = 3600, timezone: str = "") -> types_pb2.MaintenanceWindow:
    return types_pb2.MaintenanceWindow(cron=cron, duration=Duration(seconds=seconds), timezone=timezone)


async def test_bad_windows_are_refused_with_a_clear_message(server: TestServer) -> None:
    field = "config.maintenance_windows"
    cases: list[tuple[list[types_pb2.MaintenanceWindow], str]] = [
        ([_window(cron="not cron")], f"{field}[0].cron"),
        ([_window(cron="0 25 * * *")], f"{field}[0].cron"),
        ([_window(cron="")], f"{field}[0].cron: is required"),
        ([_window(timezone="Mars/Olympus")], f"{field}[0].timezone"),
        ([_window(seconds=0)], f"{field}[0].duration"),
        ([_window(), _window(seconds=32 * 86400)], f"{field}[1].duration"),
        ([types_pb2.MaintenanceWindow(cron="0 2 * * *")], f"{field}[0].duration: is required"),
        ([_window()] * 17, f"{field}: has 17 windows"),
    ]
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = queue_service_pb2_grpc.QueueServiceStub(channel)
        for given, text in cases:
            config = types_pb2.QueueConfig(maintenance_windows=given)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.RegisterQueue(queue_service_pb2.RegisterQueueRequest(name="bad", config=config))
            assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT, text
            assert text in (caught.value.details() or ""), caught.value.details()
    qm = server.queue_manager()
    assert "bad" not in [q.name for q in await qm.list_queues()]
    with pytest.raises(ValueError, match="more than 0"):
        await qm.register_queue("bad", maintenance_windows=[MaintenanceWindow("0 2 * * *", 0)])
    with pytest.raises(ValueError, match="unknown keys: zone"):
        await qm.register_queue(
            "bad", maintenance_windows=[{"cron": "0 2 * * *", "duration": 1000, "zone": "x"}]
        )


async def test_qm_queues_register_maintenance_window(
    server: TestServer, capsys: pytest.CaptureFixture[str]
) -> None:
    async def qm_json(*argv: str) -> Any:
        status, out, err = await qm_cli(capsys, "--server", server.address, "-o", "json", *argv)
        assert status == 0, err
        return json.loads(out)

    shown = await qm_json(
        "queues", "register", "cli", "--maintenance-window", "0 2 * * SUN|2h|Europe/Paris",
        "--maintenance-window", "30 3 1 * *|15m",
    )  # fmt: skip
    assert shown["config"]["maintenance_windows"] == [
        {"cron": "0 2 * * SUN", "duration": 7_200_000, "timezone": "Europe/Paris"},
        {"cron": "30 3 1 * *", "duration": 900_000, "timezone": ""},
    ]
    assert shown["next_maintenance_time"]
    # Another setting changed: the windows stay; --no-maintenance-windows removes them.
    assert (
        len(
            (await qm_json("queues", "register", "cli", "--concurrency", "3"))["config"][
                "maintenance_windows"
            ]
        )
        == 2
    )
    cleared = await qm_json("queues", "register", "cli", "--no-maintenance-windows")
    assert cleared["config"]["maintenance_windows"] == [] and cleared["next_maintenance_time"] is None
    err = await usage_error(capsys, server, "queues", "register", "cli", "--maintenance-window", "0 2 * * *")
    assert "CRON|DURATION" in err
    err = await usage_error(
        capsys, server, "queues", "register", "cli", "--maintenance-window", "0 2 * * *|40d"
    )
    assert "31d" in err
    status, _, err = await qm_cli(
        capsys,
        "--server",
        server.address,
        "queues",
        "register",
        "cli",
        "--maintenance-window",
        "0 2 * * *|1h|Nowhere",
    )
    assert status != 0 and "timezone" in err
    # Inside a window the table says so.
    now = await server.clock.now()
    await qm_json("queues", "register", "cli", "--maintenance-window", f"{now.minute} {now.hour} * * *|1h")
    status, out, _ = await qm_cli(capsys, "--server", server.address, "queues", "list")
    assert status == 0 and "in maintenance until" in out


async def test_a_pause_from_a_server_before_pause_reasons_survives_a_window(server: TestServer) -> None:
    """Such a server set the paused flag alone: the window's end must not take it for the window's."""
    qm = server.queue_manager()
    window, start = await daily_window(server)
    await qm.register_queue("legacy", maintenance_windows=[window])
    await qm.pause_queue("legacy")
    await server.app.engine.redis.hdel(server.app.engine.keys("legacy").meta, "pman")
    await server.clock.advance(start - await server.clock.now() + MINUTE)
    await server.clock.advance(HOUR)
    after = await qm.get_queue("legacy")
    assert after.paused and after.maintenance_until is None
