"""Runs that end through a unary call of their worker rather than a report on its stream: WaitForEvent and
WaitForChildren park the job. The worker stream's session on the server must forget such a lease as it
forgets one a report settles (services/dispatcher.py `lease_ended`): a lease kept counted for ever against
the credits the session may hold (`--max-worker-credits`), so a worker whose jobs all waited stopped
getting jobs once that many had parked; it showed in the worker's in-flight figure, and a drain waited on it.
When the call reaches another server than the stream's (several servers on one Redis behind one address),
only the worker can tell the stream's server: it names the run in its next report's ``parked``.
A real server (two for those, on one Redis, behind tests/split_proxy.py) and Valkey, the Python worker."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from queue_manager import ChildSpec, JobContext, QueueManager
from queue_manager.v1 import external_events_pb2, queue_service_pb2_grpc
from queue_manager.v1 import worker_service_pb2 as pb
from tests.conftest import RunningServer, ServerFactory
from tests.rawworker import RawWorker, eventually, lease
from tests.split_proxy import SplitProxy

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

    async def forgotten() -> bool:  # at once on one server; with the next report when the call went elsewhere
        return held(server) == 0

    await eventually(forgotten)

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


# ---- the calls on another server than the stream's ---------------------------------------------------


@pytest.fixture
async def split(server: RunningServer, server_factory: ServerFactory) -> AsyncIterator[str]:
    """An address whose worker streams reach `server` and whose other calls reach a second server."""
    other = await server_factory()
    proxy = SplitProxy(streams=server.address, calls=other.address)
    yield await proxy.start()
    await proxy.stop()


@pytest.fixture
async def split_qm(split: str) -> AsyncIterator[QueueManager]:
    client = QueueManager(address=split, concurrency=3, shutdown_grace=5.0)
    yield client
    await client.shutdown()


async def test_events_waited_through_another_server_free_their_leases(
    server: RunningServer, split_qm: QueueManager
) -> None:
    qm = split_qm
    await qm.register_queue("ev")

    @qm.processor("ev")
    async def work(job: JobContext) -> None:
        await job.wait_for_event(f"go:{job.data['i']}")

    await qm.add_bulk("ev", [{"name": "x", "data": {"i": i}} for i in range(JOBS)])
    await qm.start_workers()
    await all_parked(qm, "ev", server)


async def test_children_waited_through_another_server_free_their_leases(
    server: RunningServer, split_qm: QueueManager
) -> None:
    qm = split_qm
    await qm.register_queue("parents")
    await qm.register_queue("children")

    @qm.processor("parents")
    async def split(job: JobContext) -> None:
        await job.wait_for_children([ChildSpec("children", "part", {"of": job.data["i"]})])

    await qm.add_bulk("parents", [{"name": "x", "data": {"i": i}} for i in range(JOBS)])
    await qm.start_workers()
    await all_parked(qm, "parents", server)


async def test_parked_report_forgets_the_lease_and_ignores_one_not_held(
    server: RunningServer, server_factory: ServerFactory, qm: QueueManager
) -> None:
    """The protocol by hand: the stream on one server, WaitForEvent on the other. The stream's server holds
    the lease until the report names it in ``parked``; a parked item naming a lease the stream does not hold
    is ignored (no ack), and the stream goes on."""
    other = await server_factory()
    await qm.register_queue("raw")
    job = await qm.add_job("raw", "x", {})
    worker = RawWorker(server.address, ["raw"])
    try:
        await worker.connect(credits=1)
        (leased,) = await worker.jobs(1)
        async with grpc.aio.insecure_channel(other.address) as channel:
            await queue_service_pb2_grpc.QueueServiceStub(channel).WaitForEvent(
                external_events_pb2.WaitForEventRequest(
                    queue_name="raw", job_id=job.id, lease_token=leased.lease_token, keys=["never"]
                )
            )
        assert held(server) == 1  # the call reached the other server: this one cannot know
        stale = pb.LeaseRef(queue_name="raw", job_id=job.id, lease_token="not-the-token")
        unknown = pb.LeaseRef(queue_name="raw", job_id="no-such-job", lease_token=leased.lease_token)
        worker.report(pb.WorkerReport(parked=[stale, unknown]))
        # An extension of an unknown lease is always answered: had the parked items been, that came first.
        probe = pb.LeaseRef(queue_name="raw", job_id="probe", lease_token="t")
        worker.report(pb.WorkerReport(extensions=[probe]))
        ack = (await worker.until("ack")).ack
        assert [r.lease.job_id for r in ack.results] == ["probe"]
        assert held(server) == 1
        worker.report(pb.WorkerReport(parked=[lease(leased)]))

        async def forgotten() -> bool:
            return held(server) == 0

        await eventually(forgotten)
    finally:
        await worker.close()
