"""Fairness groups (JobOptions.group): the ready jobs of different groups take turns, groups may have
concurrency and rate limits of their own, and every way a job enters or leaves waiting keeps the groups'
lists and counts right; against a real Valkey (the engine) and a real gRPC server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from redis.asyncio import Redis

from queue_manager import JobContext, JobState, QueueManager
from queue_manager.v1 import jobs_pb2, queue_service_pb2, queue_service_pb2_grpc, types_pb2
from queue_manager_server import convert
from queue_manager_server.engine import Engine
from queue_manager_server.engine.aging import Aging
from queue_manager_server.engine.control import Control
from queue_manager_server.engine.groups import Groups, Limits
from queue_manager_server.engine.job_control import JobControl
from queue_manager_server.engine.records import NewJob
from queue_manager_server.errors import JobActive, JobNotFound, WrongState
from tests.conftest import RunningServer

WAIT = 30.0


async def register(engine: Engine, name: str = "q", **cfg: object) -> None:
    fields, _ = convert.queue_meta(types_pb2.QueueConfig(disable_dead_letter=True, **cfg))  # type: ignore[arg-type]
    await engine.register_queue(name, fields)


def job(group: str = "", n: int = 0, **kw: object) -> NewJob:
    return NewJob(id="", name=f"{group or '-'}{n}", data=json.dumps({"n": n}).encode(), group=group, **kw)  # type: ignore[arg-type]


async def claim_names(engine: Engine, n: int, queue: str = "q", token: str = "tok") -> list[str]:
    res = await engine.claim(queue, n, token, "w", 30_000)
    return [j.name for j in res.jobs]


async def group_keys(redis: Redis, prefix: str, queue: str = "q") -> list[str]:
    keys = [_t(k) for k in await redis.keys(f"{prefix}:{{{queue}}}:g*")]
    return sorted(keys)


async def test_groups_take_turns_one_job_each(engine: Engine) -> None:
    await register(engine)
    await engine.add_jobs("q", [job("a", i) for i in range(6)])
    await engine.add_jobs("q", [job("b", i) for i in range(2)] + [job("c", i) for i in range(2)])
    order = [name for _ in range(10) for name in await claim_names(engine, 1)]
    assert order == ["a0", "b0", "c0", "a1", "b1", "c1", "a2", "a3", "a4", "a5"]
    assert await claim_names(engine, 1) == []


async def test_a_batch_gives_each_group_its_share_and_jobs_without_a_group_go_first(engine: Engine) -> None:
    await register(engine)
    await engine.add_jobs("q", [job("a", i) for i in range(100)] + [job("b", i) for i in range(3)])
    await engine.add_jobs("q", [job("", 0), job("", 1)])
    names = await claim_names(engine, 10)
    assert names[:2] == ["-0", "-1"]
    # The rest in turns: the first round takes one of each, then the rotation is shared out.
    assert sorted(n for n in names[2:] if n.startswith("b")) == ["b0", "b1", "b2"]
    assert [n for n in names[2:] if n.startswith("a")] == [f"a{i}" for i in range(5)]
    m = await engine.metrics("q")
    assert (m.waiting, m.active, m.groups) == (95, 10, 2)


async def test_priority_first_then_turns_within_a_level(engine: Engine) -> None:
    await register(engine)
    await engine.add_jobs("q", [job("a", i) for i in range(3)])
    await engine.add_jobs("q", [job("b", 9, priority=1), job("b", 0, priority=5)])
    await engine.add_jobs("q", [job("", 5, priority=5), job("", 2, priority=2), job("", 3)])
    order = [n for _ in range(8) for n in await claim_names(engine, 1)]
    # Level by level, a level's jobs without a group before its groups' (which take turns).
    assert order == ["b9", "-2", "-3", "a0", "a1", "a2", "-5", "b0"]
    await engine.add_jobs("q", [job("c", 0, priority=4), job("", 4, priority=4), job("d", 0, priority=1)])
    assert await claim_names(engine, 10) == ["d0", "-4", "c0"]


async def test_a_group_at_its_concurrency_limit_waits_until_a_run_of_it_ends(engine: Engine) -> None:
    await register(engine, group_limits=types_pb2.GroupLimits(concurrency=2))
    await engine.add_jobs("q", [job("a", i) for i in range(5)] + [job("b", i, attempts=2) for i in range(5)])
    first = (await engine.claim("q", 100, "t1", "w", 30_000)).jobs
    assert sorted(j.name for j in first) == ["a0", "a1", "b0", "b1"]
    assert await claim_names(engine, 100, token="t2") == []
    a0 = next(j for j in first if j.name == "a0")
    codes, _ = await engine.complete("q", [(a0.id, "t1", b"null", "application/json")])
    assert codes == [0]
    assert await claim_names(engine, 100, token="t3") == ["a2"]
    # A failed run with a retry frees its slot too, and the job goes back to its group.
    b0 = next(j for j in first if j.name == "b0")
    await engine.fail("q", [(b0.id, "t1", "boom", "", False)])
    assert await claim_names(engine, 100, token="t4") == ["b2"]
    groups, _ = await Groups(engine).list_groups("q", "", 10)
    assert [(g.name, g.waiting, g.active) for g in groups] == [("a", 2, 2), ("b", 3, 2)]


async def test_a_plain_job_of_a_group_is_claimed_with_its_group_from_its_list(engine: Engine) -> None:
    """A grouped job with no option a claim or a completion reads is marked GROUP_PLAIN and its group ('g' and
    the name, common.lua): the claim reads its 5 fields, the group from the mark and the priority from the
    level; the completion reads the mark alone (the group's slot is freed); one with such an option
    has no mark and is read whole, as is a job a priority change or a failure rewrote."""
    await register(engine, group_limits=types_pb2.GroupLimits(concurrency=1))
    k = engine.keys("q")
    jobs = [job("a", 0, priority=1), job("a", 1, timeout_ms=5000), job("b", 0), job("b", 1, attempts=2)]
    ids = (await engine.add_jobs("q", jobs)).ids
    assert [await engine.redis.hget(k.job(i), "p") for i in ids] == [b"ga", None, b"gb", b"gb"]
    first = (await engine.claim("q", 10, "t1", "w", 30_000)).jobs
    assert sorted((j.name, j.group, j.priority, j.timeout_ms) for j in first) == [
        ("a0", "a", 1, 0),
        ("b0", "b", 3, 0),
    ]
    codes, _ = await engine.complete("q", [(j.id, "t1", b"null", "application/json") for j in first])
    assert codes == [0, 0]
    second = (await engine.claim("q", 10, "t2", "w", 30_000)).jobs
    assert sorted((j.name, j.group, j.timeout_ms) for j in second) == [("a1", "a", 5000), ("b1", "b", 0)]
    b1 = next(j for j in second if j.name == "b1")
    await engine.fail("q", [(b1.id, "t2", "boom", "", False)])  # retried: rewritten, so marked not plain
    assert await engine.redis.hget(k.job(b1.id), "p") == b"0"
    assert [
        (j.name, j.group, j.attempts_made) for j in (await engine.claim("q", 10, "t3", "w", 30_000)).jobs
    ] == [("b1", "b", 1)]
    groups, _ = await Groups(engine).list_groups("q", "", 10)
    assert [(g.name, g.waiting, g.active) for g in groups] == [("a", 0, 1), ("b", 0, 1)]


async def test_a_group_rate_limit_holds_the_group_back_and_says_when_to_come_back(engine: Engine) -> None:
    # 10 per second: a bucket of one token, the next after 100 ms.
    await register(
        engine,
        group_limits=types_pb2.GroupLimits(
            rate_limit=types_pb2.RateLimit(max=10, duration=Duration(seconds=1))
        ),
    )
    await engine.add_jobs("q", [job("a", i) for i in range(3)] + [job("b", i) for i in range(3)])
    res = await engine.claim("q", 100, "t1", "w", 30_000)
    assert sorted(j.name for j in res.jobs) == ["a0", "b0"]
    assert 0 < res.retry_after_ms <= 100
    await asyncio.sleep(res.retry_after_ms / 1000 + 0.05)
    assert sorted(await claim_names(engine, 100, token="t2")) == ["a1", "b1"]


async def test_a_group_of_its_own_limits_and_clearing_them(engine: Engine) -> None:
    await register(engine, group_limits=types_pb2.GroupLimits(concurrency=1))
    groups = Groups(engine)
    await engine.add_jobs("q", [job("vip", i) for i in range(4)] + [job("x", i) for i in range(4)])
    assert sorted(await claim_names(engine, 100, token="t1")) == ["vip0", "x0"]
    # Raised for one group: it takes its turns again at once.
    info = await groups.set_group_limits("q", "vip", Limits(concurrency=3))
    assert (info.waiting, info.active, info.own, info.default) == (3, 1, Limits(3, 0, 0), Limits(1, 0, 0))
    assert sorted(await claim_names(engine, 100, token="t2")) == ["vip1", "vip2"]
    listed, total = await groups.list_groups("q", "", 10)
    assert total == 2
    assert [(g.name, g.limits.concurrency, g.own is not None) for g in listed] == [
        ("vip", 3, True),
        ("x", 1, False),
    ]
    # A group with its own limits is known while idle; cleared, an idle group is forgotten.
    await groups.set_group_limits("q", "idle", Limits(concurrency=5, rate_max=10, rate_ms=1000))
    assert (await groups.list_groups("q", "", 10))[1] == 3
    info = await groups.set_group_limits("q", "idle", None)
    assert info.own is None and info.limits == Limits(1, 0, 0)
    assert [g.name for g in (await groups.list_groups("q", "", 10))[0]] == ["vip", "x"]


async def test_jobs_leaving_waiting_keep_the_group_counts(engine: Engine, redis: Redis, prefix: str) -> None:
    await register(engine)
    control = JobControl(engine)
    added = await engine.add_jobs("q", [job("a", i) for i in range(4)] + [job("b", 0)], fetch=True)
    ids = [r.id for r in added.records]
    await engine.remove_job("q", ids[0])
    await Control(engine).cancel_job("q", ids[1], "no")
    await control.change_priority("q", ids[2], 1)
    m = await engine.metrics("q")
    assert (m.waiting, m.cancelled, m.groups) == (3, 1, 2)
    records, total = await engine.list_jobs("q", "waiting", 0, 10)
    assert total == 3 and sorted(r.id for r in records) == sorted([ids[2], ids[3], ids[4]])
    assert await claim_names(engine, 1) == ["a2"]  # raised to the first level
    # A lost worker's job goes back to its group and its slot is free.
    res = await engine.claim("q", 1, "t2", "w", 30_000)
    assert await engine.release("q", [(res.jobs[0].id, "t2")], stalled=True) == [1]
    groups, _ = await Groups(engine).list_groups("q", "", 10)
    assert [(g.name, g.waiting, g.active) for g in groups] == [("a", 1, 1), ("b", 1, 0)]
    # Drain takes the groups' jobs too; a group with nothing left is forgotten.
    assert await engine.drain("q", include_delayed=False) == 2
    m = await engine.metrics("q")
    assert (m.waiting, m.groups) == (0, 1)
    await engine.obliterate("q", force=True)
    assert await group_keys(redis, prefix) == []
    assert await redis.exists(f"{prefix}:{{q}}:meta") == 0


async def test_clean_by_age_reaches_the_groups_lists(engine: Engine) -> None:
    await register(engine)
    await engine.add_jobs("q", [job("a", i) for i in range(3)] + [job("", 0)] + [job("b", 0)])
    assert await engine.clean("q", "waiting", 0, 0) == 5
    m = await engine.metrics("q")
    assert (m.waiting, m.groups) == (0, 0)


async def test_delayed_and_retried_jobs_come_back_to_their_group(engine: Engine) -> None:
    await register(engine)
    await engine.add_jobs("q", [job("a", 0, delay_ms=1), job("b", 0)])
    await asyncio.sleep(0.05)
    assert sorted(await claim_names(engine, 10)) == ["a0", "b0"]
    groups, _ = await Groups(engine).list_groups("q", "", 10)
    assert [(g.name, g.waiting, g.active) for g in groups] == [("a", 0, 1), ("b", 0, 1)]


@pytest.fixture
async def stub(server: RunningServer) -> AsyncIterator[queue_service_pb2_grpc.QueueServiceStub]:
    async with grpc.aio.insecure_channel(server.address) as channel:
        yield queue_service_pb2_grpc.QueueServiceStub(channel)


@pytest.fixture
async def qm(server: RunningServer) -> AsyncIterator[QueueManager]:
    client = QueueManager(address=server.address, concurrency=1, shutdown_grace=5.0)
    yield client
    await client.shutdown()


async def test_a_flooding_group_does_not_hold_back_the_others(qm: QueueManager) -> None:
    await qm.register_queue("f")
    await qm.add_bulk(
        "f", [{"name": "flood", "data": {"i": i}, "options": {"group": "big"}} for i in range(60)]
    )
    small = [await qm.add_job("f", "small", {"i": i}, {"group": "small"}) for i in range(3)]
    order: list[str] = []
    seen: list[str | None] = []

    @qm.processor("f")
    async def work(job: JobContext) -> None:
        order.append(job.name)
        seen.append(job.options.group)

    await qm.start_workers("f")
    for s in small:
        assert (await qm.wait_for_job("f", s.id, WAIT)).state is JobState.COMPLETED
    # The small group's three jobs ran within the first few, not after the 60 flood jobs.
    assert order.index("small") < 10 and len([n for n in order if n == "small"]) == 3
    assert len(order) < 30
    assert {"big", "small"} <= set(seen)


async def test_group_limits_over_grpc_and_bad_input(stub: queue_service_pb2_grpc.QueueServiceStub) -> None:
    limits = types_pb2.GroupLimits(
        concurrency=2, rate_limit=types_pb2.RateLimit(max=5, duration=Duration(seconds=1))
    )
    reply = await stub.RegisterQueue(
        queue_service_pb2.RegisterQueueRequest(name="g", config=types_pb2.QueueConfig(group_limits=limits))
    )
    assert reply.queue.config.group_limits == limits
    added = await stub.AddJob(
        jobs_pb2.AddJobRequest(
            queue_name="g", job=jobs_pb2.NewJob(name="j", options=types_pb2.JobOptions(group="tenant/1 é"))
        )
    )
    assert added.job.options.group == "tenant/1 é"
    got = await stub.GetJob(jobs_pb2.GetJobRequest(queue_name="g", job_id=added.job.id))
    assert got.job.options.group == "tenant/1 é"
    listed = await stub.ListGroups(queue_service_pb2.ListGroupsRequest(queue_name="g"))
    assert listed.total_size == 1
    assert (listed.groups[0].group, listed.groups[0].waiting, listed.groups[0].limits) == (
        "tenant/1 é",
        1,
        limits,
    )
    assert not listed.groups[0].custom_limits
    paused = await stub.PauseGroup(queue_service_pb2.PauseGroupRequest(queue_name="g", group="tenant/1 é"))
    assert paused.group.paused and paused.group.waiting == 1
    resumed = await stub.ResumeGroup(queue_service_pb2.ResumeGroupRequest(queue_name="g", group="tenant/1 é"))
    assert not resumed.group.paused
    own = types_pb2.GroupLimits(concurrency=7)
    set_reply = await stub.SetGroupLimits(
        queue_service_pb2.SetGroupLimitsRequest(queue_name="g", group="tenant/1 é", limits=own)
    )
    assert set_reply.group.custom_limits and set_reply.group.limits == own
    metrics = await stub.GetQueueMetrics(queue_service_pb2.GetQueueMetricsRequest(name="g"))
    assert (metrics.metrics.waiting, metrics.metrics.groups) == (1, 1)

    bad = [
        (types_pb2.JobOptions(group="x" * 129), "options.group"),
        (types_pb2.JobOptions(group="a\nb"), "control characters"),
        (types_pb2.JobOptions(group="a\u0085b"), "control characters (found U+0085)"),
        (types_pb2.JobOptions(group="a\u2028b"), "control characters (found U+2028)"),
    ]
    for options, what in bad:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.AddJob(
                jobs_pb2.AddJobRequest(queue_name="g", job=jobs_pb2.NewJob(name="j", options=options))
            )
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT and what in (err.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.RegisterQueue(
            queue_service_pb2.RegisterQueueRequest(
                name="g2",
                config=types_pb2.QueueConfig(default_job_options=types_pb2.JobOptions(group="a")),
            )
        )
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "default_job_options.group" in (err.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.SetGroupLimits(
            queue_service_pb2.SetGroupLimitsRequest(
                queue_name="g",
                group="t",
                limits=types_pb2.GroupLimits(rate_limit=types_pb2.RateLimit(max=5)),
            )
        )
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "limits.rate_limit.duration" in (err.value.details() or "")
    for call in (
        stub.ListGroups(queue_service_pb2.ListGroupsRequest(queue_name="nope")),
        stub.SetGroupLimits(queue_service_pb2.SetGroupLimitsRequest(queue_name="nope", group="t")),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() is grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.SetGroupLimits(queue_service_pb2.SetGroupLimitsRequest(queue_name="g", group=""))
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    # Limits and clear together: which was meant is a guess, so neither is done (the group keeps its own).
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.SetGroupLimits(
            queue_service_pb2.SetGroupLimitsRequest(
                queue_name="g", group="tenant/1 é", limits=types_pb2.GroupLimits(concurrency=1), clear=True
            )
        )
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "clear: removes the group's own limits: give it without limits"
    listed = await stub.ListGroups(queue_service_pb2.ListGroupsRequest(queue_name="g"))
    assert listed.groups[0].custom_limits and listed.groups[0].limits == own


def _t(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


async def check_group_invariants(engine: Engine, redis: Redis, prefix: str, queue: str = "q") -> None:
    """The groups' lists, counts, rotation and index agree with the jobs (common.lua documents them)."""
    base = f"{prefix}:{{{queue}}}:"
    lists: dict[str, list[str]] = {}
    parts: list[tuple[str, str]] = []
    per_level = [0] * 5
    for key in await redis.keys(f"{base}gwait:*"):
        level, group = _t(key)[len(base) + len("gwait:") :].split(":", 1)
        parts.append((level, group))
        ids = [_t(i) for i in await redis.lrange(key, 0, -1)]
        lists.setdefault(group, []).extend(ids)
        per_level[int(level) - 1] += len(ids)
    waiting = {_t(g): int(n) for g, n in (await redis.hgetall(f"{base}gwaiting")).items()}
    assert waiting == {g: len(ids) for g, ids in lists.items() if ids}
    assert int(await redis.hget(f"{base}meta", "gw") or 0) == sum(waiting.values())
    counts = await redis.hmget(f"{base}meta", [f"gw{p}" for p in range(1, 6)])
    assert [int(n or 0) for n in counts] == per_level
    active: dict[str, int] = {}
    for jid in await redis.zrange(f"{base}active", 0, -1):
        grp = await redis.hget(f"{base}job:{_t(jid)}", "grp")
        if grp:
            active[_t(grp)] = active.get(_t(grp), 0) + 1
    assert {_t(g): int(n) for g, n in (await redis.hgetall(f"{base}gact")).items()} == active
    for group, ids in lists.items():
        for jid in ids:
            fields = await redis.hmget(f"{base}job:{jid}", "grp", "st")
            assert _t(fields[0]) == group and fields[1] in (None, b"waiting")
    # Liveness: a group's level list with jobs is in the rotation, waits for a token, or its group is held
    # back at its limit with runs that will free it.
    ring = {_t(m) for m in await redis.zrange(f"{base}gring", 0, -1)}
    delayed = {_t(m) for m in await redis.zrange(f"{base}gdelay", 0, -1)}
    parked = {_t(g) for g in await redis.hkeys(f"{base}gpark")}
    paused = {_t(g) for g in await redis.hkeys(f"{base}gpaused")}
    for level, group in parts:
        part = f"{level}:{group}"
        held = group in parked and active.get(group, 0) > 0
        assert part in ring or part in delayed or held or group in paused, part
    assert int(await redis.hget(f"{base}meta", "g_paused") or 0) == len(paused)
    known = {_t(g) for g in await redis.zrange(f"{base}groups", 0, -1)}
    own = {_t(g) for g in await redis.hkeys(f"{base}glimits")}
    assert set(waiting) | set(active) | own | paused == known


async def test_random_operations_keep_the_groups_consistent(
    engine: Engine, redis: Redis, prefix: str
) -> None:
    rnd = random.Random(7)
    # The priority sweep's moves, on a random generator of their own (the operations' sequence is kept).
    aged_rnd = random.Random(11)
    bounds = [
        types_pb2.PriorityBound(priority=p, max_wait=Duration(seconds=1))
        for p in (types_pb2.JOB_PRIORITY_LOW, types_pb2.JOB_PRIORITY_BACKGROUND)
    ]
    await register(engine, group_limits=types_pb2.GroupLimits(concurrency=3), priority_bounds=bounds)
    control, ctl, groups, aging = JobControl(engine), Control(engine), Groups(engine), Aging(engine)
    leases: dict[str, str] = {}  # active job id -> token
    waiting_ids: list[str] = []
    for step in range(400):
        op = rnd.random()
        if op < 0.3:
            batch = [
                job(rnd.choice(["a", "b", "c", "d", ""]), step, priority=rnd.randint(1, 5), attempts=2)
                for _ in range(rnd.randint(1, 6))
            ]
            waiting_ids += (await engine.add_jobs("q", batch)).ids
        elif op < 0.5:
            token = f"t{step}"
            for j in (await engine.claim("q", rnd.randint(1, 8), token, "w", 30_000)).jobs:
                leases[j.id] = token
        elif op < 0.6 and leases:
            jid = rnd.choice(list(leases))
            await engine.complete("q", [(jid, leases.pop(jid), b"null", "application/json")])
        elif op < 0.67 and leases:
            jid = rnd.choice(list(leases))
            await engine.fail("q", [(jid, leases.pop(jid), "boom", "", False)])
        elif op < 0.72 and leases:
            jid = rnd.choice(list(leases))
            await engine.release("q", [(jid, leases.pop(jid))], stalled=rnd.random() < 0.5)
        elif op < 0.77 and waiting_ids:
            jid = rnd.choice(waiting_ids)
            with contextlib.suppress(JobNotFound, JobActive, WrongState):
                await engine.remove_job("q", jid)
        elif op < 0.82 and waiting_ids:
            jid = rnd.choice(waiting_ids)
            with contextlib.suppress(JobNotFound, JobActive, WrongState):
                await ctl.cancel_job("q", jid, "test")
        elif op < 0.88 and waiting_ids:
            jid = rnd.choice(waiting_ids)
            with contextlib.suppress(JobNotFound, JobActive, WrongState):
                await control.change_priority("q", jid, rnd.randint(1, 5))
        elif op < 0.91:
            grp = rnd.choice(["a", "b", "c", "d"])
            limits = None if rnd.random() < 0.4 else Limits(concurrency=rnd.randint(1, 3))
            await groups.set_group_limits("q", grp, limits)
        elif op < 0.94:
            await groups.set_group_paused("q", rnd.choice(["a", "b", "c", "d"]), rnd.random() < 0.5)
        elif op < 0.97:
            await engine.clean("q", "waiting", 0, rnd.randint(1, 5))
        else:
            await engine.drain("q", include_delayed=False)
        if step % 9 == 4:
            # The first few jobs of some bounded levels' lists have waited past their bound; the sweep moves
            # them, a few at a time.
            base = f"{prefix}:{{q}}:"
            for key in sorted(
                [*await redis.keys(f"{base}gwait:[45]:*"), *await redis.keys(f"{base}waiting:[45]")]
            ):
                if aged_rnd.random() < 0.6:
                    for jid in await redis.lrange(key, 0, aged_rnd.randint(0, 3)):
                        await redis.hset(f"{base}job:{_t(jid)}", "ts", 1)
            limit, visits = aged_rnd.randint(1, 4), aged_rnd.randint(1, 3)
            await aging.go_on("q", await aging.age_waiting("q", limit, visits=visits), limit, visits)
            await check_group_invariants(engine, redis, prefix)
        # A job cancelled while active ends when its worker reports: drop leases of finished jobs.
        for jid in list(leases):
            if (await engine.get_job("q", jid)).text("st") != "active":
                leases.pop(jid)
        if step % 10 == 0:
            await check_group_invariants(engine, redis, prefix)
    await check_group_invariants(engine, redis, prefix)
    # Everything left drains: finish every lease, lift the limits, claim until nothing waits.
    for jid, token in leases.items():
        await engine.complete("q", [(jid, token, b"null", "application/json")])
    for grp in ["a", "b", "c", "d"]:
        await groups.set_group_limits("q", grp, Limits(concurrency=1000))
        await groups.set_group_paused("q", grp, False)
    for _ in range(200):
        res = await engine.claim("q", 50, "end", "w", 30_000)
        if not res.jobs:
            break
        await engine.complete("q", [(j.id, "end", b"null", "application/json") for j in res.jobs])
    m = await engine.metrics("q")
    assert (m.waiting, m.active) == (0, 0)
    await check_group_invariants(engine, redis, prefix)


async def test_jobs_behind_a_held_back_group_wake_no_worker(engine: Engine) -> None:
    await register(engine, group_limits=types_pb2.GroupLimits(concurrency=1))
    await engine.add_jobs("q", [job("a", 0), job("a", 1)])
    assert await claim_names(engine, 10) == ["a0"]
    assert await claim_names(engine, 10, token="t2") == []  # a worker now waits: the queue is hungry
    # Another job of the held-back group is not ready: no wake-up; a job of another group is.
    assert not (await engine.add_jobs("q", [job("a", 2)])).published
    assert (await engine.add_jobs("q", [job("b", 0)])).published


async def test_the_oldest_waiting_job_counts_the_groups_jobs(engine: Engine) -> None:
    await register(engine, group_limits=types_pb2.GroupLimits(concurrency=1))
    first = await engine.add_jobs("q", [job("a", 0), job("a", 1), job("b", 0)], fetch=True)
    await asyncio.sleep(0.05)
    await engine.add_jobs("q", [job("", 0)])
    m = await engine.metrics("q")
    assert m.oldest_ready_ms == first.now_ms
    # Held back at its limit (a1 behind a0), the group's head still counts.
    assert sorted(await claim_names(engine, 10)) == ["-0", "a0", "b0"]
    assert (await engine.metrics("q")).oldest_ready_ms == first.now_ms


async def test_the_levels_count_the_groups_jobs_and_their_oldest(engine: Engine) -> None:
    await register(engine, group_limits=types_pb2.GroupLimits(concurrency=1))
    first = await engine.add_jobs(
        "q", [job("a", 0, priority=4), job("a", 1, priority=4), job("b", 0, priority=2)], fetch=True
    )
    await asyncio.sleep(0.05)
    later = await engine.add_jobs("q", [job("", 0, priority=4), job("c", 0, priority=2)], fetch=True)
    levels = (await engine.metrics("q")).levels
    assert [count for count, _ in levels] == [0, 2, 0, 3, 0]
    assert [since for _, since in levels] == [-1, first.now_ms, -1, first.now_ms, -1]
    # a0 runs: a1 waits behind it (its group at its limit), and is the LOW level's oldest with -0.
    assert sorted(await claim_names(engine, 2)) == ["b0", "c0"]
    assert sorted(await claim_names(engine, 2)) == ["-0", "a0"]
    levels = (await engine.metrics("q")).levels
    assert [count for count, _ in levels] == [0, 0, 0, 1, 0]
    assert levels[3][1] == first.now_ms and later.now_ms > first.now_ms


async def test_a_paused_group_takes_no_turn_until_resumed(engine: Engine) -> None:
    await register(engine)
    groups = Groups(engine)
    await engine.add_jobs("q", [job("a", i) for i in range(3)] + [job("b", i) for i in range(2)])
    info = await groups.set_group_paused("q", "a", True)
    assert (info.paused, info.waiting) == (True, 3)
    await engine.add_jobs("q", [job("a", 3)])  # still added
    assert await claim_names(engine, 10) == ["b0", "b1"]
    assert await claim_names(engine, 10, token="t2") == []
    listed, _ = await groups.list_groups("q", "", 10)
    assert [(g.name, g.waiting, g.paused) for g in listed] == [("a", 4, True), ("b", 0, False)]
    # Paused while idle, a group is still known; resumed, its jobs take their turns at once.
    await groups.set_group_paused("q", "idle", True)
    assert [g.name for g in (await groups.list_groups("q", "", 10))[0]] == ["a", "b", "idle"]
    assert (await engine.metrics("q")).groups_paused == 2
    await groups.set_group_paused("q", "idle", False)
    info = await groups.set_group_paused("q", "a", False)
    assert not info.paused
    assert await claim_names(engine, 10, token="t3") == ["a0", "a1", "a2", "a3"]
    assert [g.name for g in (await groups.list_groups("q", "", 10))[0]] == ["a", "b"]


async def test_a_group_held_back_and_then_left_idle_is_forgotten(engine: Engine) -> None:
    await register(engine, group_limits=types_pb2.GroupLimits(concurrency=1))
    added = await engine.add_jobs("q", [job("b", 0), job("b", 1)])
    first = (await engine.claim("q", 1, "t1", "w", 30_000)).jobs[0]
    assert await claim_names(engine, 1, token="t2") == []  # b is at its limit: held back
    await engine.remove_job("q", added.ids[1])
    await engine.complete("q", [(first.id, "t1", b"null", "application/json")])
    assert await Groups(engine).list_groups("q", "", 10) == ([], 0)


async def test_raising_the_queues_group_limit_frees_held_back_groups_at_once(engine: Engine) -> None:
    await register(engine, group_limits=types_pb2.GroupLimits(concurrency=1))
    await engine.add_jobs("q", [job("a", i) for i in range(3)])
    assert await claim_names(engine, 10) == ["a0"]
    assert await claim_names(engine, 10, token="t2") == []  # held back at its limit
    await register(engine, group_limits=types_pb2.GroupLimits(concurrency=2))
    assert await claim_names(engine, 10, token="t3") == ["a1"]


async def test_own_limits_without_a_burst_keep_the_form_an_older_server_reads(engine: Engine) -> None:
    """A group's own limits are stored "concurrency rate-max rate-ms max-size", the burst as a fifth field
    only when one is given: a server from before burst reads exactly four (its max size), so a rolling upgrade
    keeps the group's max size for it."""
    import re

    await register(engine)
    groups = Groups(engine)
    await groups.set_group_limits("q", "plain", Limits(concurrency=2, max_size=5))
    await groups.set_group_limits("q", "bursty", Limits(rate_max=10, rate_ms=1000, rate_burst=50))
    k = engine.keys("q")
    own = await engine.redis.hgetall(k.base + ":glimits")
    assert own == {b"plain": b"2 0 0 5", b"bursty": b"0 10 1000 0 50"}
    older = re.compile(rb"^\d+ \d+ \d+ (\d+)$")  # what a server before burst matched
    match = older.match(own[b"plain"])
    assert match is not None and match.group(1) == b"5"
