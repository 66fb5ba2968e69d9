"""Finding jobs by what they are (ListJobs filters) and acting on those found (RetryFailedJobs with a filter,
CancelJobs, RemoveJobs): each filter alone and combined, bounded reads followed by tokens, the bulk calls'
limits and tokens, and the refusals. A real server on a real Valkey, called through the gRPC stubs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc import StatusCode as Code

from queue_manager.v1 import jobs_pb2 as jpb
from queue_manager.v1 import queue_service_pb2 as qpb
from queue_manager.v1 import queue_service_pb2_grpc as qrpc
from queue_manager.v1 import types_pb2 as t
from queue_manager_server.engine import Engine
from queue_manager_server.engine.search import SCAN_BUDGET
from tests.conftest import RunningServer
from tests.test_server_api import expect

Q = "filtered"


@pytest.fixture
async def stub(server: RunningServer) -> AsyncIterator[qrpc.QueueServiceStub]:
    async with grpc.aio.insecure_channel(server.address) as ch:
        s = qrpc.QueueServiceStub(ch)
        await s.RegisterQueue(
            qpb.RegisterQueueRequest(name=Q, config=t.QueueConfig(disable_dead_letter=True))
        )
        yield s


def new_job(
    name: str,
    group: str = "",
    tags: Sequence[str] = (),
    correlation_id: str = "",
    delay_s: int = 0,
    job_id: str = "",
) -> jpb.NewJob:
    options = t.JobOptions(group=group, job_id=job_id)
    if tags or correlation_id:
        options.metadata.CopyFrom(t.JobMetadata(tags=list(tags), correlation_id=correlation_id))
    if delay_s:
        options.delay.FromSeconds(delay_s)
    return jpb.NewJob(name=name, options=options)


async def add(stub: qrpc.QueueServiceStub, *jobs: jpb.NewJob) -> list[str]:
    ids = []
    for job in jobs:
        ids.append((await stub.AddJob(jpb.AddJobRequest(queue_name=Q, job=job))).job.id)
    return ids


async def add_many(stub: qrpc.QueueServiceStub, jobs: Sequence[jpb.NewJob]) -> list[str]:
    async def stream() -> AsyncIterator[jpb.AddBulkRequest]:
        for i in range(0, len(jobs), 1000):
            yield jpb.AddBulkRequest(queue_name=Q, jobs=jobs[i : i + 1000])

    return list((await stub.AddBulk(stream())).job_ids)


async def listed(
    stub: qrpc.QueueServiceStub, state: int = t.JOB_STATE_WAITING, page_size: int = 100, **flt: Any
) -> tuple[list[str], list[jpb.ListJobsResponse]]:
    """Every matching id, following the tokens; and the pages."""
    pages: list[jpb.ListJobsResponse] = []
    token = ""
    while True:
        request = jpb.ListJobsRequest(
            queue_name=Q, state=state, page_size=page_size, page_token=token, filter=jpb.JobFilter(**flt)
        )
        pages.append(await stub.ListJobs(request))
        token = pages[-1].next_page_token
        if not token:
            return [j.id for p in pages for j in p.jobs], pages
        assert len(pages) < 100, "the listing never ends"


async def test_each_filter_alone_and_combined(stub: qrpc.QueueServiceStub, engine: Engine) -> None:
    early = await add(
        stub,
        new_job("send-email", group="acme", tags=["vip", "eu"], correlation_id="req-1"),
        new_job("send-sms", group="acme", tags=["eu"]),
        new_job("report", group="globex", correlation_id="req-1"),
    )
    late = await add(stub, new_job("send-email", tags=["vip"]), new_job("sender", correlation_id="req-2"))
    send_email, send_sms, report = early
    late_email, sender = late
    # The early ones were created an hour ago (seeded: their creation time as the add stores it).
    cut_ms = await engine.redis_time_ms() - 1_800_000
    for job_id in early:
        await engine.redis.hset(engine.keys(Q).job(job_id), "ts", cut_ms - 1_800_000)

    async def ids(**flt: Any) -> list[str]:
        return (await listed(stub, **flt))[0]

    # The plain listing's order (the ungrouped jobs first, then the groups by name): filters keep it.
    order = await ids()
    assert sorted(order) == sorted(early + late)

    def only(*wanted: str) -> list[str]:
        return [i for i in order if i in wanted]

    assert await ids(name="send-email") == only(send_email, late_email)
    assert await ids(name="send-*") == only(send_email, send_sms, late_email)
    assert await ids(name="sen*") == only(send_email, send_sms, late_email, sender)
    assert await ids(name="send") == []
    assert await ids(group="acme") == only(send_email, send_sms)
    assert await ids(tag="vip") == only(send_email, late_email)
    assert await ids(tag="eu") == only(send_email, send_sms)
    assert await ids(correlation_id="req-1") == only(send_email, report)
    cut_ts = Timestamp()
    cut_ts.FromMilliseconds(cut_ms)
    assert await ids(created_after=cut_ts) == only(*late)
    assert await ids(created_before=cut_ts) == only(*early)
    start = Timestamp()
    start.FromMilliseconds(cut_ms - 3_600_000)
    assert await ids(created_after=start, created_before=cut_ts) == only(*early)
    # Combined: every condition must hold.
    assert await ids(name="send-*", tag="vip") == only(send_email, late_email)
    assert await ids(name="send-*", tag="vip", group="acme") == [send_email]
    assert await ids(name="send-*", tag="eu", correlation_id="req-1") == [send_email]
    assert await ids(tag="vip", created_after=cut_ts) == [late_email]
    assert await ids(group="globex", tag="vip") == []
    # The page still says how many jobs the state holds, matching or not.
    _, pages = await listed(stub, tag="vip")
    assert pages[0].total_size == 5


async def test_filters_in_every_state_and_the_grouped_waiting_lists(
    stub: qrpc.QueueServiceStub, engine: Engine
) -> None:
    await add(stub, *[new_job(f"a-{i}", group=f"g{i % 3}", tags=["x"] if i % 2 else []) for i in range(12)])
    delayed = await add(stub, new_job("later", tags=["x"], delay_s=3600), new_job("later", delay_s=3600))
    # Waiting jobs in groups are listed group by group (by name), each group's jobs in order.
    waiting, _ = await listed(stub, tag="x")
    names = [(await stub.GetJob(jpb.GetJobRequest(queue_name=Q, job_id=i))).job.name for i in waiting]
    assert names == ["a-3", "a-9", "a-1", "a-7", "a-5", "a-11"]
    assert (await listed(stub, t.JOB_STATE_DELAYED, tag="x"))[0] == delayed[:1]
    claimed = (await engine.claim(Q, 4, "tok", "w1", 60_000)).jobs
    active, _ = await listed(stub, t.JOB_STATE_ACTIVE, name="a-*")
    assert sorted(active) == sorted(j.id for j in claimed)  # by lease expiry: one millisecond, by id
    await engine.fail(Q, [(j.id, "tok", "boom", "", True) for j in claimed[:2]])
    await engine.complete(Q, [(j.id, "tok", b"1", "") for j in claimed[2:]])
    failed = {j.id for j in claimed[:2]}
    assert set((await listed(stub, t.JOB_STATE_FAILED, name="a-*"))[0]) == failed
    grouped = {j.id for j in claimed[2:] if j.group == "g1"}
    assert set((await listed(stub, t.JOB_STATE_COMPLETED, group="g1"))[0]) == grouped
    # Paused: the waiting jobs of a paused queue; none while it runs.
    assert (await listed(stub, t.JOB_STATE_PAUSED, tag="x"))[0] == []
    await stub.PauseQueue(qpb.PauseQueueRequest(name=Q))
    assert len((await listed(stub, t.JOB_STATE_PAUSED, name="a-*"))[0]) == 8
    assert (await listed(stub, t.JOB_STATE_WAITING, name="a-*"))[0] == []


async def test_a_rare_match_is_found_by_following_tokens_each_page_reading_a_bounded_run(
    stub: qrpc.QueueServiceStub,
) -> None:
    n = SCAN_BUDGET + 1000
    jobs = [new_job("noise", tags=["t"]) for _ in range(n)]
    jobs[n - 10] = new_job("needle", tags=["t"])
    ids = await add_many(stub, jobs)
    found, pages = await listed(stub, name="needle", page_size=10)
    assert found == [ids[n - 10]]
    # The first page read SCAN_BUDGET jobs and found nothing: empty, with a token; the second ended the state.
    assert [len(p.jobs) for p in pages] == [0, 1] and pages[0].next_page_token
    assert all(p.total_size == n for p in pages)
    # Many matches across short pages: each once, in the state's order, the pages full until the last.
    everyone, pages = await listed(stub, tag="t", page_size=700)
    assert everyone == ids
    assert [len(p.jobs) for p in pages[:-1]] == [700] * (len(pages) - 1)


async def test_retry_failed_jobs_by_filter_in_bounded_calls(
    stub: qrpc.QueueServiceStub, engine: Engine
) -> None:
    await add(stub, *[new_job("charge" if i % 2 else "refund", group="acme") for i in range(10)])
    claimed = (await engine.claim(Q, 10, "tok", "w", 60_000)).jobs
    await engine.fail(Q, [(j.id, "tok", "boom", "", True) for j in claimed])
    charges = [j.id for j in claimed if j.name == "charge"]
    flt = jpb.JobFilter(name="charge")
    retried, token, calls = 0, "", 0
    while True:
        r = await stub.RetryFailedJobs(
            jpb.RetryFailedJobsRequest(queue_name=Q, filter=flt, limit=2, page_token=token)
        )
        assert r.count <= 2
        retried, token, calls = retried + r.count, r.next_page_token, calls + 1
        if not token:
            break
    assert retried == 5 and calls == 3
    waiting, _ = await listed(stub)
    assert sorted(waiting) == sorted(charges)
    still, _ = await listed(stub, t.JOB_STATE_FAILED)
    assert len(still) == 5 and not set(still) & set(charges)
    # Without a filter, limit or token: every failed job, in one call, as ever.
    r = await stub.RetryFailedJobs(jpb.RetryFailedJobsRequest(queue_name=Q))
    assert r.count == 5 and not r.next_page_token


async def test_cancel_jobs_by_filter_waiting_delayed_and_active(
    stub: qrpc.QueueServiceStub, engine: Engine
) -> None:
    tenants = [new_job("sync", group=g) for g in ("acme", "globex") * 6]
    ids = await add(stub, *tenants, new_job("sync", group="acme", delay_s=600))
    acme = [i for i, j in zip(ids, tenants, strict=False) if j.options.group == "acme"]
    flt = jpb.JobFilter(group="acme")
    r = await stub.CancelJobs(
        jpb.CancelJobsRequest(
            queue_name=Q, state=t.JOB_STATE_WAITING, filter=flt, limit=4, reason="tenant left"
        )
    )
    assert (r.count, r.requested_count) == (4, 0) and r.next_page_token
    r = await stub.CancelJobs(
        jpb.CancelJobsRequest(
            queue_name=Q,
            state=t.JOB_STATE_WAITING,
            filter=flt,
            page_token=r.next_page_token,
            reason="tenant left",
        )
    )
    assert (r.count, r.next_page_token) == (2, "")
    cancelled, _ = await listed(stub, t.JOB_STATE_CANCELLED)
    assert sorted(cancelled) == sorted(acme)
    job = (await stub.GetJob(jpb.GetJobRequest(queue_name=Q, job_id=acme[0]))).job
    assert job.cancel_reason == "tenant left"
    # The group's bookkeeping followed: globex's six still wait and are claimed; acme has none left.
    groups = (await stub.ListGroups(qpb.ListGroupsRequest(queue_name=Q))).groups
    assert {g.group: g.waiting for g in groups} == {"globex": 6}
    # And the per-level counts of the groups' jobs (QueueMetrics.levels): globex's six, NORMAL.
    assert [n for n, _ in (await engine.metrics(Q)).levels] == [0, 0, 6, 0, 0]
    r = await stub.CancelJobs(jpb.CancelJobsRequest(queue_name=Q, state=t.JOB_STATE_DELAYED, filter=flt))
    assert (r.count, r.next_page_token) == (1, "")
    claimed = (await engine.claim(Q, 10, "tok", "w", 60_000)).jobs
    assert len(claimed) == 6 and {j.group for j in claimed} == {"globex"}
    # Active jobs are asked to stop: marked, and still active until their worker stops them.
    r = await stub.CancelJobs(
        jpb.CancelJobsRequest(queue_name=Q, state=t.JOB_STATE_ACTIVE, filter=jpb.JobFilter(group="globex"))
    )
    assert (r.count, r.requested_count, r.next_page_token) == (0, 6, "")
    job = (await stub.GetJob(jpb.GetJobRequest(queue_name=Q, job_id=claimed[0].id))).job
    assert job.state == t.JOB_STATE_ACTIVE and job.cancel_requested


async def test_remove_jobs_by_filter_with_tokens_and_limits(
    stub: qrpc.QueueServiceStub, engine: Engine
) -> None:
    jobs = [
        new_job("export", tags=["tmp"] if i % 3 == 0 else [], group="g" if i % 2 else "") for i in range(30)
    ]
    ids = await add_many(stub, jobs)
    tmp = [i for i, j in zip(ids, jobs, strict=True) if "tmp" in j.options.metadata.tags]
    flt = jpb.JobFilter(tag="tmp")
    removed, token, calls = 0, "", 0
    while True:
        r = await stub.RemoveJobs(
            jpb.RemoveJobsRequest(
                queue_name=Q, state=t.JOB_STATE_WAITING, filter=flt, limit=3, page_token=token
            )
        )
        removed, token, calls = removed + r.count, r.next_page_token, calls + 1
        if not token:
            break
    assert removed == len(tmp) == 10 and calls == 4
    for job_id in tmp:
        await expect(Code.NOT_FOUND, stub.GetJob(jpb.GetJobRequest(queue_name=Q, job_id=job_id)))
    left, _ = await listed(stub)
    assert sorted(left) == sorted(set(ids) - set(tmp))
    # Every job left is claimed, and nothing else: the lists and the group counts stayed true.
    claimed = (await engine.claim(Q, 100, "tok", "w", 60_000)).jobs
    assert sorted(j.id for j in claimed) == sorted(left)
    await engine.complete(Q, [(j.id, "tok", b"1", "") for j in claimed])
    r = await stub.RemoveJobs(jpb.RemoveJobsRequest(queue_name=Q, state=t.JOB_STATE_COMPLETED))
    assert (r.count, r.next_page_token) == (20, "")
    assert (await listed(stub, t.JOB_STATE_COMPLETED))[0] == []


async def test_bad_filters_and_bulk_requests_are_refused_precisely(stub: qrpc.QueueServiceStub) -> None:
    late, early = Timestamp(seconds=2_000_000_000), Timestamp(seconds=1_000_000_000)

    def lst(**flt: Any) -> Any:
        return stub.ListJobs(
            jpb.ListJobsRequest(queue_name=Q, state=t.JOB_STATE_WAITING, filter=jpb.JobFilter(**flt))
        )

    await expect(Code.INVALID_ARGUMENT, lst(created_after=late, created_before=early), "filter.created_after")
    await expect(Code.INVALID_ARGUMENT, lst(created_after=late, created_before=late), "is not before")
    await expect(Code.INVALID_ARGUMENT, lst(created_after=Timestamp(seconds=1, nanos=-1)), "valid timestamp")
    await expect(Code.INVALID_ARGUMENT, lst(name="*"), "filter.name", "leave it empty")
    await expect(Code.INVALID_ARGUMENT, lst(name="se*nd"), "filter.name", "only end a name")
    await expect(Code.INVALID_ARGUMENT, lst(name="*send"), "filter.name")
    await expect(Code.INVALID_ARGUMENT, lst(tag="  "), "filter.tag", "blank")
    await expect(Code.INVALID_ARGUMENT, lst(group="g\n"), "filter.group", "control characters")
    await expect(Code.INVALID_ARGUMENT, lst(correlation_id="c" * 201), "filter.correlation_id", "200")
    missing = stub.ListJobs(
        jpb.ListJobsRequest(queue_name="nope", state=t.JOB_STATE_FAILED, filter=jpb.JobFilter(tag="x"))
    )
    await expect(Code.NOT_FOUND, missing, "nope")
    bad_token = jpb.RemoveJobsRequest(queue_name=Q, state=t.JOB_STATE_FAILED, page_token="abc")
    await expect(Code.INVALID_ARGUMENT, stub.RemoveJobs(bad_token), "page_token", "RemoveJobs")
    # An older ListJobs token ("o:10") is refused by the bulk calls, which take back only their own tokens.
    other = jpb.CancelJobsRequest(queue_name=Q, state=t.JOB_STATE_WAITING, page_token="bzoxMA==")
    await expect(Code.INVALID_ARGUMENT, stub.CancelJobs(other), "not a token returned by CancelJobs")
    await expect(
        Code.INVALID_ARGUMENT,
        stub.RemoveJobs(jpb.RemoveJobsRequest(queue_name=Q, state=t.JOB_STATE_ACTIVE)),
        "ACTIVE",
        "CancelJobs",
    )
    await expect(
        Code.INVALID_ARGUMENT, stub.RemoveJobs(jpb.RemoveJobsRequest(queue_name=Q)), "state", "is required"
    )
    await expect(
        Code.INVALID_ARGUMENT,
        stub.CancelJobs(jpb.CancelJobsRequest(queue_name=Q, state=t.JOB_STATE_COMPLETED)),
        "finished jobs cannot be cancelled",
    )
    await expect(
        Code.INVALID_ARGUMENT,
        stub.CancelJobs(jpb.CancelJobsRequest(queue_name=Q, state=t.JOB_STATE_WAITING, limit=1001)),
        "limit",
        "1000",
    )
    await expect(
        Code.INVALID_ARGUMENT,
        stub.RetryFailedJobs(jpb.RetryFailedJobsRequest(queue_name=Q, filter=jpb.JobFilter(name="a*b"))),
        "filter.name",
    )
    await expect(
        Code.NOT_FOUND,
        stub.CancelJobs(jpb.CancelJobsRequest(queue_name="nope", state=t.JOB_STATE_DELAYED)),
        "nope",
    )
    await expect(
        Code.NOT_FOUND,
        stub.RetryFailedJobs(jpb.RetryFailedJobsRequest(queue_name="nope", limit=5)),
        "nope",
    )
