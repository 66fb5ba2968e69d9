"""The bulk actions (RetryFailedJobs with a filter, CancelJobs, RemoveJobs) go on from cursors, as ListJobs
does (paging.py): while a caller runs one call after another, jobs join the head of the state and jobs leave
ahead of the cursor, and every matching job there from the first call to the last is acted on exactly once,
none skipped; jobs that joined ahead of the cursor of a sorted set are left alone. Position tokens of the
older bulk calls, and tokens of another call or state, are refused. A real server on a real Valkey; jobs are
moved between states through the engine the server runs on."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from grpc import StatusCode as Code

from queue_manager.v1 import jobs_pb2 as jpb
from queue_manager.v1 import queue_service_pb2 as qpb
from queue_manager.v1 import queue_service_pb2_grpc as qrpc
from queue_manager.v1 import types_pb2 as t
from queue_manager_server.engine import Engine
from tests.conftest import RunningServer
from tests.test_job_filters import Q, add, add_many, listed, new_job
from tests.test_server_api import expect

# Called between two calls of a run with the number of calls made so far.
Between = Callable[[int], Awaitable[Any]]
# Finished jobs are ordered by the millisecond they finished in, then by id: a job finished at least this long
# after those a call read finishes in a later millisecond, so it joins the head of the set, not a tie whose
# order its random id would decide.
CLOCK_TICK_S = 0.002


@pytest.fixture
async def stub(server: RunningServer) -> AsyncIterator[qrpc.QueueServiceStub]:
    async with grpc.aio.insecure_channel(server.address) as ch:
        s = qrpc.QueueServiceStub(ch)
        await s.RegisterQueue(
            qpb.RegisterQueueRequest(name=Q, config=t.QueueConfig(disable_dead_letter=True))
        )
        yield s


async def run(call: Callable[[str], Awaitable[Any]], between: Between) -> list[Any]:
    """Every response of a bulk action followed token by token, calling `between` after each call."""
    responses, token = [], ""
    while True:
        responses.append(await call(token))
        token = responses[-1].next_page_token
        if not token:
            return responses
        assert len(responses) < 50, "the run does not end"
        await between(len(responses))


def head(name: str, priority: t.JobPriority.ValueType = t.JOB_PRIORITY_UNSPECIFIED) -> jpb.NewJob:
    """A job that joins the head of the waiting jobs: pushed to the head of its level (LIFO), or to a level
    read before the others."""
    return jpb.NewJob(name=name, options=t.JobOptions(lifo=True, priority=priority))


def names(*runs: tuple[str, int]) -> list[str]:
    return [name for name, n in runs for _ in range(n)]


# Three jobs that do not match, read first and then removed ahead of the cursor, then six matches, each
# followed by one that does not match: with a limit of 2, the first call reads past the three and stops at
# the second match, so removing the three (and adding one at the head) moves everything a position named
# two jobs on, past a match.
ORDER = names(("x", 3)) + names(("m", 1), ("x", 1)) * 6


async def test_cancel_jobs_of_the_waiting_lists_while_jobs_join_the_head_and_leave_ahead(
    stub: qrpc.QueueServiceStub,
) -> None:
    ids = await add_many(stub, [new_job(n) for n in ORDER])
    matches = [i for i, n in zip(ids, ORDER, strict=True) if n == "m"]
    joined: list[str] = []

    async def between(calls: int) -> None:
        joined.extend(await add(stub, head("m")))
        if calls == 1:  # the three read first leave, ahead of the cursor
            for job_id in ids[:3]:
                await stub.RemoveJob(jpb.RemoveJobRequest(queue_name=Q, job_id=job_id))
        if calls == 2:  # a higher priority: a list read before the cursor's
            joined.extend(await add(stub, head("m", t.JOB_PRIORITY_CRITICAL)))

    def call(token: str) -> Any:
        request = jpb.CancelJobsRequest(
            queue_name=Q, state=t.JOB_STATE_WAITING, filter=jpb.JobFilter(name="m"), limit=2, page_token=token
        )
        return stub.CancelJobs(request)

    responses = await run(call, between)
    assert sum(r.count for r in responses) == len(matches) == 6
    cancelled, _ = await listed(stub, t.JOB_STATE_CANCELLED)
    assert sorted(cancelled) == sorted(matches)
    waiting, _ = await listed(stub)
    assert set(joined) <= set(waiting) and len(joined) == len(responses)


async def test_cancel_jobs_without_a_filter_takes_every_waiting_job_once_across_lists(
    stub: qrpc.QueueServiceStub,
) -> None:
    # Every job read is taken, so no cursor job stays in its list: each call goes on from the head of the
    # list of the last one taken, and from there to the later lists (a lower level, a fairness group's).
    first = await add_many(stub, [new_job(f"n{i}") for i in range(5)])
    low = jpb.NewJob(name="low", options=t.JobOptions(priority=t.JOB_PRIORITY_LOW))
    later = await add_many(stub, [low] * 4 + [new_job("g", group="acme") for _ in range(4)])

    async def between(calls: int) -> None:
        await add(stub, head("late", t.JOB_PRIORITY_HIGH))  # a list already passed: never reached

    def call(token: str) -> Any:
        request = jpb.CancelJobsRequest(queue_name=Q, state=t.JOB_STATE_WAITING, limit=3, page_token=token)
        return stub.CancelJobs(request)

    responses = await run(call, between)
    cancelled, _ = await listed(stub, t.JOB_STATE_CANCELLED)
    assert sorted(cancelled) == sorted(first + later) and sum(r.count for r in responses) == 13
    waiting, _ = await listed(stub)
    assert len(waiting) == len(responses) - 1


async def test_remove_jobs_of_a_sorted_set_while_jobs_join_the_head_and_leave_ahead(
    stub: qrpc.QueueServiceStub,
) -> None:
    # Delayed jobs by run time: each one a second later than the one before, in ORDER.
    ids = await add_many(stub, [new_job(n, delay_s=3600 + i) for i, n in enumerate(ORDER)])
    matches = [i for i, n in zip(ids, ORDER, strict=True) if n == "m"]
    joined: list[str] = []

    async def between(calls: int) -> None:
        joined.extend(await add(stub, new_job("m", delay_s=600)))  # sooner than any: the set's head
        if calls == 1:  # the three read first leave, ahead of the cursor: due now, they wait
            for job_id in ids[:3]:
                await stub.PromoteJob(jpb.PromoteJobRequest(queue_name=Q, job_id=job_id))

    def call(token: str) -> Any:
        request = jpb.RemoveJobsRequest(
            queue_name=Q, state=t.JOB_STATE_DELAYED, filter=jpb.JobFilter(name="m"), limit=2, page_token=token
        )
        return stub.RemoveJobs(request)

    responses = await run(call, between)
    assert sum(r.count for r in responses) == len(matches)
    for job_id in matches:
        await expect(Code.NOT_FOUND, stub.GetJob(jpb.GetJobRequest(queue_name=Q, job_id=job_id)))
    delayed, _ = await listed(stub, t.JOB_STATE_DELAYED)
    assert sorted(delayed) == sorted(joined + [i for i, n in zip(ids, ORDER, strict=True) if n == "x"][3:])


async def test_remove_jobs_of_finished_jobs_leaves_those_finished_meanwhile(
    stub: qrpc.QueueServiceStub, engine: Engine
) -> None:
    async def complete(n: int) -> list[str]:
        await asyncio.sleep(CLOCK_TICK_S)
        ids = await add_many(stub, [new_job("done") for _ in range(n)])
        claimed = (await engine.claim(Q, n, "tok", "w", 60_000)).jobs
        await engine.complete(Q, [(j.id, "tok", b"1", "") for j in claimed])
        return ids

    first = await complete(10)
    joined: list[str] = []

    async def between(calls: int) -> None:  # newest first: a job completed now is the set's head
        joined.extend(await complete(2))

    def call(token: str) -> Any:
        request = jpb.RemoveJobsRequest(queue_name=Q, state=t.JOB_STATE_COMPLETED, limit=3, page_token=token)
        return stub.RemoveJobs(request)

    responses = await run(call, between)
    assert sum(r.count for r in responses) == 10 and len(responses) == 4
    completed, _ = await listed(stub, t.JOB_STATE_COMPLETED)
    assert sorted(completed) == sorted(joined) and not set(completed) & set(first)


async def test_cancel_jobs_asks_each_active_job_to_stop_once_while_shorter_leases_join_the_head(
    stub: qrpc.QueueServiceStub, engine: Engine
) -> None:
    await add_many(stub, [new_job("m") for _ in range(8)])
    active = [j.id for j in (await engine.claim(Q, 8, "tok", "w", 600_000)).jobs]
    joined: list[str] = []

    async def between(calls: int) -> None:  # a shorter lease: the head of the active set
        await add(stub, new_job("m"))
        joined.extend(j.id for j in (await engine.claim(Q, 1, "tok2", "w2", 60_000)).jobs)

    def call(token: str) -> Any:
        request = jpb.CancelJobsRequest(queue_name=Q, state=t.JOB_STATE_ACTIVE, limit=3, page_token=token)
        return stub.CancelJobs(request)

    responses = await run(call, between)
    assert sum(r.requested_count for r in responses) == 8 and sum(r.count for r in responses) == 0
    for job_id in active + joined:
        job = (await stub.GetJob(jpb.GetJobRequest(queue_name=Q, job_id=job_id))).job
        assert job.state == t.JOB_STATE_ACTIVE and job.cancel_requested == (job_id in active)


async def test_retry_failed_jobs_retries_each_once_while_failures_arrive(
    stub: qrpc.QueueServiceStub, engine: Engine
) -> None:
    # One script call fails them all at one time: the failed set (newest first) orders them by id, reversed,
    # so ids counting down give ORDER.
    ids = [f"j{len(ORDER) - i:02d}" for i in range(len(ORDER))]
    kinds = ["charge" if n == "m" else "refund" for n in ORDER]
    await add_many(stub, [new_job(k, job_id=i) for i, k in zip(ids, kinds, strict=True)])
    claimed = (await engine.claim(Q, len(ids), "tok", "w", 60_000)).jobs
    await engine.fail(Q, [(j.id, "tok", "boom", "", True) for j in claimed])
    charges = [i for i, k in zip(ids, kinds, strict=True) if k == "charge"]
    arrived: list[str] = []
    again: list[str] = []

    async def fail_next() -> str:
        """Fails the job a worker claims next (the head of the waiting jobs): the head of the failed set."""
        job = (await engine.claim(Q, 1, "tok2", "w2", 60_000)).jobs[0]
        await asyncio.sleep(CLOCK_TICK_S)
        await engine.fail(Q, [(job.id, "tok2", "boom again", "", True)])
        return job.id

    async def between(calls: int) -> None:
        new = jpb.NewJob(name="charge", options=t.JobOptions(priority=t.JOB_PRIORITY_CRITICAL))
        arrived.extend(await add(stub, new))
        assert await fail_next() == arrived[-1]
        if calls == 1:  # the three read first leave, ahead of the cursor
            for job_id in ids[:3]:
                await stub.RemoveJob(jpb.RemoveJobRequest(queue_name=Q, job_id=job_id))
        if calls == 2:  # a job retried by the run fails again: once retried, it is not retried again
            again.append(await fail_next())

    def call(token: str) -> Any:
        flt = jpb.JobFilter(name="charge")
        return stub.RetryFailedJobs(
            jpb.RetryFailedJobsRequest(queue_name=Q, filter=flt, limit=2, page_token=token)
        )

    responses = await run(call, between)
    assert sum(r.count for r in responses) == len(charges) == 6 and set(again) <= set(charges)
    waiting, _ = await listed(stub)
    assert sorted(waiting) == sorted(set(charges) - set(again))
    failed, _ = await listed(stub, t.JOB_STATE_FAILED)
    refunds = [i for i, k in zip(ids, kinds, strict=True) if k == "refund"][3:]
    assert sorted(failed) == sorted(refunds + arrived + again)


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


async def test_old_position_tokens_and_tokens_of_another_call_or_state_are_refused(
    stub: qrpc.QueueServiceStub,
) -> None:
    waiting, failed = t.JOB_STATE_WAITING, t.JOB_STATE_FAILED
    old = "no longer pages by position; omit it and run the action again from its first call"
    cancel = stub.CancelJobs(jpb.CancelJobsRequest(queue_name=Q, state=waiting, page_token=b64("c:4")))
    await expect(Code.INVALID_ARGUMENT, cancel, "page_token", "position token of an older CancelJobs", old)
    remove = stub.RemoveJobs(jpb.RemoveJobsRequest(queue_name=Q, state=failed, page_token=b64("x:12")))
    await expect(Code.INVALID_ARGUMENT, remove, "position token of an older RemoveJobs", old)
    retry = stub.RetryFailedJobs(jpb.RetryFailedJobsRequest(queue_name=Q, limit=5, page_token=b64("r:0")))
    await expect(Code.INVALID_ARGUMENT, retry, "position token of an older RetryFailedJobs", old)

    # A token of a run in progress is taken back only by its call, for the kind of state it read.
    await add_many(stub, [new_job("a") for _ in range(3)] + [new_job("d", delay_s=600) for _ in range(3)])
    r = await stub.CancelJobs(jpb.CancelJobsRequest(queue_name=Q, state=waiting, limit=1))
    assert r.count == 1 and r.next_page_token
    wrong = [
        stub.CancelJobs(
            jpb.CancelJobsRequest(queue_name=Q, state=t.JOB_STATE_DELAYED, page_token=r.next_page_token)
        ),
        stub.RemoveJobs(jpb.RemoveJobsRequest(queue_name=Q, state=waiting, page_token=r.next_page_token)),
    ]
    for refused, rpc in zip(wrong, ["CancelJobs", "RemoveJobs"], strict=True):
        await expect(Code.INVALID_ARGUMENT, refused, "page_token", f"not a token returned by {rpc}")
    page = await stub.ListJobs(jpb.ListJobsRequest(queue_name=Q, state=t.JOB_STATE_DELAYED, page_size=1))
    listing = jpb.RemoveJobsRequest(queue_name=Q, state=t.JOB_STATE_DELAYED, page_token=page.next_page_token)
    await expect(Code.INVALID_ARGUMENT, stub.RemoveJobs(listing), "not a token returned by RemoveJobs")
    # Paused: the waiting jobs' cursor kind, so a token of the waiting state goes on there.
    await stub.PauseQueue(qpb.PauseQueueRequest(name=Q))
    paused = jpb.CancelJobsRequest(queue_name=Q, state=t.JOB_STATE_PAUSED, page_token=r.next_page_token)
    assert (await stub.CancelJobs(paused)).count == 2
