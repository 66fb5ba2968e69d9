"""Flow jobs removed before they finished, by ObliterateQueue or by a removal: children end for their waiting
parents (also when the obliterating server is lost before the hand-off, and on a Cluster), a workflow step
ends failed so its run goes on and ends, a chain link stops its chain; against a real server and Valkey."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from queue_manager import ChildSpec, JobContext, JobState, QueueManager, WorkflowState, WorkflowStepState
from queue_manager_server.services.flows import Flows
from tests.conftest import RunningServer
from tests.rawworker import eventually
from tests.test_children_removal import _parent, _parked
from tests.test_delay_job import until_state

OBLITERATED = "removed by ObliterateQueue"


@pytest.fixture
async def qm(server: RunningServer) -> AsyncIterator[QueueManager]:
    client = QueueManager(address=server.address, concurrency=2, shutdown_grace=5.0)
    yield client
    await client.shutdown()


def _flows(server: RunningServer) -> Flows:
    engine = server.app.engine
    assert engine is not None and engine.flow_hook is not None
    flows = engine.flow_hook.__self__  # type: ignore[attr-defined]
    assert isinstance(flows, Flows)
    return flows


async def test_obliterating_a_queue_ends_its_unfinished_children_for_their_parents(
    server: RunningServer, qm: QueueManager
) -> None:
    """A waiting and a delayed child, no worker on their queue: obliterating it wakes the parent, which sees
    both removed; the queue's name and flow outbox are gone once the call returns."""
    engine = server.app.engine
    assert engine is not None
    for q in ("ob-parent", "ob-kids"):
        await qm.register_queue(q)
    seen = _parent(
        qm,
        "ob-parent",
        [
            ChildSpec("ob-kids", "now", 1, options={"job_id": "now"}),
            ChildSpec("ob-kids", "later", 2, options={"job_id": "later", "delay": 3_600_000}),
        ],
    )
    await qm.start_workers()
    parent = await _parked(qm, "ob-parent", 2)
    assert await qm.obliterate_queue("ob-kids") == 2
    assert "ob-kids" not in await engine.queue_names()
    assert await engine.pending_flows("ob-kids", 10) == []
    done = await until_state(qm, "ob-parent", parent, JobState.COMPLETED)
    assert seen == [[("now", "", True, OBLITERATED), ("later", "", True, OBLITERATED)]]
    assert [(c.job_id, c.removed) for c in done.child_jobs] == [("now", True), ("later", True)]


async def test_a_plain_queue_obliterated_hands_nothing_on(server: RunningServer, qm: QueueManager) -> None:
    engine = server.app.engine
    assert engine is not None
    calls: list[str] = []
    flows = _flows(server)

    async def hook(queue: str, wait: bool) -> int:
        calls.append(queue)
        return await flows.hand_off(queue, wait)

    await qm.register_queue("ob-plain")
    await qm.add_job("ob-plain", "a", 1)
    await qm.add_job("ob-plain", "b", 2, {"delay": 60_000})
    engine.flow_hook = hook
    try:
        assert await qm.obliterate_queue("ob-plain") == 2
    finally:
        engine.flow_hook = flows.hand_off
    assert calls == []
    assert "ob-plain" not in await engine.queue_names()


class _Lost(Exception):
    """The obliterating server lost between the obliterate's script calls and its hand-off."""


async def test_an_obliterate_lost_before_its_hand_off_leaves_it_to_the_janitor_counted_once(
    server: RunningServer, qm: QueueManager
) -> None:
    """The hand-off fails as a server killed at that point would: the queue's name stays registered, so the
    janitor finds the queue's hand-offs due and carries them out; carried out twice, a child counts once."""
    engine = server.app.engine
    assert engine is not None
    flows = _flows(server)
    for q in ("lost-parent", "lost-kids"):
        await qm.register_queue(q)
    specs = [ChildSpec("lost-kids", "k", n, options={"job_id": f"k{n}"}) for n in range(2)]
    _parent(qm, "lost-parent", specs)
    await qm.start_workers()
    parent = await _parked(qm, "lost-parent", 2)

    async def lost(queue: str, wait: bool) -> None:
        raise _Lost(queue)

    engine.flow_hook = lost
    try:
        with pytest.raises(_Lost):
            await engine.obliterate("lost-kids", False)
    finally:
        engine.flow_hook = flows.hand_off
    assert "lost-kids" in await engine.queue_names()
    (due,) = await engine.housekeeping_due(["lost-kids"])
    assert due.flows
    entries = await engine.pending_flows("lost-kids", 10)
    assert [(job_id, entry["st"], entry["err"]) for job_id, entry in entries] == [
        ("k0", b"removed", OBLITERATED.encode()),
        ("k1", b"removed", OBLITERATED.encode()),
    ]
    await flows._carry_out("lost-kids", entries[:1])
    view = await qm.get_job("lost-parent", parent)
    assert (view.state, view.children_pending) == (JobState.DELAYED, 1)
    assert await flows.hand_off("lost-kids") == 2  # the janitor's pass: k0 again, and k1
    assert await engine.pending_flows("lost-kids", 10) == []
    done = await until_state(qm, "lost-parent", parent, JobState.COMPLETED)
    assert [(c.job_id, c.removed) for c in done.child_jobs] == [("k0", True), ("k1", True)]


@pytest.mark.parametrize("how", ["removed by RemoveJob", OBLITERATED])
async def test_a_workflow_step_removed_before_it_finished_fails_and_its_run_goes_on(
    qm: QueueManager, how: str
) -> None:
    """No worker serves the step's queue: removing its job (or the whole queue) fails the step with how it
    was removed, its on_failure step runs with that reason, and the run ends failed instead of running for
    ever."""
    for q in ("wf-slow", "wf-alerts"):
        await qm.register_queue(q)
    alerted: list[str] = []

    @qm.processor("wf-alerts")
    async def alert(job: JobContext) -> None:
        assert job.parent is not None
        alerted.append(job.parent.failed_reason)

    await qm.start_workers()
    run_id = await qm.execute_workflow(
        {
            "steps": [
                {
                    "key": "slow",
                    "queue_name": "wf-slow",
                    "job_name": "slow",
                    "on_success": [{"key": "next", "queue_name": "wf-alerts", "job_name": "never"}],
                    "on_failure": [{"key": "alert", "queue_name": "wf-alerts", "job_name": "alert"}],
                }
            ]
        }
    )

    async def started() -> bool:
        return (await qm.get_workflow(run_id)).steps[0].state == WorkflowStepState.STARTED

    await eventually(started)
    step_job = (await qm.get_workflow(run_id)).steps[0].job_id
    if how == OBLITERATED:
        assert await qm.obliterate_queue("wf-slow") == 1
    else:
        assert await qm.remove_job("wf-slow", step_job) == JobState.WAITING

    async def ended() -> bool:
        return (await qm.get_workflow(run_id)).state != WorkflowState.RUNNING

    await eventually(ended)
    run = await qm.get_workflow(run_id)
    steps = {s.key: (s.state, s.error) for s in run.steps}
    assert run.state == WorkflowState.FAILED
    assert steps["slow"] == (WorkflowStepState.FAILED, how)
    assert steps["next"][0] == WorkflowStepState.SKIPPED
    assert steps["alert"][0] == WorkflowStepState.COMPLETED
    assert alerted == [how]


async def test_a_chain_link_removed_before_it_finished_stops_its_chain(qm: QueueManager) -> None:
    for q in ("ch-first", "ch-link", "ch-last"):
        await qm.register_queue(q)

    @qm.processor("ch-first")
    async def first(job: JobContext) -> int:
        return 1

    await qm.start_workers()
    head = await qm.add_job(
        "ch-first",
        "first",
        None,
        {
            "chain_to": [
                {"queue_name": "ch-link", "job_name": "link"},
                {"queue_name": "ch-last", "job_name": "last"},
            ]
        },
    )

    async def link_id() -> str:
        return "".join(ref.job_id for ref in (await qm.get_job("ch-first", head.id)).children)

    await eventually(link_id)
    link = await link_id()
    assert await qm.remove_job("ch-link", link) == JobState.WAITING

    async def stopped() -> str:
        return (await qm.get_job("ch-first", head.id)).chain_failure

    await eventually(stopped)
    assert await stopped() == f"link ch-link/{link} (link) removed: removed by RemoveJob"
    metrics = await qm.get_queue_metrics("ch-last")
    assert (metrics.waiting, metrics.delayed) == (0, 0)
