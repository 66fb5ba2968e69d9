"""Runs that end through a unary call of their worker rather than a report on its stream: WaitForEvent and
WaitForChildren park the job. The worker stream's session on the server must forget such a lease as it
forgets one a report settles (services/dispatcher.py `lease_ended`): a lease kept counted for ever against
the credits the session may hold (`--max-worker-credits`), so a worker whose jobs all waited stopped
getting jobs once that many had parked; it showed in the worker's in-flight figure, and a drain waited on it.
A real server and Valkey, the Python worker."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from queue_manager import ChildSpec, JobContext, QueueManager
from tests.conftest import RunningServer, ServerFactory
from tests.rawworker import eventually

JOBS = 20  # well past the server's bound of credits below
MAX_CREDITS = 6


@pytest.fixture
async def server(server_factory: ServerFactory) -> RunningServer:
    return await server_factory(max_worker_credits=MAX_CREDITS)


@pytest.fixture
async def qm(server: RunningServer) -> AsyncIterator[QueueManager]:
    client = QueueManager(address=server.address, concurrency=3, shutdown_grace=5.0)
    yield client
    await client.shutdown()


def held(server: RunningServer) -> int:
    dispatcher = server.app.dispatcher
    assert dispatcher is not None
    return sum(len(s.leases) for s in dispatcher.all_sessions())


async def all_parked(qm: QueueManager, queue: str, server: RunningServer) -> None:
    async def parked() -> bool:
        return (await qm.get_queue_metrics(queue)).delayed == JOBS

    await eventually(parked, timeout=30.0)
    assert held(server) == 0

    async def idle() -> bool:  # the registry's figure is as of the worker's last heartbeat
        workers = await qm.list_workers(queue)
        return bool(workers) and all(w.in_flight == 0 for w in workers)

    await eventually(idle, timeout=30.0)


async def test_jobs_parked_for_events_free_their_leases(server: RunningServer, qm: QueueManager) -> None:
    await qm.register_queue("ev")

    @qm.processor("ev")
    async def work(job: JobContext) -> None:
        await job.wait_for_event(f"go:{job.data['i']}")

    await qm.add_bulk("ev", [{"name": "x", "data": {"i": i}} for i in range(JOBS)])
    await qm.start_workers()
    await all_parked(qm, "ev", server)


async def test_jobs_waiting_for_children_free_their_leases(server: RunningServer, qm: QueueManager) -> None:
    await qm.register_queue("parents")
    await qm.register_queue("children")  # no worker takes these: every parent stays parked

    @qm.processor("parents")
    async def split(job: JobContext) -> None:
        await job.wait_for_children([ChildSpec("children", "part", {"of": job.data["i"]})])

    await qm.add_bulk("parents", [{"name": "x", "data": {"i": i}} for i in range(JOBS)])
    await qm.start_workers()
    await all_parked(qm, "parents", server)
