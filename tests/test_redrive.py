"""Edit and requeue, and redriving the dead-letter queue, end to end: RetryJob with new data,
RedriveDeadLetters (after the original was retried, kept or removed; one original queue; racing a worker
that consumes the dead-letter queue), their errors, the CLI (``qm jobs retry --data``, ``qm dlq
list|redrive``) and the HTTP routes. A real server on a real Valkey, driven through the Python client and
worker; the engine's steps and their replay are in tests/test_redrive_engine.py."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from queue_manager import (
    KEEP_DATA,
    FailedPreconditionError,
    InvalidArgumentError,
    JobContext,
    JobState,
    NotFoundError,
    QueueManager,
    SyncQueueManager,
    UnrecoverableError,
)
from queue_manager_server.engine import Engine
from queue_manager_server.engine.redrive import DeadLetters, original_job
from tests.conftest import RunningServer, ServerFactory
from tests.rawworker import eventually
from tests.test_cli import qm_cli, qm_json
from tests.test_client_e2e import Calls

WAIT = 20.0
DLQ = "dead-letter-queue"


@pytest.fixture
async def qm(server: RunningServer) -> AsyncIterator[QueueManager]:
    client = QueueManager(address=server.address, concurrency=4, shutdown_grace=5.0)
    yield client
    await client.shutdown()


async def failed_for_good(qm: QueueManager, queue: str, data: object, name: str = "job") -> str:
    """Adds a job and fails it for good through a short-lived worker of its own; returns its id once its
    dead-letter copy is written."""
    job = await qm.add_job(queue, name, data)
    await fail_for_good(qm, queue, job.id)
    return job.id


async def fail_for_good(qm: QueueManager, queue: str, job_id: str) -> None:
    """Fails a waiting job for good through a short-lived worker of its own; returns once its dead-letter copy
    is written."""
    helper = QueueManager(address=qm.address)

    @helper.processor(queue)
    async def fail(ctx: JobContext) -> None:
        raise UnrecoverableError(f"bad input {ctx.data!r}")

    await helper.start_workers()
    try:
        assert (await qm.wait_for_job(queue, job_id, timeout=WAIT)).state is JobState.FAILED
    finally:
        await helper.shutdown()
    copy_id = f"{queue}:{job_id}"

    async def copied() -> bool:
        try:
            await qm.get_job(DLQ, copy_id)
        except NotFoundError:
            return False
        return True

    await eventually(copied, WAIT)


# ---- retry with new data -------------------------------------------------------------------------


async def test_retry_with_new_data_runs_the_job_with_it(qm: QueueManager) -> None:
    await qm.register_queue("edit")
    job_id = await failed_for_good(qm, "edit", {"amount": -1})
    raw_id = await failed_for_good(qm, "edit", {"amount": -2})
    retried = await qm.retry_job("edit", job_id, data={"amount": 5})
    assert (retried.state, retried.data, retried.attempts_made) == (JobState.WAITING, {"amount": 5}, 0)
    assert (await qm.retry_job("edit", raw_id, data=b"\x00raw")).data == b"\x00raw"
    seen = Calls()

    @qm.processor("edit")
    async def work(ctx: JobContext) -> str:
        seen.add(ctx.data)
        return "ok"

    await qm.start_workers()
    await seen.wait_for(2)
    assert sorted(seen.items, key=repr) == sorted([{"amount": 5}, b"\x00raw"], key=repr)
    assert (await qm.wait_for_job("edit", job_id, timeout=WAIT)).result == "ok"


async def test_none_sets_json_null_and_the_default_keeps_the_data(
    qm: QueueManager, server: RunningServer
) -> None:
    """Everywhere data replaces a job's data (retry_job, redrive_dead_letters; async and sync clients alike)
    None is new data, JSON null, and the default (KEEP_DATA) keeps the job's data; a Payload whose json is a
    null Value is accepted as null."""
    await qm.register_queue("nul")
    kept, nulled, sync_kept, sync_nulled, by_value, copy_kept, copy_nulled = [
        await failed_for_good(qm, "nul", {"v": i}) for i in range(7)
    ]
    assert (await qm.retry_job("nul", kept, KEEP_DATA)).data == {"v": 0}
    assert (await qm.retry_job("nul", nulled, data=None)).data is None

    def sync_calls() -> tuple[Any, Any]:
        with SyncQueueManager(server.address) as client:
            return client.retry_job("nul", sync_kept).data, client.retry_job("nul", sync_nulled, None).data

    assert await asyncio.to_thread(sync_calls) == ({"v": 2}, None)
    from google.protobuf import struct_pb2

    from queue_manager.v1 import jobs_pb2, types_pb2

    null = types_pb2.Payload(json=struct_pb2.Value(null_value=struct_pb2.NULL_VALUE))
    request = jobs_pb2.RetryJobRequest(queue_name="nul", job_id=by_value, data=null)
    await qm._unary(qm._queue_stub().RetryJob, request)
    assert (await qm.get_job("nul", by_value)).data is None
    await qm.redrive_dead_letters(job_ids=[f"nul:{copy_kept}"])
    await qm.redrive_dead_letters(job_ids=[f"nul:{copy_nulled}"], data=None)
    assert (await qm.get_job("nul", copy_kept)).data == {"v": 5}
    assert (await qm.get_job("nul", copy_nulled)).data is None
    # What the processors see: null where it was asked, the kept data elsewhere.
    seen = Calls()

    @qm.processor("nul")
    async def work(ctx: JobContext) -> None:
        seen.add((ctx.id, ctx.data))

    await qm.start_workers()
    await seen.wait_for(7)
    ran = dict(seen.items)
    assert ran == {
        kept: {"v": 0},
        nulled: None,
        sync_kept: {"v": 2},
        sync_nulled: None,
        by_value: None,
        copy_kept: {"v": 5},
        copy_nulled: None,
    }


async def test_bad_data_or_a_job_not_retryable_changes_nothing(server_factory: ServerFactory) -> None:
    server = await server_factory(max_payload_bytes=100)
    qm = QueueManager(address=server.address)
    try:
        await qm.register_queue("edit")
        job_id = await failed_for_good(qm, "edit", {"v": 1})
        with pytest.raises(InvalidArgumentError, match="data"):
            await qm.retry_job("edit", job_id, data="x" * 200)
        job = await qm.get_job("edit", job_id)
        assert (job.state, job.data) == (JobState.FAILED, {"v": 1})
        waiting = await qm.add_job("edit", "waiting", {"v": 2})
        with pytest.raises(FailedPreconditionError, match="is waiting"):
            await qm.retry_job("edit", waiting.id, data={"v": 3})
        assert (await qm.get_job("edit", waiting.id)).data == {"v": 2}
        with pytest.raises(NotFoundError):
            await qm.retry_job("edit", "nope", data={"v": 3})
        with pytest.raises(ValueError, match=r"^data must be JSON .*JSON compliant"):
            await qm.retry_job("edit", job_id, data=float("nan"))
        # Bytes that say they are JSON and are not, and a payload with no body: refused by the server.
        from queue_manager.v1 import jobs_pb2, types_pb2

        stub = qm._queue_stub()
        broken = types_pb2.Payload(raw=b"{", content_type="application/json")
        for payload in (broken, types_pb2.Payload(content_type="application/json")):
            request = jobs_pb2.RetryJobRequest(queue_name="edit", job_id=job_id, data=payload)
            with pytest.raises(InvalidArgumentError, match=r"^INVALID_ARGUMENT: data: "):
                await qm._unary(stub.RetryJob, request)
        job = await qm.get_job("edit", job_id)
        assert (job.state, job.data) == (JobState.FAILED, {"v": 1})
    finally:
        await qm.shutdown()


# ---- redrive ----------------------------------------------------------------------------------------


async def test_redrive_retries_kept_originals_and_re_adds_removed_ones(qm: QueueManager) -> None:
    await qm.register_queue("pay")
    kept = await failed_for_good(qm, "pay", {"n": 1}, "charge")
    removed = await failed_for_good(qm, "pay", {"n": 2}, "refund")
    rerun = await failed_for_good(qm, "pay", {"n": 3}, "charge")
    await qm.remove_job("pay", removed)  # as retention would
    await qm.retry_job("pay", rerun)  # run again by hand meanwhile
    copies, _ = await qm.list_dead_letters()
    assert {c.original_job_id: c.failure_reason for c in copies} == {
        kept: "bad input {'n': 1}",
        removed: "bad input {'n': 2}",
        rerun: "bad input {'n': 3}",
    }
    result = await qm.redrive_dead_letters()
    pay = result.queues["pay"]
    assert (result.count, pay.retried, pay.added, pay.unchanged) == (3, 1, 1, 1)
    assert (await qm.list_dead_letters())[0] == []
    seen = Calls()

    @qm.processor("pay")
    async def work(ctx: JobContext) -> None:
        seen.add((ctx.id, ctx.name, ctx.data))

    await qm.start_workers()
    await seen.wait_for(3)
    assert sorted(seen.items) == sorted(
        [(kept, "charge", {"n": 1}), (removed, "refund", {"n": 2}), (rerun, "charge", {"n": 3})]
    )
    for job_id in (kept, removed, rerun):
        assert (await qm.wait_for_job("pay", job_id, timeout=WAIT)).state is JobState.COMPLETED


async def test_edit_the_copy_then_redrive_with_its_data(qm: QueueManager) -> None:
    await qm.register_queue("pay")
    job_id = await failed_for_good(qm, "pay", {"card": "expired"})
    copy = await qm.get_job(DLQ, f"pay:{job_id}")
    await qm.update_job_data(DLQ, copy.id, {**copy.data, "original_data": {"card": "renewed"}})
    result = await qm.redrive_dead_letters(job_ids=[copy.id], replace_data=True)
    assert (result.count, result.skipped) == (1, {})
    assert (await qm.get_job("pay", job_id)).data == {"card": "renewed"}


async def test_one_call_requeues_one_copy_with_new_data(qm: QueueManager) -> None:
    """RedriveDeadLettersRequest.data: no UpdateJobData on the copy first; the original runs with the new
    data, and a failure of that run leaves a new copy that records it."""
    await qm.register_queue("pay")
    job_id = await failed_for_good(qm, "pay", {"card": "expired"})
    gone_id = await failed_for_good(qm, "pay", {"card": "lost"}, "refund")
    await qm.remove_job("pay", gone_id)  # as retention would
    result = await qm.redrive_dead_letters(job_ids=[f"pay:{job_id}"], data={"card": "renewed"})
    assert (result.count, result.queues["pay"].retried, result.skipped) == (1, 1, {})
    job = await qm.get_job("pay", job_id)
    assert (job.state, job.data, job.attempts_made) == (JobState.WAITING, {"card": "renewed"}, 0)
    with pytest.raises(NotFoundError):
        await qm.get_job(DLQ, f"pay:{job_id}")
    await fail_for_good(qm, "pay", job_id)
    copy = await qm.get_job(DLQ, f"pay:{job_id}")
    assert copy.data["original_data"] == {"card": "renewed"}
    # A gone original is added anew with the new data, raw bytes too.
    result = await qm.redrive_dead_letters(DLQ, job_ids=[f"pay:{gone_id}"], data=b"\x00new")
    assert (result.count, result.queues["pay"].added) == (1, 1)
    again = await qm.get_job("pay", gone_id)
    assert (again.state, again.name, again.data) == (JobState.WAITING, "refund", b"\x00new")


async def test_a_redrive_with_data_refused_or_skipped_leaves_the_copy_as_it_was(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(max_payload_bytes=100)
    qm = QueueManager(address=server.address)
    try:
        await qm.register_queue("pay")
        await qm.register_queue("doomed")
        job_id = await failed_for_good(qm, "pay", {"card": "expired"})
        other_id = await failed_for_good(qm, "pay", {"card": "other"})
        doomed_id = await failed_for_good(qm, "doomed", {"v": 1})
        copy_id, other_copy, doomed_copy = f"pay:{job_id}", f"pay:{other_id}", f"doomed:{doomed_id}"
        stored = {c: (await qm.get_job(DLQ, c)).data for c in (copy_id, other_copy, doomed_copy)}
        new = {"card": "renewed"}
        with pytest.raises(ValueError, match="exactly one job_id"):
            await qm.redrive_dead_letters(job_ids=[copy_id, other_copy], data=new)
        with pytest.raises(ValueError, match=r"^data must be JSON .*JSON compliant"):
            await qm.redrive_dead_letters(job_ids=[copy_id], data=float("nan"))
        with pytest.raises(InvalidArgumentError, match=r"^INVALID_ARGUMENT: data: .*100"):
            await qm.redrive_dead_letters(job_ids=[copy_id], data="x" * 200)
        # The server checks the same, for clients that send anything.
        from queue_manager.v1 import queue_service_pb2 as qpb
        from queue_manager.v1 import types_pb2

        stub = qm._queue_stub()
        good = types_pb2.Payload(raw=b'{"card":"renewed"}', content_type="application/json")
        for ids, payload, says in (
            ([copy_id, other_copy], good, "exactly one job_id (2 given)"),
            ([], good, "exactly one job_id (0 given)"),
            ([copy_id], types_pb2.Payload(raw=b"{", content_type="application/json"), "JSON"),
            ([copy_id], types_pb2.Payload(content_type="application/json"), "holds no body"),
            ([copy_id], types_pb2.Payload(raw=b"y" * 101), "100"),
        ):
            request = qpb.RedriveDeadLettersRequest(queue_name=DLQ, job_ids=ids, data=payload)
            with pytest.raises(InvalidArgumentError, match=f"^INVALID_ARGUMENT: data: .*{re.escape(says)}"):
                await qm._unary(stub.RedriveDeadLetters, request)
        # An unknown copy is skipped; a copy whose original queue is gone is put back, its data as it was.
        result = await qm.redrive_dead_letters(job_ids=["pay:nope"], data=new)
        assert (result.count, result.skipped) == (0, {"pay:nope": "no such job in the dead-letter queue"})
        await qm.obliterate_queue("doomed", force=True)
        result = await qm.redrive_dead_letters(job_ids=[doomed_copy], data=new)
        assert (result.count, result.missing_queues) == (0, ["doomed"])
        for copy, data in stored.items():
            assert (await qm.get_job(DLQ, copy)).data == data
        job = await qm.get_job("pay", job_id)
        assert (job.state, job.data) == (JobState.FAILED, {"card": "expired"})
    finally:
        await qm.shutdown()


async def test_redrive_of_one_original_queue_only(qm: QueueManager) -> None:
    await qm.register_queue("a")
    await qm.register_queue("b")
    a_ids = [await failed_for_good(qm, "a", i) for i in range(3)]
    b_id = await failed_for_good(qm, "b", "b")
    result = await qm.redrive_dead_letters(original_queue="a", limit=2)
    assert (result.count, list(result.queues)) == (2, ["a"])
    states = [(await qm.get_job("a", i)).state for i in a_ids]
    assert sorted(states) == sorted([JobState.WAITING, JobState.WAITING, JobState.FAILED])
    assert (await qm.get_job("b", b_id)).state is JobState.FAILED
    left = {c.id for c in (await qm.list_dead_letters())[0]}
    assert left == {f"b:{b_id}"} | {
        f"a:{i}" for i, s in zip(a_ids, states, strict=True) if s is JobState.FAILED
    }


async def test_a_redrive_racing_a_worker_of_the_dead_letter_queue(qm: QueueManager) -> None:
    """Each copy is either consumed by the dead-letter queue's worker or sent back, never both, never
    neither."""
    await qm.register_queue("race")
    ids = await qm.add_bulk("race", [{"name": "j", "data": i} for i in range(60)])
    helper = QueueManager(address=qm.address, concurrency=20)

    @helper.processor("race")
    async def fail(ctx: JobContext) -> None:
        raise UnrecoverableError("no")

    await helper.start_workers()
    for job_id in ids:
        assert (await qm.wait_for_job("race", job_id, timeout=WAIT)).state is JobState.FAILED
    await helper.shutdown()
    await qm.pause_queue("race")  # the originals sent back wait here, to be counted

    async def all_copied() -> bool:
        return (await qm.get_queue_metrics(DLQ)).waiting == len(ids)

    await eventually(all_copied, WAIT)
    consumed = Calls()
    dlq_worker = QueueManager(address=qm.address, concurrency=8)

    @dlq_worker.processor(DLQ)
    async def consume(ctx: JobContext) -> None:
        consumed.add(ctx.id)
        await asyncio.sleep(0.005)

    await dlq_worker.start_workers()
    await consumed.wait_for(1)
    result = await qm.redrive_dead_letters()
    await dlq_worker.shutdown()
    sent_back = {i for i in ids if (await qm.get_job("race", i)).state is JobState.PAUSED}
    copies_done = {c.removeprefix("race:") for c in consumed.items}
    assert result.count == len(sent_back) > 0
    assert copies_done, "the dead-letter worker consumed nothing"
    assert not sent_back & copies_done, "a copy was consumed and its job sent back too"
    assert sent_back | copies_done == set(ids)
    for job_id in copies_done:
        assert (await qm.get_job("race", job_id)).state is JobState.FAILED


async def test_redrive_errors(qm: QueueManager) -> None:
    await qm.register_queue("src", dead_letter_queue="src-dlq")
    await qm.register_queue("plain", disable_dead_letter=True)
    with pytest.raises(NotFoundError, match="'nope' is not registered"):
        await qm.redrive_dead_letters("nope")
    with pytest.raises(InvalidArgumentError, match="'plain' is not a dead-letter queue"):
        await qm.redrive_dead_letters("plain")
    with pytest.raises(NotFoundError, match="'gone' is not registered"):
        await qm.redrive_dead_letters("src-dlq", original_queue="gone")
    assert (await qm.redrive_dead_letters("src-dlq")).count == 0
    with pytest.raises(ValueError, match="not both"):
        await qm.redrive_dead_letters("src-dlq", limit=1, job_ids=["src:x"])
    with pytest.raises(ValueError, match="not a dead-letter copy's id"):
        await qm.redrive_dead_letters("src-dlq", job_ids=["no-colon"])
    # The server checks the same, for clients that send anything.
    from queue_manager.v1 import queue_service_pb2 as qpb

    stub = qm._queue_stub()
    for request, field in (
        (qpb.RedriveDeadLettersRequest(queue_name="src-dlq", limit=1, job_ids=["src:x"]), "limit"),
        (qpb.RedriveDeadLettersRequest(queue_name="src-dlq", job_ids=["x"]), "job_ids[0]"),
        (
            qpb.RedriveDeadLettersRequest(queue_name="src-dlq", original_queue="src", job_ids=["o:x"]),
            "job_ids[0]",
        ),
        (qpb.RedriveDeadLettersRequest(queue_name="src-dlq", original_queue="src-dlq"), "original_queue"),
        (qpb.RedriveDeadLettersRequest(queue_name="src-dlq", job_ids=["a:b"] * 1001), "job_ids"),
    ):
        with pytest.raises(InvalidArgumentError, match=f"^INVALID_ARGUMENT: {re.escape(field)}: "):
            await qm._unary(stub.RedriveDeadLetters, request)


# ---- CLI and HTTP ---------------------------------------------------------------------------------


async def test_cli_retry_with_data_and_dlq_list_and_redrive(
    qm: QueueManager, server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    await qm.register_queue("cli")
    await qm.register_queue("other")
    first = await failed_for_good(qm, "cli", {"v": 1})
    second = await failed_for_good(qm, "cli", {"v": 2})
    other = await failed_for_good(qm, "other", {"v": 3})
    listed = await qm_json(capsys, server, "dlq", "list", "--queue", "cli")
    assert sorted(c["original_job_id"] for c in listed["dead_letters"]) == sorted([first, second])
    assert {c["failure_reason"] for c in listed["dead_letters"]} == {
        "bad input {'v': 1}",
        "bad input {'v': 2}",
    }
    status, out, _ = await qm_cli(capsys, "--server", server.address, "dlq", "list")
    assert status == 0 and "FAILURE_REASON" in out and f"other:{other}" in out

    retried = await qm_json(capsys, server, "jobs", "retry", "cli", first, "--data", '{"v": 10}')
    assert (retried["state"], retried["data"]) == ("waiting", {"v": 10})
    status, _, err = await qm_cli(
        capsys, "--server", server.address, "jobs", "retry", "cli", first, "--data", "{"
    )
    assert status == 2 and "--data is not valid JSON" in err

    redriven = await qm_json(capsys, server, "dlq", "redrive", "--queue", "cli")
    # The first job runs again already: its copy is dropped, the job left as it is.
    assert redriven["count"] == 2
    assert redriven["queues"]["cli"] == {
        "queue_name": "cli",
        "count": 2,
        "retried": 1,
        "added": 0,
        "unchanged": 1,
    }
    assert (await qm.get_job("cli", second)).state is JobState.WAITING
    assert (await qm.get_job("other", other)).state is JobState.FAILED
    status, out, _ = await qm_cli(
        capsys, "--server", server.address, "dlq", "redrive", "--id", f"other:{other}"
    )
    assert status == 0 and "redriven: 1" in out
    status, _, err = await qm_cli(capsys, "--server", server.address, "dlq", "redrive", "cli")
    assert status == 1 and "INVALID_ARGUMENT" in err and "'cli' is not a dead-letter queue" in err
    with pytest.raises(SystemExit):
        await qm_cli(capsys, "--server", server.address, "dlq", "redrive", "--limit", "0")
    assert "--limit: must be a whole number from 1" in capsys.readouterr().err


async def test_cli_retry_data_null_sets_null_and_no_data_keeps_the_data(
    qm: QueueManager, server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """JSON null is new data, as for `qm dlq redrive --data null`; without --data the job keeps its data."""
    await qm.register_queue("cli")
    nulled = await failed_for_good(qm, "cli", {"v": 1})
    kept = await failed_for_good(qm, "cli", {"v": 2})
    retried = await qm_json(capsys, server, "jobs", "retry", "cli", nulled, "--data", "null")
    assert (retried["state"], retried["data"]) == ("waiting", None)
    retried = await qm_json(capsys, server, "jobs", "retry", "cli", kept)
    assert (retried["state"], retried["data"]) == ("waiting", {"v": 2})


async def test_cli_redrive_one_copy_with_data(
    qm: QueueManager, server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    await qm.register_queue("cli")
    first = await failed_for_good(qm, "cli", {"v": 1})
    second = await failed_for_good(qm, "cli", {"v": 2})
    copies = [f"cli:{first}", f"cli:{second}"]
    # Refused by flag name before connecting (nothing listens on this address).
    for ids, given in (([], 0), (copies, 2)):
        id_flags = [a for c in ids for a in ("--id", c)]
        status, _, err = await qm_cli(
            capsys, "--server", "127.0.0.1:9", "dlq", "redrive", *id_flags, "--data", '{"v": 10}'
        )
        assert status == 2
        assert f"--data replaces one copy's data: give exactly one --id ({given} given)" in err
    status, _, err = await qm_cli(
        capsys, "--server", "127.0.0.1:9", "dlq", "redrive", "--id", copies[0], "--data", "{"
    )
    assert status == 2 and "--data is not valid JSON" in err
    for copy_id, data in zip(copies, ({"v": 1}, {"v": 2}), strict=True):
        assert (await qm.get_job(DLQ, copy_id)).data["original_data"] == data
    status, out, err = await qm_cli(
        capsys, "--server", server.address, "dlq", "redrive", "--id", copies[0], "--data", '{"v": 10}'
    )
    assert status == 0 and "redriven: 1" in out, err
    job = await qm.get_job("cli", first)
    assert (job.state, job.data) == (JobState.WAITING, {"v": 10})
    # JSON null is new data too: the job runs with null.
    await qm_json(capsys, server, "dlq", "redrive", "--id", copies[1], "--data", "null")
    assert (await qm.get_job("cli", second)).data is None


async def test_http_routes(server_factory: ServerFactory) -> None:
    server = await server_factory(http_listen="127.0.0.1:0")
    qm = QueueManager(address=server.address)
    base = f"http://{server.app.http_address}/api/v1/queues"
    try:
        await qm.register_queue("web")
        first = await failed_for_good(qm, "web", {"v": 1})
        second = await failed_for_good(qm, "web", {"v": 2})
        async with aiohttp.ClientSession() as session:
            body = {"data": {"json": {"v": 10}}}
            async with session.post(f"{base}/web/jobs/{first}:retry", json=body) as response:
                answer = await response.json()
                assert response.status == 200, answer
            assert (answer["job"]["data"]["json"], answer["job"]["state"]) == ({"v": 10}, "JOB_STATE_WAITING")
            async with session.post(
                f"{base}/{DLQ}/deadLetters:redrive", json={"original_queue": "web"}
            ) as response:
                answer = await response.json()
                assert response.status == 200, answer
            assert answer["count"] == "2"
            assert answer["queues"] == [
                {"queue_name": "web", "count": "2", "retried": "1", "added": "0", "unchanged": "1"}
            ]
            # One copy with new data (a queue of its own: the helper worker would run web's redriven jobs).
            await qm.register_queue("web-edit")
            edited = await failed_for_good(qm, "web-edit", {"v": 3})
            body = {"job_ids": [f"web-edit:{edited}"], "data": {"json": {"v": 30}}}
            async with session.post(f"{base}/{DLQ}/deadLetters:redrive", json=body) as response:
                answer = await response.json()
                assert response.status == 200, answer
            assert answer["queues"][0]["retried"] == "1"
            assert (await qm.get_job("web-edit", edited)).data == {"v": 30}
            body["job_ids"] = [f"web-edit:{edited}", f"web:{first}"]
            async with session.post(f"{base}/{DLQ}/deadLetters:redrive", json=body) as response:
                answer = await response.json()
                assert (response.status, answer["code"]) == (400, "INVALID_ARGUMENT")
                assert "data: replaces one copy's data" in answer["message"]
            async with session.post(f"{base}/web/deadLetters:redrive", json={}) as response:
                assert (response.status, (await response.json())["code"]) == (400, "INVALID_ARGUMENT")
            async with session.post(f"{base}/nope/deadLetters:redrive", json={}) as response:
                assert (response.status, (await response.json())["code"]) == (404, "NOT_FOUND")
        assert (await qm.get_job("web", second)).state is JobState.WAITING
    finally:
        await qm.shutdown()


async def test_the_janitor_finishes_a_redrive_a_server_left_half_done(
    server_factory: ServerFactory, engine: Engine
) -> None:
    """A server died after taking copies out of the dead-letter queue (step 1) and giving one original back
    (step 2): the janitor of another server carries both on, and the one given back is not given twice."""
    server = await server_factory(janitor_interval_ms=100)
    qm = QueueManager(address=server.address)
    try:
        await qm.register_queue("half")
        done_id = await failed_for_good(qm, "half", {"n": 1})
        left_id = await failed_for_good(qm, "half", {"n": 2})
        dl = DeadLetters(engine)
        _, taken, _ = await dl.redrive_take(DLQ, "died", "", 10, 100, 0, False, None, [], [])
        first = next(t for t in taken if t.copy_id == f"half:{done_id}")
        job = original_job(first)
        assert job is not None
        assert await dl.redrive_jobs_many([("half", False, [(first, job)])]) == [[1]]
        await qm.pause_queue("half")  # what comes back waits, to be seen
        keys = engine.keys(DLQ)
        await engine.redis.zadd(keys.redrive, {t.copy_id: 0 for t in taken})  # as if taken long ago

        async def finished() -> bool:
            return await engine.redis.zcard(keys.redrive) == 0

        await eventually(finished, WAIT)
        for job_id in (done_id, left_id):
            again = await qm.get_job("half", job_id)
            assert (again.state, again.attempts_made) == (JobState.PAUSED, 0)
        assert (await qm.get_queue_metrics("half")).paused == 2
        assert await engine.redis.zcard(engine.keys("half").redriven) == 0
        assert (await qm.get_queue_metrics(DLQ)).waiting == 0
    finally:
        await qm.shutdown()
