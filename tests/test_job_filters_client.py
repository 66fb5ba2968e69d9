"""Filters and bulk actions by filter from the Python clients (async and blocking) and the ``qm`` CLI, against
a real server on a real Valkey."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from queue_manager import (
    BulkResult,
    InvalidArgumentError,
    JobMetadata,
    JobOptions,
    QueueManager,
    SyncQueueManager,
)
from queue_manager_server.engine import Engine
from tests.conftest import RunningServer
from tests.test_cli import qm_cli, qm_json

Q = "fq"


@pytest.fixture
async def qm(server: RunningServer) -> AsyncIterator[QueueManager]:
    client = QueueManager(address=server.address)
    await client.register_queue(Q, disable_dead_letter=True)
    yield client
    await client.shutdown()


async def seed(qm: QueueManager) -> dict[str, str]:
    """Five jobs by name: two send-* of group acme (one tagged vip), a send-sms tagged vip, two reports."""
    specs = {
        "e1": (
            "send-email",
            JobOptions(group="acme", metadata=JobMetadata(tags=["vip"], correlation_id="r1")),
        ),
        "e2": ("send-email", JobOptions(group="acme")),
        "s1": ("send-sms", JobOptions(metadata=JobMetadata(tags=["vip"]))),
        "r1": ("report", JobOptions(metadata=JobMetadata(correlation_id="r1"))),
        "r2": ("report", JobOptions()),
    }
    return {key: (await qm.add_job(Q, name, None, options)).id for key, (name, options) in specs.items()}


async def test_async_client_lists_by_filter_and_acts_in_bounded_calls(qm: QueueManager) -> None:
    ids = await seed(qm)
    jobs, token = await qm.list_jobs(Q, "waiting", name="send-*")
    assert {j.id for j in jobs} == {ids["e1"], ids["e2"], ids["s1"]} and token == ""
    jobs, _ = await qm.list_jobs(Q, "waiting", name="send-*", group="acme", tag="vip")
    assert [j.id for j in jobs] == [ids["e1"]]
    jobs, _ = await qm.list_jobs(Q, "waiting", correlation_id="r1")
    assert {j.id for j in jobs} == {ids["e1"], ids["r1"]}
    hour = timedelta(hours=1)
    now = datetime.now(UTC)
    jobs, _ = await qm.list_jobs(Q, "waiting", created_after=now - hour, created_before=now + hour)
    assert len(jobs) == 5
    assert (await qm.list_jobs(Q, "waiting", created_after=now + hour))[0] == []

    first = await qm.cancel_jobs(Q, "waiting", tag="vip", limit=1, reason="dup")
    assert (first.count, first.requested) == (1, 0) and first.next_page_token
    rest = await qm.cancel_jobs(Q, "waiting", tag="vip", page_token=first.next_page_token, reason="dup")
    assert rest == BulkResult(1, "", 0)
    assert (await qm.get_job(Q, ids["s1"])).cancel_reason == "dup"
    retried = await qm.retry_jobs(Q, "cancelled", name="send-sms")
    assert retried == BulkResult(1, "")
    removed = await qm.remove_jobs(Q, "waiting", name="report")
    assert removed == BulkResult(2, "")
    remaining, _ = await qm.list_jobs(Q, "waiting")
    assert {j.id for j in remaining} == {ids["e2"], ids["s1"]}

    with pytest.raises(ValueError, match="tag is empty"):
        await qm.list_jobs(Q, "waiting", tag="")
    with pytest.raises(ValueError, match="only end a name"):
        await qm.remove_jobs(Q, "waiting", name="se*nd")
    with pytest.raises(ValueError, match="is not before created_before"):
        await qm.list_jobs(Q, "waiting", created_after=now, created_before=now - hour)
    with pytest.raises(ValueError, match="limit must be"):
        await qm.cancel_jobs(Q, "waiting", limit=5000)
    with pytest.raises(ValueError, match="'failed' or 'cancelled'"):
        await qm.retry_jobs(Q, "waiting")
    with pytest.raises(InvalidArgumentError, match="ACTIVE"):
        await qm.remove_jobs(Q, "active")


async def test_blocking_client_lists_and_removes_by_filter(server: RunningServer, qm: QueueManager) -> None:
    ids = await seed(qm)

    def run() -> tuple[list[str], BulkResult]:
        with SyncQueueManager(server.address) as client:
            jobs, _ = client.list_jobs(Q, "waiting", name="report")
            return [j.id for j in jobs], client.remove_jobs(Q, "waiting", correlation_id="r1")

    found, removed = await asyncio.to_thread(run)
    assert sorted(found) == sorted([ids["r1"], ids["r2"]])
    assert removed == BulkResult(2, "")


async def test_cli_lists_filters_and_runs_the_bulk_commands(
    server: RunningServer, qm: QueueManager, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = await seed(qm)
    listing = await qm_json(
        capsys,
        server,
        "jobs",
        "list",
        Q,
        "--state",
        "waiting",
        "--name",
        "send-*",
        "--group",
        "acme",
        "--tag",
        "vip",
    )
    assert [j["id"] for j in listing["jobs"]] == [ids["e1"]] and listing["next_page_token"] == ""
    # Without --state: every state, the filter applied to each.
    everywhere = await qm_json(capsys, server, "jobs", "list", Q, "--name", "report")
    assert sorted(j["id"] for j in everywhere["jobs"]) == sorted([ids["r1"], ids["r2"]])
    cancelled = await qm_json(
        capsys, server, "jobs", "cancel-all", Q, "--state", "waiting", "--name", "send-*"
    )
    assert (cancelled["cancelled"], cancelled["stop_requested"]) == (3, 0)
    retried = await qm_json(capsys, server, "jobs", "retry-all", Q, "--state", "cancelled", "--group", "acme")
    assert retried["retried"] == 2
    removed = await qm_json(capsys, server, "jobs", "remove-all", Q, "--state", "cancelled")
    assert removed["removed"] == 1
    assert (await qm.list_jobs(Q, "cancelled"))[0] == []

    for argv, words in [
        (["jobs", "list", Q, "--state", "waiting", "--tag", ""], "--tag: is empty; leave --tag out"),
        (["jobs", "list", Q, "--state", "waiting", "--name", "a*b"], "'*' may only end a name"),
        (["jobs", "list", Q, "--state", "waiting", "--created-after", "yesterday"], "not an ISO 8601 time"),
        (
            [
                "jobs",
                "list",
                Q,
                "--state",
                "waiting",
                "--created-after",
                "2030-01-02",
                "--created-before",
                "2030-01-01",
            ],
            "is not before --created-before",
        ),
        (["jobs", "remove-all", Q, "--state", "active"], "cancel active jobs first"),
        (["jobs", "cancel-all", Q, "--name", "x"], "--state"),
    ]:
        try:
            status, _, err = await qm_cli(capsys, "--server", server.address, *argv)
        except SystemExit as exc:  # argparse refuses an option's value itself (status 2)
            status, err = int(exc.code or 0), capsys.readouterr().err
        assert status != 0 and words in err, (argv, err)
        assert "Traceback" not in err
