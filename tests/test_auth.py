"""Authentication and authorization: tokens, roles and queue patterns on every RPC shape, nothing written
by a refused call, filtered lists, the worker stream, token-file reloads, and the start-up rules."""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2
from redis.asyncio import Redis

from queue_manager.cli import main as qm_main
from queue_manager.v1 import jobs_pb2 as jpb
from queue_manager.v1 import metrics_pb2 as mpb
from queue_manager.v1 import queue_service_pb2 as qpb
from queue_manager.v1 import queue_service_pb2_grpc as qrpc
from queue_manager.v1 import schedules_pb2 as spb
from queue_manager.v1 import types_pb2 as t
from queue_manager.v1 import worker_service_pb2 as wpb
from queue_manager.v1 import worker_service_pb2_grpc as wrpc
from queue_manager.v1 import workflows_pb2 as wfpb
from queue_manager_server import access, auth
from queue_manager_server.app import App, StartupError
from queue_manager_server.auth import Authenticator, AuthFileError, parse_entries
from queue_manager_server.config import Settings
from queue_manager_server.security import SecurityError, is_loopback, prepare
from tests.conftest import RunningServer, ServerFactory
from tests.rawworker import lease
from tests.security_kit import bearer, raw_worker, state, token_file

OK = grpc.StatusCode.OK
PD = grpc.StatusCode.PERMISSION_DENIED
UNAUTH = grpc.StatusCode.UNAUTHENTICATED
NF = grpc.StatusCode.NOT_FOUND

ENTRIES: dict[str, tuple[str | list[str], list[str]]] = {
    "admin": ("admin", ["*"]),
    "ops": ("admin", ["billing-*"]),  # an admin of some queues only
    "prod": ("producer", ["billing-*"]),
    "work": ("worker", ["billing-*"]),
    "view": ("viewer", ["billing-*"]),
    "viewall": ("viewer", ["*"]),
    "both": (["producer", "worker"], ["billing-*"]),
}


@pytest.fixture
async def secured(
    server_factory: ServerFactory, tmp_path: Path
) -> AsyncIterator[tuple[RunningServer, dict[str, str]]]:
    tokens = token_file(tmp_path / "tokens.toml", ENTRIES)
    server = await server_factory(auth_file=str(tmp_path / "tokens.toml"))
    async with grpc.aio.insecure_channel(server.address) as ch:
        q = qrpc.QueueServiceStub(ch)
        md = bearer(tokens["admin"])
        for name in ("billing-a", "billing-b", "orders"):
            config = t.QueueConfig(disable_dead_letter=True)
            await q.RegisterQueue(qpb.RegisterQueueRequest(name=name, config=config), metadata=md)
    yield server, tokens


async def code_of(call: Awaitable[Any]) -> grpc.StatusCode:
    return (await _status(call))[0]


async def _stream_code(call: Any) -> grpc.StatusCode:
    return (await _status(call))[0]


async def _status(call: Any) -> tuple[grpc.StatusCode, str]:
    """How a call ended: its code and details (a streamed answer's first message is enough)."""
    try:
        if isinstance(call, grpc.aio.UnaryStreamCall | grpc.aio.StreamStreamCall):
            async for _ in call:
                break
        else:
            await call
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return OK, ""


# grpc-python's asyncio client may report INTERNAL "Internal error from Core" instead of the status the server
# sent, when the server ends a call while the client still writes its requests: the failed write overwrites
# the status (grpc/grpc#36066, open in grpcio 1.85; about 1 call in 100 under load). A request-streaming call
# that meets it is made again: only the server's own answer counts.
_OVERWRITTEN = (grpc.StatusCode.INTERNAL, "Internal error from Core")


async def sent_code(method: Callable[..., Any], requests: list[Any], md: Any) -> grpc.StatusCode:
    """The status the server ended a request-streaming call (`method` sending `requests` with metadata md)
    with; the call is made again while the client library overwrites it."""
    for _ in range(10):
        code, details = await _status(method(iter(requests), metadata=md))
        if (code, details) != _OVERWRITTEN:
            return code
    return code


async def refused_connect(address: str, queues: list[str], token: str) -> grpc.StatusCode:
    """The status a worker stream (hello, then credits) opened with `token` is refused with; the stream is
    opened again while the client library overwrites the server's status (see _OVERWRITTEN)."""
    for _ in range(10):
        w = await raw_worker(address, queues, token)
        try:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await w.connect(credits=1)
        finally:
            await w.close()
        code, details = refused.value.code(), refused.value.details() or ""
        if (code, details) != _OVERWRITTEN:
            return code
    return code


def test_every_rpc_has_a_rule() -> None:
    from queue_manager.v1 import queue_service_pb2, test_clock_service_pb2, worker_service_pb2

    for module, service in (
        (queue_service_pb2, "QueueService"),
        (worker_service_pb2, "WorkerService"),
        (test_clock_service_pb2, "TestClockService"),
    ):
        desc = module.DESCRIPTOR.services_by_name[service]
        for method in desc.methods:
            assert f"/{desc.full_name}/{method.name}" in access.RULES, method.name
    assert access.rule_for("/grpc.health.v1.Health/Check") is None
    assert access.rule_for("/queue_manager.v1.QueueService/SomethingNew") is access.UNLISTED


def test_token_file_is_checked_field_by_field(tmp_path: Path) -> None:
    good = {"name": "a", "sha256": "0" * 64, "role": "viewer", "queues": ["*"]}
    cases = [
        ({}, "non-empty list 'tokens'"),
        ({"tokens": [{**good, "role": "root"}]}, "tokens[0].role"),
        ({"tokens": [{**good, "sha256": "abc"}]}, "tokens[0].sha256"),
        ({"tokens": [{**good, "queues": []}]}, "tokens[0].queues"),
        ({"tokens": [{**good, "queues": ["a{b"]}]}, "tokens[0].queues"),
        ({"tokens": [good, {**good, "sha256": "1" * 64}]}, "used twice"),
        ({"tokens": [good, {**good, "name": "b"}]}, "listed twice"),
        ({"tokens": [{**good, "token": "plain"}]}, "unknown field(s) token"),
    ]
    for data, message in cases:
        with pytest.raises(AuthFileError, match=re.escape(message)):
            parse_entries(data, "f")
    (tmp_path / "t.json").write_text(
        '{"tokens": [{"name": "j", "sha256": "' + "a" * 64 + '", "roles": '
        '["producer", "worker"], "queues": ["x-*"]}]}'
    )
    p = Authenticator(tmp_path / "t.json")._entries[0].principal
    assert (p.can("produce"), p.can("work"), p.can("admin"), p.allows("x-1"), p.allows("y")) == (
        True,
        True,
        False,
        True,
        False,
    )


def test_new_token_prints_only_entries_the_server_accepts(capsys: pytest.CaptureFixture[str]) -> None:
    # A name or pattern the token file refuses would make the printed entry stop the server at its start.
    for args in (["bad name!"], ["x" * 101], [""], ["ok", "--queues", "a{b"], ["ok", "--queues", ""]):
        with pytest.raises(SystemExit) as exit_:
            qm_main(["auth", "new-token", *args, "--role", "admin"])
        assert exit_.value.code == 2
        assert "must be" in capsys.readouterr().err
    assert qm_main(["auth", "new-token", "ci@host:1", "--role", "worker", "--queues", "b-*", "c?"]) == 0
    printed = tomllib.loads(capsys.readouterr().out)
    assert parse_entries(printed, "printed")[0].principal.name == "ci@host:1"


async def test_without_a_valid_token_no_rpc_shape_runs(
    secured: tuple[RunningServer, dict[str, str]], redis: Redis
) -> None:
    server, tokens = secured
    before = await state(redis, server.prefix)
    job = jpb.NewJob(name="n")
    credentials: list[tuple[tuple[str, str], ...]] = [
        (),
        bearer("not-a-token"),
        (("authorization", tokens["admin"]),),  # no scheme
        (("authorization", f"Basic {tokens['admin']}"),),  # not base64 user:password
    ]
    async with grpc.aio.insecure_channel(server.address) as ch:
        q, w = qrpc.QueueServiceStub(ch), wrpc.WorkerServiceStub(ch)
        for md in credentials:
            unary = q.AddJob(jpb.AddJobRequest(queue_name="billing-a", job=job), metadata=md)
            server_stream = q.WaitForJob(
                jpb.WaitForJobRequest(queue_name="billing-a", job_id="x"), metadata=md
            )
            hello = wpb.ConnectRequest(hello=wpb.WorkerHello(worker_id="w", queues=["billing-a"]))
            assert await code_of(unary) == UNAUTH
            bulk = [jpb.AddBulkRequest(queue_name="billing-a", jobs=[job])]
            assert await sent_code(q.AddBulk, bulk, md) == UNAUTH
            assert await _stream_code(server_stream) == UNAUTH
            assert await sent_code(w.Connect, [hello], md) == UNAUTH
    assert await state(redis, server.prefix) == before


def _calls(q: qrpc.QueueServiceStub) -> dict[str, Callable[[Any], Awaitable[Any]]]:
    """One representative call per permission and queue, by label."""
    job = jpb.NewJob(name="n")
    schedule = spb.Schedule(
        id="s", queue_name="billing-a", every=duration_pb2.Duration(seconds=3600), job=job
    )
    data = t.Payload(raw=b"1", content_type="application/json")
    return {
        "register": lambda md: q.RegisterQueue(
            qpb.RegisterQueueRequest(name="billing-c", config=t.QueueConfig(disable_dead_letter=True)),
            metadata=md,
        ),
        "get": lambda md: q.GetQueue(qpb.GetQueueRequest(name="billing-a"), metadata=md),
        "add": lambda md: q.AddJob(jpb.AddJobRequest(queue_name="billing-a", job=job), metadata=md),
        "add-orders": lambda md: q.AddJob(jpb.AddJobRequest(queue_name="orders", job=job), metadata=md),
        "pause": lambda md: q.PauseQueue(qpb.PauseQueueRequest(name="billing-b"), metadata=md),
        "pause-orders": lambda md: q.PauseQueue(qpb.PauseQueueRequest(name="orders"), metadata=md),
        "list": lambda md: q.ListJobs(
            jpb.ListJobsRequest(queue_name="billing-a", state=t.JOB_STATE_WAITING), metadata=md
        ),
        "remove": lambda md: q.RemoveJob(
            jpb.RemoveJobRequest(queue_name="billing-a", job_id="none"), metadata=md
        ),
        "cancel": lambda md: q.CancelJob(
            jpb.CancelJobRequest(queue_name="billing-a", job_id="none"), metadata=md
        ),
        "retry-all": lambda md: q.RetryFailedJobs(
            jpb.RetryFailedJobsRequest(queue_name="billing-a"), metadata=md
        ),
        "promote": lambda md: q.PromoteJob(
            jpb.PromoteJobRequest(queue_name="billing-a", job_id="none"), metadata=md
        ),
        "update-data": lambda md: q.UpdateJobData(
            jpb.UpdateJobDataRequest(queue_name="billing-a", job_id="none", data=data), metadata=md
        ),
        # A running job's own update: the lease token lets a worker's token in (the lease is checked after).
        "update-leased": lambda md: q.UpdateJobData(
            jpb.UpdateJobDataRequest(queue_name="billing-a", job_id="none", data=data, lease_token="t"),
            metadata=md,
        ),
        "update-leased-orders": lambda md: q.UpdateJobData(
            jpb.UpdateJobDataRequest(queue_name="orders", job_id="none", data=data, lease_token="t"),
            metadata=md,
        ),
        "schedule": lambda md: q.UpsertSchedule(spb.UpsertScheduleRequest(schedule=schedule), metadata=md),
        "workflows": lambda md: q.ListWorkflows(wfpb.ListWorkflowsRequest(), metadata=md),
        "metrics": lambda md: q.GetQueueMetrics(qpb.GetQueueMetricsRequest(name="billing-a"), metadata=md),
    }


# label → token → expected code (RemoveJob, CancelJob, PromoteJob and UpdateJobData of a missing job:
# NOT_FOUND when allowed)
EXPECTED: dict[str, dict[str, grpc.StatusCode]] = {
    "register": {"admin": OK, "ops": OK, "prod": PD, "work": PD, "view": PD},
    "get": {"admin": OK, "ops": OK, "prod": OK, "work": PD, "view": OK},
    "add": {"admin": OK, "ops": OK, "prod": OK, "work": PD, "view": PD},
    "add-orders": {"admin": OK, "ops": OK, "prod": PD, "work": PD, "view": PD},
    "pause": {"admin": OK, "ops": OK, "prod": PD, "work": PD, "view": PD},
    "pause-orders": {"admin": OK, "ops": PD, "prod": PD, "work": PD, "view": PD},
    "list": {"admin": OK, "ops": OK, "prod": OK, "work": PD, "view": OK},
    "remove": {"admin": NF, "ops": NF, "prod": PD, "work": PD, "view": PD},
    "cancel": {"admin": NF, "ops": NF, "prod": PD, "work": PD, "view": PD},
    "retry-all": {"admin": OK, "ops": OK, "prod": PD, "work": PD, "view": PD},
    "promote": {"admin": NF, "ops": NF, "prod": NF, "work": PD, "view": PD},
    "update-data": {"admin": NF, "ops": NF, "prod": NF, "work": PD, "view": PD},
    "update-leased": {"admin": NF, "ops": NF, "prod": NF, "work": NF, "view": PD},
    "update-leased-orders": {"admin": NF, "ops": PD, "prod": PD, "work": PD, "view": PD},
    "schedule": {"admin": OK, "ops": OK, "prod": OK, "work": PD, "view": PD},
    "workflows": {"admin": OK, "ops": PD, "prod": PD, "work": PD, "view": PD},
    "metrics": {"admin": OK, "ops": OK, "prod": OK, "work": PD, "view": OK},
}
EXPECTED["add-orders"]["ops"] = PD  # "ops" may administer billing-* only


async def test_roles_and_patterns_decide_and_refusals_write_nothing(
    secured: tuple[RunningServer, dict[str, str]], redis: Redis
) -> None:
    server, tokens = secured
    async with grpc.aio.insecure_channel(server.address) as ch:
        calls = _calls(qrpc.QueueServiceStub(ch))
        # Refused calls first (each must leave Redis as it was), then the allowed ones.
        for allowed in (False, True):
            for label, expected in EXPECTED.items():
                for name, code in expected.items():
                    if (code == PD) == allowed:
                        continue
                    before = await state(redis, server.prefix) if code == PD else None
                    got = await code_of(calls[label](bearer(tokens[name])))
                    assert got == code, (label, name, got)
                    if before is not None:
                        assert await state(redis, server.prefix) == before, (label, name)


async def test_streams_are_checked_message_by_message(
    secured: tuple[RunningServer, dict[str, str]], redis: Redis
) -> None:
    server, tokens = secured
    md = bearer(tokens["prod"])
    job = jpb.NewJob(name="n")
    chained = jpb.NewJob(
        name="n", options=t.JobOptions(chain_to=[t.ChainLink(queue_name="orders", job_name="x")])
    )
    step = wfpb.WorkflowStep(
        queue_name="billing-a",
        job_name="a",
        on_success=[wfpb.WorkflowStep(queue_name="orders", job_name="b")],
    )
    before = await state(redis, server.prefix)
    async with grpc.aio.insecure_channel(server.address) as ch:
        q = qrpc.QueueServiceStub(ch)
        # The first message is fine, the second names a foreign queue: nothing of the stream is added.
        bulk = [
            jpb.AddBulkRequest(queue_name="billing-a", jobs=[job] * 3),
            jpb.AddBulkRequest(queue_name="orders", jobs=[job]),
        ]
        assert await sent_code(q.AddBulk, bulk, md) == PD
        assert (
            await code_of(q.AddJob(jpb.AddJobRequest(queue_name="billing-a", job=chained), metadata=md)) == PD
        )
        run = wfpb.ExecuteWorkflowRequest(workflow=wfpb.Workflow(steps=[step]))
        assert await code_of(q.ExecuteWorkflow(run, metadata=md)) == PD
        registration = qpb.RegisterQueueRequest(name="billing-c")  # would register "dead-letter-queue" too
        assert await code_of(q.RegisterQueue(registration, metadata=bearer(tokens["ops"]))) == PD
        assert await state(redis, server.prefix) == before
        added = await q.AddBulk(iter(bulk[:1]), metadata=md)
        assert len(added.job_ids) == 3


async def test_answers_spanning_queues_show_the_tokens_queues(
    secured: tuple[RunningServer, dict[str, str]],
) -> None:
    server, tokens = secured
    admin, view = bearer(tokens["admin"]), bearer(tokens["view"])
    async with grpc.aio.insecure_channel(server.address) as ch:
        q = qrpc.QueueServiceStub(ch)
        for queue in ("billing-a", "orders"):
            schedule = spb.Schedule(
                id="s", queue_name=queue, every=duration_pb2.Duration(seconds=3600), job=jpb.NewJob(name="n")
            )
            await q.UpsertSchedule(spb.UpsertScheduleRequest(schedule=schedule), metadata=admin)
        queues = await q.ListQueues(qpb.ListQueuesRequest(), metadata=view)
        assert [x.name for x in queues.queues] == ["billing-a", "billing-b"]
        everything = await q.ListQueues(qpb.ListQueuesRequest(), metadata=bearer(tokens["viewall"]))
        assert [x.name for x in everything.queues] == ["billing-a", "billing-b", "orders"]
        metrics = await q.GetAllMetrics(mpb.GetAllMetricsRequest(), metadata=view)
        assert [m.queue_name for m in metrics.metrics] == ["billing-a", "billing-b"]
        schedules = await q.ListSchedules(spb.ListSchedulesRequest(), metadata=view)
        assert [s.queue_name for s in schedules.schedules] == ["billing-a"]
        watch = q.WatchMetrics(mpb.WatchMetricsRequest(include_workers=True), metadata=view)
        first = await watch.read()
        watch.cancel()
        assert [m.queue_name for m in first.metrics] == ["billing-a", "billing-b"]
        named = q.WatchMetrics(mpb.WatchMetricsRequest(queue_names=["orders"]), metadata=view)
        assert await _stream_code(named) == PD
        # Workers: one on orders (admin token), one on billing-a; the viewer sees the second only.
        workers = [
            await raw_worker(server.address, ["orders", "billing-a"], tokens["admin"], "w-mixed"),
            await raw_worker(server.address, ["orders"], tokens["admin"], "w-orders"),
        ]
        try:
            for w in workers:
                await w.connect()
            listed = await q.ListWorkers(mpb.ListWorkersRequest(), metadata=view)
            assert [(w.worker_id, list(w.queues)) for w in listed.workers] == [("w-mixed", ["billing-a"])]
        finally:
            for w in workers:
                await w.close()


async def test_workflow_runs_are_checked_against_their_steps(
    secured: tuple[RunningServer, dict[str, str]], redis: Redis
) -> None:
    server, tokens = secured
    admin = bearer(tokens["admin"])
    step = wfpb.WorkflowStep(
        queue_name="billing-a",
        job_name="a",
        on_success=[wfpb.WorkflowStep(queue_name="orders", job_name="b")],
    )
    async with grpc.aio.insecure_channel(server.address) as ch:
        q = qrpc.QueueServiceStub(ch)
        run = await q.ExecuteWorkflow(
            wfpb.ExecuteWorkflowRequest(workflow=wfpb.Workflow(steps=[step])), metadata=admin
        )
        get = wfpb.GetWorkflowRequest(run_id=run.run_id)
        assert await code_of(q.GetWorkflow(get, metadata=bearer(tokens["view"]))) == PD
        assert await code_of(q.GetWorkflow(get, metadata=bearer(tokens["viewall"]))) == OK
        before = await state(redis, server.prefix)
        cancel = wfpb.CancelWorkflowRequest(run_id=run.run_id)
        assert await code_of(q.CancelWorkflow(cancel, metadata=bearer(tokens["ops"]))) == PD
        assert await state(redis, server.prefix) == before
        cancelled = await q.CancelWorkflow(cancel, metadata=admin)
        assert cancelled.run.state == wfpb.WORKFLOW_STATE_CANCELLED


async def test_worker_stream_is_limited_to_the_tokens_queues(
    secured: tuple[RunningServer, dict[str, str]], redis: Redis
) -> None:
    server, tokens = secured
    async with grpc.aio.insecure_channel(server.address) as ch:
        q = qrpc.QueueServiceStub(ch)
        added = await q.AddJob(
            jpb.AddJobRequest(queue_name="billing-a", job=jpb.NewJob(name="n")),
            metadata=bearer(tokens["prod"]),
        )
        job_id = added.job.id
        # A producer token may not open a worker stream; a worker token may not name orders. Neither is
        # listed as a worker nor leases anything.
        before = await state(redis, server.prefix)
        for token, queues in ((tokens["prod"], ["billing-a"]), (tokens["work"], ["billing-a", "orders"])):
            assert await refused_connect(server.address, queues, token) == PD
        assert await state(redis, server.prefix) == before
        w = await raw_worker(server.address, ["billing-a"], tokens["work"])
        try:
            await w.connect(credits=1)
            (leased,) = await w.jobs(1)
            assert leased.job.id == job_id
            # A report naming a foreign queue ends the stream PERMISSION_DENIED; the lease goes back.
            foreign = wpb.LeaseRef(queue_name="orders", job_id="x", lease_token=leased.lease_token)
            w.report(wpb.WorkerReport(extensions=[lease(leased), foreign]))
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                while True:
                    await w.recv()
            assert ended.value.code() == PD
        finally:
            await w.close()
        for _ in range(200):
            job = await q.GetJob(
                jpb.GetJobRequest(queue_name="billing-a", job_id=job_id), metadata=bearer(tokens["admin"])
            )
            if job.job.state == t.JOB_STATE_WAITING:
                break
            await asyncio.sleep(0.02)
        assert (job.job.state, job.job.stalled_count) == (t.JOB_STATE_WAITING, 1)


async def test_a_parked_item_naming_a_foreign_queue_ends_the_stream(
    secured: tuple[RunningServer, dict[str, str]],
) -> None:
    server, tokens = secured
    w = await raw_worker(server.address, ["billing-a"], tokens["work"])
    try:
        await w.connect()
        w.report(wpb.WorkerReport(parked=[wpb.LeaseRef(queue_name="orders", job_id="x", lease_token="t")]))
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            while True:
                await w.recv()
        assert ended.value.code() == PD
    finally:
        await w.close()


async def test_worker_a_cannot_finish_worker_bs_job(secured: tuple[RunningServer, dict[str, str]]) -> None:
    server, tokens = secured
    admin = bearer(tokens["admin"])
    async with grpc.aio.insecure_channel(server.address) as ch:
        q = qrpc.QueueServiceStub(ch)
        a = await raw_worker(server.address, ["billing-a"], tokens["work"], "worker-a")
        b = await raw_worker(server.address, ["billing-a"], tokens["both"], "worker-b")
        try:
            await a.connect()
            await b.connect(credits=1)
            await q.AddJob(
                jpb.AddJobRequest(queue_name="billing-a", job=jpb.NewJob(name="b's")), metadata=admin
            )
            (b_job,) = await b.jobs(1)
            await q.AddJob(
                jpb.AddJobRequest(queue_name="billing-a", job=jpb.NewJob(name="a's")), metadata=admin
            )
            a.report(wpb.WorkerReport(credits=1))
            (a_job,) = await a.jobs(1)
            # A presents its own lease token (or a made-up one) for B's job, to complete, fail, extend it,
            # report progress or log to it: each is rejected and nothing is recorded.
            stale = grpc.StatusCode.FAILED_PRECONDITION.value[0]
            for token in (a_job.lease_token, "f" * 16):
                ref = wpb.LeaseRef(queue_name="billing-a", job_id=b_job.job.id, lease_token=token)
                progress = wpb.JobProgress(lease=ref)
                progress.progress.number_value = 99
                for report in (
                    wpb.WorkerReport(
                        completions=[
                            wpb.JobCompletion(queue_name="billing-a", job_id=b_job.job.id, lease_token=token)
                        ]
                    ),
                    wpb.WorkerReport(
                        failures=[
                            wpb.JobFailure(
                                queue_name="billing-a", job_id=b_job.job.id, lease_token=token, message="x"
                            )
                        ]
                    ),
                    wpb.WorkerReport(extensions=[ref]),
                    wpb.WorkerReport(progress=[progress]),
                    wpb.WorkerReport(logs=[wpb.JobLogs(lease=ref, lines=[t.JobLogLine(message="a's line")])]),
                ):
                    a.report(report)
                    ack = (await a.until("ack")).ack
                    assert [(r.lease.job_id, r.code) for r in ack.results] == [(b_job.job.id, stale)], report
            stored = await q.GetJob(
                jpb.GetJobRequest(queue_name="billing-a", job_id=b_job.job.id), metadata=admin
            )
            assert (stored.job.state, stored.job.worker_id) == (t.JOB_STATE_ACTIVE, "worker-b")
            assert (
                not stored.job.HasField("progress") and not stored.job.logs and stored.job.attempts_made == 0
            )
            logs = await q.GetJobLogs(
                jpb.GetJobLogsRequest(queue_name="billing-a", job_id=b_job.job.id), metadata=admin
            )
            assert not logs.lines
            b.report(
                wpb.WorkerReport(
                    completions=[
                        wpb.JobCompletion(
                            queue_name="billing-a", job_id=b_job.job.id, lease_token=b_job.lease_token
                        )
                    ]
                )
            )
            for _ in range(200):
                stored = await q.GetJob(
                    jpb.GetJobRequest(queue_name="billing-a", job_id=b_job.job.id), metadata=admin
                )
                if stored.job.state == t.JOB_STATE_COMPLETED:
                    break
                await asyncio.sleep(0.02)
            assert stored.job.state == t.JOB_STATE_COMPLETED
        finally:
            await a.close()
            await b.close()


async def test_a_worker_token_saves_its_running_jobs_data_and_nothing_else(
    secured: tuple[RunningServer, dict[str, str]],
) -> None:
    from queue_manager import JobContext, QueueManager

    server, tokens = secured
    producer = QueueManager(address=server.address, token=tokens["prod"])
    worker = QueueManager(address=server.address, token=tokens["work"], shutdown_grace=5.0)
    seen: list[Any] = []
    try:

        @worker.processor("billing-a")
        async def work(job: JobContext) -> None:
            seen.append(job.data)
            if job.attempts_made == 0:
                await job.update_data({"step": 1})
                raise RuntimeError("resume from the checkpoint")

        job = await producer.add_job("billing-a", "steps", {"step": 0}, {"attempts": 2})
        await worker.start_workers()
        done = await producer.wait_for_job("billing-a", job.id, timeout=20)
        assert (done.state.value, seen) == ("completed", [{"step": 0}, {"step": 1}])
        async with grpc.aio.insecure_channel(server.address) as ch:
            request = jpb.UpdateJobDataRequest(
                queue_name="billing-a",
                job_id=job.id,
                data=t.Payload(raw=b"2", content_type="application/json"),
            )
            call = qrpc.QueueServiceStub(ch).UpdateJobData(request, metadata=bearer(tokens["work"]))
            code, details = await _status(call)
        assert code == PD and "only with the lease_token of a job it runs" in details
        assert "it needs the role admin or producer" in details
    finally:
        await worker.shutdown()
        await producer.shutdown()


async def test_open_services_and_the_token_file_reload(
    secured: tuple[RunningServer, dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    server, tokens = secured
    monkeypatch.setattr(auth, "RELOAD_CHECK_S", 0.0)
    async with grpc.aio.insecure_channel(server.address) as ch:
        health = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        q = qrpc.QueueServiceStub(ch)
        get = qpb.GetQueueRequest(name="billing-a")
        new = token_file(tmp_path / "tokens.toml", {"fresh": ("viewer", ["*"])})
        assert await code_of(q.GetQueue(get, metadata=bearer(new["fresh"]))) == OK
        assert await code_of(q.GetQueue(get, metadata=bearer(tokens["admin"]))) == UNAUTH  # revoked
        (tmp_path / "tokens.toml").write_text("not toml [")  # a broken file keeps the tokens in force
        assert await code_of(q.GetQueue(get, metadata=bearer(new["fresh"]))) == OK


async def test_tokens_never_reach_the_log(
    secured: tuple[RunningServer, dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    server, tokens = secured
    caplog.set_level(logging.DEBUG)
    async with grpc.aio.insecure_channel(server.address) as ch:
        q = qrpc.QueueServiceStub(ch)
        for token in (tokens["view"], tokens["admin"], "wrong-" + tokens["admin"]):
            await code_of(
                q.AddJob(
                    jpb.AddJobRequest(queue_name="orders", job=jpb.NewJob(name="n")), metadata=bearer(token)
                )
            )
    assert any(r.getMessage() == "request refused" for r in caplog.records)
    logged = " ".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    for token in tokens.values():
        assert token not in logged


async def test_changes_are_audited_with_the_tokens_name(
    secured: tuple[RunningServer, dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    server, tokens = secured
    caplog.set_level(logging.INFO, "queue_manager_server.audit")
    async with grpc.aio.insecure_channel(server.address) as ch:
        q = qrpc.QueueServiceStub(ch)
        admin, ops, prod = bearer(tokens["admin"]), bearer(tokens["ops"]), bearer(tokens["prod"])
        added = await q.AddJob(
            jpb.AddJobRequest(queue_name="billing-a", job=jpb.NewJob(name="n")), metadata=prod
        )
        job_id = added.job.id
        assert await code_of(q.PauseQueue(qpb.PauseQueueRequest(name="billing-a"), metadata=ops)) == OK
        change = jpb.ChangeJobPriorityRequest(
            queue_name="billing-a", job_id=job_id, priority=t.JOB_PRIORITY_HIGH
        )
        assert await code_of(q.ChangeJobPriority(change, metadata=prod)) == OK
        retry = jpb.RetryJobRequest(queue_name="billing-a", job_id=job_id)
        assert await code_of(q.RetryJob(retry, metadata=prod)) == grpc.StatusCode.FAILED_PRECONDITION
        assert (
            await code_of(
                q.RemoveJob(jpb.RemoveJobRequest(queue_name="billing-a", job_id=job_id), metadata=admin)
            )
            == OK
        )
        # Refused before it runs (the role): the refusal log has it, not the audit.
        assert await code_of(q.PauseQueue(qpb.PauseQueueRequest(name="billing-b"), metadata=prod)) == PD
        # Reads and adds are not audited.
        await q.GetQueue(qpb.GetQueueRequest(name="billing-a"), metadata=admin)
    lines = [r.__dict__ for r in caplog.records if r.name == "queue_manager_server.audit"]
    assert [(x["method"], x["token"], x["status"]) for x in lines] == [
        ("PauseQueue", "ops", "OK"),
        ("ChangeJobPriority", "prod", "OK"),
        ("RetryJob", "prod", "FAILED_PRECONDITION"),
        ("RemoveJob", "admin", "OK"),
    ]
    assert lines[0]["queue"] == "billing-a" and "peer" in lines[0]
    assert [(x["queue"], x["job_id"]) for x in lines[1:]] == [("billing-a", job_id)] * 3
    logged = " ".join(str(x) for x in lines)
    for token in tokens.values():
        assert token not in logged


def test_a_non_loopback_listen_address_needs_a_token_file_or_insecure(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token_file(tmp_path / "t.toml", {"a": ("admin", ["*"])})
    with pytest.raises(SecurityError, match=r"--listen 0\.0\.0\.0:50051 .*--insecure"):
        prepare(Settings(listen="0.0.0.0:50051"))
    with pytest.raises(SecurityError, match="--http-listen"):
        prepare(Settings(listen="127.0.0.1:1", http_listen="[::]:3010"))
    assert prepare(Settings(listen="0.0.0.0:50051", insecure=True)).auth is None
    # With a token file, a port other machines reach without TLS is allowed with a warning; the HTTP port
    # has no TLS of its own, so it is warned about whatever the gRPC port does.
    with caplog.at_level(logging.WARNING, "queue_manager_server.security"):
        prepare(
            Settings(listen="127.0.0.1:1", http_listen="0.0.0.0:3010", auth_file=str(tmp_path / "t.toml"))
        )
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["the HTTP port has no TLS"]
    assert prepare(Settings(listen="0.0.0.0:50051", auth_file=str(tmp_path / "t.toml"))).auth is not None
    assert [
        is_loopback(a) for a in ("127.0.0.1:1", "localhost:1", "[::1]:1", "unix:/x", "10.0.0.1:1", ":1")
    ] == [
        True,
        True,
        True,
        True,
        False,
        False,
    ]


async def test_serve_refuses_an_open_port_in_one_line(server: RunningServer) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "queue_manager_server",
        "--listen",
        "0.0.0.0:0",
        "--redis-url",
        server.redis_url,
        "--http-listen",
        "off",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    lines = err.decode().splitlines()
    assert proc.returncode == 2
    assert (
        len(lines) == 1 and "--insecure" in lines[0] and lines[0].startswith("qm serve: --listen 0.0.0.0:0")
    )


async def test_app_refuses_a_bad_token_file(tmp_path: Path) -> None:
    (tmp_path / "t.toml").write_text('[[tokens]]\nname = "a"\n')
    app = App(
        Settings(listen="127.0.0.1:0", redis_url="redis://127.0.0.1:1", auth_file=str(tmp_path / "t.toml"))
    )
    with pytest.raises(StartupError, match=r"--auth-file \(QM_AUTH_FILE\): .*tokens\[0\]\.sha256"):
        await app.start()
    await app.stop()


def test_tokens_are_compared_in_constant_time_with_every_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    """A presented token is hashed, then compared with every entry by `hmac.compare_digest`: a match on the
    first entry takes as many comparisons as no match at all (nothing to learn from timing)."""
    entries = parse_entries(
        {
            "tokens": [
                {"name": f"t{i}", "sha256": auth.hash_token(f"token-{i}"), "role": "viewer", "queues": ["*"]}
                for i in range(5)
            ]
        },
        "f",
    )
    authenticator = Authenticator(entries=entries)
    compared: list[tuple[bytes, bytes]] = []
    real = auth.hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    assert authenticator.authenticate("token-0").name == "t0"
    first = len(compared)
    with pytest.raises(auth.AuthError):
        authenticator.authenticate("token-x")
    assert first == len(compared) - first == 5
    # Digests are compared, never the token itself (the file holds no token to compare with).
    assert all(len(a) == len(b) == 32 and b"token" not in a for a, b in compared)


# Every RPC that only an admin token may call: queue administration and destructive job control.
ADMIN_ONLY = {
    "RegisterQueue",
    "PauseQueue",
    "ResumeQueue",
    "CleanQueue",
    "DrainQueue",
    "ObliterateQueue",
    "RemoveJob",
    "CancelJob",
    "RetryFailedJobs",
    "CancelJobs",
    "RemoveJobs",
    "CancelWorkflow",
    "SetGroupLimits",
    "PauseGroup",
    "ResumeGroup",
    "RedriveDeadLetters",
    "ControlWorker",
}


async def test_admin_rpcs_need_the_admin_role(
    secured: tuple[RunningServer, dict[str, str]], redis: Redis
) -> None:
    # QueueService's (TestClockService's AdvanceClock: tests/test_test_clock_service.py).
    assert {
        method.rsplit("/", 1)[-1]
        for method, rule in access.RULES.items()
        if rule.permission == "admin" and method.startswith(access.QUEUE_SERVICE)
    } == ADMIN_ONLY
    server, tokens = secured
    calls: dict[str, Callable[[qrpc.QueueServiceStub, Any], Awaitable[Any]]] = {
        "RegisterQueue": lambda q, md: q.RegisterQueue(
            qpb.RegisterQueueRequest(name="billing-c", config=t.QueueConfig(disable_dead_letter=True)),
            metadata=md,
        ),
        "PauseQueue": lambda q, md: q.PauseQueue(qpb.PauseQueueRequest(name="billing-a"), metadata=md),
        "ResumeQueue": lambda q, md: q.ResumeQueue(qpb.ResumeQueueRequest(name="billing-a"), metadata=md),
        "CleanQueue": lambda q, md: q.CleanQueue(
            qpb.CleanQueueRequest(name="billing-a", state=t.JOB_STATE_WAITING), metadata=md
        ),
        "DrainQueue": lambda q, md: q.DrainQueue(qpb.DrainQueueRequest(name="billing-a"), metadata=md),
        "ObliterateQueue": lambda q, md: q.ObliterateQueue(
            qpb.ObliterateQueueRequest(name="billing-b", force=True), metadata=md
        ),
        "RemoveJob": lambda q, md: q.RemoveJob(
            jpb.RemoveJobRequest(queue_name="billing-a", job_id="j"), metadata=md
        ),
        "CancelJob": lambda q, md: q.CancelJob(
            jpb.CancelJobRequest(queue_name="billing-a", job_id="j"), metadata=md
        ),
        "RetryFailedJobs": lambda q, md: q.RetryFailedJobs(
            jpb.RetryFailedJobsRequest(queue_name="billing-a"), metadata=md
        ),
        "CancelJobs": lambda q, md: q.CancelJobs(
            jpb.CancelJobsRequest(queue_name="billing-a", state=t.JOB_STATE_WAITING), metadata=md
        ),
        "RemoveJobs": lambda q, md: q.RemoveJobs(
            jpb.RemoveJobsRequest(queue_name="billing-a", state=t.JOB_STATE_WAITING), metadata=md
        ),
        "CancelWorkflow": lambda q, md: q.CancelWorkflow(wfpb.CancelWorkflowRequest(run_id="r"), metadata=md),
        "SetGroupLimits": lambda q, md: q.SetGroupLimits(
            qpb.SetGroupLimitsRequest(queue_name="billing-a", group="g", limits=t.GroupLimits(concurrency=1)),
            metadata=md,
        ),
        "PauseGroup": lambda q, md: q.PauseGroup(
            qpb.PauseGroupRequest(queue_name="billing-a", group="g"), metadata=md
        ),
        "ResumeGroup": lambda q, md: q.ResumeGroup(
            qpb.ResumeGroupRequest(queue_name="billing-a", group="g"), metadata=md
        ),
        "RedriveDeadLetters": lambda q, md: q.RedriveDeadLetters(
            qpb.RedriveDeadLettersRequest(queue_name="billing-dlq", original_queue="billing-a"), metadata=md
        ),
        "ControlWorker": lambda q, md: q.ControlWorker(
            qpb.ControlWorkerRequest(worker_id="w", action=qpb.WORKER_CONTROL_ACTION_QUIET), metadata=md
        ),
    }
    assert set(calls) == ADMIN_ONLY
    async with grpc.aio.insecure_channel(server.address) as ch:
        q = qrpc.QueueServiceStub(ch)
        await q.AddJob(
            jpb.AddJobRequest(
                queue_name="billing-a", job=jpb.NewJob(name="n", options=t.JobOptions(job_id="j"))
            ),
            metadata=bearer(tokens["admin"]),
        )
        before = await state(redis, server.prefix)
        # Producer, worker and viewer tokens of the very queues named, one holding two roles: refused.
        for name in ("prod", "work", "view", "both"):
            for rpc, call in calls.items():
                assert await code_of(call(q, bearer(tokens[name]))) == PD, (name, rpc)
        assert await state(redis, server.prefix) == before
        for rpc, call in calls.items():  # the admin of billing-* passes the guard (the handler answers)
            if rpc != "ControlWorker":
                assert await code_of(call(q, bearer(tokens["ops"]))) in (OK, NF), rpc
        # A worker may take jobs of any queue: controlling one needs an admin of every queue.
        control = calls["ControlWorker"]
        assert await code_of(control(q, bearer(tokens["ops"]))) == PD
        assert await code_of(control(q, bearer(tokens["admin"]))) == NF


async def test_a_redrive_to_every_queue_needs_a_token_for_every_queue(
    secured: tuple[RunningServer, dict[str, str]],
) -> None:
    """RedriveDeadLetters sends jobs back to the queues the copies name: with no original queue and no
    copy ids that may be any queue, so an admin of some queues only is refused; naming its own, it passes."""
    server, tokens = secured
    async with grpc.aio.insecure_channel(server.address) as ch:
        q = qrpc.QueueServiceStub(ch)
        ops = bearer(tokens["ops"])
        code, details = await _status(
            q.RedriveDeadLetters(qpb.RedriveDeadLettersRequest(queue_name="billing-dlq"), metadata=ops)
        )
        assert code == PD and "original_queue (unset: every queue)" in details
        by_ids = qpb.RedriveDeadLettersRequest(queue_name="billing-dlq", job_ids=["billing-a:j", "orders:j"])
        code, details = await _status(q.RedriveDeadLetters(by_ids, metadata=ops))
        assert code == PD and "job_ids[1]: queue 'orders'" in details
        mine = qpb.RedriveDeadLettersRequest(queue_name="billing-dlq", job_ids=["billing-a:j"])
        assert await code_of(q.RedriveDeadLetters(mine, metadata=ops)) == NF
        every = qpb.RedriveDeadLettersRequest(queue_name="billing-dlq")
        assert await code_of(q.RedriveDeadLetters(every, metadata=bearer(tokens["admin"]))) == NF


def test_server_listens_on_loopback_unless_told_otherwise() -> None:
    from queue_manager_server.config import parse_args

    defaults = parse_args([], env={})
    assert (defaults.listen, defaults.http_listen) == ("127.0.0.1:50051", "127.0.0.1:3010")
    assert is_loopback(defaults.listen) and is_loopback(defaults.http_listen) and not defaults.insecure
    assert prepare(Settings(listen=defaults.listen, http_listen=defaults.http_listen)).auth is None
    assert parse_args(["--insecure"], env={}).insecure
    assert parse_args([], env={"QM_INSECURE": "1"}).insecure
    assert not parse_args([], env={"QM_INSECURE": "0"}).insecure
    with pytest.raises(SecurityError, match="--listen"):
        prepare(parse_args(["--listen", "0.0.0.0:50051"], env={}))
    assert prepare(parse_args(["--listen", "0.0.0.0:50051"], env={"QM_INSECURE": "yes"})).auth is None


def test_security_doc_names_only_real_flags_and_variables() -> None:
    """Every flag and QM_/REDIS_ variable docs/security.md names is one the server, the client, the CLI or the
    tests define (a renamed flag fails here, not in a reader's shell)."""
    root = Path(__file__).parents[1]
    doc = (root / "docs" / "security.md").read_text()
    sources = "\n".join(
        path.read_text()
        for base in ("server/queue_manager_server", "clients/python/queue_manager", "tests")
        for path in (root / base).rglob("*.py")
        if "/v1/" not in str(path) and path.name != "test_auth.py"
    )
    flags = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*[a-z0-9](?![\w*-])", doc)) - {"--help"}
    names = set(re.findall(r"\b(?:QM|REDIS)_[A-Z0-9_]*[A-Z0-9]\b", doc))
    assert len(flags) > 20 and len(names) > 20
    missing = sorted(n for n in flags | names if not re.search(rf"[\"']{re.escape(n)}[\"'\s\]=]", sources))
    assert not missing, missing
