"""Event triggers (UpsertEventTrigger, ListEventTriggers, DeleteEventTrigger): a push whose key matches a
trigger's pattern adds its job, with the event's data, in the same step as the push's wake-ups; against a
real server and Valkey."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import grpc
import pytest

from queue_manager import JobContext, JobPriority, JobState, NotFoundError, QueueManager
from queue_manager.v1 import external_events_pb2, queue_service_pb2_grpc
from queue_manager_server.engine import event_triggers
from tests.conftest import RunningServer, ServerFactory
from tests.security_kit import bearer
from tests.test_auth import OK, PD, code_of, secured  # noqa: F401 (secured: a fixture)
from tests.test_cli import qm_cli, qm_json
from tests.test_delay_job import until_state


@pytest.fixture(params=["single", pytest.param("cluster", marks=pytest.mark.cluster)])
async def server(request: pytest.FixtureRequest, server_factory: ServerFactory) -> RunningServer:
    """Each test that takes it runs on one Valkey and on a three-primary Cluster (services/event_pushes.py:
    a push there goes through a record and each queue's share)."""
    if request.param == "cluster":
        return await request.getfixturevalue("on_cluster")()  # type: ignore[no-any-return]
    return await server_factory()


async def test_a_push_adds_one_job_per_matching_trigger_with_the_event_data(server: RunningServer) -> None:
    qm = QueueManager(address=server.address)
    for q in ("invoices", "emails", "audit"):
        await qm.register_queue(q)
    made = await qm.upsert_event_trigger("bill", "order:7:paid", "invoices", "bill", {"priority": "high"})
    await qm.upsert_event_trigger("mail", "order:*", "emails", "notify")
    await qm.upsert_event_trigger("everything", "*", "audit", "record", {"attempts": 3})
    await qm.upsert_event_trigger("users", "user:*", "emails", "welcome")
    assert made.key_pattern == "order:7:paid" and made.options.priority is JobPriority.HIGH

    pushed = await qm.push_event("order:7:paid", {"amount": 12}, event_id="e-1")
    added = sorted((r.queue_name, r.job_id) for r in pushed.added)
    assert [q for q, _ in added] == ["audit", "emails", "invoices"]
    jobs = {q: await qm.get_job(q, j) for q, j in added}
    assert {q: (j.name, j.data, j.state) for q, j in jobs.items()} == {
        "audit": ("record", {"amount": 12}, JobState.WAITING),
        "emails": ("notify", {"amount": 12}, JobState.WAITING),
        "invoices": ("bill", {"amount": 12}, JobState.WAITING),
    }
    assert jobs["invoices"].priority is JobPriority.HIGH and jobs["audit"].max_attempts == 3
    # A repeated event id adds nothing again and answers the first push's jobs.
    again = await qm.push_event("order:7:paid", {"amount": 99}, event_id="e-1")
    assert again.duplicate and sorted((r.queue_name, r.job_id) for r in again.added) == added
    assert len((await qm.list_jobs("invoices", JobState.WAITING))[0]) == 1
    # Without an id, each push adds its own jobs; a key matches only the patterns that cover it.
    assert sorted(r.queue_name for r in (await qm.push_event("order:8:shipped")).added) == ["audit", "emails"]
    assert [r.queue_name for r in (await qm.push_event("invoice:1")).added] == ["audit"]
    await qm.shutdown()


async def test_the_added_job_runs_and_a_waiting_job_wakes_in_the_same_push(server: RunningServer) -> None:
    qm = QueueManager(address=server.address, concurrency=2)
    await qm.register_queue("deploys")
    runs: list[tuple[str, Any]] = []

    @qm.processor("deploys")
    async def deploy(job: JobContext) -> None:
        if job.name == "rollout" and job.event is None:
            await job.wait_for_event("build:42:done")
        runs.append((job.name, job.event.data if job.event else job.data))

    await qm.start_workers()
    waiting = await qm.add_job("deploys", "rollout", None)
    await until_state(qm, "deploys", waiting.id, JobState.DELAYED)
    await qm.upsert_event_trigger("announce", "build:*", "deploys", "announce")
    pushed = await qm.push_event("build:42:done", {"sha": "abc"})
    assert [r.job_id for r in pushed.woken] == [waiting.id] and len(pushed.added) == 1
    await until_state(qm, "deploys", waiting.id, JobState.COMPLETED)
    await until_state(qm, "deploys", pushed.added[0].job_id, JobState.COMPLETED)
    assert sorted(runs) == [("announce", {"sha": "abc"}), ("rollout", {"sha": "abc"})]
    await qm.shutdown()


async def test_upsert_replaces_list_filters_and_delete_stops_the_adds(server: RunningServer) -> None:
    qm = QueueManager(address=server.address)
    for q in ("t-a", "t-b"):
        await qm.register_queue(q)
    first = await qm.upsert_event_trigger("t1", "k", "t-a", "one")
    await qm.upsert_event_trigger("t2", "k", "t-b", "two")
    replaced = await qm.upsert_event_trigger("t1", "k2", "t-a", "uno")
    assert (replaced.key_pattern, replaced.job_name) == ("k2", "uno")
    assert replaced.created_at == first.created_at and replaced.updated_at is not None
    assert [t.id for t in await qm.list_event_triggers()] == ["t1", "t2"]
    assert [t.id for t in await qm.list_event_triggers("t-b")] == ["t2"]
    assert [r.queue_name for r in (await qm.push_event("k")).added] == ["t-b"]  # t1 matches k2 now
    gone = await qm.delete_event_trigger("t2")
    assert gone.id == "t2" and (await qm.push_event("k")).added == []
    with pytest.raises(NotFoundError, match="event trigger 't2' not found"):
        await qm.delete_event_trigger("t2")
    await qm.shutdown()


async def test_a_trigger_made_on_another_server_counts_for_the_next_push(
    server_factory: ServerFactory,
) -> None:
    """Each server keeps the triggers as it last read them; a push planned on an old set writes nothing and
    is planned again (the triggers' version), so a trigger is never missed by a server that read before."""
    one, two = await server_factory(), await server_factory()
    a, b = QueueManager(address=one.address), QueueManager(address=two.address)
    await a.register_queue("shared")
    await a.upsert_event_trigger("first", "x", "shared", "first")
    assert len((await a.push_event("x")).added) == 1  # server one has read the triggers
    await b.upsert_event_trigger("second", "x", "shared", "second")
    added = (await a.push_event("x")).added
    names = sorted([(await a.get_job("shared", r.job_id)).name for r in added])
    assert names == ["first", "second"]
    await b.delete_event_trigger("first")
    assert [(await a.get_job("shared", r.job_id)).name for r in (await a.push_event("x")).added] == ["second"]
    await a.shutdown()
    await b.shutdown()


async def test_a_trigger_whose_queue_was_deleted_adds_nothing(server: RunningServer) -> None:
    qm = QueueManager(address=server.address)
    for q in ("kept", "dropped"):
        await qm.register_queue(q)
    await qm.upsert_event_trigger("to-kept", "k", "kept", "j")
    await qm.upsert_event_trigger("to-dropped", "k", "dropped", "j")
    await qm.obliterate_queue("dropped")
    assert [r.queue_name for r in (await qm.push_event("k")).added] == ["kept"]
    # Its trigger outlives it and stays listed by its queue; a queue that is unknown and has none is
    # NOT_FOUND, as ListSchedules answers (it answered an empty list, as if the queue had no triggers yet).
    assert [t.id for t in await qm.list_event_triggers("dropped")] == ["to-dropped"]
    with pytest.raises(NotFoundError, match="queue 'nope' is not registered"):
        await qm.list_event_triggers("nope")
    await qm.shutdown()


async def test_refusals_name_the_field(server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    qm = QueueManager(address=server.address)
    await qm.register_queue("tq")
    channel = grpc.aio.insecure_channel(server.address)
    stub = queue_service_pb2_grpc.QueueServiceStub(channel)

    def trigger(**kw: Any) -> external_events_pb2.UpsertEventTriggerRequest:
        t = {"id": "t", "key_pattern": "k", "queue_name": "tq", "job": {"name": "j"}} | kw
        return external_events_pb2.UpsertEventTriggerRequest(trigger=t)

    bad = grpc.StatusCode.INVALID_ARGUMENT
    cases = [
        (external_events_pb2.UpsertEventTriggerRequest(), bad, "trigger: is required"),
        (trigger(id=""), bad, "trigger.id: is required"),
        (trigger(id="a b"), bad, "not a valid trigger id"),
        (trigger(key_pattern=""), bad, "trigger.key_pattern: is required"),
        (trigger(key_pattern="order:*:paid"), bad, "'*' may only end a pattern"),
        (trigger(key_pattern="a\x00b"), bad, "trigger.key_pattern"),
        (trigger(queue_name="no-such"), grpc.StatusCode.NOT_FOUND, "no-such"),
        (trigger(job=None), bad, "trigger.job: is required"),
        (trigger(job={"name": ""}), bad, "trigger.job.name"),
        (trigger(job={"name": "j", "data": {"raw": b"1"}}), bad, "trigger.job.data: is not allowed"),
        (trigger(job={"name": "j", "options": {"job_id": "x"}}), bad, "trigger.job.options.job_id"),
        (
            trigger(job={"name": "j", "options": {"schedule_time": {"seconds": 1}}}),
            bad,
            "trigger.job.options.schedule_time",
        ),
    ]
    for req, code, text in cases:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.UpsertEventTrigger(req)
        assert info.value.code() == code and text in (info.value.details() or ""), (req, info.value)
    assert await qm.list_event_triggers() == []
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.DeleteEventTrigger(external_events_pb2.DeleteEventTriggerRequest(trigger_id="a/b"))
    assert info.value.code() == bad
    monkeypatch.setattr(event_triggers, "MAX_EVENT_TRIGGERS", 2)
    for i in range(2):
        await stub.UpsertEventTrigger(trigger(id=f"t{i}"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.UpsertEventTrigger(trigger(id="t9"))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "there are 2 event triggers already" in (info.value.details() or "")
    await stub.UpsertEventTrigger(trigger(id="t0", key_pattern="k2"))  # a replacement is no new trigger
    await channel.close()
    await qm.shutdown()


async def test_http_routes(server_factory: ServerFactory) -> None:
    web = await server_factory(http_listen="127.0.0.1:0")
    qm = QueueManager(address=web.address)
    await qm.register_queue("hq")
    base = f"http://{web.app.http_address}/api/v1"
    body = {"trigger": {"id": "hook", "key_pattern": "stripe:*", "queue_name": "hq", "job": {"name": "pay"}}}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base}/eventTriggers", data=json.dumps(body)) as r:
            assert r.status == 201 and (await r.json())["trigger"]["key_pattern"] == "stripe:*"
        async with session.get(f"{base}/eventTriggers?queue_name=hq") as r:
            assert [t["id"] for t in (await r.json())["triggers"]] == ["hook"]
        # An unknown queue is 404 on both listings (the triggers' answered 200 and an empty list).
        for path in ("eventTriggers", "schedules"):
            async with session.get(f"{base}/{path}?queue_name=nope") as r:
                answer = await r.json()
                assert (r.status, answer["code"]) == (404, "NOT_FOUND"), (path, answer)
                assert answer["message"].startswith("queue 'nope' is not registered"), (path, answer)
        push = {"key": "stripe:charge", "data": {"json": {"id": "ch_1"}}}
        async with session.post(f"{base}/events", data=json.dumps(push)) as r:
            added = (await r.json())["added"]
        async with session.delete(f"{base}/eventTriggers/hook") as r:
            assert r.status == 200 and (await r.json())["trigger"]["id"] == "hook"
        async with session.delete(f"{base}/eventTriggers/hook") as r:
            assert r.status == 404 and (await r.json())["code"] == "NOT_FOUND"
    assert [a["queue_name"] for a in added] == ["hq"]
    assert (await qm.get_job("hq", added[0]["job_id"])).data == {"id": "ch_1"}
    await qm.shutdown()


async def test_cli(server: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    qm = QueueManager(address=server.address)
    await qm.register_queue("cq")
    at = ("--server", server.address)
    made = await qm_json(
        capsys, server, "events", "triggers", "set", "c1", "ci:*", "cq", "build", "--priority", "low"
    )
    assert (made["id"], made["key_pattern"], made["job_name"]) == ("c1", "ci:*", "build")
    listed = await qm_json(capsys, server, "events", "triggers", "list")
    assert [t["id"] for t in listed] == ["c1"]
    status, out, err = await qm_cli(capsys, *at, "events", "push", "ci:main", "--data", '{"ref": "main"}')
    assert status == 0 and out.startswith("pushed ci:main: woke 0 job(s), added 1\n  added cq/"), err
    (job,) = (await qm.list_jobs("cq", JobState.WAITING))[0]
    assert (job.name, job.data, job.priority) == ("build", {"ref": "main"}, JobPriority.LOW)
    deleted = await qm_json(capsys, server, "events", "triggers", "delete", "c1")
    assert deleted["id"] == "c1" and await qm.list_event_triggers() == []
    status, _, err = await qm_cli(capsys, *at, "events", "triggers", "set", "c2", "a*b", "cq", "j")
    assert status == 1 and "'*' may only end a key pattern" in err
    # `qm events QUEUE` still follows a queue's job events: push's options are no part of it.
    with pytest.raises(SystemExit):
        await qm_cli(capsys, *at, "events", "cq", "--data", "1")
    await qm.shutdown()


async def test_tokens_push_and_manage_triggers_by_their_queues(
    secured: tuple[RunningServer, dict[str, str]],  # noqa: F811
) -> None:
    """A push may wake or add jobs of any queue, and a trigger's id names no queue: both need a producer of
    every queue. A trigger is made by a producer of its queue, and a list shows the token's queues' only."""
    server, tokens = secured
    async with grpc.aio.insecure_channel(server.address) as ch:
        q = queue_service_pb2_grpc.QueueServiceStub(ch)
        prod, admin = bearer(tokens["prod"]), bearer(tokens["admin"])

        def upsert(tid: str, queue: str) -> external_events_pb2.UpsertEventTriggerRequest:
            t = {"id": tid, "key_pattern": "k", "queue_name": queue, "job": {"name": "j"}}
            return external_events_pb2.UpsertEventTriggerRequest(trigger=t)

        assert await code_of(q.UpsertEventTrigger(upsert("mine", "billing-a"), metadata=prod)) == OK
        assert await code_of(q.UpsertEventTrigger(upsert("theirs", "orders"), metadata=prod)) == PD
        assert await code_of(q.UpsertEventTrigger(upsert("theirs", "orders"), metadata=admin)) == OK
        push = external_events_pb2.PushEventRequest(key="k")
        assert await code_of(q.PushEvent(push, metadata=prod)) == PD
        assert await code_of(q.PushEvent(push, metadata=admin)) == OK
        delete = external_events_pb2.DeleteEventTriggerRequest(trigger_id="mine")
        assert await code_of(q.DeleteEventTrigger(delete, metadata=prod)) == PD
        listing = external_events_pb2.ListEventTriggersRequest()
        seen = await q.ListEventTriggers(listing, metadata=bearer(tokens["view"]))
        assert [t.id for t in seen.triggers] == ["mine"]
        seen = await q.ListEventTriggers(listing, metadata=bearer(tokens["viewall"]))
        assert [t.id for t in seen.triggers] == ["mine", "theirs"]
