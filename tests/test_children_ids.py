"""Children added at run time with ids of their own (ChildJobSpec options job_id and dedup): a new id is added
and tracked, an existing job (any state) is waited for instead, a job named by two parents wakes both, and a
run lost mid-call and run again counts each child once; against a real server and Valkey."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from queue_manager import ChildSpec, JobContext, JobState, QueueManager
from queue_manager.v1 import jobs_pb2, queue_service_pb2_grpc, types_pb2
from queue_manager_server.engine.children import ATTACHED, DEDUP, FINISHED, NOT_FOUND, TO_RESOLVE, Children
from queue_manager_server.engine.records import NewJob
from queue_manager_server.errors import InvalidArgument, QueueNotFound
from tests.cluster import spread
from tests.conftest import RunningServer, ServerFactory
from tests.rawworker import RawWorker, eventually
from tests.test_delay_job import WAIT, until_state


@pytest.fixture
async def qm(server: RunningServer) -> AsyncIterator[QueueManager]:
    client = QueueManager(address=server.address, concurrency=2, shutdown_grace=5.0)
    yield client
    await client.shutdown()


@pytest.fixture
async def kids(server: RunningServer) -> AsyncIterator[QueueManager]:
    """A second client whose workers the test starts once the parents are parked."""
    client = QueueManager(address=server.address, concurrency=4, shutdown_grace=5.0)
    yield client
    await client.shutdown()


def _parent_entry(queue: str, job_id: str) -> bytes:
    """What a child records of a parent waiting for it (services/children.py)."""
    ref = types_pb2.JobRef(queue_name=queue, job_id=job_id)
    return types_pb2.Job(
        parents=[types_pb2.ParentJob(job=ref, state=types_pb2.JOB_STATE_ACTIVE)]
    ).SerializeToString()


def _double(kids: QueueManager, queue: str) -> None:
    @kids.processor(queue)
    async def double(job: JobContext) -> int:
        return int(job.data) * 2


async def test_a_child_with_a_new_id_is_added_under_it_and_wakes_its_parent(
    qm: QueueManager, kids: QueueManager
) -> None:
    for q in ("own-parent", "own-kids"):
        await qm.register_queue(q)
    seen: list[list[tuple[str, Any]]] = []

    @qm.processor("own-parent")
    async def fan_out(job: JobContext) -> None:
        if not job.children:
            await job.wait_for_children([ChildSpec("own-kids", "k", 21, options={"job_id": "chunk-1"})])
        seen.append([(c.job_id, c.result) for c in job.children])

    await qm.start_workers()
    parent = await qm.add_job("own-parent", "p", None)
    parked = await until_state(qm, "own-parent", parent.id, JobState.DELAYED)
    assert [c.job_id for c in parked.child_jobs] == ["chunk-1"] and parked.children_pending == 1
    child = await qm.get_job("own-kids", "chunk-1")
    assert child.data == 21
    assert [(p.queue_name, p.job_id) for p in child.parents] == [("own-parent", parent.id)]

    _double(kids, "own-kids")
    await kids.start_workers()
    await until_state(qm, "own-parent", parent.id, JobState.COMPLETED)
    assert seen == [[("chunk-1", 42)]]


async def test_an_existing_job_is_waited_for_and_one_already_finished_counts_at_once(
    qm: QueueManager, kids: QueueManager
) -> None:
    for q in ("ex-parent", "ex-kids", "ex-done"):
        await qm.register_queue(q)
    gate = asyncio.Event()
    _double(kids, "ex-done")

    @kids.processor("ex-kids")
    async def gated(job: JobContext) -> int:
        await gate.wait()
        return int(job.data) * 2

    await kids.start_workers()
    done = await kids.add_job("ex-done", "early", 5, {"job_id": "early"})
    await until_state(qm, "ex-done", done.id, JobState.COMPLETED)
    running = await qm.add_job("ex-kids", "later", 7, {"job_id": "later"})
    seen: list[list[tuple[str, str, Any]]] = []

    @qm.processor("ex-parent")
    async def fan_out(job: JobContext) -> None:
        if not job.children:
            await job.wait_for_children(
                [
                    # Named with other data: the existing jobs are the children, as they are.
                    ChildSpec("ex-done", "ignored", 1000, options={"job_id": "early"}),
                    ChildSpec("ex-kids", "ignored", 1000, options={"job_id": "later"}),
                ]
            )
        seen.append([(c.job_id, c.state.value if c.state else "", c.result) for c in job.children])

    await qm.start_workers()
    parent = await qm.add_job("ex-parent", "p", None)
    parked = await until_state(qm, "ex-parent", parent.id, JobState.DELAYED)
    # The finished one counted when it was named; the other is waited for.
    assert parked.children_pending == 1
    assert [(c.job_id, c.state) for c in parked.child_jobs] == [
        ("early", JobState.COMPLETED),
        ("later", None),
    ]
    later = await qm.get_job("ex-kids", running.id)
    assert later.data == 7  # not added again, not changed
    assert [(p.queue_name, p.job_id) for p in later.parents] == [("ex-parent", parent.id)]
    assert len((await qm.list_jobs("ex-kids", JobState.ACTIVE))[0]) == 1

    gate.set()
    await until_state(qm, "ex-parent", parent.id, JobState.COMPLETED)
    assert seen == [[("early", "completed", 10), ("later", "completed", 14)]]


async def test_a_dedup_child_is_the_key_holder_or_a_new_job_holding_the_key(
    qm: QueueManager, kids: QueueManager
) -> None:
    for q in ("dd-parent", "dd-kids"):
        await qm.register_queue(q)
    holder = await qm.add_job("dd-kids", "first", 3, {"dedup": "report-7"})
    answers: list[list[str]] = []

    @qm.processor("dd-parent")
    async def fan_out(job: JobContext) -> Any:
        if not job.children:
            await job.wait_for_children(
                [
                    ChildSpec("dd-kids", "again", 1000, options={"dedup": "report-7"}),
                    ChildSpec("dd-kids", "fresh", 4, options={"dedup": "report-8"}),
                ]
            )
        answers.append([c.job_id for c in job.children])
        return [c.result for c in job.children]

    await qm.start_workers()
    parent = await qm.add_job("dd-parent", "p", None)
    parked = await until_state(qm, "dd-parent", parent.id, JobState.DELAYED)
    ids = [c.job_id for c in parked.child_jobs]
    assert ids[0] == holder.id and ids[1] != holder.id and parked.children_pending == 2
    fresh = await qm.get_job("dd-kids", ids[1])
    assert fresh.data == 4 and [p.job_id for p in fresh.parents] == [parent.id]
    assert len((await qm.list_jobs("dd-kids", JobState.WAITING))[0]) == 2  # the held key added nothing

    _double(kids, "dd-kids")
    await kids.start_workers()
    done = await until_state(qm, "dd-parent", parent.id, JobState.COMPLETED)
    assert done.result == [6, 8] and answers == [ids]


async def test_a_job_named_by_two_parents_wakes_both(qm: QueueManager, kids: QueueManager) -> None:
    for q in ("two-parents", "two-kids"):
        await qm.register_queue(q)
    results: dict[str, Any] = {}

    @qm.processor("two-parents")
    async def fan_out(job: JobContext) -> None:
        if not job.children:
            await job.wait_for_children([ChildSpec("two-kids", "shared", 50, options={"job_id": "shared"})])
        results[job.id] = [(c.job_id, c.result) for c in job.children]

    await qm.start_workers()
    first = await qm.add_job("two-parents", "a", None)
    await until_state(qm, "two-parents", first.id, JobState.DELAYED)
    second = await qm.add_job("two-parents", "b", None)  # names the job the first one added
    await until_state(qm, "two-parents", second.id, JobState.DELAYED)
    child = await qm.get_job("two-kids", "shared")
    assert [p.job_id for p in child.parents] == [first.id, second.id]

    _double(kids, "two-kids")
    await kids.start_workers()
    await until_state(qm, "two-parents", first.id, JobState.COMPLETED)
    await until_state(qm, "two-parents", second.id, JobState.COMPLETED)
    assert results == {first.id: [("shared", 100)], second.id: [("shared", 100)]}


async def test_a_run_lost_mid_call_and_run_again_counts_each_named_child_once(
    server: RunningServer, qm: QueueManager, kids: QueueManager
) -> None:
    """The first run recorded its children, attached itself to an existing job, resolved a dedup key to its
    holder, and was lost before parking; meanwhile the holder ended (its key is free again). The rerun makes
    the same call: nothing is added or attached twice, the holder counts once, no new job takes the key."""
    assert server.app.engine is not None
    engine = server.app.engine
    children = Children(engine)
    for q in ("rerun", "rerun-kids"):
        await qm.register_queue(q)
    await qm.add_job("rerun-kids", "existing", 1, {"job_id": "existing"})
    holder = await qm.add_job("rerun-kids", "holder", 2, {"dedup": "once"})
    job = await qm.add_job("rerun", "p", None)
    raw = RawWorker(server.address, ["rerun"])
    await raw.connect(credits=1)
    (leased,) = await raw.jobs(1)
    token = leased.lease_token
    recorded = await children.children_add(
        "rerun", job.id, token, 1000, [("rerun-kids", "existing"), ("rerun-kids", DEDUP), ("rerun-kids", "")]
    )
    assert [how for _, how in recorded] == [0, TO_RESOLVE, 0]
    parent = _parent_entry("rerun", job.id)
    await children.children_attach("rerun-kids", [("existing", parent), (holder.id, parent)])
    await children.children_link("rerun", job.id, token, [(1, recorded[1][0], "rerun-kids", holder.id)])
    derived = NewJob(id=recorded[2][0], name="plain", data=b"3", extra={"par": parent, "flo": b"1"})
    await engine.add_jobs("rerun-kids", [derived])
    await raw.close()  # lost before parking: the job goes back to waiting

    _double(kids, "rerun-kids")
    await kids.start_workers()
    await until_state(qm, "rerun-kids", holder.id, JobState.COMPLETED)
    runs: list[list[Any]] = []

    @qm.processor("rerun")
    async def fan_out(job: JobContext) -> int:
        runs.append([c.result for c in job.children])
        if not job.children:
            await job.wait_for_children(
                [
                    ChildSpec("rerun-kids", "existing", 1, options={"job_id": "existing"}),
                    ChildSpec("rerun-kids", "holder", 2, options={"dedup": "once"}),
                    ChildSpec("rerun-kids", "plain", 3),
                ]
            )
        return sum(c.result for c in job.children)

    await qm.start_workers()
    done = await until_state(qm, "rerun", job.id, JobState.COMPLETED)
    assert done.result == 2 + 4 + 6 and runs == [[], [2, 4, 6]]
    assert [c.job_id for c in done.child_jobs] == ["existing", holder.id, recorded[2][0]]
    assert sorted(j.id for j in (await qm.list_jobs("rerun-kids", JobState.COMPLETED))[0]) == sorted(
        ["existing", holder.id, recorded[2][0]]
    )  # no job added twice, none for the freed key
    assert [p.job_id for p in (await qm.get_job("rerun-kids", "existing")).parents] == [job.id]


async def test_a_dedup_child_that_ends_before_its_key_is_resolved_still_counts_once(
    server: RunningServer, qm: QueueManager, kids: QueueManager
) -> None:
    """The child a dedup key added (its key was free) ended before the call recorded what the key resolved to
    (the run was lost there): its end counts at once, and the repeated call counts it once more never."""
    assert server.app.engine is not None
    engine = server.app.engine
    for q in ("early-parent", "early-kids"):
        await qm.register_queue(q)
    job = await qm.add_job("early-parent", "p", None)
    raw = RawWorker(server.address, ["early-parent"])
    await raw.connect(credits=1)
    (leased,) = await raw.jobs(1)
    ((cid, how),) = await Children(engine).children_add(
        "early-parent", job.id, leased.lease_token, 1000, [("early-kids", DEDUP)]
    )
    assert how == TO_RESOLVE
    parent = _parent_entry("early-parent", job.id)
    child = NewJob(id=cid, name="k", data=b"21", dedup_key="once", extra={"par": parent, "flo": b"1"})
    await engine.add_jobs("early-kids", [child])
    _double(kids, "early-kids")
    await kids.start_workers()

    async def counted() -> bool:
        view = await qm.get_job("early-parent", job.id)
        return [c.state for c in view.child_jobs] == [JobState.COMPLETED] and view.children_pending == 0

    await eventually(counted, timeout=WAIT)
    await raw.close()  # lost before the key's resolution was recorded: the job runs again
    runs: list[list[Any]] = []

    @qm.processor("early-parent")
    async def fan_out(job: JobContext) -> Any:
        runs.append([(c.job_id, c.result) for c in job.children])
        if not job.children:
            await job.wait_for_children([ChildSpec("early-kids", "k", 21, options={"dedup": "once"})])
        return len(job.children)

    await qm.start_workers()
    done = await until_state(qm, "early-parent", job.id, JobState.COMPLETED)
    assert done.result == 1 and runs == [[], [(cid, 42)]]
    assert [j.id for j in (await qm.list_jobs("early-kids", JobState.COMPLETED))[0]] == [cid]


async def test_ids_that_cannot_be_children_are_refused_naming_the_field(server: RunningServer) -> None:
    assert server.app.engine is not None
    children = Children(server.app.engine)
    client = QueueManager(address=server.address)
    for q in ("bad-ids", "bad-a", "bad-b"):
        await client.register_queue(q)
    job = await client.add_job("bad-ids", "p", None, {"dedup": "mine"})
    worker = RawWorker(server.address, ["bad-ids"])
    await worker.connect(credits=1)
    (leased,) = await worker.jobs(1)
    token = leased.lease_token

    # One id for two children in two queues (a call, then its repeat naming another queue).
    await children.children_add("bad-ids", job.id, token, 1000, [("bad-a", "same")])
    with pytest.raises(InvalidArgument, match=r"has a child 'same' in queue 'bad-a' already") as info:
        await children.children_add("bad-ids", job.id, token, 1000, [("bad-b", "same")])
    assert info.value.field == "children[0].options.job_id"
    # A dedup key that resolved to a job whose id a child in another queue has.
    (_, (cid, _)) = await children.children_add(
        "bad-ids", job.id, token, 1000, [("bad-a", "same"), ("bad-b", DEDUP)]
    )
    with pytest.raises(InvalidArgument, match=r"resolved to job 'same' of queue 'bad-b'") as info:
        await children.children_link("bad-ids", job.id, token, [(1, cid, "bad-b", "same")])
    assert info.value.field == "children[1].options.dedup"

    # A dedup key the job itself holds, over the wire.
    stub = queue_service_pb2_grpc.QueueServiceStub(worker.channel)
    own = jobs_pb2.ChildJobSpec(queue_name="bad-ids", name="x")
    own.data.raw = b"null"
    own.options.dedup.key = "mine"
    request = jobs_pb2.WaitForChildrenRequest(
        queue_name="bad-ids", job_id=job.id, lease_token=token, children=[own]
    )
    with pytest.raises(grpc.aio.AioRpcError) as rpc:
        await stub.WaitForChildren(request)
    assert rpc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "children[0].options.dedup" in (rpc.value.details() or "")
    assert "cannot wait for itself" in (rpc.value.details() or "")
    assert (await client.get_job("bad-ids", job.id)).state == JobState.ACTIVE
    assert (await client.list_jobs("bad-ids", JobState.WAITING))[0] == []  # nothing added
    await worker.close()
    await client.shutdown()


@pytest.mark.cluster
async def test_children_named_by_id_across_primaries_and_their_states_in_one_get_job(
    on_cluster: ServerFactory,
) -> None:
    """On a Cluster: a parent and its children in queues of three primaries, one child an existing job that a
    second parent names too; GetJob reads the children's states from every primary; both parents wake."""
    server = await on_cluster()
    parents, kids, more = spread("kin")
    gate = asyncio.Event()
    results: dict[str, Any] = {}
    async with QueueManager(address=server.address, concurrency=8) as client:
        for q in (parents, kids, more):
            await client.register_queue(q)
        await client.add_job(kids, "shared", 5, {"job_id": "shared"})

        @client.processor(parents)
        async def fan_out(job: JobContext) -> None:
            if not job.children:
                await job.wait_for_children(
                    [
                        ChildSpec(kids, "shared", options={"job_id": "shared"}),
                        ChildSpec(more, "fresh", 1, options={"dedup": f"d-{job.id}"}),
                    ]
                )
            results[job.id] = [(c.job_id, c.result) for c in job.children]

        async def double(job: JobContext) -> int:
            await gate.wait()
            return int(job.data) * 2

        client.processor(kids)(double)
        client.processor(more)(double)
        await client.start_workers()
        one = await client.add_job(parents, "one", None)
        two = await client.add_job(parents, "two", None)
        await until_state(client, parents, one.id, JobState.DELAYED)
        await until_state(client, parents, two.id, JobState.DELAYED)
        await until_state(client, kids, "shared", JobState.ACTIVE)
        view = await client.get_job(parents, one.id)
        fresh = view.child_jobs[1].job_id
        await until_state(client, more, fresh, JobState.ACTIVE)
        view = await client.get_job(parents, one.id)
        assert [(c.queue_name, c.current_state) for c in view.child_jobs] == [
            (kids, JobState.ACTIVE),
            (more, JobState.ACTIVE),
        ]
        gate.set()
        await until_state(client, parents, one.id, JobState.COMPLETED)
        await until_state(client, parents, two.id, JobState.COMPLETED)
    assert [r for _, r in results[one.id]] == [10, 2] and [r for _, r in results[two.id]] == [10, 2]
    assert results[one.id][0][0] == results[two.id][0][0] == "shared"
    assert results[one.id][1][0] != results[two.id][1][0]  # a dedup key each


async def test_attaching_a_parent_is_idempotent_and_answers_finished_and_missing_jobs(
    server: RunningServer, kids: QueueManager
) -> None:
    """children_attach.lua on its own: an unfinished job gets the parent once however often it is attached
    (and a flow mark, so its end is handed on); a finished one is answered with its outcome; a missing one
    as missing (the call then adds it again)."""
    assert server.app.engine is not None
    children = Children(server.app.engine)
    await kids.register_queue("attach")
    _double(kids, "attach")
    await kids.start_workers()
    await kids.add_job("attach", "done", 4, {"job_id": "done"})
    await until_state(kids, "attach", "done", JobState.COMPLETED)
    await kids.shutdown()
    await kids.add_job("attach", "open", 1, {"job_id": "open"})  # no worker runs it now
    one, two = _parent_entry("p", "one"), _parent_entry("p", "two")
    items = [("open", one), ("open", one), ("open", two), ("done", one), ("gone", one)]
    answers = await children.children_attach("attach", items)
    assert [code for code, _ in answers] == [ATTACHED, ATTACHED, ATTACHED, FINISHED, NOT_FOUND]
    assert answers[3][1]["st"] == b"completed" and answers[3][1]["res"] == b"8"
    view = await kids.get_job("attach", "open")
    assert [(p.queue_name, p.job_id) for p in view.parents] == [("p", "one"), ("p", "two")]
    with pytest.raises(QueueNotFound):
        await children.children_attach("no-such-queue", items)


async def test_a_job_named_again_in_a_later_round_counts_once(qm: QueueManager, kids: QueueManager) -> None:
    for q in ("rounds", "rounds-kids"):
        await qm.register_queue(q)
    seen: list[list[tuple[str, Any]]] = []

    @qm.processor("rounds")
    async def rounds(job: JobContext) -> int:
        seen.append([(c.job_id, c.result) for c in job.children])
        if len(seen) == 1:
            await job.wait_for_children([ChildSpec("rounds-kids", "x", 1, options={"job_id": "x"})])
        if len(seen) == 2:  # x again (finished: it counts as it did), and a new one
            await job.wait_for_children(
                [
                    ChildSpec("rounds-kids", "x", 1, options={"job_id": "x"}),
                    ChildSpec("rounds-kids", "y", 2, options={"job_id": "y"}),
                ]
            )
        return len(job.children)

    _double(kids, "rounds-kids")
    await kids.start_workers()
    await qm.start_workers()
    parent = await qm.add_job("rounds", "p", None)
    done = await until_state(qm, "rounds", parent.id, JobState.COMPLETED)
    assert done.result == 2 and seen == [[], [("x", 2)], [("x", 2), ("y", 4)]]
    assert done.children_pending == 0
