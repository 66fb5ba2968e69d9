"""Pull workers (no stream): FetchJobs, CompleteJob, FailJob, ExtendJobLease and ReportJobProgress, over gRPC
and over HTTP, against a real server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import aiohttp
import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from queue_manager import FailedPreconditionError, JobState, NotFoundError, QueueManager, SyncQueueManager
from queue_manager.v1 import pull_pb2 as pb
from queue_manager.v1 import queue_service_pb2_grpc
from queue_manager_server.engine.records import ClaimResult
from tests.conftest import RunningServer, ServerFactory, time_out_now
from tests.rawworker import eventually

WAIT = 30.0


def seconds(s: float) -> Duration:
    d = Duration()
    d.FromMilliseconds(round(s * 1000))
    return d


@pytest.fixture
async def stub(server: RunningServer) -> AsyncIterator[queue_service_pb2_grpc.QueueServiceStub]:
    async with grpc.aio.insecure_channel(server.address) as channel:
        yield queue_service_pb2_grpc.QueueServiceStub(channel)


@pytest.fixture
async def qm(server: RunningServer) -> AsyncIterator[QueueManager]:
    async with QueueManager(address=server.address) as client:
        await client.register_queue("pull")
        yield client


async def fetch(
    stub: queue_service_pb2_grpc.QueueServiceStub, queue: str = "pull", max_jobs: int = 10, **kw: Any
) -> list[Any]:
    response = await stub.FetchJobs(pb.FetchJobsRequest(queue_name=queue, max_jobs=max_jobs, **kw))
    return list(response.jobs)


async def refused(call: Any, code: grpc.StatusCode, *words: str) -> str:
    """Awaits a call that must fail with `code`, its message holding every one of `words`."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, info.value.details()
    details = info.value.details() or ""
    for w in words:
        assert w in details, details
    return details


async def test_fetch_then_complete(qm: QueueManager, stub: queue_service_pb2_grpc.QueueServiceStub) -> None:
    job = await qm.add_job("pull", "resize", {"w": 3})
    [leased] = await fetch(stub)
    assert leased.job.id == job.id and leased.job.name == "resize" and leased.lease_token
    assert leased.job.data.json.struct_value.fields["w"].number_value == 3
    assert leased.lease_expire_time.seconds > 0
    assert (await qm.get_job("pull", job.id)).state == JobState.ACTIVE
    result = pb.CompleteJobRequest(
        queue_name="pull", job_id=job.id, lease_token=leased.lease_token, duration=seconds(0.02)
    )
    result.result.json.number_value = 9
    await stub.CompleteJob(result)
    done = await qm.get_job("pull", job.id)
    assert (done.state, done.result) == (JobState.COMPLETED, 9)
    metrics = await qm.get_queue_metrics("pull")
    assert metrics.completed_total == 1 and metrics.average_processing_time is not None


async def test_a_result_that_is_not_json_is_refused_naming_the_result(qm: QueueManager) -> None:
    # It read "data must be …", which sent the reader to the job's data; nothing is sent and the lease holds.
    job = await qm.add_job("pull", "resize", {"w": 3})
    [pulled] = await qm.fetch_jobs("pull")
    with pytest.raises(TypeError, match=r"^result must be JSON-serialisable or bytes: "):
        await pulled.complete({1, 2})
    await pulled.complete({"w": 6})
    assert (await qm.get_job("pull", job.id)).result == {"w": 6}


async def test_fetch_fail_retries(qm: QueueManager, stub: queue_service_pb2_grpc.QueueServiceStub) -> None:
    job = await qm.add_job("pull", "flaky", None, {"attempts": 2})
    [leased] = await fetch(stub)
    failed = await stub.FailJob(
        pb.FailJobRequest(queue_name="pull", job_id=job.id, lease_token=leased.lease_token, message="boom")
    )
    assert failed.will_retry
    [again] = await fetch(stub)
    assert again.job.id == job.id and again.job.attempts_made == 1 and again.lease_token != leased.lease_token
    last = await stub.FailJob(
        pb.FailJobRequest(queue_name="pull", job_id=job.id, lease_token=again.lease_token, message="boom 2")
    )
    assert not last.will_retry
    stored = await qm.get_job("pull", job.id)
    assert stored.state == JobState.FAILED and stored.failed_reason == "boom 2"
    assert (await qm.get_queue_metrics("pull")).failed_total == 1


async def test_fail_with_no_retry_and_retry_after(
    qm: QueueManager, stub: queue_service_pb2_grpc.QueueServiceStub
) -> None:
    a = await qm.add_job("pull", "a", None, {"attempts": 5})
    [leased] = await fetch(stub)
    ref = {"queue_name": "pull", "job_id": a.id, "lease_token": leased.lease_token}
    final = await stub.FailJob(pb.FailJobRequest(**ref, message="bad input", do_not_retry=True))
    assert not final.will_retry and not final.HasField("retry_time")
    assert (await qm.get_job("pull", a.id)).state == JobState.FAILED
    b = await qm.add_job("pull", "b", None, {"attempts": 5})
    [leased] = await fetch(stub)
    ref = {"queue_name": "pull", "job_id": b.id, "lease_token": leased.lease_token}
    slow = await stub.FailJob(pb.FailJobRequest(**ref, message="429", retry_after=seconds(60)))
    assert slow.will_retry and slow.retry_time.seconds > 0
    stored = await qm.get_job("pull", b.id)
    assert stored.state == JobState.DELAYED and stored.attempts_made == 0
    await qm.add_job("pull", "c", None)
    assert await fetch(stub) == []  # the queue is held by the retry-after, as for a stream worker


async def test_long_poll_is_woken_by_an_add(
    server: RunningServer, qm: QueueManager, stub: queue_service_pb2_grpc.QueueServiceStub
) -> None:
    pulls = server.app.queue_service.pulls  # type: ignore[union-attr]
    poll = asyncio.create_task(fetch(stub, wait=seconds(25)))

    async def waiting() -> bool:
        return pulls.waiting("pull") == 1

    await eventually(waiting)
    job = await qm.add_job("pull", "late", None)
    async with asyncio.timeout(WAIT):
        [leased] = await poll
    assert leased.job.id == job.id


async def test_long_poll_times_out_empty_without_polling(
    server: RunningServer, qm: QueueManager, stub: queue_service_pb2_grpc.QueueServiceStub
) -> None:
    engine = server.app.engine
    assert engine is not None
    claims: list[int] = []
    claim = engine.claim

    async def counted(*args: Any, **kwargs: Any) -> ClaimResult:
        claims.append(1)
        return await claim(*args, **kwargs)

    engine.claim = counted  # type: ignore[method-assign]
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await fetch(stub, wait=seconds(1.5)) == []
    assert loop.time() - started >= 1.4
    assert claims == [1], "an idle long poll claims once, then waits for wake-ups"
    started = loop.time()
    assert await fetch(stub) == []  # no wait: answered at once
    assert loop.time() - started < 1.0


async def test_max_jobs_is_honoured(qm: QueueManager, stub: queue_service_pb2_grpc.QueueServiceStub) -> None:
    await qm.add_bulk("pull", [{"name": f"j{i}"} for i in range(5)])
    assert len(await fetch(stub, max_jobs=3)) == 3
    assert len(await fetch(stub, max_jobs=3)) == 2
    assert await fetch(stub, max_jobs=3) == []


async def test_paused_queue_gives_nothing_until_resumed(
    server: RunningServer, qm: QueueManager, stub: queue_service_pb2_grpc.QueueServiceStub
) -> None:
    await qm.pause_queue("pull")
    job = await qm.add_job("pull", "held", None)
    assert await fetch(stub) == []
    poll = asyncio.create_task(fetch(stub, wait=seconds(25)))
    pulls = server.app.queue_service.pulls  # type: ignore[union-attr]

    async def waiting() -> bool:
        return pulls.waiting("pull") == 1

    await eventually(waiting)
    await qm.resume_queue("pull")
    async with asyncio.timeout(WAIT):
        [leased] = await poll
    assert leased.job.id == job.id


async def test_rate_limit_is_honoured(
    qm: QueueManager, stub: queue_service_pb2_grpc.QueueServiceStub
) -> None:
    await qm.register_queue("limited", rate_limit={"max": 2, "duration": 60_000, "burst": 2})
    await qm.add_bulk("limited", [{"name": f"j{i}"} for i in range(5)])
    assert len(await fetch(stub, "limited", max_jobs=5)) == 2
    assert await fetch(stub, "limited", max_jobs=5) == []


async def test_routed_jobs_are_never_fetched(
    qm: QueueManager, stub: queue_service_pb2_grpc.QueueServiceStub
) -> None:
    await qm.add_job("pull", "gpu", None, {"worker_labels": {"gpu": "a100"}})
    plain = await qm.add_job("pull", "plain", None)
    assert [j.job.id for j in await fetch(stub)] == [plain.id]
    assert await fetch(stub) == []


async def test_stale_lease_is_refused(
    qm: QueueManager, stub: queue_service_pb2_grpc.QueueServiceStub
) -> None:
    job = await qm.add_job("pull", "j", None)
    [leased] = await fetch(stub)
    ref = {"queue_name": "pull", "job_id": job.id, "lease_token": "not-the-token"}
    for call in (
        stub.CompleteJob(pb.CompleteJobRequest(**ref)),
        stub.FailJob(pb.FailJobRequest(**ref, message="x")),
        stub.ExtendJobLease(pb.ExtendJobLeaseRequest(**ref)),
        stub.ReportJobProgress(pb.ReportJobProgressRequest(**ref, logs=[{"message": "x"}])),
    ):
        # An extension or a progress report has no result: the message says the call changed nothing.
        await refused(call, grpc.StatusCode.FAILED_PRECONDITION, "not held", job.id, "changed nothing")
    assert (await qm.get_job("pull", job.id)).state == JobState.ACTIVE
    await stub.CompleteJob(
        pb.CompleteJobRequest(queue_name="pull", job_id=job.id, lease_token=leased.lease_token)
    )
    await refused(  # completed: the lease is gone
        stub.CompleteJob(
            pb.CompleteJobRequest(queue_name="pull", job_id=job.id, lease_token=leased.lease_token)
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "its run was reported already",
    )
    await refused(
        stub.CompleteJob(pb.CompleteJobRequest(queue_name="pull", job_id="nope", lease_token="t")),
        grpc.StatusCode.NOT_FOUND,
        "nope",
    )


async def test_lease_expiry_is_recovered_by_the_reaper(
    qm: QueueManager, stub: queue_service_pb2_grpc.QueueServiceStub
) -> None:
    job = await qm.add_job("pull", "j", None, {"attempts": 3})
    [leased] = await fetch(stub, lease_duration=seconds(1))
    # Nothing extends the lease: the reaper (every 200 ms in tests) puts the job back, and its wake-up
    # answers this long poll.
    async with asyncio.timeout(WAIT):
        [again] = await fetch(stub, wait=seconds(25))
    assert again.job.id == job.id and again.redelivery and again.job.stalled_count == 1
    await refused(
        stub.CompleteJob(
            pb.CompleteJobRequest(queue_name="pull", job_id=job.id, lease_token=leased.lease_token)
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "lease",
    )
    await stub.CompleteJob(
        pb.CompleteJobRequest(queue_name="pull", job_id=job.id, lease_token=again.lease_token)
    )
    assert (await qm.get_job("pull", job.id)).state == JobState.COMPLETED


async def test_extend_lease_keeps_the_job(
    qm: QueueManager, stub: queue_service_pb2_grpc.QueueServiceStub
) -> None:
    job = await qm.add_job("pull", "long", None)
    [leased] = await fetch(stub, lease_duration=seconds(1))
    ref = {"queue_name": "pull", "job_id": job.id, "lease_token": leased.lease_token}
    first = leased.lease_expire_time.ToMilliseconds()
    extended = await stub.ExtendJobLease(pb.ExtendJobLeaseRequest(**ref, lease_duration=seconds(600)))
    assert extended.lease_expire_time.ToMilliseconds() > first + 500_000 and not extended.cancel_requested
    progress = pb.ReportJobProgressRequest(**ref, logs=[{"message": "half way"}])
    progress.progress.number_value = 50
    await stub.ReportJobProgress(progress)
    stored = await qm.get_job("pull", job.id)
    assert stored.state == JobState.ACTIVE and stored.progress == 50
    lines, _ = await qm.get_job_logs("pull", job.id)
    assert [line.message for line in lines] == ["half way"]
    await qm.cancel_job("pull", job.id)
    again = await stub.ExtendJobLease(pb.ExtendJobLeaseRequest(**ref))
    assert again.cancel_requested


async def test_completion_starts_the_chain(
    qm: QueueManager, stub: queue_service_pb2_grpc.QueueServiceStub
) -> None:
    await qm.register_queue("next")
    first = await qm.add_job(
        "pull", "load", None, {"chain_to": [{"queue_name": "next", "job_name": "step2"}]}
    )
    [leased] = await fetch(stub)
    await stub.CompleteJob(
        pb.CompleteJobRequest(queue_name="pull", job_id=first.id, lease_token=leased.lease_token)
    )
    async with asyncio.timeout(WAIT):
        [link] = await fetch(stub, "next", wait=seconds(25))
    assert link.job.name == "step2" and link.job.parents[0].job.job_id == first.id


async def test_bad_inputs_are_refused(
    qm: QueueManager, stub: queue_service_pb2_grpc.QueueServiceStub
) -> None:
    await refused(fetch(stub, max_jobs=0), grpc.StatusCode.INVALID_ARGUMENT, "max_jobs", "1 to 1,000")
    await refused(fetch(stub, max_jobs=1001), grpc.StatusCode.INVALID_ARGUMENT, "max_jobs", "1001")
    await refused(fetch(stub, wait=seconds(31)), grpc.StatusCode.INVALID_ARGUMENT, "wait", "30-second")
    await refused(
        fetch(stub, lease_duration=seconds(0.5)), grpc.StatusCode.INVALID_ARGUMENT, "lease_duration"
    )
    await refused(fetch(stub, "nowhere"), grpc.StatusCode.NOT_FOUND, "nowhere", "not registered")
    await refused(fetch(stub, "bad:name"), grpc.StatusCode.INVALID_ARGUMENT, "queue_name")
    await refused(fetch(stub, worker_name="w" * 201), grpc.StatusCode.INVALID_ARGUMENT, "worker_name", "200")
    await refused(
        stub.CompleteJob(pb.CompleteJobRequest(queue_name="pull", job_id="j")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "lease_token",
    )
    job = await qm.add_job("pull", "j", None)
    [leased] = await fetch(stub)
    big = pb.CompleteJobRequest(queue_name="pull", job_id=job.id, lease_token=leased.lease_token)
    big.result.raw = b"x" * (2 << 20)
    await refused(stub.CompleteJob(big), grpc.StatusCode.INVALID_ARGUMENT, "result")
    assert (await qm.get_job("pull", job.id)).state == JobState.ACTIVE  # refused: nothing changed
    # A negative run time was taken as 0 and the run recorded; a lease of a day named the 10-year bound.
    token = leased.lease_token
    for request in (
        stub.CompleteJob(
            pb.CompleteJobRequest(queue_name="pull", job_id=job.id, lease_token=token, duration=seconds(-1))
        ),
        stub.FailJob(
            pb.FailJobRequest(queue_name="pull", job_id=job.id, lease_token=token, duration=seconds(-1))
        ),
    ):
        await refused(request, grpc.StatusCode.INVALID_ARGUMENT, "duration: must not be negative")
    assert (await qm.get_job("pull", job.id)).state == JobState.ACTIVE
    for d in (seconds(86_400), seconds(1e9)):
        details = await refused(
            fetch(stub, lease_duration=d), grpc.StatusCode.INVALID_ARGUMENT, "lease_duration"
        )
        assert "use 1 second to 60 minutes" in details, details


async def test_cancelled_long_poll_leaves_nothing_claimed(
    server: RunningServer, qm: QueueManager, stub: queue_service_pb2_grpc.QueueServiceStub
) -> None:
    pulls = server.app.queue_service.pulls  # type: ignore[union-attr]
    call = stub.FetchJobs(pb.FetchJobsRequest(queue_name="pull", max_jobs=1, wait=seconds(25)))

    async def waiting() -> bool:
        return pulls.waiting("pull") == 1

    await eventually(waiting)
    call.cancel()

    async def gone() -> bool:
        return pulls.waiting("pull") == 0

    await eventually(gone)
    job = await qm.add_job("pull", "j", None)
    assert (await qm.get_job("pull", job.id)).state == JobState.WAITING


async def test_call_cancelled_during_its_claim_hands_the_jobs_back(
    server: RunningServer, qm: QueueManager, stub: queue_service_pb2_grpc.QueueServiceStub
) -> None:
    engine = server.app.engine
    assert engine is not None
    job = await qm.add_job("pull", "j", None)
    claim, entered, go_on = engine.claim, asyncio.Event(), asyncio.Event()

    async def slow(*args: Any, **kwargs: Any) -> ClaimResult:
        res = await claim(*args, **kwargs)  # leased now; the answer is held back
        entered.set()
        await go_on.wait()
        return res

    engine.claim = slow  # type: ignore[method-assign]
    call = stub.FetchJobs(pb.FetchJobsRequest(queue_name="pull", max_jobs=1))
    async with asyncio.timeout(WAIT):
        await entered.wait()
    assert (await qm.get_job("pull", job.id)).state == JobState.ACTIVE
    call.cancel()
    pulls = server.app.queue_service.pulls  # type: ignore[union-attr]

    async def gone() -> bool:
        return pulls.waiting("pull") == 0

    await eventually(gone)  # the handler was cancelled
    go_on.set()

    async def back() -> bool:
        return (await qm.get_job("pull", job.id)).state == JobState.WAITING

    await eventually(back)
    stored = await qm.get_job("pull", job.id)
    assert stored.stalled_count == 0 and stored.attempts_made == 0


async def test_named_pull_worker_is_listed(
    qm: QueueManager, stub: queue_service_pb2_grpc.QueueServiceStub
) -> None:
    await qm.add_job("pull", "j", None)
    [leased] = await fetch(stub, worker_name="cron-7")
    [worker] = [w for w in await qm.list_workers("pull") if w.worker_id == "cron-7"]
    assert worker.language == "pull" and worker.queues == ["pull"]
    assert leased.job.id


# ---- HTTP -------------------------------------------------------------------------------------------


async def test_http_pull_worker_end_to_end(server_factory: ServerFactory) -> None:
    server = await server_factory(http_listen="127.0.0.1:0")
    base = f"http://{server.app.http_address}/api/v1/queues/mail"
    async with QueueManager(address=server.address) as admin, aiohttp.ClientSession() as http:
        await admin.register_queue("mail")

        async def post(path: str, body: Any) -> tuple[int, Any]:
            async with http.post(base + path, data=json.dumps(body)) as r:
                return r.status, json.loads(await r.text())

        poll = asyncio.create_task(post("/jobs:fetch", {"max_jobs": 2, "wait": "20s", "worker_name": "sh"}))
        pulls = server.app.queue_service.pulls  # type: ignore[union-attr]

        async def waiting() -> bool:
            return pulls.waiting("mail") == 1

        await eventually(waiting)
        a = await admin.add_job("mail", "send", {"to": "a"}, {"attempts": 2})
        async with asyncio.timeout(WAIT):
            status, fetched = await poll
        assert status == 200, fetched
        [leased] = fetched["jobs"]
        assert leased["job"]["id"] == a.id and leased["job"]["data"]["json"] == {"to": "a"}
        token = leased["lease_token"]
        status, ext = await post(f"/jobs/{a.id}:extendLease", {"lease_token": token, "lease_duration": "60s"})
        assert status == 200 and ext["lease_expire_time"]
        status, body = await post(f"/jobs/{a.id}:fail", {"lease_token": token, "message": "smtp down"})
        assert status == 200 and body["will_retry"] is True
        status, fetched = await post("/jobs:fetch", {"max_jobs": 1})
        token = fetched["jobs"][0]["lease_token"]
        status, body = await post(
            f"/jobs/{a.id}:complete", {"lease_token": token, "result": {"json": "sent"}}
        )
        assert (status, body) == (200, {})
        assert (await admin.get_job("mail", a.id)).result == "sent"
        status, body = await post(f"/jobs/{a.id}:complete", {"lease_token": token})
        assert status == 409 and body["code"] == "FAILED_PRECONDITION" and "lease" in body["message"]
        status, body = await post("/jobs:fetch", {"max_jobs": 0})
        assert status == 400 and "max_jobs" in body["message"]
        status, body = await post("/jobs:fetch", {})
        assert status == 400
        async with http.post(
            f"http://{server.app.http_address}/api/v1/queues/nowhere/jobs:fetch", data='{"max_jobs": 1}'
        ) as r:
            assert r.status == 404
        status, fetched = await post("/jobs:fetch", {"max_jobs": 1, "wait": "0.3s"})
        assert (status, fetched) == (200, {"jobs": []})


async def test_an_http_caller_hanging_up_ends_its_long_poll_and_claims_nothing(
    server_factory: ServerFactory,
) -> None:
    """The HTTP port cancels a handler whose caller left (aiohttp's handler_cancellation): the loopback
    FetchJobs is cancelled with it, so a job added afterwards waits for a caller that is still there."""
    server = await server_factory(http_listen="127.0.0.1:0")
    host, port = server.app.http_address.rsplit(":", 1)
    pulls = server.app.queue_service.pulls  # type: ignore[union-attr]
    async with QueueManager(address=server.address) as admin:
        await admin.register_queue("gone")
        body = json.dumps({"max_jobs": 1, "wait": "25s"}).encode()
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST /api/v1/queues/gone/jobs:fetch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()

        async def polling() -> bool:
            return pulls.waiting("gone") == 1

        async def left() -> bool:
            return pulls.waiting("gone") == 0

        await eventually(polling)
        writer.close()  # the caller hangs up
        await writer.wait_closed()
        await eventually(left)
        job = await admin.add_job("gone", "send")
        assert (await admin.get_job("gone", job.id)).state == JobState.WAITING
        assert await reader.read() == b""  # no answer went out


# ---- Python clients ---------------------------------------------------------------------------------


async def test_client_fetch_complete_fail_extend(qm: QueueManager) -> None:
    a = await qm.add_job("pull", "a", {"n": 1}, {"attempts": 2})
    b = await qm.add_job("pull", "b", b"\x00raw")
    first, second = await qm.fetch_jobs("pull", max_jobs=5, worker_name="py")
    assert (first.id, first.name, first.data, first.queue_name) == (a.id, "a", {"n": 1}, "pull")
    assert second.data == b"\x00raw" and not first.redelivery
    before = first.lease_expires
    assert await first.extend_lease(120) > before and not first.cancel_requested
    await first.report_progress(40, logs=["step 1"])
    await first.complete({"ok": True})
    outcome = await second.fail("boom")
    assert not outcome.will_retry and outcome.retry_at is None  # one attempt only
    assert (await qm.get_job("pull", a.id)).result == {"ok": True}
    assert (await qm.get_job("pull", b.id)).state == JobState.FAILED
    with pytest.raises(FailedPreconditionError, match="lease"):
        await first.complete("again")
    metrics = await qm.get_queue_metrics("pull")
    assert (metrics.completed_total, metrics.failed_total) == (1, 1)
    assert metrics.average_processing_time is not None  # the client reports each run's duration


async def test_client_long_poll_and_bad_arguments(server: RunningServer, qm: QueueManager) -> None:
    pulls = server.app.queue_service.pulls  # type: ignore[union-attr]
    poll = asyncio.create_task(qm.fetch_jobs("pull", wait=timedelta(seconds=20)))

    async def waiting() -> bool:
        return pulls.waiting("pull") == 1

    await eventually(waiting)
    job = await qm.add_job("pull", "j", None)
    async with asyncio.timeout(WAIT):
        [pulled] = await poll
    assert pulled.id == job.id
    assert await qm.fetch_jobs("pull", wait=0.2) == []
    with pytest.raises(ValueError, match="max_jobs"):
        await qm.fetch_jobs("pull", max_jobs=0)
    with pytest.raises(ValueError, match="wait"):
        await qm.fetch_jobs("pull", wait=31)
    with pytest.raises(NotFoundError):
        await qm.fetch_jobs("nowhere")


async def test_sync_client_pull_worker(server: RunningServer) -> None:
    def work() -> None:
        with SyncQueueManager(address=server.address) as sync:
            sync.register_queue("sync-pull")
            job = sync.add_job("sync-pull", "j", {"x": 1})
            [pulled] = sync.fetch_jobs("sync-pull", max_jobs=10)
            assert pulled.data == {"x": 1}
            pulled.extend_lease(60)
            assert pulled.fail("try again", retry_after=30).will_retry
            assert sync.get_job("sync-pull", job.id).state == JobState.DELAYED
            assert sync.fetch_jobs("sync-pull") == []

    await asyncio.to_thread(work)  # the server runs on this thread's event loop


async def test_a_fetched_run_past_its_timeout_is_failed_and_its_late_outcome_refused(
    server: RunningServer, qm: QueueManager, stub: queue_service_pb2_grpc.QueueServiceStub
) -> None:
    qs = server.app.queue_service
    assert qs is not None and qs.deadline_hook is not None
    armed: list[tuple[str, int]] = []
    hook = qs.deadline_hook

    def record(queue: str, in_ms: int) -> None:
        armed.append((queue, in_ms))
        hook(queue, in_ms)

    qs.deadline_hook = record
    job = await qm.add_job("pull", "slow", None, {"attempts": 2, "timeout": 60_000})
    [leased] = await fetch(stub)
    assert armed == [
        ("pull", 60_000)
    ]  # the timeout check is armed for the fetched run, as for a streamed one
    await time_out_now(server, "pull", job.id)
    stored = await qm.get_job("pull", job.id)
    assert stored.state != JobState.ACTIVE and stored.attempts_made == 1
    await refused(
        stub.CompleteJob(
            pb.CompleteJobRequest(queue_name="pull", job_id=job.id, lease_token=leased.lease_token)
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "lease",
    )


async def test_concurrency_cap_holds_fetches_until_a_run_ends(
    server: RunningServer, qm: QueueManager, stub: queue_service_pb2_grpc.QueueServiceStub
) -> None:
    await qm.register_queue("capped", concurrency=1)
    await qm.add_bulk("capped", [{"name": f"j{i}"} for i in range(3)])
    [first] = await fetch(stub, "capped", max_jobs=3)
    poll = asyncio.create_task(fetch(stub, "capped", max_jobs=3, wait=seconds(25)))
    pulls = server.app.queue_service.pulls  # type: ignore[union-attr]

    async def waiting() -> bool:
        return pulls.waiting("capped") == 1

    await eventually(waiting)  # at the cap: the long poll waits for a run to end
    await stub.CompleteJob(
        pb.CompleteJobRequest(queue_name="capped", job_id=first.job.id, lease_token=first.lease_token)
    )
    async with asyncio.timeout(WAIT):
        assert len(await poll) == 1  # the freed slot's wake-up answers it, one job under the cap
