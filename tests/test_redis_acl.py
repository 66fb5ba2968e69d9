"""The least-privilege Redis user of docs/security.md: a server connected as a user holding only
`security.REDIS_COMMANDS` on its key prefix runs every area of the service without one denial, and that
user can do nothing else."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import grpc
import pytest
from redis.asyncio import Redis
from redis.exceptions import NoPermissionError, ResponseError

from queue_manager import JobContext, QueueManager, UnrecoverableError
from queue_manager_server.security import redis_acl
from queue_manager_server.services.errors import status_for
from tests.conftest import RunningServer, ServerFactory
from tests.rawworker import eventually

WAIT = 30.0


async def _denials(redis: Redis, user: str) -> list[dict[str, object]]:
    log = await redis.execute_command("ACL", "LOG", "1000")
    out = []
    for entry in log:
        fields = dict(zip(entry[::2], entry[1::2], strict=True)) if isinstance(entry, list) else entry
        fields = {k.decode() if isinstance(k, bytes) else k: v for k, v in fields.items()}
        if fields.get("username") in (user, user.encode()):
            out.append(fields)
    return out


async def test_server_runs_as_a_least_privilege_redis_user(
    server_factory: ServerFactory, redis: Redis, redis_url: str, prefix: str
) -> None:
    user, password = f"qm-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    await redis.execute_command("ACL", "SETUSER", *redis_acl(user, password, prefix).split())
    parts = urlsplit(redis_url)
    url = f"redis://{user}:{password}@{parts.hostname}:{parts.port}/0"
    server: RunningServer | None = None
    try:
        server = await server_factory(redis_url=url, reaper_interval_ms=100, janitor_interval_ms=200)
        await _workload(server.address)
        denied = {(d.get("reason"), d.get("object")) for d in await _denials(redis, user)}
        # Only the start-up checks' CONFIG GET (persistence, maxmemory-policy), which the server reports it
        # cannot verify, and INFO (the version check, skipped when refused): CONFIG and INFO stay out of the
        # user's reach (they would show every setting and the server's state).
        assert denied <= {(b"command", b"config|get"), (b"command", b"info")}, denied
        # The user can touch nothing outside its prefix and run no administrative command.
        limited = Redis.from_url(url)
        try:
            for command in (
                ("SET", "other:key", "1"),
                ("CONFIG", "SET", "maxmemory", "1"),
                ("FLUSHALL",),
                ("KEYS", "*"),
                ("PUBLISH", "other:events", "x"),
            ):
                with pytest.raises(
                    (NoPermissionError, ResponseError), match=r"(?i)permission|no permissions"
                ):
                    await limited.execute_command(*command)
        finally:
            await limited.aclose()
    finally:
        # The server stops before its user goes: deleting the user disconnects the server's connections, and
        # one dropped so by redis-py can reach the garbage collector unclosed (a ResourceWarning pytest
        # reports in this test).
        if server is not None:
            await server.stop()
        await redis.execute_command("ACL", "DELUSER", user)


async def test_metrics_as_the_acl_user_say_once_that_info_is_refused(
    server_factory: ServerFactory,
    redis: Redis,
    redis_url: str,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The documented user has no INFO: each scrape logged an "unexpected error" with a stack trace.
    user, password = f"qm-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    await redis.execute_command("ACL", "SETUSER", *redis_acl(user, password, prefix).split())
    parts = urlsplit(redis_url)
    url = f"redis://{user}:{password}@{parts.hostname}:{parts.port}/0"
    server: RunningServer | None = None
    try:
        server = await server_factory(redis_url=url, http_listen="127.0.0.1:0")
        async with QueueManager(server.address) as qm:
            await qm.register_queue("acl-scraped")
        caplog.set_level(logging.INFO)
        async with aiohttp.ClientSession() as http:
            for _ in range(3):
                async with http.get(f"http://{server.app.http_address}/metrics") as r:
                    body = await r.text()
                    assert r.status == 200 and 'queue_paused{queue="acl-scraped"}' in body
                    assert "queue_store_memory_used_bytes{" not in body
        said = [r.getMessage() for r in caplog.records if "may not run INFO" in r.getMessage()]
        assert len(said) == 1 and "queue_store_memory_used_bytes" in said[0]
        assert not [r for r in caplog.records if r.getMessage() == "unexpected error"]
    finally:
        if server is not None:
            await server.stop()
        await redis.execute_command("ACL", "DELUSER", user)
    # A command the user lacks reaches a client as the operator's problem it is, never INTERNAL.
    code, message = status_for(NoPermissionError("User qm has no permissions to run the 'xadd' command"))
    assert code == grpc.StatusCode.UNAVAILABLE and "docs/security.md" in message


async def _workload(address: str) -> None:
    """Every area of the service: queues, adds (single, bulk, staged bulk, delayed, chains, dedup), a worker
    completing, failing, retrying, logging and reporting progress, dead letters, job control, schedules,
    workflows, metrics, and queue administration."""
    async with QueueManager(address, timeout=10, concurrency=8, shutdown_grace=5) as qm:
        await qm.register_queue("acl")
        await qm.register_queue("acl-next")
        finished = asyncio.Event()
        seen: set[str] = set()

        @qm.processor("acl")
        async def work(job: JobContext) -> str:
            await job.log("working")
            job.report_progress(50)
            seen.add(job.name)
            if job.name == "boom":
                raise UnrecoverableError("no")
            if job.name == "flaky" and job.attempts_made == 0:
                raise RuntimeError("again")
            if {"one", "flaky", "boom", "chained"} <= seen:
                finished.set()
            return job.name

        @qm.processor("acl-next")
        async def follow(job: JobContext) -> str:
            seen.add("chained")
            if {"one", "flaky", "boom"} <= seen:
                finished.set()
            return "next"

        await qm.add_job("acl", "one", {"x": 1}, {"job_id": "fixed-1", "dedup": {"key": "d"}})
        await qm.add_job("acl", "flaky", None, {"attempts": 2, "backoff": {"type": "fixed", "delay": 10}})
        await qm.add_job("acl", "boom")
        await qm.add_job("acl", "grouped", None, {"group": "tenant"})
        await qm.add_job("acl", "chain", None, {"chain_to": [{"queue_name": "acl-next", "job_name": "n"}]})
        await qm.add_bulk("acl", [{"name": f"bulk-{i}"} for i in range(2_500)])  # staged: over one chunk
        delayed = await qm.add_job("acl", "later", None, {"delay": timedelta(hours=1)})
        await qm.promote_job("acl", delayed.id)
        await qm.add_schedule("acl", "every", every=timedelta(seconds=1), job_name="tick")
        run = await qm.execute_workflow(
            {
                "steps": [
                    {
                        "queue_name": "acl",
                        "job_name": "wf-a",
                        "on_success": [{"queue_name": "acl", "job_name": "wf-b"}],
                    }
                ]
            }
        )
        worker = await qm.start_workers(handle_signals=False)
        async with asyncio.timeout(WAIT):
            await finished.wait()

        async def workflow_completed() -> bool:
            return (await qm.get_workflow(run)).state.name.lower() == "completed"

        async def tick_completed() -> bool:
            jobs, _ = await qm.list_jobs("acl", "completed", page_size=1000)
            return any(j.name == "tick" for j in jobs)

        await eventually(workflow_completed, WAIT)
        await eventually(tick_completed, WAIT)
        async for _snapshot in qm.watch_metrics(interval=timedelta(milliseconds=100), include_workers=True):
            break
        await qm.list_workers()
        await qm.get_all_metrics(include_history=True)
        await qm.get_job_logs("acl", "fixed-1")
        await worker.shutdown()
        waiting = await qm.add_job("acl", "cancel-me")
        await qm.change_priority("acl", waiting.id, "high")
        await qm.set_group_limits("acl", "tenant", concurrency=2)
        await qm.list_groups("acl")
        await qm.add_job("acl", "grouped-left", None, {"group": "tenant"})
        # Pages after the first go on from a cursor (lua/includes/filter.lua: LPOS in the waiting lists).
        for state in ("waiting", "completed"):
            page, token = await qm.list_jobs("acl", state, page_size=1)
            assert page and token, state
            await qm.list_jobs("acl", state, page_size=1, page_token=token)
        await qm.cancel_job("acl", waiting.id, "test")
        await qm.retry_job("acl", waiting.id)
        await qm.retry_failed("acl")
        await qm.pause_queue("acl")
        await qm.resume_queue("acl")
        await qm.clean_queue("acl", 0, "completed")
        await qm.delete_schedule("acl", "every")
        await qm.cancel_workflow(
            await qm.execute_workflow({"steps": [{"queue_name": "acl", "job_name": "c"}]})
        )
        await qm.drain_queue("acl", include_delayed=True)
        await qm.remove_job("acl", (await qm.add_job("acl", "gone")).id)
        await qm.obliterate_queue("acl-next", force=True)
        await qm.obliterate_queue("acl", force=True)


def test_the_documented_acl_is_the_servers() -> None:
    """docs/security.md shows the ACL this test file proves; a command added to REDIS_COMMANDS shows there."""
    doc = (Path(__file__).parents[1] / "docs" / "security.md").read_text()
    assert f"ACL SETUSER {redis_acl('qm-server', 'CHANGE-ME', 'qm')}\n" in doc
