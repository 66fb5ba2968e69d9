"""Pushes of external events to keys with more waiters than one script call wakes (services/long_pushes.py
on one server, services/event_pushes.py on a Cluster): woken a batch per call from a snapshot taken at the
push's first step, each once; a wait parked during the push is not its to wake; a server killed between
batches leaves the rest to the janitor; a repeated event id during and after the push answers the whole
push; and the answer lists the first woken jobs past its bound. Against a real server and Valkey."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from queue_manager import JobState, QueueManager
from queue_manager.v1 import types_pb2
from queue_manager_server.engine.external_events import PARKED
from queue_manager_server.engine.keys import event_pushes
from queue_manager_server.engine.records import NewJob
from queue_manager_server.services import event_pushes as pushes_module
from queue_manager_server.services import long_pushes as long_module
from queue_manager_server.services.queue_service import QueueService
from tests.cluster import spread
from tests.conftest import RunningServer, ServerFactory
from tests.procs import Procs
from tests.rawworker import eventually
from tests.test_external_events import waiters

WAIT = 30.0


@pytest.fixture(params=["single", pytest.param("cluster", marks=pytest.mark.cluster)])
async def server(request: pytest.FixtureRequest, server_factory: ServerFactory) -> RunningServer:
    """Each test that takes it runs on one Valkey and on a three-primary Cluster."""
    if request.param == "cluster":
        return await request.getfixturevalue("on_cluster")(janitor_interval_ms=200)  # type: ignore[no-any-return]
    return await server_factory(janitor_interval_ms=200)


def small_batches(monkeypatch: pytest.MonkeyPatch, batch: int, limit: int = 1000) -> None:
    """Batches of `batch` waiters and answers listing `limit`, in this process's server."""
    for module in (pushes_module, long_module):
        monkeypatch.setattr(module, "WAKE_BATCH", batch)
        monkeypatch.setattr(module, "ANSWER_LIMIT", limit)


def service(server: RunningServer) -> QueueService:
    assert server.app.queue_service is not None
    return server.app.queue_service


def queues(base: str, n: int, cluster: bool) -> list[str]:
    return spread(base)[:n] if cluster else [f"{base}-{i}" for i in range(n)]


async def park(server: RunningServer, queue: str, n: int, key: str) -> list[str]:
    """Adds `n` jobs to `queue` and parks each waiting for `key`, as a worker's WaitForEvent does."""
    engine = server.app.engine
    assert engine is not None
    await engine.register_queue(queue, {})
    await engine.add_jobs(queue, [NewJob(id="", name="w", data=b"null") for _ in range(n)])
    ids: list[str] = []
    while len(ids) < n:
        ids += [j.id for j in (await engine.claim(queue, n - len(ids), "tok", "w", 600_000)).jobs]
    service_ = service(server)
    waits = service_.cluster_pushes or service_.external_events
    wait = types_pb2.EventWait(keys=[key]).SerializeToString()
    for chunk in range(0, n, 200):
        parked = await asyncio.gather(
            *(waits.event_wait(queue, i, "tok", "", b"", -1, wait, [key]) for i in ids[chunk : chunk + 200])
        )
        assert all(p.code == PARKED for p in parked)
    return ids


def between_batches(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch, hook: Callable[[], Awaitable[None]]
) -> list[int]:
    """Runs `hook` once, before the push's second batch (one server: its first wake_event_batch call follows
    the snapshot; a Cluster: the second round of deliver_event calls). Returns a list that holds 1 once it
    ran."""
    ran: list[int] = []
    service_ = service(server)
    calls = 0
    if service_.cluster_pushes is not None:
        target: Any = service_.cluster_pushes.pushes
        name, before = "deliver_event", 1
    else:
        target, name, before = service_.long_pushes.events, "wake_event_batch", 0
    real = getattr(target, name)

    async def spied(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        if calls == before and not ran:
            ran.append(1)
            await hook()
        calls += 1
        return await real(*args, **kwargs)

    monkeypatch.setattr(target, name, spied)
    return ran


async def all_waiting(qm: QueueManager, refs: list[tuple[str, str]]) -> None:
    for queue, job_id in refs:
        job = await qm.get_job(queue, job_id)
        assert job.state == JobState.WAITING and job.event is not None, (queue, job_id)


async def test_a_push_with_more_waiters_than_a_batch_wakes_each_once_a_batch_per_call(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    small_batches(monkeypatch, 5)
    cluster = server.settings.redis_cluster
    qa, qb = queues("many", 2, cluster)
    parked = [(qa, i) for i in await park(server, qa, 14, "many:k")]
    parked += [(qb, i) for i in await park(server, qb, 9, "many:k")]
    engine = server.app.engine
    assert engine is not None
    calls: list[str] = []
    run, call_in = engine.scripts.run, engine.scripts.call_in

    async def spied_run(name: str, keys: list[str], args: list[Any]) -> Any:
        calls.append(name)
        return await run(name, keys, args)

    def spied_call_in(pipe: Any, name: str, keys: Any, args: Any) -> None:
        calls.append(name)
        call_in(pipe, name, keys, args)

    monkeypatch.setattr(engine.scripts, "run", spied_run)
    monkeypatch.setattr(engine.scripts, "call_in", spied_call_in)
    qm = QueueManager(address=server.address)
    pushed = await qm.push_event("many:k", {"n": 1})
    woken = [(r.queue_name, r.job_id) for r in pushed.woken]
    assert sorted(woken) == sorted(parked) and len(set(woken)) == 23
    assert pushed.woken_count == 23 and not pushed.woken_truncated
    if cluster:  # 14 and 9 waiters, 5 a call: three rounds for the first queue, two for the second
        assert calls.count("deliver_event") == 5
    else:  # the first step, then ceil(23 / 5) batches
        assert calls.count("push_event") == 1 and calls.count("wake_event_batch") == 5
    await all_waiting(qm, parked)
    assert await waiters(server, "many:k") == set()
    assert await engine.redis.zcard(event_pushes(engine.prefix)) == 0
    assert (await qm.push_event("many:k")).woken == []
    await qm.shutdown()


async def test_a_job_that_starts_waiting_during_a_long_push_is_not_woken_by_it(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    small_batches(monkeypatch, 4)
    (queue,) = queues("cut", 1, server.settings.redis_cluster)
    before = await park(server, queue, 11, "cut:k")
    later: list[str] = []

    async def park_another() -> None:
        later.extend(await park(server, queue, 2, "cut:k"))

    ran = between_batches(server, monkeypatch, park_another)
    qm = QueueManager(address=server.address)
    pushed = await qm.push_event("cut:k")
    assert ran == [1]
    assert sorted(r.job_id for r in pushed.woken) == sorted(before) and pushed.woken_count == 11
    for job_id in later:
        assert (await qm.get_job(queue, job_id)).state == JobState.DELAYED
    assert len(await waiters(server, "cut:k")) == 2
    # The next push wakes them.
    assert sorted(r.job_id for r in (await qm.push_event("cut:k")).woken) == sorted(later)
    await qm.shutdown()


async def test_a_job_whose_wait_began_again_after_a_long_push_began_is_not_woken_by_it(
    server_factory: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One server: a job of the push's snapshot whose wait ended (promoted) and which waits for the key
    again before its batch comes is parked after the push's cut, and left to the next push."""
    server = await server_factory()
    small_batches(monkeypatch, 3)
    engine = server.app.engine
    assert engine is not None
    crowd = await park(server, "again-a", 8, "again:k")
    (rewaits,) = await park(server, "again-b", 1, "again:k")

    async def wait_again() -> None:
        await service(server).control.promote_job("again-b", rewaits)
        await park_claimed(server, "again-b", rewaits, "again:k")

    between_batches(server, monkeypatch, wait_again)
    qm = QueueManager(address=server.address)
    pushed = await qm.push_event("again:k")
    assert sorted(r.job_id for r in pushed.woken) == sorted(crowd)
    assert (await qm.get_job("again-b", rewaits)).state == JobState.DELAYED
    assert [r.job_id for r in (await qm.push_event("again:k")).woken] == [rewaits]
    await qm.shutdown()


async def park_claimed(server: RunningServer, queue: str, job_id: str, key: str) -> None:
    """Claims the one waiting job of `queue` (it must be `job_id`) and parks it waiting for `key`."""
    engine = server.app.engine
    assert engine is not None
    (job,) = (await engine.claim(queue, 1, "tok2", "w", 600_000)).jobs
    assert job.id == job_id
    wait = types_pb2.EventWait(keys=[key]).SerializeToString()
    parked = await service(server).external_events.event_wait(queue, job_id, "tok2", "", b"", -1, wait, [key])
    assert parked.code == PARKED


async def test_a_repeated_event_id_during_and_after_a_long_push_answers_the_whole_push(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    small_batches(monkeypatch, 4)
    (queue,) = queues("dup", 1, server.settings.redis_cluster)
    parked = await park(server, queue, 13, "dup:k")
    qm = QueueManager(address=server.address)
    during: list[Any] = []

    async def repeat() -> None:
        during.append(await qm.push_event("dup:k", 2, event_id="dup-1"))

    between_batches(server, monkeypatch, repeat)
    first = await qm.push_event("dup:k", 1, event_id="dup-1")
    assert not first.duplicate and sorted(r.job_id for r in first.woken) == sorted(parked)
    (again,) = during
    assert again.duplicate and sorted(map(str, again.woken)) == sorted(map(str, first.woken))
    assert again.pushed_at == first.pushed_at and again.woken_count == 13
    after = await qm.push_event("dup:k", 3, event_id="dup-1")
    assert (
        after.duplicate
        and sorted(map(str, after.woken)) == sorted(map(str, first.woken))
        and after.woken_count == 13
    )
    for job_id in parked:
        job = await qm.get_job(queue, job_id)
        assert job.state == JobState.WAITING and job.event is not None and job.event.data == 1
    await qm.shutdown()


async def test_the_answer_lists_the_first_woken_jobs_above_its_bound_and_counts_them_all(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    small_batches(monkeypatch, 4, limit=6)
    cluster = server.settings.redis_cluster
    qa, qb = queues("bound", 2, cluster)
    parked = {(qa, i) for i in await park(server, qa, 10, "bound:k")}
    parked |= {(qb, i) for i in await park(server, qb, 7, "bound:k")}
    qm = QueueManager(address=server.address)
    pushed = await qm.push_event("bound:k", event_id="bound-1")
    assert pushed.woken_count == 17 and pushed.woken_truncated and len(pushed.woken) == 6
    assert {(r.queue_name, r.job_id) for r in pushed.woken} <= parked
    again = await qm.push_event("bound:k", event_id="bound-1")
    assert again.duplicate and again.woken == pushed.woken and again.woken_count == 17
    assert again.woken_truncated
    await all_waiting(qm, sorted(parked))
    await qm.shutdown()


@pytest.mark.parametrize("layout", ["single", pytest.param("cluster", marks=pytest.mark.cluster)])
async def test_a_server_killed_between_batches_leaves_the_rest_to_the_janitor_each_woken_once(
    server_factory: ServerFactory, procs: Procs, prefix: str, layout: str, request: pytest.FixtureRequest
) -> None:
    """kill -9 after the first batch of a push of 1,200 waiters (the real batch of 100): another server's
    janitor wakes the rest, each once, and a repeat of the event id answers the whole push: 1,200 woken, the
    first 1,000 listed."""
    cluster = layout == "cluster"
    if cluster:
        good = await request.getfixturevalue("on_cluster")(janitor_interval_ms=200)
        url, extra = request.getfixturevalue("valkey_cluster").url, ["--redis-cluster"]
    else:
        good = await server_factory(janitor_interval_ms=200)
        url, extra = good.redis_url, []
    qa, qb = queues("crash", 2, cluster)
    parked = {(qa, i) for i in await park(good, qa, 700, "crash:k")}
    parked |= {(qb, i) for i in await park(good, qb, 500, "crash:k")}
    doomed = await procs.server(url, prefix, 0, *extra, "--test-crash-point", "between-event-batches")
    pusher = QueueManager(address=doomed.address)
    with pytest.raises(Exception):  # noqa: B017 (the server dies under the call: any transport error)
        await pusher.push_event("crash:k", {"n": 1}, event_id="crash-1")
    assert await doomed.wait(timeout=WAIT) == -9
    await pusher.shutdown(grace=0)

    engine = good.app.engine
    assert engine is not None
    qm = QueueManager(address=good.address)

    async def carried_out() -> bool:
        return int(await engine.redis.zcard(event_pushes(prefix))) == 0

    await eventually(carried_out, timeout=WAIT)
    for queue, n in ((qa, 700), (qb, 500)):
        assert (await engine.list_jobs(queue, "waiting", 0, 0))[1] == n
        assert (await engine.list_jobs(queue, "delayed", 0, 0))[1] == 0
    again = await qm.push_event("crash:k", {"n": 2}, event_id="crash-1")
    assert again.duplicate and again.woken_count == 1200 and again.woken_truncated
    listed = [(r.queue_name, r.job_id) for r in again.woken]
    assert len(listed) == 1000 and len(set(listed)) == 1000 and set(listed) <= parked
    sample = sorted(parked)[::50]
    for queue, job_id in sample:
        job = await qm.get_job(queue, job_id)
        assert job.state == JobState.WAITING and job.event is not None and job.event.data == {"n": 1}
    await qm.shutdown()
