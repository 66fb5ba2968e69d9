"""A fairness group's own maintenance windows (GroupLimits.maintenance_windows, given by SetGroupLimits): none
of the group's jobs starts while the clock is inside one, while the queue's other groups run; a window
never lifts a hand pause of the group, and ResumeGroup inside a window ends only that pause, as for a queue.
On the test clock (queue_manager_server.testing): nothing waits in real time."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import aiohttp
import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from queue_manager import GroupInfo, JobContext, JobState, MaintenanceWindow, QueueManager
from queue_manager.v1 import queue_service_pb2, queue_service_pb2_grpc, types_pb2
from queue_manager_server import windows
from queue_manager_server.engine.clock import TestClockStorage
from queue_manager_server.testing import TestServer
from queue_manager_server.windows import MaintenanceWindows
from tests.rawworker import eventually
from tests.test_cli import qm_cli
from tests.test_maintenance_windows import HOUR, MINUTE, WAIT, daily_window
from tests.test_test_clock import until_state


@pytest.fixture
async def server(redis_url: str, prefix: str) -> AsyncIterator[TestServer]:
    async with TestServer(redis_url=redis_url, key_prefix=prefix) as s:
        yield s


async def group(qm: QueueManager, queue: str, name: str) -> GroupInfo | None:
    found, _ = await qm.list_groups(queue)
    return next((g for g in found if g.name == name), None)


async def groups_paused(server: TestServer, queue: str) -> int:
    return int(await server.app.engine.redis.hget(server.app.engine.keys(queue).meta, "g_paused") or 0)


async def test_a_group_in_its_window_starts_none_of_its_jobs_while_other_groups_run(
    server: TestServer,
) -> None:
    qm = server.queue_manager()
    await qm.register_queue("tenants")
    window, start = await daily_window(server)
    info = await qm.set_group_limits("tenants", "acme", concurrency=5, maintenance_windows=[window])
    assert not info.paused and info.maintenance_until is None and info.next_maintenance_time == start
    assert info.maintenance_windows == [MaintenanceWindow(window.cron, timedelta(minutes=30), "")]
    assert info.custom_limits and info.limits.concurrency == 5

    ran: list[str] = []
    seen = asyncio.Event()

    @qm.processor("tenants")
    async def handle(job: JobContext) -> None:
        ran.append(job.name)
        seen.set()

    await qm.start_workers()
    await server.clock.advance(start - await server.clock.now() + MINUTE)
    inside = await group(qm, "tenants", "acme")
    assert inside is not None and inside.paused and inside.paused_until is None
    assert inside.maintenance_until == start + timedelta(minutes=30)
    assert inside.next_maintenance_time == start + timedelta(days=1)
    assert (await qm.get_queue_metrics("tenants")).groups_paused == 1
    assert not (await qm.get_queue("tenants")).paused

    held = await qm.add_job("tenants", "acme-job", options={"group": "acme"})
    other = await qm.add_job("tenants", "beta-job", options={"group": "beta"})
    await until_state(qm, "tenants", other.id, JobState.COMPLETED)
    assert (await qm.get_job("tenants", held.id)).state is JobState.WAITING and ran == ["beta-job"]

    await server.clock.advance(28 * MINUTE)
    assert (await qm.get_job("tenants", held.id)).state is JobState.WAITING
    await server.clock.advance(2 * MINUTE)
    await until_state(qm, "tenants", held.id, JobState.COMPLETED)
    after = await group(qm, "tenants", "acme")
    assert after is not None and not after.paused and after.maintenance_until is None
    assert after.next_maintenance_time == start + timedelta(days=1)
    assert (await qm.get_queue_metrics("tenants")).groups_paused == 0


async def test_a_group_given_a_window_it_is_inside_is_held_at_once_and_freed_when_it_goes(
    server: TestServer,
) -> None:
    qm = server.queue_manager()
    await qm.register_queue("q")
    now = await server.clock.now()
    window = MaintenanceWindow(f"{now.minute} {now.hour} * * *", HOUR)  # started this minute
    info = await qm.set_group_limits("q", "acme", maintenance_windows=[window])
    assert info.paused and info.maintenance_until is not None
    assert timedelta(minutes=59) <= info.maintenance_until - now <= HOUR
    # Limits given again without windows: the window goes, and with it the pause.
    again = await qm.set_group_limits("q", "acme", concurrency=2)
    assert not again.paused and again.maintenance_until is None and again.next_maintenance_time is None
    assert again.maintenance_windows == [] and await groups_paused(server, "q") == 0
    # Windows again, then a clear: freed and (idle, no limits) forgotten.
    assert (await qm.set_group_limits("q", "acme", maintenance_windows=[window])).paused
    cleared = await qm.clear_group_limits("q", "acme")
    assert not cleared.paused and cleared.maintenance_until is None
    assert await group(qm, "q", "acme") is None and await groups_paused(server, "q") == 0
    keys = server.app.engine.keys("q")
    assert not await server.app.engine.redis.exists(keys.group_windows, keys.group_window_bounds)


async def test_a_hand_pause_outlives_a_group_window_and_a_resume_inside_ends_only_it(
    server: TestServer,
) -> None:
    qm = server.queue_manager()
    await qm.register_queue("q")
    window, start = await daily_window(server)
    await qm.set_group_limits("q", "held", maintenance_windows=[window])
    await qm.set_group_limits("q", "both", maintenance_windows=[window])
    await qm.set_group_limits("q", "timed", maintenance_windows=[window])
    await server.clock.advance(start - await server.clock.now() + MINUTE)
    await qm.pause_group("q", "held")  # during the window
    await qm.pause_group("q", "timed", resume_after=10 * MINUTE)
    resumed = await qm.resume_group("q", "both")  # no hand pause: the window holds on
    assert resumed.paused and resumed.maintenance_until == start + timedelta(minutes=30)
    assert await groups_paused(server, "q") == 3
    await server.clock.advance(11 * MINUTE)
    timed = await group(qm, "q", "timed")
    assert timed is not None and timed.paused and timed.paused_until is None
    assert timed.maintenance_until is not None
    await server.clock.advance(HOUR)
    held, both, timed = [await group(qm, "q", name) for name in ("held", "both", "timed")]
    assert held is not None and held.paused and held.maintenance_until is None
    assert both is not None and not both.paused and timed is not None and not timed.paused
    assert await groups_paused(server, "q") == 1
    # The next day's window comes and goes; the hand pause is still there after it.
    await server.clock.advance(timedelta(hours=23))
    assert (await group(qm, "q", "held")).maintenance_until is not None  # type: ignore[union-attr]
    await server.clock.advance(HOUR)
    assert (await group(qm, "q", "held")).paused  # type: ignore[union-attr]
    assert not (await qm.resume_group("q", "held")).paused
    assert await groups_paused(server, "q") == 0


async def test_a_group_pause_from_a_server_before_pause_reasons_survives_a_window(server: TestServer) -> None:
    """Such a server set the group's paused flag alone: the window's end must not take it for the window's."""
    qm = server.queue_manager()
    await qm.register_queue("legacy")
    window, start = await daily_window(server)
    await qm.set_group_limits("legacy", "acme", maintenance_windows=[window])
    await qm.pause_group("legacy", "acme")
    keys = server.app.engine.keys("legacy")
    await server.app.engine.redis.hdel(keys.meta.removesuffix("meta") + "gpman", "acme")
    await server.clock.advance(start - await server.clock.now() + MINUTE)
    await server.clock.advance(HOUR)
    after = await group(qm, "legacy", "acme")
    assert after is not None and after.paused and after.maintenance_until is None


async def test_several_servers_lift_a_group_window_once_and_a_stale_span_writes_nothing(
    redis_url: str, prefix: str
) -> None:
    async with (
        TestServer(redis_url=redis_url, key_prefix=prefix) as one,
        TestServer(redis_url=redis_url, key_prefix=prefix) as two,
    ):
        qm = one.queue_manager()
        await qm.register_queue("shared")
        window, start = await daily_window(one)
        await qm.set_group_limits("shared", "acme", maintenance_windows=[window])
        # Both servers' timers hold the group's next boundary, learned from its announcement.
        timers = [next(c for c in s.app.components if c.name == "pause_timer") for s in (one, two)]

        async def armed() -> bool:
            return all("shared" in t._due for t in timers)

        await eventually(armed, WAIT)
        await TestClockStorage(one.app.engine).advance(
            int((start - await one.clock.now()).total_seconds() * 1000) + 60_000
        )
        results = await asyncio.gather(
            *(
                MaintenanceWindows(s.app.engine).apply_group("shared", "acme")
                for s in (one, two)
                for _ in range(4)
            )
        )
        end_ms = int((start + timedelta(minutes=30)).timestamp() * 1000)
        assert {boundary for _, boundary, _ in results} == {end_ms}
        assert await groups_paused(one, "shared") == 1
        # A span computed before the window started, applied late, is refused and changes nothing.
        keys = one.app.engine.keys("shared")
        blob = await one.app.engine.redis.hget(keys.group_windows, "acme")
        before = int(start.timestamp() * 1000)
        stale = await one.app.engine.scripts.run(
            "set_group_window", [keys.meta], ["acme", blob, before - 1000, before - 1, before]
        )
        assert int(stale[0]) == windows.STALE
        assert (await group(qm, "shared", "acme")).paused  # type: ignore[union-attr]
        # The end, lifted by every server at once: once (the count of paused groups goes to 0, not below).
        await TestClockStorage(one.app.engine).advance(30 * 60_000)
        lifted = await asyncio.gather(
            *(MaintenanceWindows(s.app.engine).apply_groups("shared") for s in (one, two) for _ in range(3)),
            one.app.clock_moved(),
            two.app.clock_moved(),
        )
        assert lifted
        assert await groups_paused(one, "shared") == 0
        after = await group(qm, "shared", "acme")
        assert after is not None and not after.paused and after.maintenance_until is None


def _window(cron: str = "0 2 * * *", seconds: int = 3600, timezone: str = "") -> types_pb2.MaintenanceWindow:
    return types_pb2.MaintenanceWindow(cron=cron, duration=Duration(seconds=seconds), timezone=timezone)


async def test_bad_group_windows_are_refused_naming_the_field_and_nothing_is_written(
    server: TestServer,
) -> None:
    qm = server.queue_manager()
    await qm.register_queue("bad")
    field = "limits.maintenance_windows"
    cases: list[tuple[list[types_pb2.MaintenanceWindow], str]] = [
        ([_window(cron="not cron")], f"{field}[0].cron"),
        ([_window(cron="")], f"{field}[0].cron: is required"),
        ([_window(timezone="Mars/Olympus")], f"{field}[0].timezone"),
        ([_window(seconds=0)], f"{field}[0].duration"),
        ([_window(), _window(seconds=32 * 86400)], f"{field}[1].duration"),
        ([_window()] * 17, f"{field}: has 17 windows"),
    ]
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = queue_service_pb2_grpc.QueueServiceStub(channel)
        for given, text in cases:
            limits = types_pb2.GroupLimits(concurrency=3, maintenance_windows=given)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.SetGroupLimits(
                    queue_service_pb2.SetGroupLimitsRequest(queue_name="bad", group="acme", limits=limits)
                )
            assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT, text
            assert text in (caught.value.details() or ""), caught.value.details()
        # A queue's group limits hold no windows: the queue's own go in QueueConfig.maintenance_windows.
        config = types_pb2.QueueConfig(group_limits=types_pb2.GroupLimits(maintenance_windows=[_window()]))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.RegisterQueue(queue_service_pb2.RegisterQueueRequest(name="bad", config=config))
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "config.group_limits.maintenance_windows" in (caught.value.details() or "")
    assert (await qm.list_groups("bad"))[0] == []
    keys = server.app.engine.keys("bad")
    assert not await server.app.engine.redis.exists(keys.group_windows, keys.group_window_bounds)
    with pytest.raises(ValueError, match=r"maintenance_windows\[0\].cron"):
        await qm.set_group_limits("bad", "acme", maintenance_windows=[MaintenanceWindow(" ", HOUR)])


async def test_qm_groups_limit_maintenance_window_and_the_listing_says_in_maintenance(
    server: TestServer, capsys: pytest.CaptureFixture[str]
) -> None:
    async def qm_json(*argv: str) -> Any:
        status, out, err = await qm_cli(capsys, "--server", server.address, "-o", "json", *argv)
        assert status == 0, err
        return json.loads(out)

    await server.queue_manager().register_queue("cli")
    now = await server.clock.now()
    shown = await qm_json(
        "groups", "limit", "cli", "acme", "--maintenance-window", f"{now.minute} {now.hour} * * *|1h|UTC",
        "--maintenance-window", "30 3 1 * *|15m",
    )  # fmt: skip
    assert shown["maintenance_windows"] == [
        {"cron": f"{now.minute} {now.hour} * * *", "duration": 3_600_000, "timezone": "UTC"},
        {"cron": "30 3 1 * *", "duration": 900_000, "timezone": ""},
    ]
    assert shown["paused"] and shown["maintenance_until"] and shown["next_maintenance_time"]
    status, out, _ = await qm_cli(capsys, "--server", server.address, "groups", "list", "cli")
    assert status == 0 and "in maintenance until" in out
    assert not (await qm_json("groups", "limit", "cli", "acme", "--clear"))["paused"]


async def test_the_http_route_takes_a_group_s_windows(redis_url: str, prefix: str) -> None:
    async with TestServer(redis_url=redis_url, key_prefix=prefix, http_listen="127.0.0.1:0") as server:
        await server.queue_manager().register_queue("web")
        now = await server.clock.now()
        base = f"http://{server.app.http_address}/api/v1/queues/web/groups/acme"
        body = {
            "limits": {
                "maintenance_windows": [{"cron": f"{now.minute} {now.hour} * * *", "duration": "3600s"}]
            }
        }
        async with aiohttp.ClientSession() as session:
            async with session.put(base, json=body) as response:
                answer = await response.json()
                assert response.status == 200, answer
            assert answer["group"]["paused"] and "maintenance_until" in answer["group"]
            body["limits"]["maintenance_windows"][0]["duration"] = "0s"
            async with session.put(base, json=body) as response:
                assert response.status == 400
                assert "limits.maintenance_windows[0].duration" in json.dumps(await response.json())


async def test_obliterating_the_queue_removes_its_groups_windows_and_pause_reasons(
    server: TestServer, prefix: str
) -> None:
    qm = server.queue_manager()
    await qm.register_queue("gone")
    now = await server.clock.now()
    window = MaintenanceWindow(f"{now.minute} {now.hour} * * *", HOUR)
    await qm.set_group_limits("gone", "acme", maintenance_windows=[window])
    await qm.pause_group("gone", "acme")
    redis = server.app.engine.redis
    assert len(await redis.keys(f"{prefix}:{{gone}}:g*")) >= 5  # windows, bounds, reasons, the paused set
    await qm.obliterate_queue("gone", force=True)
    assert await redis.keys(f"{prefix}:{{gone}}:*") == []
