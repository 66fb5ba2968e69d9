"""External events (PushEvent, WaitForEvent, JobContext.wait_for_event): a running job waits parked for an
event of one of some keys, without using an attempt or a worker slot, and runs again seeing the event (or
that the wait timed out); a push wakes every job waiting for its key at once; against a real server and
Valkey."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import aiohttp
import grpc
import pytest

from queue_manager import ExternalEvent, JobContext, JobState, QueueManager
from queue_manager.v1 import external_events_pb2, queue_service_pb2_grpc
from queue_manager_server.engine.keys import event_index, event_waiters, queue_event_waiters
from tests.conftest import RunningServer, ServerFactory
from tests.rawworker import RawWorker, eventually
from tests.test_cli import qm_cli, qm_json
from tests.test_delay_job import WAIT, until_state


@pytest.fixture(params=["single", pytest.param("cluster", marks=pytest.mark.cluster)])
async def server(request: pytest.FixtureRequest, server_factory: ServerFactory) -> RunningServer:
    """Each test that takes it runs on one Valkey and on a three-primary Cluster (services/event_pushes.py:
    a push there goes through a record and each queue's share)."""
    if request.param == "cluster":
        return await request.getfixturevalue("on_cluster")()  # type: ignore[no-any-return]
    return await server_factory()


@pytest.fixture
async def qm(server: RunningServer) -> AsyncIterator[QueueManager]:
    # One slot: a second job can run only if the parked one holds none.
    client = QueueManager(address=server.address, concurrency=1, shutdown_grace=5.0)
    yield client
    await client.shutdown()


async def waiters(server: RunningServer, key: str) -> set[bytes]:
    """The job keys registered as waiting for `key`: in its waiters set, or on a Cluster in the sets of the
    queues its index lists."""
    engine = server.app.engine
    assert engine is not None
    if not server.settings.redis_cluster:
        return set(await engine.redis.smembers(event_waiters(engine.prefix, key)))
    found: set[bytes] = set()
    for queue in await engine.redis.zrange(event_index(engine.prefix, key), 0, -1):
        found |= set(await engine.redis.smembers(queue_event_waiters(engine.prefix, queue.decode(), key)))
    return found


async def test_a_push_wakes_the_waiting_job_whose_next_run_sees_the_event(qm: QueueManager) -> None:
    await qm.register_queue("orders")
    seen: list[tuple[Any, ExternalEvent | None, bool, bool]] = []

    @qm.processor("orders")
    async def ship(job: JobContext) -> Any:
        seen.append((job.data, job.event, job.event_timed_out, job.redelivery))
        if job.event is None:
            n = job.data["order"]
            await job.wait_for_event([f"order:{n}:paid", f"order:{n}:cancelled"], data={"step": "ship"})
            raise AssertionError("wait_for_event returns only by raising")
        return {"shipped": job.event.data["amount"]}

    await qm.start_workers()
    job = await qm.add_job("orders", "ship", {"order": 7}, {"attempts": 1})

    # Parked: delayed with no due time, its checkpoint written, the keys it waits for on the job.
    parked = await until_state(qm, "orders", job.id, JobState.DELAYED)
    assert parked.run_at is None and parked.data == {"step": "ship"} and parked.attempts_made == 0
    assert parked.event_wait is not None and parked.event_wait.keys == ["order:7:paid", "order:7:cancelled"]
    assert parked.event_wait.until is None and parked.event is None
    # The one slot is free: another job runs while this one waits.
    other = await qm.add_job("orders", "ship", {"order": 8})
    await until_state(qm, "orders", other.id, JobState.DELAYED)

    pushed = await qm.push_event("order:7:paid", {"amount": 12}, event_id="evt-1")
    assert [(r.queue_name, r.job_id) for r in pushed.woken] == [("orders", job.id)] and not pushed.duplicate
    done = await until_state(qm, "orders", job.id, JobState.COMPLETED)
    assert done.result == {"shipped": 12} and done.attempts_made == 1  # the wait used no attempt
    assert done.event is not None and done.event.key == "order:7:paid"
    _, event, timed_out, redelivery = next(s for s in seen[1:] if s[0] == {"step": "ship"})
    assert event is not None and (event.key, event.data, event.event_id) == (
        "order:7:paid",
        {"amount": 12},
        "evt-1",
    )
    assert event.pushed_at == pushed.pushed_at and not timed_out and not redelivery
    # The other job still waits: its key was pushed only for this one.
    assert (await qm.get_job("orders", other.id)).state == JobState.DELAYED


async def test_a_wait_times_out_and_the_job_runs_again_with_no_event(
    qm: QueueManager, server: RunningServer
) -> None:
    await qm.register_queue("approvals")
    runs: list[tuple[ExternalEvent | None, bool]] = []

    @qm.processor("approvals")
    def approve(job: JobContext) -> str:  # a plain-def processor: the call blocks, then raises
        runs.append((job.event, job.event_timed_out))
        if job.event_wait is None:
            job.wait_for_event("approval:1", timeout=0.3)
        return "timed out" if job.event_timed_out else "approved"

    await qm.start_workers()
    job = await qm.add_job("approvals", "approve", None)
    done = await until_state(qm, "approvals", job.id, JobState.COMPLETED)
    assert done.result == "timed out" and runs == [(None, False), (None, True)]
    assert done.event_wait is not None and done.event_wait.until is not None and done.event is None
    # The timed-out wait is not woken by a later push, which drops its stale registration.
    assert await waiters(server, "approval:1")
    pushed = await qm.push_event("approval:1", "late")
    assert pushed.woken == [] and not await waiters(server, "approval:1")
    assert (await qm.get_job("approvals", job.id)).state == JobState.COMPLETED


async def test_a_timed_wait_shows_its_deadline_as_its_run_time(qm: QueueManager) -> None:
    await qm.register_queue("timed")

    @qm.processor("timed")
    async def wait(job: JobContext) -> None:
        await job.wait_for_event("k", timeout=3600)

    await qm.start_workers()
    job = await qm.add_job("timed", "w", None)
    parked = await until_state(qm, "timed", job.id, JobState.DELAYED)
    assert parked.event_wait is not None and parked.event_wait.until is not None
    assert parked.run_at == parked.event_wait.until


async def test_an_event_pushed_before_the_wait_is_not_seen(qm: QueueManager) -> None:
    await qm.register_queue("early")
    events: list[Any] = []

    @qm.processor("early")
    async def wait(job: JobContext) -> None:
        if job.event is None:
            await job.wait_for_event("early:go")
        events.append(job.event.data)

    assert (await qm.push_event("early:go", "too soon")).woken == []
    await qm.start_workers()
    job = await qm.add_job("early", "w", None)
    await until_state(qm, "early", job.id, JobState.DELAYED)
    await asyncio.sleep(0.2)  # nothing may wake it: give a wrong wake the chance to show
    assert (await qm.get_job("early", job.id)).state == JobState.DELAYED
    assert [(r.job_id) for r in (await qm.push_event("early:go", "now")).woken] == [job.id]
    await until_state(qm, "early", job.id, JobState.COMPLETED)
    assert events == ["now"]


async def test_one_push_wakes_every_job_waiting_for_its_key_in_any_queue(server: RunningServer) -> None:
    qm = QueueManager(address=server.address, concurrency=10)
    for q in ("fan-a", "fan-b"):
        await qm.register_queue(q)
    woke: list[tuple[str, str]] = []

    async def wait(job: JobContext) -> None:
        if job.event is None:
            await job.wait_for_event(job.data)
        woke.append((job.queue_name, job.event.key))

    qm.processor("fan-a")(wait)
    qm.processor("fan-b")(wait)
    await qm.start_workers()
    jobs = [
        await qm.add_job("fan-a", "w", ["deploy:done"]),
        await qm.add_job("fan-a", "w", ["deploy:done", "other"]),
        await qm.add_job("fan-b", "w", ["deploy:done"]),
        await qm.add_job("fan-b", "w", ["other"]),
    ]
    for j in jobs:
        await until_state(qm, j.queue_name, j.id, JobState.DELAYED)
    pushed = await qm.push_event("deploy:done", None)
    assert sorted((r.queue_name, r.job_id) for r in pushed.woken) == sorted(
        (j.queue_name, j.id) for j in jobs[:3]
    )
    for j in jobs[:3]:
        await until_state(qm, j.queue_name, j.id, JobState.COMPLETED)
    assert sorted(woke) == [("fan-a", "deploy:done"), ("fan-a", "deploy:done"), ("fan-b", "deploy:done")]
    # The woken job that waited for two keys is no longer registered for the other one.
    assert await waiters(server, "other") == {f"{server.prefix}:{{fan-b}}:job:{jobs[3].id}".encode()}
    assert (await qm.get_job("fan-b", jobs[3].id)).state == JobState.DELAYED
    await qm.shutdown()


async def test_a_repeated_event_id_changes_nothing_and_answers_as_the_first_push(qm: QueueManager) -> None:
    await qm.register_queue("hooks")
    runs: list[Any] = []

    @qm.processor("hooks")
    async def wait(job: JobContext) -> None:
        runs.append(job.event and job.event.data)
        await job.wait_for_event("hook:1")  # waits again after each event

    await qm.start_workers()
    job = await qm.add_job("hooks", "w", None)
    await until_state(qm, "hooks", job.id, JobState.DELAYED)
    first = await qm.push_event("hook:1", 1, event_id="delivery-9")
    assert [r.job_id for r in first.woken] == [job.id]

    async def parked_again() -> bool:
        return len(runs) == 2 and (await qm.get_job("hooks", job.id)).state == JobState.DELAYED

    await eventually(parked_again, timeout=WAIT)
    again = await qm.push_event("hook:1", 2, event_id="delivery-9")
    assert again.duplicate and again.woken == first.woken and again.pushed_at == first.pushed_at
    await asyncio.sleep(0.2)  # a wrong wake would run it a third time
    assert runs == [None, 1] and (await qm.get_job("hooks", job.id)).state == JobState.DELAYED
    other = await qm.push_event("hook:1", 3, event_id="delivery-10")
    assert not other.duplicate and [r.job_id for r in other.woken] == [job.id]


async def test_a_job_cancelled_or_removed_while_waiting_leaves_no_registration(
    qm: QueueManager, server: RunningServer
) -> None:
    await qm.register_queue("gone")

    @qm.processor("gone")
    async def wait(job: JobContext) -> None:
        await job.wait_for_event(["gone:a", "gone:b"])

    await qm.start_workers()
    cancelled = await qm.add_job("gone", "c", None)
    removed = await qm.add_job("gone", "r", None)
    await until_state(qm, "gone", cancelled.id, JobState.DELAYED)
    await until_state(qm, "gone", removed.id, JobState.DELAYED)
    assert len(await waiters(server, "gone:a")) == 2
    await qm.cancel_job("gone", cancelled.id, "no longer needed")
    await qm.remove_job("gone", removed.id)
    assert not await waiters(server, "gone:a") and not await waiters(server, "gone:b")
    assert (await qm.push_event("gone:a", None)).woken == []
    assert (await qm.get_job("gone", cancelled.id)).state == JobState.CANCELLED


async def test_refusals_name_the_field_and_a_lost_lease_is_a_failed_precondition(
    server: RunningServer,
) -> None:
    client = QueueManager(address=server.address)
    await client.register_queue("raw-ev")
    job = await client.add_job("raw-ev", "p", None)
    worker = RawWorker(server.address, ["raw-ev"])
    await worker.connect(credits=1)
    (leased,) = await worker.jobs(1)
    stub = queue_service_pb2_grpc.QueueServiceStub(worker.channel)

    def wait(token: str, keys: list[str], **kw: Any) -> external_events_pb2.WaitForEventRequest:
        return external_events_pb2.WaitForEventRequest(
            queue_name="raw-ev", job_id=job.id, lease_token=token, keys=keys, **kw
        )

    bad = grpc.StatusCode.INVALID_ARGUMENT
    token = leased.lease_token
    cases = [
        (wait(token, []), bad, "keys: wait for at least one"),
        (wait(token, [""]), bad, "keys[0]: is required"),
        (wait(token, ["a", "b\nc"]), bad, "keys[1]: must not contain control characters"),
        (wait(token, ["x" * 257]), bad, "keys[0]: is 257 characters long; the limit is 256"),
        (wait(token, [f"k{i}" for i in range(17)]), bad, "at most 16 keys"),
        (wait(token, ["k"], timeout={"seconds": 0}), bad, "timeout"),
        (wait(token, ["k"], timeout={"seconds": -1}), bad, "timeout: must not be negative"),
        (wait("", ["k"]), bad, "lease_token"),
        (wait("stale", ["k"]), grpc.StatusCode.FAILED_PRECONDITION, "lease"),
    ]
    for req, code, text in cases:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.WaitForEvent(req)
        assert info.value.code() == code and text in (info.value.details() or ""), info.value
    still = await client.get_job("raw-ev", job.id)
    assert still.state == JobState.ACTIVE and still.event_wait is None

    push = external_events_pb2.PushEventRequest
    big = push(key="k")
    big.data.raw = b"x" * (2 * 1024 * 1024)
    big.data.content_type = "application/octet-stream"
    for req, text in [
        (push(key=""), "key: is required"),
        (push(key="a\x07b"), "key: must not contain control characters"),
        (push(key="k", event_id="id\n"), "event_id: must not contain control characters"),
        (push(key="k" * 300), "key: is 300 characters long"),
        (big, "data"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.PushEvent(req)
        assert info.value.code() == bad and text in (info.value.details() or ""), info.value

    answer = await stub.WaitForEvent(wait(token, ["k"]))
    assert not answer.HasField("until") and not answer.cancelled
    # The run has ended: the lease no longer fences anything.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.WaitForEvent(wait(token, ["k"]))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    await worker.close()
    await client.shutdown()


async def test_a_worker_lost_after_the_wait_leaves_the_job_parked_and_one_push_runs_it_once(
    server: RunningServer,
) -> None:
    """The wait is one script: once answered, the job is parked; the worker's stream ending (its jobs are
    released) neither loses the wait nor runs the job again before the event."""
    qm = QueueManager(address=server.address, concurrency=1)
    await qm.register_queue("crash-ev")
    job = await qm.add_job("crash-ev", "w", None)
    raw = RawWorker(server.address, ["crash-ev"])
    await raw.connect(credits=1)
    (leased,) = await raw.jobs(1)
    stub = queue_service_pb2_grpc.QueueServiceStub(raw.channel)
    await stub.WaitForEvent(
        external_events_pb2.WaitForEventRequest(
            queue_name="crash-ev", job_id=job.id, lease_token=leased.lease_token, keys=["crash:go"]
        )
    )
    await raw.close()
    runs: list[str] = []

    @qm.processor("crash-ev")
    async def resume(j: JobContext) -> None:
        runs.append(j.event.key if j.event else "no event")

    await qm.start_workers()
    await asyncio.sleep(0.2)  # a released or redelivered job would run now
    assert runs == [] and (await qm.get_job("crash-ev", job.id)).state == JobState.DELAYED
    assert [r.job_id for r in (await qm.push_event("crash:go", None)).woken] == [job.id]
    done = await until_state(qm, "crash-ev", job.id, JobState.COMPLETED)
    assert runs == ["crash:go"] and done.attempts_made == 1 and done.stalled_count == 0
    await qm.shutdown()


async def test_a_webhook_pushes_an_event_over_http_with_its_id_making_retries_safe(
    server_factory: ServerFactory,
) -> None:
    web = await server_factory(http_listen="127.0.0.1:0")
    qm = QueueManager(address=web.address, concurrency=1)
    await qm.register_queue("http-ev")
    seen: list[Any] = []

    @qm.processor("http-ev")
    async def wait(job: JobContext) -> None:
        if job.event is None:
            await job.wait_for_event("payment:42")
        seen.append((job.event.key, job.event.data, job.event.event_id))

    await qm.start_workers()
    job = await qm.add_job("http-ev", "w", None)
    await until_state(qm, "http-ev", job.id, JobState.DELAYED)
    url = f"http://{web.app.http_address}/api/v1/events"
    body = {"key": "payment:42", "data": {"json": {"status": "paid"}}, "event_id": "whk-1"}
    async with aiohttp.ClientSession() as session:
        answers = []
        for _ in range(2):  # the webhook's retry
            async with session.post(url, data=json.dumps(body)) as response:
                answers.append((response.status, await response.json()))
        async with session.post(url, data=json.dumps({"key": "bad\u0001key"})) as response:
            refused = (response.status, await response.json())
    (s1, first), (s2, again) = answers
    assert s1 == s2 == 200
    assert first["woken"] == [{"queue_name": "http-ev", "job_id": job.id}] and not first.get("duplicate")
    assert again["duplicate"] is True and again["woken"] == first["woken"]
    assert again["pushed_at"] == first["pushed_at"]
    assert refused[0] == 400 and refused[1]["code"] == "INVALID_ARGUMENT" and "key" in refused[1]["message"]
    await until_state(qm, "http-ev", job.id, JobState.COMPLETED)
    assert seen == [("payment:42", {"status": "paid"}, "whk-1")]
    await qm.shutdown()


async def test_qm_events_push_wakes_the_job(
    server: RunningServer, qm: QueueManager, capsys: pytest.CaptureFixture[str]
) -> None:
    await qm.register_queue("cli-ev")

    @qm.processor("cli-ev")
    async def wait(job: JobContext) -> Any:
        if job.event is None:
            await job.wait_for_event("deploy:done")
        return job.event.data

    await qm.start_workers()
    job = await qm.add_job("cli-ev", "w", None)
    await until_state(qm, "cli-ev", job.id, JobState.DELAYED)
    at = ("--server", server.address)
    status, out, err = await qm_cli(capsys, *at, "events", "push", "deploy:done", "--data", '{"v": 2}')
    assert (status, out) == (0, f"pushed deploy:done: woke 1 job(s), added 0\n  woke cli-ev/{job.id}\n"), err
    done = await until_state(qm, "cli-ev", job.id, JobState.COMPLETED)
    assert done.result == {"v": 2}
    pushed = await qm_json(capsys, server, "events", "push", "deploy:done", "--event-id", "d-1")
    assert pushed["woken"] == [] and pushed["duplicate"] is False
    status, _, err = await qm_cli(capsys, *at, "events", "push", "bad\tkey")
    assert status == 1 and "control characters" in err
    # `qm events QUEUE` follows a queue's job events: push's options are no part of it.
    with pytest.raises(SystemExit):
        await qm_cli(capsys, *at, "events", "cli-ev", "--data", "1")


async def test_event_waits_and_children_waits_in_turn_keep_each_others_outcomes(qm: QueueManager) -> None:
    """A job that waits for an event, then for children, then for an event again: each run sees what its
    last wait brought, and the children's outcomes survive the later event wait."""
    for q in ("steps", "steps-kids"):
        await qm.register_queue(q)
    seen: list[tuple[str, Any, list[Any]]] = []

    @qm.processor("steps")
    async def step(job: JobContext) -> str:
        seen.append((job.data, job.event and job.event.data, [c.result for c in job.children]))
        if job.data == "start":
            await job.wait_for_event("steps:go", data="fan-out")
        if job.data == "fan-out":
            await job.wait_for_children(
                [{"queue_name": "steps-kids", "name": "k", "data": 5}], data="confirm"
            )
        if job.data == "confirm":
            await job.wait_for_event("steps:confirm", data="done")
        return "finished"

    @qm.processor("steps-kids")
    async def kid(job: JobContext) -> int:
        return int(job.data) * 2

    await qm.start_workers()
    job = await qm.add_job("steps", "s", "start")
    await until_state(qm, "steps", job.id, JobState.DELAYED)
    assert [r.job_id for r in (await qm.push_event("steps:go", "go!")).woken] == [job.id]

    async def parked_for_confirm() -> bool:
        return len(seen) == 3 and (await qm.get_job("steps", job.id)).state == JobState.DELAYED

    await eventually(parked_for_confirm, timeout=WAIT)
    assert [r.job_id for r in (await qm.push_event("steps:confirm", "ok")).woken] == [job.id]
    done = await until_state(qm, "steps", job.id, JobState.COMPLETED)
    assert done.result == "finished"
    assert seen == [
        ("start", None, []),
        ("fan-out", "go!", []),
        ("confirm", None, [10]),  # the children's run: the event was an earlier wait's
        ("done", "ok", [10]),
    ]


async def test_bulk_removal_drain_and_obliterate_leave_no_registration(server: RunningServer) -> None:
    qm = QueueManager(address=server.address, concurrency=3)
    queues = ("bulk-removed", "bulk-drained", "bulk-obliterated")

    async def wait(job: JobContext) -> None:
        await job.wait_for_event("bulk:k")

    for q in queues:
        await qm.register_queue(q)
        qm.processor(q)(wait)
    await qm.start_workers()
    jobs = [await qm.add_job(q, "w", None) for q in queues]
    for j in jobs:
        await until_state(qm, j.queue_name, j.id, JobState.DELAYED)
    assert len(await waiters(server, "bulk:k")) == 3
    await qm.remove_jobs("bulk-removed", JobState.DELAYED)
    await qm.drain_queue("bulk-drained", include_delayed=True)
    await qm.obliterate_queue("bulk-obliterated")
    assert not await waiters(server, "bulk:k")
    await qm.shutdown()


async def test_a_job_rescheduled_or_promoted_while_waiting_is_no_longer_woken(qm: QueueManager) -> None:
    await qm.register_queue("moved")
    runs: list[bool] = []

    @qm.processor("moved")
    async def wait(job: JobContext) -> None:
        if job.event_wait is None:
            await job.wait_for_event("moved:k")
        runs.append(job.event_timed_out)

    await qm.start_workers()
    later = await qm.add_job("moved", "later", None)
    now = await qm.add_job("moved", "now", None)
    for j in (later, now):
        await until_state(qm, "moved", j.id, JobState.DELAYED)
    await qm.reschedule_job("moved", later.id, delay=timedelta(hours=1))
    await qm.promote_job("moved", now.id)
    await until_state(qm, "moved", now.id, JobState.COMPLETED)
    assert runs == [True]  # the promoted job ran as after a timeout
    assert (await qm.push_event("moved:k")).woken == []
    assert (await qm.get_job("moved", later.id)).state == JobState.DELAYED


async def test_a_push_costs_one_script_call_on_one_server_and_three_round_trips_on_a_cluster(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One server: the push is push_event.lua alone. A Cluster: its record, each queue's share (one pipeline),
    and the record's clearing."""
    qm = QueueManager(address=server.address)
    for q in ("rt-a", "rt-b"):
        await qm.register_queue(q)
        await qm.upsert_event_trigger(q, "rt:*", q, "t")
    await qm.push_event("rt:k")  # the server reads the triggers once
    engine = server.app.engine
    assert engine is not None
    names = {"push_event", "record_event", "deliver_event", "event_done"}
    calls: list[str] = []
    run, call_in = engine.scripts.run, engine.scripts.call_in

    async def spied_run(name: str, keys: list[str], args: list[Any]) -> Any:
        if name in names:
            calls.append(name)
        return await run(name, keys, args)

    def spied_call_in(pipe: Any, name: str, keys: Any, args: Any) -> None:
        if name in names:
            calls.append(name)
        call_in(pipe, name, keys, args)

    monkeypatch.setattr(engine.scripts, "run", spied_run)
    monkeypatch.setattr(engine.scripts, "call_in", spied_call_in)
    pushed = await qm.push_event("rt:k")
    assert sorted(r.queue_name for r in pushed.added) == ["rt-a", "rt-b"]
    if server.settings.redis_cluster:
        assert calls == ["record_event", "deliver_event", "deliver_event", "event_done"]
    else:
        assert calls == ["push_event"]
    await qm.shutdown()
