"""Worker shutdown with jobs still arriving: jobs never run are handed back without a stall."""

from __future__ import annotations

import asyncio
import logging

import pytest

from queue_manager import JobContext, QueueManager
from queue_manager import worker as worker_module
from queue_manager_server.engine import Engine
from tests.conftest import RunningServer, ServerFactory
from tests.rawworker import eventually


async def test_shutdown_as_jobs_arrive_releases_unstarted_jobs_without_stall(
    server: RunningServer, engine: Engine
) -> None:
    admin = QueueManager(address=server.address)
    await admin.register_queue("busy")
    runs: list[str] = []
    for round_ in range(10):
        qm = QueueManager(address=server.address, concurrency=8)

        @qm.processor("busy")
        async def work(job: JobContext) -> None:
            runs.append(job.id)

        worker = await qm.start_workers()
        async with asyncio.timeout(10):
            await worker.wait_connected()
        await asyncio.sleep(0.05)  # idle: the server holds all 8 credits
        await admin.add_bulk("busy", [{"name": "b", "data": round_}] * 20)
        await worker.shutdown(grace=5.0)  # deliveries race with the shutdown
        await qm.shutdown()

    async def handed_back() -> bool:
        # A claim that comes back after its session closed releases its jobs in a task of the server's own
        # (Dispatcher._hand_over): on a loaded machine that lands a moment after the last shutdown returns.
        return (await engine.metrics("busy")).active == 0

    await eventually(handed_back)
    m = await engine.metrics("busy")
    assert m.stalled_total == 0, m
    assert (m.completed, m.waiting, m.active) == (len(runs), 200 - len(runs), 0)
    await admin.shutdown()


async def test_shutdown_with_the_server_gone_retries_with_backoff(
    server_factory: ServerFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker shut down while its server is unreachable, with an outcome still to send, keeps trying
    until its close timeout, backing off: it used to retry in a tight loop (thousands of attempts and log
    lines a second), its backoff wait ending at once on the closing event already set."""
    monkeypatch.setattr(worker_module, "_CLOSE_TIMEOUT", 1.0)
    server = await server_factory(shutdown_grace_ms=100)
    client = QueueManager(address=server.address, concurrency=1)
    try:
        await client.register_queue("gone")
        started = asyncio.Event()

        @client.processor("gone")
        async def work(job: JobContext) -> str:
            started.set()
            await asyncio.sleep(0.5)
            return "done"

        worker = await client.start_workers()
        await client.add_job("gone", "x")
        async with asyncio.timeout(30):
            await started.wait()
        await server.stop()
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="queue_manager.worker"):
            await worker.shutdown(grace=5)  # the run ends; its outcome cannot be sent
        attempts = [r for r in caplog.records if "stream lost" in r.getMessage()]
        assert 1 <= len(attempts) <= 30, len(attempts)
    finally:
        await client.shutdown()
