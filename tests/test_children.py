"""Children added at run time (WaitForChildren, JobContext.wait_for_children): a running job adds child jobs
in any queues, waits parked without using an attempt or a worker slot, and runs again with their outcomes;
against a real server and Valkey."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from queue_manager import (
    ChildSpec,
    InvalidArgumentError,
    JobContext,
    JobState,
    QueueManager,
    UnrecoverableError,
)
from queue_manager.v1 import jobs_pb2, queue_service_pb2_grpc, types_pb2
from queue_manager_server.engine.children import Children
from queue_manager_server.engine.records import NewJob
from queue_manager_server.errors import InvalidArgument
from queue_manager_server.services.children import MAX_CHILDREN
from tests.conftest import RunningServer
from tests.rawworker import RawWorker, eventually
from tests.test_delay_job import WAIT, until_state


@pytest.fixture
async def qm(server: RunningServer) -> AsyncIterator[QueueManager]:
    # One slot: the children can run only if the parked parent holds none.
    client = QueueManager(address=server.address, concurrency=1, shutdown_grace=5.0)
    yield client
    await client.shutdown()


def spec(queue: str, name: str, data: Any = None) -> jobs_pb2.ChildJobSpec:
    s = jobs_pb2.ChildJobSpec(queue_name=queue, name=name)
    s.data.raw = b"null" if data is None else str(data).encode()
    return s


async def test_map_reduce_over_two_queues_sums_the_results_on_the_second_run(qm: QueueManager) -> None:
    for q in ("files", "evens", "odds"):
        await qm.register_queue(q)
    runs: list[tuple[Any, int, bool]] = []
    release = asyncio.Event()
    parked = asyncio.Event()

    @qm.processor("files")
    async def split(job: JobContext) -> Any:
        runs.append((job.data, job.attempts_made, job.redelivery))
        if job.data["step"] == "split":
            parked.set()
            await job.wait_for_children(
                [ChildSpec("evens" if n % 2 == 0 else "odds", "square", {"n": n}) for n in range(1, 6)],
                data={"step": "combine"},
            )
            raise AssertionError("wait_for_children returns only by raising")
        return {"sum": sum(c.result for c in job.children), "states": sorted({c.state for c in job.children})}

    async def square(job: JobContext) -> int:
        await release.wait()
        return int(job.data["n"]) ** 2

    qm.processor("evens")(square)
    qm.processor("odds")(square)
    await qm.start_workers()
    parent = await qm.add_job("files", "split", {"step": "split"}, {"attempts": 1})
    async with asyncio.timeout(WAIT):
        await parked.wait()

    # Parked: delayed with no due time, its checkpoint written, its children listed as not finished.
    waiting = await until_state(qm, "files", parent.id, JobState.DELAYED)
    assert waiting.run_at is None and waiting.data == {"step": "combine"} and waiting.attempts_made == 0
    assert waiting.children_pending == 5
    assert [(c.queue_name, c.state) for c in waiting.child_jobs] == [
        ("odds", None),
        ("evens", None),
        ("odds", None),
        ("evens", None),
        ("odds", None),
    ]
    child = await qm.get_job("odds", waiting.child_jobs[0].job_id)
    assert [(p.queue_name, p.job_id) for p in child.parents] == [("files", parent.id)]
    assert child.data == {"n": 1}
    # The only slot is free for a child: the parent holds none.
    await eventually(
        lambda: _active(qm, ("evens", "odds")),
        timeout=WAIT,
    )
    assert ((await qm.list_jobs("files", JobState.ACTIVE))[0]) == []

    release.set()
    done = await until_state(qm, "files", parent.id, JobState.COMPLETED)
    assert done.result == {"sum": 1 + 4 + 9 + 16 + 25, "states": ["completed"]}
    assert done.attempts_made == 1  # the wait used none: attempts=1 still completed
    assert [r[0] for r in runs] == [{"step": "split"}, {"step": "combine"}]
    assert not any(r[2] for r in runs)  # the second run is no redelivery
    assert done.children_pending == 0
    assert [c.result for c in done.child_jobs] == [1, 4, 9, 16, 25]


async def _active(qm: QueueManager, queues: tuple[str, ...]) -> bool:
    return any([(await qm.list_jobs(q, JobState.ACTIVE))[0] for q in queues])


async def test_a_child_failing_for_good_still_wakes_the_parent_which_sees_the_failure(
    qm: QueueManager,
) -> None:
    for q in ("parent", "kids"):
        await qm.register_queue(q)
    seen: list[list[tuple[str | None, Any, str]]] = []

    @qm.processor("parent")
    def fan_out(job: JobContext) -> Any:  # a plain-def processor: the call blocks, then raises
        if not job.children:
            job.wait_for_children(
                [{"queue_name": "kids", "name": "ok", "data": 1}, {"queue_name": "kids", "name": "bad"}]
            )
        seen.append([(c.state and c.state.value, c.result, c.failed_reason) for c in job.children])
        return "combined"

    @qm.processor("kids")
    async def kid(job: JobContext) -> int:
        if job.name == "bad":
            raise UnrecoverableError("chunk is corrupt")
        return 7

    await qm.start_workers()
    parent = await qm.add_job("parent", "fan-out", None)
    done = await until_state(qm, "parent", parent.id, JobState.COMPLETED)
    assert done.result == "combined"
    assert seen == [[("completed", 7, ""), ("failed", None, "chunk is corrupt")]]


async def test_a_large_child_result_is_left_out_of_the_parent_and_marked_truncated(qm: QueueManager) -> None:
    for q in ("big-parent", "big-kids"):
        await qm.register_queue(q)
    seen: list[tuple[Any, bool]] = []

    @qm.processor("big-parent")
    async def parent_run(job: JobContext) -> None:
        if not job.children:
            await job.wait_for_children([ChildSpec("big-kids", "big")])
        seen.extend((c.result, c.truncated) for c in job.children)

    @qm.processor("big-kids")
    async def big(job: JobContext) -> str:
        return "x" * 5000

    await qm.start_workers()
    parent = await qm.add_job("big-parent", "p", None)
    await until_state(qm, "big-parent", parent.id, JobState.COMPLETED)
    assert seen == [(None, True)]


async def test_refusals_write_nothing_and_leave_the_run_going(
    server: RunningServer, qm: QueueManager
) -> None:
    for q in ("refuse", "refuse-kids"):
        await qm.register_queue(q)
    outcomes: list[str] = []
    finished = asyncio.Event()

    @qm.processor("refuse")
    async def try_bad(job: JobContext) -> str:
        bad: list[tuple[list[Any], str]] = [
            (
                [ChildSpec("no-such-queue", "x")],
                "children[0].queue_name: queue 'no-such-queue' is not registered",
            ),
            (
                [ChildSpec("refuse-kids", "x", options={"job_id": "mine"})] * 2,
                "children[1].options.job_id: 'mine' is named by children[0] too",
            ),
            (
                [ChildSpec("refuse-kids", "x", options={"job_id": "mine", "dedup": "k"})],
                "children[0].options.dedup: a child with its own job_id is that job",
            ),
            (
                [ChildSpec("refuse", "x", options={"job_id": job.id})],
                "children[0].options.job_id: a job cannot be its own child",
            ),
            ([ChildSpec("refuse-kids", "ok"), ChildSpec("refuse-kids", "x" * 201)], "children[1].name"),
            ([ChildSpec("refuse-kids", "x")] * (MAX_CHILDREN + 1), "at most 1000 children per call"),
            ([], "children: add at least one child"),
        ]
        for children, message in bad:
            try:
                await job.wait_for_children(children)
            except InvalidArgumentError as exc:
                assert message in str(exc), (message, str(exc))
                outcomes.append("refused")
            except (TypeError, ValueError) as exc:  # the client's own checks (a name over 200 characters)
                outcomes.append(f"client: {type(exc).__name__}")
        finished.set()
        return "still running"

    await qm.start_workers()
    job = await qm.add_job("refuse", "p", None)
    done = await until_state(qm, "refuse", job.id, JobState.COMPLETED)
    assert done.result == "still running" and finished.is_set()
    assert outcomes == ["refused"] * 4 + ["client: ValueError", "refused", "refused"]
    assert (await qm.list_jobs("refuse-kids", JobState.WAITING))[0] == []
    assert done.child_jobs == [] and done.children_pending == 0


async def test_refusals_over_the_wire_name_the_field_and_a_lost_lease_is_a_failed_precondition(
    server: RunningServer,
) -> None:
    client = QueueManager(address=server.address)
    await client.register_queue("raw")
    await client.register_queue("raw-kids")
    job = await client.add_job("raw", "p", None)
    worker = RawWorker(server.address, ["raw"])
    await worker.connect(credits=1)
    (leased,) = await worker.jobs(1)
    stub = queue_service_pb2_grpc.QueueServiceStub(worker.channel)

    def request(token: str, *children: jobs_pb2.ChildJobSpec) -> jobs_pb2.WaitForChildrenRequest:
        return jobs_pb2.WaitForChildrenRequest(
            queue_name="raw", job_id=job.id, lease_token=token, children=children
        )

    cases = [
        (request(leased.lease_token, spec("nope", "x")), grpc.StatusCode.INVALID_ARGUMENT, "not registered"),
        (
            request(leased.lease_token, spec("raw-kids", "")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "children[0].name",
        ),
        (request("", spec("raw-kids", "x")), grpc.StatusCode.INVALID_ARGUMENT, "lease_token"),
        (request("stale", spec("raw-kids", "x")), grpc.StatusCode.FAILED_PRECONDITION, "lease"),
    ]
    for req, code, text in cases:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.WaitForChildren(req)
        assert info.value.code() == code and text in (info.value.details() or ""), info.value
    assert (await client.list_jobs("raw-kids", JobState.WAITING))[0] == []
    still = await client.get_job("raw", job.id)
    assert still.state == JobState.ACTIVE and still.child_jobs == []
    answer = await stub.WaitForChildren(request(leased.lease_token, spec("raw-kids", "ok")))
    assert answer.children_pending == 1 and [c.queue_name for c in answer.children] == ["raw-kids"]
    await worker.close()
    await client.shutdown()


async def test_a_job_adds_at_most_so_many_children_in_all(server: RunningServer) -> None:
    assert server.app.engine is not None
    children = Children(server.app.engine)
    client = QueueManager(address=server.address)
    await client.register_queue("limit")
    job = await client.add_job("limit", "p", None)
    worker = RawWorker(server.address, ["limit"])
    await worker.connect(credits=1)
    (leased,) = await worker.jobs(1)
    token = leased.lease_token
    first = await children.children_add("limit", job.id, token, 3, [("limit", "")] * 2)
    # The same call again (a run lost after it and run again) names the same children and fits.
    assert await children.children_add("limit", job.id, token, 3, [("limit", "")] * 2) == first
    with pytest.raises(InvalidArgument, match=r"at most 3 children in all; job .* has 2 already"):
        await children.children_add("limit", job.id, token, 3, [("limit", "")] * 4)
    view = await client.get_job("limit", job.id)
    assert [(c.job_id, 0) for c in view.child_jobs] == first and view.children_pending == 2
    await worker.close()
    await client.shutdown()


async def test_a_run_lost_between_adding_children_and_parking_adds_none_twice_and_resumes_once(
    server: RunningServer, qm: QueueManager
) -> None:
    """The server died after recording and adding the children but before parking the parent (the steps it
    did are in Redis; the worker's stream is gone): the lease runs out, the job runs again and repeats the
    call."""
    assert server.app.engine is not None
    engine = server.app.engine
    for q in ("crash", "crash-kids"):
        await qm.register_queue(q)
    job = await qm.add_job("crash", "p", {"chunks": 3})
    raw = RawWorker(server.address, ["crash"])
    await raw.connect(credits=1)
    (leased,) = await raw.jobs(1)
    recorded = await Children(engine).children_add(
        "crash", job.id, leased.lease_token, 1000, [("crash-kids", "")] * 3
    )
    ids = [child_id for child_id, _ in recorded]
    parent = types_pb2.Job(
        parents=[types_pb2.ParentJob(job=types_pb2.JobRef(queue_name="crash", job_id=job.id))]
    ).SerializeToString()
    first = [
        NewJob(id=i, name="chunk", data=b"1", extra={"par": parent, "flo": b"1"}) for i in ids[:2]
    ]  # only two of the three adds were written when it died
    await engine.add_jobs("crash-kids", first)
    await raw.close()  # the worker's stream ends: the job goes back to waiting

    runs: list[tuple[bool, list[Any]]] = []

    @qm.processor("crash")
    async def fan_out(job: JobContext) -> int:
        runs.append((job.redelivery, [c.result for c in job.children]))
        if not job.children:
            await job.wait_for_children([ChildSpec("crash-kids", "chunk", 1)] * job.data["chunks"])
        return sum(c.result for c in job.children)

    @qm.processor("crash-kids")
    async def chunk(job: JobContext) -> int:
        return 10

    await qm.start_workers()
    done = await until_state(qm, "crash", job.id, JobState.COMPLETED)
    assert done.result == 30
    assert [r[1] for r in runs] == [[], [10, 10, 10]] and runs[0][0]  # the lost run's repeat, then one resume
    kids = (await qm.list_jobs("crash-kids", JobState.COMPLETED))[0]
    assert sorted(k.id for k in kids) == sorted(ids)  # three children: none lost, none added twice


async def test_a_cancelled_or_removed_parent_leaves_its_children_alone_and_is_not_woken(
    server: RunningServer, qm: QueueManager
) -> None:
    for q in ("cparent", "ckids"):
        await qm.register_queue(q)
    runs: list[str] = []

    @qm.processor("cparent")
    async def fan_out(job: JobContext) -> None:
        runs.append(job.id)
        await job.wait_for_children([ChildSpec("ckids", "k"), ChildSpec("ckids", "k")])

    await qm.start_workers()
    cancelled = await qm.add_job("cparent", "c", None)
    removed = await qm.add_job("cparent", "r", None)
    await until_state(qm, "cparent", cancelled.id, JobState.DELAYED)
    await until_state(qm, "cparent", removed.id, JobState.DELAYED)
    await qm.cancel_job("cparent", cancelled.id, "no longer needed")
    await qm.remove_job("cparent", removed.id)

    # The children run only now, after their parents were cancelled and removed.
    kids = QueueManager(address=server.address, concurrency=4)

    @kids.processor("ckids")
    async def kid(job: JobContext) -> str:
        return "ok"

    await kids.start_workers()

    async def all_handed_off() -> bool:
        view = await qm.get_job("cparent", cancelled.id)
        done = (await qm.list_jobs("ckids", JobState.COMPLETED))[0]
        return len(done) == 4 and view.children_pending == 0

    await eventually(all_handed_off, timeout=WAIT)
    view = await qm.get_job("cparent", cancelled.id)
    assert view.state == JobState.CANCELLED and [c.state for c in view.child_jobs] == [JobState.COMPLETED] * 2
    assert sorted(runs) == sorted([cancelled.id, removed.id])  # neither ran again
    await kids.shutdown()


async def test_get_job_shows_each_childs_current_state_in_one_call(
    server: RunningServer, qm: QueueManager
) -> None:
    for q in ("st-parent", "st-fast", "st-slow", "st-idle"):
        await qm.register_queue(q)
    gate = asyncio.Event()

    @qm.processor("st-parent")
    async def fan_out(job: JobContext) -> None:
        await job.wait_for_children(
            [
                ChildSpec("st-fast", "done"),
                ChildSpec("st-slow", "running"),
                ChildSpec("st-fast", "later", options={"delay": 3600}),
                ChildSpec("st-idle", "waiting"),
                ChildSpec("st-idle", "cancelled"),
                ChildSpec("st-idle", "removed"),
            ]
        )

    kids = QueueManager(address=server.address, concurrency=2)

    @kids.processor("st-fast")
    async def fast(job: JobContext) -> str:
        return "ok"

    @kids.processor("st-slow")
    async def slow(job: JobContext) -> str:
        await gate.wait()
        return "ok"

    await qm.start_workers()
    parent = await qm.add_job("st-parent", "p", None)
    parked = await until_state(qm, "st-parent", parent.id, JobState.DELAYED)
    ids = [c.job_id for c in parked.child_jobs]
    await qm.cancel_job("st-idle", ids[4], "not needed")
    await qm.remove_job("st-idle", ids[5])
    await kids.start_workers()
    await until_state(qm, "st-slow", ids[1], JobState.ACTIVE)
    await until_state(qm, "st-fast", ids[0], JobState.COMPLETED)

    async def settled() -> bool:
        view = await qm.get_job("st-parent", parent.id)
        return view.children_pending == 3  # the completed, the cancelled and the removed one handed off

    await eventually(settled, timeout=WAIT)
    view = await qm.get_job("st-parent", parent.id)
    assert [(c.state, c.current_state) for c in view.child_jobs] == [
        (JobState.COMPLETED, JobState.COMPLETED),
        (None, JobState.ACTIVE),
        (None, JobState.DELAYED),
        (None, JobState.WAITING),
        (JobState.CANCELLED, JobState.CANCELLED),
        (None, None),  # removed: no state now
    ]
    assert [c.removed for c in view.child_jobs] == [False] * 5 + [True]
    gate.set()
    await kids.shutdown()
