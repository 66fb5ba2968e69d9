"""Children removed while a parent waits for them (RemoveJob, RemoveJobs, CleanQueue, DrainQueue, a redrive of
a dead-letter copy): the parent no longer waits for them, runs again once nothing else is pending and sees
each as removed; a removal handed on twice counts once, a finished child's removal changes nothing; against a
real server and Valkey (and a Cluster)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from queue_manager import ChildSpec, JobContext, JobState, NotFoundError, QueueManager, UnrecoverableError
from queue_manager_server.engine.children import DEDUP, TO_RESOLVE, Children
from queue_manager_server.services.flows import Flows
from tests.cluster import spread
from tests.conftest import RunningServer, ServerFactory
from tests.rawworker import RawWorker, eventually
from tests.test_delay_job import until_state

Seen = list[list[tuple[str, str, bool, str]]]


@pytest.fixture
async def qm(server: RunningServer) -> AsyncIterator[QueueManager]:
    client = QueueManager(address=server.address, concurrency=2, shutdown_grace=5.0)
    yield client
    await client.shutdown()


def _parent(qm: QueueManager, queue: str, specs: list[ChildSpec]) -> Seen:
    """A processor on `queue` that waits for `specs` on its first run and, on its next, records each child
    as (id, state, removed, reason)."""
    seen: Seen = []

    @qm.processor(queue)
    async def fan_out(job: JobContext) -> None:
        if not job.children:
            await job.wait_for_children(specs)
        seen.append(
            [(c.job_id, c.state.value if c.state else "", c.removed, c.failed_reason) for c in job.children]
        )

    return seen


async def _parked(qm: QueueManager, queue: str, pending: int | None) -> str:
    """Adds the parent job and returns its id once it is parked with `pending` children to wait for (None:
    any number, when its children may be running meanwhile)."""
    parent = await qm.add_job(queue, "p", None)
    view = await until_state(qm, queue, parent.id, JobState.DELAYED)
    assert pending is None or view.children_pending == pending
    return parent.id


async def _remove_job(qm: QueueManager, queue: str) -> None:
    assert await qm.remove_job(queue, "kid") == JobState.WAITING


async def _remove_jobs(qm: QueueManager, queue: str) -> None:
    assert (await qm.remove_jobs(queue, JobState.WAITING, name="kid")).count == 1


async def _clean_queue(qm: QueueManager, queue: str) -> None:
    assert await qm.clean_queue(queue, 0, JobState.WAITING) == 1


async def _drain_queue(qm: QueueManager, queue: str) -> None:
    assert await qm.drain_queue(queue) == 1


REMOVALS: dict[str, tuple[Callable[[QueueManager, str], Awaitable[None]], str]] = {
    "remove_job": (_remove_job, "removed by RemoveJob"),
    "remove_jobs": (_remove_jobs, "removed by RemoveJobs"),
    "clean_queue": (_clean_queue, "removed by CleanQueue"),
    "drain_queue": (_drain_queue, "removed by DrainQueue"),
}


@pytest.mark.parametrize("how", sorted(REMOVALS))
async def test_a_child_removed_ends_for_its_parent_which_runs_again_and_sees_it_removed(
    qm: QueueManager, how: str
) -> None:
    """No worker serves the children's queue: the child waits until removed, and the removal alone wakes the
    parent."""
    remove, reason = REMOVALS[how]
    for q in ("rm-parent", "rm-kids"):
        await qm.register_queue(q)
    seen = _parent(qm, "rm-parent", [ChildSpec("rm-kids", "kid", 1, options={"job_id": "kid"})])
    await qm.start_workers()
    parent = await _parked(qm, "rm-parent", 1)
    await remove(qm, "rm-kids")
    done = await until_state(qm, "rm-parent", parent, JobState.COMPLETED)
    assert seen == [[("kid", "", True, reason)]]
    (child,) = done.child_jobs
    assert (child.job_id, child.state, child.removed, child.current_state) == ("kid", None, True, None)


async def test_a_delayed_child_cleaned_away_ends_for_its_parent(qm: QueueManager) -> None:
    for q in ("rm-delayed", "rm-delayed-kids"):
        await qm.register_queue(q)
    spec = ChildSpec("rm-delayed-kids", "later", 1, options={"delay": 3_600_000})
    seen = _parent(qm, "rm-delayed", [spec])
    await qm.start_workers()
    parent = await _parked(qm, "rm-delayed", 1)
    assert await qm.clean_queue("rm-delayed-kids", 0, JobState.DELAYED) == 1
    await until_state(qm, "rm-delayed", parent, JobState.COMPLETED)
    assert seen == [[(seen[0][0][0], "", True, "removed by CleanQueue")]]


async def test_a_parent_waiting_for_two_children_where_one_is_removed_still_waits_for_the_other(
    server: RunningServer, qm: QueueManager
) -> None:
    for q in ("two-parent", "two-kids"):
        await qm.register_queue(q)
    seen = _parent(
        qm,
        "two-parent",
        [
            ChildSpec("two-kids", "gone", 1, options={"job_id": "gone"}),
            ChildSpec("two-kids", "kept", 2, options={"job_id": "kept"}),
        ],
    )
    await qm.start_workers()
    parent = await _parked(qm, "two-parent", 2)
    await qm.remove_job("two-kids", "gone")
    await eventually(lambda: _pending_is(qm, "two-parent", parent, 1))
    view = await qm.get_job("two-parent", parent)
    assert view.state == JobState.DELAYED
    assert [(c.job_id, c.removed) for c in view.child_jobs] == [("gone", True), ("kept", False)]

    async with QueueManager(address=server.address) as kids:

        @kids.processor("two-kids")
        async def double(job: JobContext) -> int:
            return int(job.data) * 2

        await kids.start_workers()
        await until_state(qm, "two-parent", parent, JobState.COMPLETED)
    assert seen == [[("gone", "", True, "removed by RemoveJob"), ("kept", "completed", False, "")]]


async def _exists(qm: QueueManager, queue: str, job_id: str) -> bool:
    try:
        await qm.get_job(queue, job_id)
    except NotFoundError:
        return False
    return True


async def _pending_is(qm: QueueManager, queue: str, job_id: str, pending: int) -> bool:
    return (await qm.get_job(queue, job_id)).children_pending == pending


async def test_a_removal_handed_on_twice_counts_once(server: RunningServer, qm: QueueManager) -> None:
    """The removal's hand-off carried out, then carried out again (a server killed before it cleared the
    entry, and the janitor replaying it): the parent counts the child once and still waits for the other."""
    engine = server.app.engine
    assert engine is not None and engine.flow_hook is not None
    flows = engine.flow_hook.__self__  # type: ignore[attr-defined]
    assert isinstance(flows, Flows)
    for q in ("replay-parent", "replay-kids"):
        await qm.register_queue(q)
    _parent(
        qm,
        "replay-parent",
        [ChildSpec("replay-kids", "k", 1, options={"job_id": f"k{n}"}) for n in range(2)],
    )
    await qm.start_workers()
    parent = await _parked(qm, "replay-parent", 2)
    engine.flow_hook = None  # the removal's hand-off stays queued, as after a crash
    try:
        await qm.remove_job("replay-kids", "k0")
    finally:
        engine.flow_hook = flows.hand_off
    entries = await engine.pending_flows("replay-kids", 10)
    assert [(job_id, entry["st"]) for job_id, entry in entries] == [("k0", b"removed")]
    await flows._carry_out("replay-kids", entries)
    await flows._carry_out("replay-kids", entries)  # the replay
    assert await flows.hand_off("replay-kids") == 1  # carried out a third time, and cleared
    assert await engine.pending_flows("replay-kids", 10) == []
    view = await qm.get_job("replay-parent", parent)
    assert (view.state, view.children_pending) == (JobState.DELAYED, 1)
    assert [c.removed for c in view.child_jobs] == [True, False]


async def test_removing_a_finished_child_changes_nothing_for_its_parent(
    server: RunningServer, qm: QueueManager
) -> None:
    """A child that completed (its end counted) and is then removed, by hand or by retention: the parent
    keeps its completion and waits for its other child; no hand-off is queued for the removal."""
    engine = server.app.engine
    assert engine is not None
    for q in ("fin-parent", "fin-kids", "fin-open"):
        await qm.register_queue(q)
    _parent(
        qm,
        "fin-parent",
        [
            ChildSpec("fin-kids", "done", 3, options={"job_id": "done"}),
            ChildSpec("fin-kids", "dropped", 4, options={"job_id": "dropped", "remove_on_complete": True}),
            ChildSpec("fin-open", "open", 5, options={"job_id": "open"}),
        ],
    )

    @qm.processor("fin-kids")
    async def double(job: JobContext) -> int:
        return int(job.data) * 2

    await qm.start_workers()
    parent = await _parked(qm, "fin-parent", None)
    await eventually(lambda: _pending_is(qm, "fin-parent", parent, 1))
    assert await qm.remove_job("fin-kids", "done") == JobState.COMPLETED
    assert await engine.pending_flows("fin-kids", 10) == []
    view = await qm.get_job("fin-parent", parent)
    assert (view.state, view.children_pending) == (JobState.DELAYED, 1)
    assert [(c.job_id, c.state, c.removed) for c in view.child_jobs] == [
        ("done", JobState.COMPLETED, False),
        ("dropped", JobState.COMPLETED, False),
        ("open", None, False),
    ]


async def test_a_dead_letter_copy_redriven_ends_for_the_parent_waiting_for_it(qm: QueueManager) -> None:
    """A parent names a dead-letter copy by its id (it waits until someone deals with the failure); a redrive
    takes the copy out of the dead-letter queue, and the parent runs again, seeing it removed."""
    for q in ("dl-src", "dl-parent", "dead-letter-queue"):
        await qm.register_queue(q)
    copy_id = "dl-src:f1"  # a dead-letter copy's id: its original's queue and id

    @qm.processor("dl-src")
    async def boom(job: JobContext) -> None:
        raise UnrecoverableError("broken")

    seen = _parent(qm, "dl-parent", [ChildSpec("dead-letter-queue", "x", options={"job_id": copy_id})])
    await qm.start_workers()
    await qm.add_job("dl-src", "f", 1, {"job_id": "f1"})
    await eventually(lambda: _exists(qm, "dead-letter-queue", copy_id))  # the dead-letter hand-off follows
    parent = await _parked(qm, "dl-parent", 1)
    result = await qm.redrive_dead_letters(job_ids=[copy_id])
    assert result.skipped == {} and result.count == 1
    await until_state(qm, "dl-parent", parent, JobState.COMPLETED)
    assert seen == [[(copy_id, "", True, "taken out of the dead-letter queue by RedriveDeadLetters")]]


@pytest.mark.cluster
@pytest.mark.parametrize("how", ["RemoveJob", "ObliterateQueue"])
async def test_a_child_removed_on_another_primary_ends_for_its_parent(
    on_cluster: ServerFactory, how: str
) -> None:
    """On a Cluster: the parent, and its two children in queues of the two other primaries; one child is
    removed (by RemoveJob, or with its whole queue by ObliterateQueue), the other completes; the parent runs
    once, seeing one removed and one completed."""
    server = await on_cluster()
    parents, kids, more = spread("rmc")
    gate = asyncio.Event()
    async with QueueManager(address=server.address, concurrency=4) as client:
        for q in (parents, kids, more):
            await client.register_queue(q)
        seen = _parent(
            client,
            parents,
            [
                ChildSpec(kids, "gone", 1, options={"job_id": "gone"}),
                ChildSpec(more, "kept", 2, options={"job_id": "kept"}),
            ],
        )

        @client.processor(more)
        async def double(job: JobContext) -> Any:
            await gate.wait()
            return int(job.data) * 2

        await client.start_workers()
        parent = await _parked(client, parents, 2)
        if how == "RemoveJob":
            assert await client.remove_job(kids, "gone") == JobState.WAITING
        else:
            assert await client.obliterate_queue(kids) == 1
        await eventually(lambda: _pending_is(client, parents, parent, 1))
        gate.set()
        await until_state(client, parents, parent, JobState.COMPLETED)
    assert seen == [[("gone", "", True, f"removed by {how}"), ("kept", "completed", False, "")]]


async def test_a_dedup_holder_removed_before_its_parent_was_attached_ends_for_the_parent(
    server: RunningServer, qm: QueueManager
) -> None:
    """The first run resolved its child's dedup key to the key's holder and was lost before it attached
    itself to the holder; the holder was then removed (no parent to hand its removal to). The rerun finds
    the holder gone: the child counts as removed and the job runs again instead of waiting for ever."""
    engine = server.app.engine
    assert engine is not None
    children = Children(engine)
    for q in ("lost", "lost-kids"):
        await qm.register_queue(q)
    holder = await qm.add_job("lost-kids", "holder", 1, {"dedup": "hk"})
    job = await qm.add_job("lost", "p", None)
    raw = RawWorker(server.address, ["lost"])
    await raw.connect(credits=1)
    (leased,) = await raw.jobs(1)
    ((derived, how),) = await children.children_add(
        "lost", job.id, leased.lease_token, 1000, [("lost-kids", DEDUP)]
    )
    assert how == TO_RESOLVE
    await children.children_link("lost", job.id, leased.lease_token, [(0, derived, "lost-kids", holder.id)])
    assert await qm.remove_job("lost-kids", holder.id) == JobState.WAITING
    await raw.close()  # lost before attaching: the job goes back to waiting
    seen = _parent(qm, "lost", [ChildSpec("lost-kids", "holder", 1, options={"dedup": "hk"})])
    await qm.start_workers()
    await until_state(qm, "lost", job.id, JobState.COMPLETED)
    assert seen == [[(holder.id, "", True, "removed before its parent was attached to it")]]
