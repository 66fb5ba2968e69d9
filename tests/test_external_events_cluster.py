"""External events on a Redis/Valkey Cluster (services/event_pushes.py): a push recorded in the event hash
slot and carried out queue by queue survives its server being killed between the two steps, the janitor of
another server carrying it out once; the index of the queues with waiters per key, and its refusals."""

from __future__ import annotations

from typing import Any

import pytest

from queue_manager import JobContext, JobState, QueueManager
from queue_manager_server.engine import Engine
from queue_manager_server.engine.event_pushes import EventPushes
from queue_manager_server.engine.external_events import STALE_INDEX, ExternalEvents
from queue_manager_server.engine.keys import event_index, event_indexed_keys, event_pushes
from queue_manager_server.engine.records import NewJob
from queue_manager_server.services import event_pushes as pushes_module
from tests.cluster import ValkeyCluster, spread
from tests.conftest import ServerFactory
from tests.procs import Procs
from tests.rawworker import eventually
from tests.test_delay_job import until_state

pytestmark = pytest.mark.cluster

WAIT = 30.0


@pytest.mark.parametrize("point", ["after-event-record", "after-event-delivery"])
async def test_a_server_killed_between_a_push_and_its_carry_out_wakes_every_waiter_once(
    on_cluster: ServerFactory, valkey_cluster: ValkeyCluster, procs: Procs, prefix: str, point: str
) -> None:
    """kill -9 after the push's record (no queue's share carried out) or after every share (record not
    cleared): another server's janitor carries it out, every waiter (one queue on each primary) runs once
    with the event, the trigger's job exists once, and a repeat of the event id then answers the whole
    push."""
    good = await on_cluster(janitor_interval_ms=200)
    qm = QueueManager(address=good.address, concurrency=10)
    queues = spread("ev")
    for q in queues:
        await qm.register_queue(q)
    await qm.upsert_event_trigger("t", "crash:*", queues[0], "triggered")
    runs: list[tuple[str, Any]] = []

    async def wait(job: JobContext) -> None:
        if job.name == "triggered":
            return
        if job.event is not None:
            runs.append((job.id, job.event.data))
        await job.wait_for_event("crash:k")  # waits again: a second wake by the same push would show

    for q in queues:
        qm.processor(q)(wait)
    await qm.start_workers()
    jobs = [await qm.add_job(q, "w", None) for q in queues]
    for j in jobs:
        await until_state(qm, j.queue_name, j.id, JobState.DELAYED)

    doomed = await procs.server(valkey_cluster.url, prefix, 0, "--redis-cluster", "--test-crash-point", point)
    pusher = QueueManager(address=doomed.address)
    with pytest.raises(Exception):  # noqa: B017 (the server dies under the call: any transport error)
        await pusher.push_event("crash:k", {"n": 1}, event_id="once")
    assert await doomed.wait(timeout=WAIT) == -9  # it killed itself at the crash point
    await pusher.shutdown(grace=0)

    engine = good.app.engine
    assert engine is not None

    async def all_ran_and_parked_again() -> bool:
        if len(runs) < len(jobs) or await engine.redis.zcard(event_pushes(prefix)):
            return False
        states = [(await qm.get_job(j.queue_name, j.id)).state for j in jobs]
        return all(s == JobState.DELAYED for s in states)

    await eventually(all_ran_and_parked_again, timeout=WAIT)
    # Janitor passes after the carry-out find nothing left to do; give a wrong replay the time to show.
    for _ in range(3):
        assert await pushes_module.ClusterPushes(engine).replay() == 0
    assert sorted(runs) == sorted((j.id, {"n": 1}) for j in jobs)
    # A repeat of the event id answers what the push did.
    again = await qm.push_event("crash:k", {"n": 2}, event_id="once")
    assert again.duplicate
    assert sorted((r.queue_name, r.job_id) for r in again.woken) == sorted((j.queue_name, j.id) for j in jobs)
    assert [r.queue_name for r in again.added] == [queues[0]]
    triggered, total = await engine.list_jobs(queues[0], "waiting", 0, 10)
    completed, done = await engine.list_jobs(queues[0], "completed", 0, 10)
    assert [j.id for j in triggered + completed] == [again.added[0].job_id] and total + done == 1
    await qm.shutdown()


async def test_a_queue_leaves_a_keys_index_once_its_waiters_are_gone_and_was_indexed_before_the_grace(
    on_cluster: ServerFactory, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The index does not grow without end: a push that finds a queue with no waiter left drops it, unless it
    was indexed within INDEX_GRACE_MS before the push (a wait then being parked must stay findable)."""
    server = await on_cluster()
    qm = QueueManager(address=server.address)
    (queue,) = spread("idx")[:1]
    await qm.register_queue(queue)

    @qm.processor(queue)
    async def wait(job: JobContext) -> None:
        if job.event is None:
            await job.wait_for_event("idx:k")

    await qm.start_workers()
    engine = server.app.engine
    assert engine is not None
    index = event_index(prefix, "idx:k")
    first = await qm.add_job(queue, "w", None)
    await until_state(qm, queue, first.id, JobState.DELAYED)
    assert [q.decode() for q in await engine.redis.zrange(index, 0, -1)] == [queue]
    assert [r.job_id for r in (await qm.push_event("idx:k")).woken] == [first.id]
    assert [q.decode() for q in await engine.redis.zrange(index, 0, -1)] == [queue]  # indexed too recently

    monkeypatch.setattr(pushes_module, "INDEX_GRACE_MS", -60_000)  # every entry counts as old enough
    second = await qm.add_job(queue, "w", None)
    await until_state(qm, queue, second.id, JobState.DELAYED)
    assert [r.job_id for r in (await qm.push_event("idx:k")).woken] == [second.id]
    assert await engine.redis.zrange(index, 0, -1) == []
    await until_state(qm, queue, second.id, JobState.COMPLETED)
    await qm.shutdown()


async def test_a_wait_whose_index_is_too_old_is_refused_and_writes_nothing(cluster_engine: Engine) -> None:
    """event_wait.lua parks a job only within INDEX_MAX_AGE_MS of its queue's indexing; an older one (a
    server stalled between the two calls) is refused, so the server indexes again."""
    engine = cluster_engine
    (queue,) = spread("stale")[:1]
    await engine.register_queue(queue, {})
    await engine.add_jobs(queue, [NewJob(id="", name="w", data=b"null")])
    (job,) = (await engine.claim(queue, 1, "tok", "w", 30_000)).jobs
    indexed = await EventPushes(engine).index_event_wait(queue, ["k"], -1)
    events = ExternalEvents(engine)
    parked = await events.event_wait(queue, job.id, "tok", "", b"", -1, b"", ["k"], indexed - 31_000, 30_000)
    assert parked.code == STALE_INDEX
    assert (await engine.get_job(queue, job.id)).state == "active"
    parked = await events.event_wait(queue, job.id, "tok", "", b"", -1, b"", ["k"], indexed, 30_000)
    assert parked.code == 1 and (await engine.get_job(queue, job.id)).state == "delayed"


async def test_a_repeat_of_an_event_id_whose_push_is_not_carried_out_yet_carries_it_out(
    on_cluster: ServerFactory, prefix: str
) -> None:
    """A push recorded and left (its server lost, the janitor not there yet): a repeat of its event id carries
    it out itself and answers what it did, as on one server, and the record is cleared."""
    server = await on_cluster()  # its janitor runs every 30 s: the repeat comes first
    qm = QueueManager(address=server.address)
    (queue,) = spread("rep")[:1]
    await qm.register_queue(queue)

    @qm.processor(queue)
    async def wait(job: JobContext) -> None:
        if job.event is None:
            await job.wait_for_event("rep:k")

    await qm.start_workers()
    job = await qm.add_job(queue, "w", None)
    await until_state(qm, queue, job.id, JobState.DELAYED)
    engine = server.app.engine
    assert engine is not None
    recorded = await EventPushes(engine).record_event("left-behind", "rep:k", b"", "rep-1", 60_000, "0", [])
    assert recorded is not None and (await qm.get_job(queue, job.id)).state == JobState.DELAYED
    again = await qm.push_event("rep:k", None, event_id="rep-1")
    assert again.duplicate and [(r.queue_name, r.job_id) for r in again.woken] == [(queue, job.id)]
    assert await engine.redis.zcard(event_pushes(prefix)) == 0
    await until_state(qm, queue, job.id, JobState.COMPLETED)
    await qm.shutdown()


async def test_the_janitor_sweeps_a_queue_whose_waits_ended_with_no_push_out_of_the_keys_index(
    on_cluster: ServerFactory, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wait with no timeout, cancelled before any push: its queue would stay in the key's index for good;
    the sweep drops it (once indexed more than INDEX_GRACE_MS ago) and the key leaves the list of keys, while
    a queue whose job still waits stays."""
    server = await on_cluster()
    qm = QueueManager(address=server.address)
    waiting_queue, cancelled_queue = spread("sweep")[:2]
    for q in (waiting_queue, cancelled_queue):
        await qm.register_queue(q)

        @qm.processor(q)
        async def wait(job: JobContext) -> None:
            await job.wait_for_event("sweep:k")

    await qm.start_workers()
    stays = await qm.add_job(waiting_queue, "w", None)
    goes = await qm.add_job(cancelled_queue, "w", None)
    for j in (stays, goes):
        await until_state(qm, j.queue_name, j.id, JobState.DELAYED)
    engine = server.app.engine
    assert engine is not None
    pushes = pushes_module.ClusterPushes(engine)
    monkeypatch.setattr(pushes_module, "INDEX_GRACE_MS", -60_000)  # every entry counts as old enough
    assert await pushes.sweep_index() == 0  # both queues hold a waiter
    await qm.cancel_job(cancelled_queue, goes.id, "not needed")
    assert await pushes.sweep_index() == 1
    index = [q.decode() for q in await engine.redis.zrange(event_index(prefix, "sweep:k"), 0, -1)]
    assert index == [waiting_queue]
    await qm.cancel_job(waiting_queue, stays.id, "not needed")
    assert await pushes.sweep_index() == 1
    assert not await engine.redis.exists(event_index(prefix, "sweep:k"))
    assert await engine.redis.zcard(event_indexed_keys(prefix)) == 0
    await qm.shutdown()
