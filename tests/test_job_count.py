"""Counting the jobs a filter matches (ListJobs with count_only): the RPC (filters, every state, bounded reads
with a token, bad input), the Python clients' `count_jobs` and ``qm jobs count``, against a real server on a
real Valkey."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc import StatusCode as Code

from queue_manager import JobCount, QueueManager, SyncQueueManager
from queue_manager.v1 import jobs_pb2 as jpb
from queue_manager.v1 import queue_service_pb2 as qpb
from queue_manager.v1 import queue_service_pb2_grpc as qrpc
from queue_manager.v1 import types_pb2 as t
from queue_manager_server.engine import Engine
from queue_manager_server.engine.search import SCAN_BUDGET
from tests.conftest import RunningServer
from tests.test_cli import qm_cli, qm_json
from tests.test_job_filters import Q, add, add_many, new_job
from tests.test_server_api import expect


@pytest.fixture
async def stub(server: RunningServer) -> AsyncIterator[qrpc.QueueServiceStub]:
    async with grpc.aio.insecure_channel(server.address) as ch:
        s = qrpc.QueueServiceStub(ch)
        await s.RegisterQueue(
            qpb.RegisterQueueRequest(name=Q, config=t.QueueConfig(disable_dead_letter=True))
        )
        yield s


async def count(
    stub: qrpc.QueueServiceStub, state: int = t.JOB_STATE_WAITING, token: str = "", **flt: Any
) -> jpb.ListJobsResponse:
    return await stub.ListJobs(  # type: ignore[no-any-return]
        jpb.ListJobsRequest(
            queue_name=Q, state=state, page_token=token, filter=jpb.JobFilter(**flt), count_only=True
        )
    )


async def test_count_only_counts_what_the_filter_lists_and_returns_no_job(
    stub: qrpc.QueueServiceStub, engine: Engine
) -> None:
    await add(
        stub,
        new_job("send-email", group="acme", tags=["vip"]),
        new_job("send-sms", group="acme"),
        new_job("send-email", tags=["vip"], correlation_id="c1"),
        new_job("report"),
        new_job("later", tags=["vip"], delay_s=3600),
    )
    for flt, want in [
        ({"name": "send-email"}, 2),
        ({"name": "send-*"}, 3),
        ({"group": "acme"}, 2),
        ({"tag": "vip"}, 2),
        ({"correlation_id": "c1"}, 1),
        ({"name": "send-*", "tag": "vip", "group": "acme"}, 1),
        ({"name": "nobody"}, 0),
    ]:
        response = await count(stub, **flt)
        assert (response.match_count, list(response.jobs), response.next_page_token) == (want, [], ""), flt
        assert response.total_size == 4
    # Other states and no filter: the state's size, in one call (no member read).
    assert (await count(stub, t.JOB_STATE_DELAYED, tag="vip")).match_count == 1
    plain = await count(stub)
    assert (plain.match_count, plain.next_page_token, plain.total_size) == (4, "", 4)
    assert (await count(stub, t.JOB_STATE_COMPLETED)).match_count == 0
    # Paused is the waiting jobs of a paused queue: none while it runs.
    assert (await count(stub, t.JOB_STATE_PAUSED, name="send-*")).match_count == 0
    await stub.PauseQueue(qpb.PauseQueueRequest(name=Q))
    assert (await count(stub, t.JOB_STATE_PAUSED, name="send-*")).match_count == 3
    assert (await count(stub, t.JOB_STATE_WAITING, name="send-*")).match_count == 0
    # A listing's token is a position: a count goes on from it (the first two of four were listed).
    page = await stub.ListJobs(jpb.ListJobsRequest(queue_name=Q, state=t.JOB_STATE_PAUSED, page_size=2))
    assert (await count(stub, t.JOB_STATE_PAUSED, token=page.next_page_token)).match_count == 2


async def test_count_only_reads_a_bounded_run_per_call_and_answers_a_token(
    stub: qrpc.QueueServiceStub,
) -> None:
    n = SCAN_BUDGET + 500
    jobs = [new_job("noise") for _ in range(n)]
    for i in (5, SCAN_BUDGET - 1, SCAN_BUDGET + 7):
        jobs[i] = new_job("needle")
    await add_many(stub, jobs)
    first = await count(stub, name="needle")
    # The first call read SCAN_BUDGET jobs: two needles there, and a token to go on.
    assert (first.match_count, first.total_size) == (2, n) and first.next_page_token
    second = await count(stub, token=first.next_page_token, name="needle")
    assert (second.match_count, second.next_page_token) == (1, "")
    # The page size does not apply to a count (any value is taken, none bounds the count).
    request = jpb.ListJobsRequest(
        queue_name=Q,
        state=t.JOB_STATE_WAITING,
        page_size=5000,
        filter=jpb.JobFilter(name="noise"),
        count_only=True,
    )
    assert (await stub.ListJobs(request)).match_count == SCAN_BUDGET - 2


async def test_count_only_refuses_bad_input_precisely(stub: qrpc.QueueServiceStub) -> None:
    await expect(Code.INVALID_ARGUMENT, count(stub, name="a*b"), "filter.name", "only end a name")
    await expect(Code.INVALID_ARGUMENT, count(stub, token="abc"), "page_token")
    await expect(
        Code.INVALID_ARGUMENT,
        stub.ListJobs(jpb.ListJobsRequest(queue_name=Q, count_only=True)),
        "state",
    )
    missing = jpb.ListJobsRequest(
        queue_name="nope", state=t.JOB_STATE_FAILED, filter=jpb.JobFilter(tag="x"), count_only=True
    )
    await expect(Code.NOT_FOUND, stub.ListJobs(missing), "nope")
    unfiltered = jpb.ListJobsRequest(queue_name="nope", state=t.JOB_STATE_FAILED, count_only=True)
    await expect(Code.NOT_FOUND, stub.ListJobs(unfiltered), "nope")
    await expect(
        Code.INVALID_ARGUMENT, stub.ListJobs(jpb.ListJobsRequest(queue_name="a:b", count_only=True)), "queue"
    )


async def test_clients_and_cli_count(server: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    qm = QueueManager(address=server.address)
    try:
        await qm.register_queue(Q, disable_dead_letter=True)
        await qm.add_bulk(Q, [{"name": n} for n in ("send-email", "send-sms", "report")])
        assert await qm.count_jobs(Q, "waiting", name="send-*") == JobCount(2, "", 1)
        assert (await qm.count_jobs(Q, "waiting")).count == 3
        with pytest.raises(ValueError, match="max_calls"):
            await qm.count_jobs(Q, "waiting", max_calls=0)
        with pytest.raises(ValueError, match="only end a name"):
            await qm.count_jobs(Q, "waiting", name="a*b")

        def blocking() -> JobCount:
            with SyncQueueManager(server.address) as sync:
                return sync.count_jobs(Q, "waiting", name="report")

        assert await asyncio.to_thread(blocking) == JobCount(1, "", 1)
        out = await qm_json(capsys, server, "jobs", "count", Q, "--state", "waiting", "--name", "send-*")
        assert out == {"queue": Q, "state": "waiting", "count": 2, "complete": True}
        status, text, _ = await qm_cli(
            capsys, "--server", server.address, "jobs", "count", Q, "--state", "waiting"
        )
        assert status == 0 and "count     3" in text and "complete  True" in text
        with pytest.raises(SystemExit) as refused:  # argparse refuses the state itself (status 2)
            await qm_cli(capsys, "--server", server.address, "jobs", "count", Q, "--state", "done")
        err = capsys.readouterr().err
        assert refused.value.code == 2 and "got 'done'" in err and "Traceback" not in err
        try:
            status, _, err = await qm_cli(
                capsys,
                "--server",
                server.address,
                "jobs",
                "count",
                Q,
                "--state",
                "waiting",
                "--max-calls",
                "0",
            )
        except SystemExit as exc:  # argparse refuses the value itself (status 2)
            status, err = int(exc.code or 0), capsys.readouterr().err
        assert status == 2 and "--max-calls" in err
    finally:
        await qm.shutdown()


async def test_a_count_stopped_by_max_calls_gives_the_token_to_go_on(
    server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    qm = QueueManager(address=server.address)
    try:
        await qm.register_queue(Q, disable_dead_letter=True)
        n = SCAN_BUDGET + 10
        await qm.add_bulk(Q, [{"name": "x"}] * n)
        part = await qm.count_jobs(Q, "waiting", name="x", max_calls=1)
        assert (part.count, part.calls, part.complete) == (SCAN_BUDGET, 1, False)
        rest = await qm.count_jobs(Q, "waiting", name="x", page_token=part.next_page_token)
        assert (rest.count, rest.complete) == (10, True)
        out = await qm_json(
            capsys, server, "jobs", "count", Q, "--state", "waiting", "--name", "x", "--max-calls", "1"
        )
        assert (out["count"], out["complete"]) == (SCAN_BUDGET, False) and out["next_page_token"]
        done = await qm_json(
            capsys,
            server,
            "jobs",
            "count",
            Q,
            "--state",
            "waiting",
            "--name",
            "x",
            "--page-token",
            out["next_page_token"],
        )
        assert (done["count"], done["complete"]) == (10, True)
    finally:
        await qm.shutdown()
