"""Leases of jobs delivered together: each job keeps its own lease, whatever token the batch shares."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from queue_manager import JobContext, JobState, QueueManager
from queue_manager.v1 import worker_service_pb2 as pb
from queue_manager_server.engine import Engine
from queue_manager_server.services import dispatcher
from tests.conftest import ServerFactory
from tests.rawworker import RawWorker, eventually, lease

WAIT = 30.0


async def test_backlog_longer_than_the_lease_runs_each_job_once(server_factory: ServerFactory) -> None:
    # Lease 1 s (heartbeat every ~0.33 s), jobs of 1.6 s, all queued before the worker connects: the
    # worker gets them in batches sharing a token, and every job's lease must be extended.
    server = await server_factory(lease_ms=1_000)
    client = QueueManager(address=server.address, concurrency=10, shutdown_grace=10.0)
    try:
        await client.register_queue("long")
        jobs = await client.add_bulk("long", [{"name": f"j{i}"} for i in range(10)])
        runs: Counter[str] = Counter()
        tokens: dict[str, str] = {}
        all_started = asyncio.Event()

        @client.processor("long")
        async def slow(job: JobContext) -> str:
            runs[job.id] += 1
            tokens[job.id] = job.lease_token
            if len(runs) == 10:
                all_started.set()
            await asyncio.sleep(1.6)
            return "ok"

        worker = await client.start_workers()
        async with asyncio.timeout(WAIT):
            await all_started.wait()
        assert len(set(tokens.values())) < 10, "expected jobs delivered together (sharing a lease token)"
        await worker.shutdown()
        stored = [await client.get_job("long", job_id) for job_id in jobs]
        assert [(j.state, j.stalled_count) for j in stored] == [(JobState.COMPLETED, 0)] * 10
        assert runs == Counter({job_id: 1 for job_id in jobs})
    finally:
        await client.shutdown()


async def test_shutdown_waits_for_every_job_of_a_batch(server_factory: ServerFactory) -> None:
    server = await server_factory()
    client = QueueManager(address=server.address, concurrency=8, shutdown_grace=10.0)
    try:
        await client.register_queue("batch")
        # Different lengths, so waiting for any single one of them is not enough.
        jobs = await client.add_bulk(
            "batch", [{"name": f"j{i}", "data": {"s": 1.0 - 0.25 * i}} for i in range(4)]
        )
        started: set[str] = set()
        all_started = asyncio.Event()

        @client.processor("batch")
        async def work(job: JobContext) -> str:
            started.add(job.id)
            if len(started) == 4:
                all_started.set()
            await asyncio.sleep(job.data["s"])
            return job.id

        worker = await client.start_workers()
        async with asyncio.timeout(WAIT):
            await all_started.wait()
        await worker.shutdown()  # must wait for all four, not for one per lease token
        stored = [await client.get_job("batch", job_id) for job_id in jobs]
        assert [(j.state, j.result, j.stalled_count) for j in stored] == [
            (JobState.COMPLETED, job_id, 0) for job_id in jobs
        ]
    finally:
        await client.shutdown()


async def test_a_stopping_server_lets_every_worker_stream_clean_up_before_it_stops_dispatching(
    server_factory: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that stops reading leaves its stream's handler in a write when the server stops, and gRPC's
    stop returns before the handler it cancelled has run its clean-up (the release of what its worker held
    and its unlisting, work handed to the dispatcher). The server waits for it: when the dispatcher stops
    (and later Redis closes), every stream's session is closed and nothing is left to start."""
    server = await server_factory(shutdown_grace_ms=200)
    async with QueueManager(server.address) as qm:
        await qm.register_queue("big")
        # 8 MB of deliveries: more than the connection takes while nobody reads.
        await qm.add_bulk("big", [{"name": "j", "data": {"pad": "x" * 200_000, "i": i}} for i in range(40)])
    # No BDP probing: the connection's window stays small (with it, gRPC may widen the window to take the
    # whole 8 MB while the machine is loaded, and no write is left stuck).
    worker = RawWorker(server.address, ["big"], concurrency=100, options=[("grpc.http2.bdp_probe", 0)])
    await worker.connect(credits=100)  # and never reads again
    dispatcher = server.app.dispatcher
    assert dispatcher is not None

    def stuck_in_a_write() -> bool:
        now = time.monotonic()
        return any(s.writing_since and now - s.writing_since > 0.2 for s in dispatcher.all_sessions())

    async with asyncio.timeout(WAIT):
        while not stuck_in_a_write():  # noqa: ASYNC110 - a state of the server, which sends no event
            await asyncio.sleep(0.01)
    sessions = dispatcher.all_sessions()
    closed_when_dispatching_stopped: list[bool] = []
    stop = dispatcher.stop

    async def stop_dispatching() -> None:
        closed_when_dispatching_stopped.extend(s.closed for s in sessions)
        await stop()

    monkeypatch.setattr(dispatcher, "stop", stop_dispatching)
    # Nothing else between gRPC's stop and the dispatcher's gives the handler a turn of its own.
    sampler = server.app.sampler
    assert sampler is not None and server.app.http is None
    sampler_stop = sampler.stop

    async def no_sampler() -> None:
        pass

    monkeypatch.setattr(sampler, "stop", no_sampler)
    try:
        await server.stop()
        assert closed_when_dispatching_stopped == [True]
    finally:
        await sampler_stop()
        await worker.close()


async def test_a_run_going_on_across_a_server_restart_completes_once(server_factory: ServerFactory) -> None:
    """A server that stops (grace over) while a job runs leaves its lease held; the worker reconnects to the
    server started in its place and extends the lease there at once: the run completes, once, with no stall
    (two such restarts used to fail a long job for good, each one counting a stall and running it again)."""
    first = await server_factory(shutdown_grace_ms=200, lease_ms=60_000)
    client = QueueManager(address=first.address, concurrency=2, shutdown_grace=10.0)
    try:
        await client.register_queue("long")
        runs: Counter[str] = Counter()
        started, finish = asyncio.Event(), asyncio.Event()

        @client.processor("long")
        async def slow(job: JobContext) -> str:
            runs[job.id] += 1
            started.set()
            await finish.wait()
            return "ok"

        worker = await client.start_workers()
        job = await client.add_job("long", "x")
        async with asyncio.timeout(WAIT):
            await started.wait()
        for _ in range(2):
            gone = worker.server_id
            await first.stop()
            first = await server_factory(listen=first.address, shutdown_grace_ms=200, lease_ms=60_000)

            async def reconnected(gone: str = gone) -> bool:
                return worker.server_id not in (gone, "")

            async def holds_the_run() -> bool:
                listed = await client.list_workers("long")
                return [(w.server_id, w.in_flight) for w in listed] == [(worker.server_id, 1)]

            await eventually(reconnected, timeout=WAIT)
            # The new server holds the lease at once (the worker's first report extends it), not at the next
            # heartbeat (20 s away): it lists the run, and would release it if this stream broke.
            await eventually(holds_the_run, timeout=5)
        stored = await client.get_job("long", job.id)
        assert (stored.state, stored.stalled_count) == (JobState.ACTIVE, 0)
        finish.set()
        done = await client.wait_for_job("long", job.id, timeout=WAIT)
        assert (done.state, done.result, done.stalled_count, done.attempts_made) == (
            JobState.COMPLETED,
            "ok",
            0,
            1,
        )
        assert runs == Counter({job.id: 1})
    finally:
        await client.shutdown()


async def test_a_run_whose_lease_was_recovered_is_stopped_and_frees_its_slot(
    server_factory: ServerFactory, engine: Engine
) -> None:
    """The server is down longer than the lease and another server recovers the job meanwhile: when the
    worker is back, its run is refused, so it is stopped (it used to go on holding the worker's only slot,
    and the job it had been given waited behind it), and the job runs again at once."""
    first = await server_factory(shutdown_grace_ms=100, lease_ms=1_000)
    address = first.address
    client = QueueManager(address=address, concurrency=1, shutdown_grace=10.0)
    try:
        await client.register_queue("lost")
        outcomes: list[str] = []
        started = asyncio.Event()

        @client.processor("lost")
        async def work(job: JobContext) -> str:
            started.set()
            if job.stalled_count == 0:
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    outcomes.append("first run stopped")
                    raise
            outcomes.append("second run")
            return "ok"

        await client.start_workers()
        job = await client.add_job("lost", "x")
        async with asyncio.timeout(WAIT):
            await started.wait()
        await first.stop()  # the lease stays held for the worker...
        elsewhere = await server_factory(lease_ms=1_000)  # ...but this server's reaper recovers it

        async def recovered() -> bool:
            stored = await engine.get_job("lost", job.id)
            return (stored.state, stored.int("stc")) == ("waiting", 1)

        await eventually(recovered, timeout=WAIT)
        await elsewhere.stop()
        await server_factory(listen=address, lease_ms=1_000)

        async def completed() -> bool:
            return (await engine.get_job("lost", job.id)).state == "completed"

        await eventually(completed, timeout=WAIT)
        assert outcomes == ["first run stopped", "second run"]
    finally:
        await client.shutdown()


async def test_a_silent_worker_gets_no_job_until_it_reports(
    server_factory: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker holding a job that says nothing for a whole lease is passed over: the reaper recovers the
    job, which then waits instead of going back down the silent stream (it would stall again). The
    worker's next report, here the refused extension of its lost lease, has the job sent to it at once,
    not at the queue's idle recheck (made a minute long)."""
    monkeypatch.setattr(dispatcher, "IDLE_RECHECK_S", 60.0)
    server = await server_factory(lease_ms=1_000)
    async with QueueManager(address=server.address) as client:
        await client.register_queue("quiet", default_job_options={"max_stalled": 3})
        raw = RawWorker(server.address, ["quiet"], concurrency=5)
        try:
            await raw.connect(credits=5)
            added = await client.add_job("quiet", "j")
            (first,) = await raw.jobs(1)

            async def recovered() -> bool:
                job = await client.get_job("quiet", added.id)
                return job.state is JobState.WAITING and job.stalled_count == 1

            await eventually(recovered, timeout=WAIT)
            delivery = asyncio.create_task(raw.until("delivery", timeout=WAIT))
            await asyncio.wait([delivery], timeout=1.0)
            assert not delivery.done(), "the silent stream must be sent nothing"
            raw.report(pb.WorkerReport(extensions=[lease(first)]))
            again = (await asyncio.wait_for(delivery, 10.0)).delivery.jobs
            assert [(j.job.id, j.redelivery) for j in again] == [(added.id, True)]
            assert again[0].lease_token != first.lease_token
        finally:
            await raw.close()


async def test_a_slow_claim_reply_does_not_hide_a_silent_worker(
    server_factory: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's silence is counted from the claim's start, as its lease is, not from when the claim's
    reply was handed over. Here every claim's reply comes back 0.5 s late: the reaper recovers the job a
    lease after the claim, and counted from the hand-over the worker had been silent only half a lease, so
    the job went straight back down the silent stream (a race that a busy server also ran into)."""
    monkeypatch.setattr(dispatcher, "IDLE_RECHECK_S", 60.0)
    server = await server_factory(lease_ms=1_000)
    claims = server.app.dispatcher
    assert claims is not None
    real_claim = claims.engine.claim

    async def slow_reply(*args: object, **kwargs: object) -> object:
        result = await real_claim(*args, **kwargs)  # type: ignore[arg-type]
        await asyncio.sleep(0.5)
        return result

    monkeypatch.setattr(claims.engine, "claim", slow_reply)
    async with QueueManager(address=server.address) as client:
        await client.register_queue("quiet", default_job_options={"max_stalled": 3})
        added = await client.add_job("quiet", "j")  # before the worker: its loop claims it, no add folds it
        raw = RawWorker(server.address, ["quiet"], concurrency=5)
        try:
            await raw.connect(credits=5)
            (first,) = await raw.jobs(1)

            delivery = asyncio.create_task(raw.until("delivery", timeout=WAIT))

            async def recovered() -> bool:
                return (await client.get_job("quiet", added.id)).stalled_count == 1

            await eventually(recovered, timeout=WAIT)
            await asyncio.wait([delivery], timeout=1.5)
            assert not delivery.done(), "the silent stream must be sent nothing"
            assert (await client.get_job("quiet", added.id)).state is JobState.WAITING
            raw.report(pb.WorkerReport(extensions=[lease(first)]))
            again = (await asyncio.wait_for(delivery, 10.0)).delivery.jobs
            assert [(j.job.id, j.redelivery) for j in again] == [(added.id, True)]
        finally:
            await raw.close()
