"""ListJobs pages by cursor (paging.py): jobs that join the head of a state, or leave ahead of the cursor,
while a caller pages shift nothing, in every state, filtered or not, counted or listed, dead-letter copies
included; tokens of the older offset kind and tokens of another state are refused. A real server on a real
Valkey; the jobs are moved between states through the engine the server runs on."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from grpc import StatusCode as Code

from queue_manager import QueueManager
from queue_manager.v1 import jobs_pb2 as jpb
from queue_manager.v1 import queue_service_pb2 as qpb
from queue_manager.v1 import queue_service_pb2_grpc as qrpc
from queue_manager.v1 import types_pb2 as t
from queue_manager_server.engine import Engine
from tests.conftest import RunningServer
from tests.test_job_filters import Q, add, add_many, new_job
from tests.test_server_api import expect

Between = Callable[[], Awaitable[Any]]


@pytest.fixture
async def stub(server: RunningServer) -> AsyncIterator[qrpc.QueueServiceStub]:
    async with grpc.aio.insecure_channel(server.address) as ch:
        s = qrpc.QueueServiceStub(ch)
        await s.RegisterQueue(
            qpb.RegisterQueueRequest(name=Q, config=t.QueueConfig(disable_dead_letter=True))
        )
        yield s


async def page_all(
    stub: qrpc.QueueServiceStub, state: int, between: Between, size: int = 3, **flt: Any
) -> list[str]:
    """Every job a caller listing `state` page by page sees, in order, calling `between` after each page."""
    seen: list[str] = []
    token = ""
    while True:
        page = await stub.ListJobs(
            jpb.ListJobsRequest(
                queue_name=Q, state=state, page_size=size, page_token=token, filter=jpb.JobFilter(**flt)
            )
        )
        seen += [j.id for j in page.jobs]
        token = page.next_page_token
        if not token:
            return seen
        await between()


async def finish(engine: Engine, how: str, names: list[str], stub: qrpc.QueueServiceStub) -> list[str]:
    """Adds jobs with these names and takes them to `how` (completed, failed, cancelled); their ids."""
    ids = await add_many(stub, [new_job(name) for name in names])
    if how == "cancelled":
        for job_id in ids:
            await stub.CancelJob(jpb.CancelJobRequest(queue_name=Q, job_id=job_id))
        return ids
    claimed = (await engine.claim(Q, len(ids), "tok", "w", 60_000)).jobs
    assert sorted(j.id for j in claimed) == sorted(ids)
    if how == "completed":
        await engine.complete(Q, [(j.id, "tok", b"1", "") for j in claimed])
    else:
        await engine.fail(Q, [(j.id, "tok", "boom", "", True) for j in claimed])
    return ids


@pytest.mark.parametrize(
    "how, state",
    [
        ("completed", t.JOB_STATE_COMPLETED),
        ("failed", t.JOB_STATE_FAILED),
        ("cancelled", t.JOB_STATE_CANCELLED),
    ],
)
async def test_finished_jobs_added_at_the_head_while_paging_shift_nothing(
    stub: qrpc.QueueServiceStub, engine: Engine, how: str, state: int
) -> None:
    # One script call finishes them all at one time (cancelled: one each): pages rest on ties broken by id.
    first = await finish(engine, how, [f"j{i}" for i in range(10)], stub)

    async def newer() -> None:  # newest first: each one finished now comes before the cursor
        await finish(engine, how, ["new", "new"], stub)

    seen = await page_all(stub, state, newer)
    assert len(seen) == len(set(seen)) and set(seen) == set(first)


async def test_delayed_and_active_jobs_added_at_the_head_while_paging_shift_nothing(
    stub: qrpc.QueueServiceStub, engine: Engine
) -> None:
    delayed = await add_many(stub, [new_job(f"d{i}", delay_s=3600 + i) for i in range(8)])

    async def sooner() -> None:  # run sooner than any listed: the head of the delayed set
        await add(stub, new_job("soon", delay_s=600))

    seen = await page_all(stub, t.JOB_STATE_DELAYED, sooner)
    assert len(seen) == len(set(seen)) and set(seen) == set(delayed)

    await add_many(stub, [new_job(f"a{i}") for i in range(8)])
    active = [j.id for j in (await engine.claim(Q, 8, "tok", "w", 600_000)).jobs]

    async def shorter() -> None:  # a shorter lease: the head of the active set
        await add(stub, new_job("short"))
        await engine.claim(Q, 1, "tok2", "w2", 60_000)

    seen = await page_all(stub, t.JOB_STATE_ACTIVE, shorter)
    assert len(seen) == len(set(seen)) and set(seen) == set(active)


async def test_a_filtered_page_and_a_count_go_on_from_the_cursor(
    stub: qrpc.QueueServiceStub, engine: Engine
) -> None:
    first = await finish(
        engine, "completed", [f"keep-{i}" if i % 2 else f"skip-{i}" for i in range(12)], stub
    )
    kept = [job_id for i, job_id in enumerate(first) if i % 2]

    async def newer() -> None:
        await finish(engine, "completed", ["keep-new", "skip-new"], stub)

    seen = await page_all(stub, t.JOB_STATE_COMPLETED, newer, size=2, name="keep-*")
    assert len(seen) == len(set(seen)) and set(seen) == set(kept)

    # A count goes on from a page's cursor: the jobs after it, however many finished since.
    every = await stub.ListJobs(
        jpb.ListJobsRequest(queue_name=Q, state=t.JOB_STATE_COMPLETED, page_size=1000)
    )
    page = await stub.ListJobs(jpb.ListJobsRequest(queue_name=Q, state=t.JOB_STATE_COMPLETED, page_size=4))
    await finish(engine, "completed", ["keep-later"] * 3, stub)
    request = jpb.ListJobsRequest(
        queue_name=Q, state=t.JOB_STATE_COMPLETED, page_token=page.next_page_token, count_only=True
    )
    counted = await stub.ListJobs(request)
    assert (counted.match_count, counted.total_size) == (len(every.jobs) - 4, len(every.jobs) + 3)
    request.filter.CopyFrom(jpb.JobFilter(name="keep-*"))
    filtered = await stub.ListJobs(request)
    assert filtered.match_count == sum(j.name.startswith("keep-") for j in every.jobs[4:])
    assert not filtered.next_page_token


async def test_waiting_jobs_claimed_from_the_head_while_paging_are_not_skipped(
    stub: qrpc.QueueServiceStub, engine: Engine
) -> None:
    waiting = await add_many(stub, [new_job(f"w{i}") for i in range(10)])
    claimed: list[str] = []

    async def claim() -> None:  # the jobs listed leave the head of the list
        claimed.extend(j.id for j in (await engine.claim(Q, 3, "tok", "w", 60_000)).jobs)

    seen = await page_all(stub, t.JOB_STATE_WAITING, claim)
    assert seen == waiting and claimed == waiting[:9]


async def test_a_job_removed_between_pages_does_not_break_the_next(
    stub: qrpc.QueueServiceStub, engine: Engine
) -> None:
    done = await finish(engine, "completed", [f"c{i}" for i in range(9)], stub)
    waiting = await add_many(stub, [new_job(f"w{i}") for i in range(9)])
    for state, ids in ((t.JOB_STATE_COMPLETED, done), (t.JOB_STATE_WAITING, waiting)):
        page = await stub.ListJobs(jpb.ListJobsRequest(queue_name=Q, state=state, page_size=3))
        # The cursor's own job, and one ahead of it, are gone when the next page is read.
        for job in (page.jobs[2], page.jobs[0]):
            await stub.RemoveJob(jpb.RemoveJobRequest(queue_name=Q, job_id=job.id))
        rest, token = [], page.next_page_token
        while token:
            more = await stub.ListJobs(
                jpb.ListJobsRequest(queue_name=Q, state=state, page_size=3, page_token=token)
            )
            rest += [j.id for j in more.jobs]
            token = more.next_page_token
        listed = [j.id for j in page.jobs]
        if state == t.JOB_STATE_COMPLETED:  # exactly after where the removed job was: none skipped
            assert sorted(rest) == sorted(set(ids) - set(listed))
        else:  # the list is read again from its head: the one listed job still there, then the rest
            assert rest == [listed[1], *ids[3:]]


async def test_a_waiting_cursor_in_a_group_that_went_away_goes_on_with_the_next_group(
    stub: qrpc.QueueServiceStub,
) -> None:
    own = await add_many(stub, [new_job(f"o{i}") for i in range(2)])
    first = await add_many(stub, [new_job(f"a{i}", group="ga") for i in range(3)])
    second = await add_many(stub, [new_job(f"b{i}", group="gb") for i in range(3)])
    page = await stub.ListJobs(jpb.ListJobsRequest(queue_name=Q, state=t.JOB_STATE_WAITING, page_size=3))
    assert [j.id for j in page.jobs] == [*own, first[0]]
    for job_id in first:  # the cursor's group has no job waiting any more: the queue forgets it
        await stub.RemoveJob(jpb.RemoveJobRequest(queue_name=Q, job_id=job_id))
    rest = await stub.ListJobs(
        jpb.ListJobsRequest(
            queue_name=Q, state=t.JOB_STATE_WAITING, page_size=3, page_token=page.next_page_token
        )
    )
    assert [j.id for j in rest.jobs] == second and not rest.next_page_token


async def test_dead_letters_taken_while_paging_are_not_skipped(server: RunningServer, engine: Engine) -> None:
    async with QueueManager(address=server.address) as qm:
        await qm.register_queue("src")
        ids = [(await qm.add_job("src", "job", {"i": i})).id for i in range(7)]
        # The copies are written as the jobs fail for good (engine.fail's dead-letter hand-off).
        claimed = (await engine.claim("src", 7, "tok", "w", 60_000)).jobs
        await engine.fail("src", [(j.id, "tok", "boom", "", True) for j in claimed])
        seen: list[str] = []
        token = ""
        while True:
            copies, token = await qm.list_dead_letters(page_size=2, page_token=token)
            seen += [c.original_job_id for c in copies]
            for copy in copies:  # each page's copies are dealt with before the next page is read
                await qm.remove_job("dead-letter-queue", copy.id)
            if not token:
                break
    assert sorted(seen) == sorted(ids) and len(seen) == len(set(seen))


async def test_tokens_of_the_offset_kind_or_of_another_state_are_refused(
    stub: qrpc.QueueServiceStub, engine: Engine
) -> None:
    def token(text: str) -> str:
        return base64.urlsafe_b64encode(text.encode()).decode()

    await finish(engine, "completed", ["a", "b", "c"], stub)
    await add(stub, new_job("w1"), new_job("w2"), new_job("w3"))
    for state in (t.JOB_STATE_WAITING, t.JOB_STATE_COMPLETED, t.JOB_STATE_DELAYED):
        for count_only in (False, True):
            old = jpb.ListJobsRequest(
                queue_name=Q, state=state, page_token=token("o:2"), count_only=count_only
            )
            await expect(
                Code.INVALID_ARGUMENT, stub.ListJobs(old), "page_token", "older ListJobs", "first page"
            )
    # A waiting page's token handed to a sorted set's state, and the reverse.
    waiting = await stub.ListJobs(jpb.ListJobsRequest(queue_name=Q, state=t.JOB_STATE_WAITING, page_size=1))
    done = await stub.ListJobs(jpb.ListJobsRequest(queue_name=Q, state=t.JOB_STATE_COMPLETED, page_size=1))
    for state, other in ((t.JOB_STATE_COMPLETED, waiting), (t.JOB_STATE_WAITING, done)):
        request = jpb.ListJobsRequest(queue_name=Q, state=state, page_token=other.next_page_token)
        await expect(Code.INVALID_ARGUMENT, stub.ListJobs(request), "page_token", "not a token returned by")
    # The largest index or score a cursor may name reads as a page, not an internal error.
    for state, far in ((t.JOB_STATE_WAITING, f"q:{2**53}:3\n\nw"), (t.JOB_STATE_COMPLETED, f"s:{2**53}:j")):
        page = await stub.ListJobs(jpb.ListJobsRequest(queue_name=Q, state=state, page_token=token(far)))
        assert len(page.jobs) == 3 and not page.next_page_token
    # A waiting cursor naming no level is refused too, not read.
    bad = jpb.ListJobsRequest(queue_name=Q, state=t.JOB_STATE_WAITING, page_token=token("q:0:9\n\nx"))
    await expect(Code.INVALID_ARGUMENT, stub.ListJobs(bad), "page_token")


async def test_groups_added_before_the_cursor_while_paging_shift_nothing(stub: qrpc.QueueServiceStub) -> None:
    await add_many(stub, [new_job("g", group=f"m{i}") for i in range(5)])
    seen: list[str] = []
    token = ""
    while True:
        page = await stub.ListGroups(qpb.ListGroupsRequest(queue_name=Q, page_size=2, page_token=token))
        seen += [g.group for g in page.groups]
        token = page.next_page_token
        if not token:
            break
        await add(stub, new_job("g", group=f"a{len(seen)}"))  # sorts before every group listed
    assert seen == [f"m{i}" for i in range(5)]
    old = qpb.ListGroupsRequest(queue_name=Q, page_token=base64.urlsafe_b64encode(b"o:2").decode())
    await expect(Code.INVALID_ARGUMENT, stub.ListGroups(old), "page_token", "older ListGroups")
