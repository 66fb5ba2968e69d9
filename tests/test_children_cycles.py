"""Cycles among children added at run time: a running job that names (by job_id or dedup key) a job that
already waits for it, directly or through further children, is refused with FAILED_PRECONDITION naming the
child and the path, and nothing is written; a deep tree with no cycle is accepted; past the walk's bound a
cycle is not seen; against a real server and Valkey (and a Cluster)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from queue_manager import (
    ChildSpec,
    FailedPreconditionError,
    JobContext,
    JobState,
    NotFoundError,
    QueueManager,
)
from queue_manager_server.services import child_cycles
from tests.cluster import spread
from tests.conftest import RunningServer, ServerFactory
from tests.test_delay_job import WAIT


@pytest.fixture
async def qm(server: RunningServer) -> AsyncIterator[QueueManager]:
    client = QueueManager(address=server.address, concurrency=4, shutdown_grace=5.0)
    yield client
    await client.shutdown()


async def until_state(qm: QueueManager, queue: str, job_id: str, state: JobState) -> Any:
    """The job once it is in `state`; a job its parent has not added yet is waited for too."""
    async with asyncio.timeout(WAIT):
        while True:
            try:
                job = await qm.get_job(queue, job_id)
                if job.state == state:
                    return job
            except NotFoundError:
                pass
            await asyncio.sleep(0.02)


def _links(qm: QueueManager, queues: list[str], refusals: list[str]) -> None:
    """Job i of queues[i] (id "j<i>") waits, on its first run, for job i+1 of queues[i+1]; the last names the
    first, directly and by the first's dedup key "k0": each call refused is recorded in `refusals`, and the
    run then completes."""
    last = len(queues) - 1
    for i, queue in enumerate(queues):

        async def run(job: JobContext, i: int = i) -> Any:
            if i < last and not job.children:
                await job.wait_for_children(
                    [ChildSpec(queues[i + 1], "link", options={"job_id": f"j{i + 1}"})]
                )
            if i == last:
                for options in ({"dedup": "k0"}, {"job_id": "j0"}):
                    try:
                        await job.wait_for_children([ChildSpec(queues[0], "back", options=options)])
                    except FailedPreconditionError as exc:
                        refusals.append(str(exc))
            return i

        qm.processor(queue)(run)


async def _cycle_refused(qm: QueueManager, queues: list[str]) -> list[str]:
    """Runs the jobs of `_links` and returns the refusals, once every job has completed."""
    refusals: list[str] = []
    for q in queues:
        await qm.register_queue(q)
    _links(qm, queues, refusals)
    await qm.start_workers()
    await qm.add_job(queues[0], "first", None, {"job_id": "j0", "dedup": "k0"})
    for i, q in reversed(list(enumerate(queues))):
        await until_state(qm, q, f"j{i}", JobState.COMPLETED)
    last = await qm.get_job(queues[-1], f"j{len(queues) - 1}")
    assert last.child_jobs == [] and last.children_pending == 0  # nothing recorded
    first = await qm.get_job(queues[0], "j0")
    assert first.parents == []  # not attached to the job that named it
    assert [c.job_id for c in first.child_jobs] == ["j1"]
    return refusals


async def test_a_two_job_cycle_is_refused_naming_the_child_and_the_path(qm: QueueManager) -> None:
    refusals = await _cycle_refused(qm, ["cy2-a", "cy2-b"])
    path = "through cy2-a/j0 -> cy2-b/j1; naming it as a child would leave both waiting for ever"
    assert refusals == [
        f"FAILED_PRECONDITION: children[0].options.dedup: job 'j0' of queue 'cy2-a' waits for job 'j1' of "
        f"queue 'cy2-b' (the job adding it) {path}",
        f"FAILED_PRECONDITION: children[0].options.job_id: job 'j0' of queue 'cy2-a' waits for job 'j1' of "
        f"queue 'cy2-b' (the job adding it) {path}",
    ]


async def test_a_three_job_cycle_is_refused_naming_the_whole_path(qm: QueueManager) -> None:
    refusals = await _cycle_refused(qm, ["cy3-a", "cy3-b", "cy3-c"])
    assert len(refusals) == 2
    for refusal in refusals:
        assert "job 'j0' of queue 'cy3-a' waits for job 'j2' of queue 'cy3-c'" in refusal
        assert "through cy3-a/j0 -> cy3-b/j1 -> cy3-c/j2;" in refusal


async def test_a_deep_tree_without_a_cycle_is_accepted(qm: QueueManager) -> None:
    """Twenty jobs each waiting for the next (the last for a job no worker runs); a new job names the first
    of them, and a child of the tenth, as its children: the walk finds no cycle and the job parks."""
    depth = 20
    for q in ("deep", "deep-leaf", "deep-top"):
        await qm.register_queue(q)

    @qm.processor("deep")
    async def link(job: JobContext) -> None:
        n = int(job.id[1:])
        nxt = ChildSpec("deep", "link", options={"job_id": f"d{n + 1}"})
        if n + 1 == depth:
            nxt = ChildSpec("deep-leaf", "leaf", options={"job_id": "leaf"})
        await job.wait_for_children([nxt, ChildSpec("deep-leaf", "side", options={"job_id": f"s{n}"})])

    @qm.processor("deep-top")
    async def top(job: JobContext) -> None:
        await job.wait_for_children(
            [
                ChildSpec("deep", "link", options={"job_id": "d0"}),
                ChildSpec("deep", "link", options={"job_id": "d10"}),
            ]
        )

    await qm.start_workers()
    await qm.add_job("deep", "link", None, {"job_id": "d0"})
    await until_state(qm, "deep", f"d{depth - 1}", JobState.DELAYED)
    job = await qm.add_job("deep-top", "top", None)
    parked = await until_state(qm, "deep-top", job.id, JobState.DELAYED)
    assert parked.children_pending == 2


async def test_past_the_walks_depth_a_cycle_is_not_seen(
    qm: QueueManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The walk stops after WALK_DEPTH levels below the named children: with none, a three-job cycle (whose
    named job waits for the job adding it two levels down) is accepted, and all three wait until promoted,
    as documented."""
    monkeypatch.setattr(child_cycles, "WALK_DEPTH", 0)
    queues = ["far-a", "far-b", "far-c"]
    for q in queues:
        await qm.register_queue(q)
    refusals: list[str] = []
    _links(qm, queues, refusals)
    await qm.start_workers()
    await qm.add_job("far-a", "first", None, {"job_id": "j0", "dedup": "k0"})
    last = await until_state(qm, "far-c", "j2", JobState.DELAYED)
    assert refusals == [] and last.children_pending == 1


@pytest.mark.cluster
async def test_a_cycle_across_three_primaries_is_refused(on_cluster: ServerFactory) -> None:
    server = await on_cluster()
    queues = spread("cyc")
    async with QueueManager(address=server.address, concurrency=4) as client:
        refusals = await _cycle_refused(client, queues)
    assert len(refusals) == 2
    steps = " -> ".join(f"{q}/j{i}" for i, q in enumerate(queues))
    assert all(f"through {steps};" in r for r in refusals)
