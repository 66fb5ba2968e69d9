"""Failed runs on the hot path: their scripts publish the wake-ups of the retried jobs (no second round trip),
and a report's completions and failures go to Redis together, not one after the other."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from queue_manager import JobState, QueueManager
from queue_manager.v1 import worker_service_pb2 as pb
from tests.conftest import RunningServer, ServerFactory
from tests.rawworker import RawWorker


def _failure(j: pb.LeasedJob) -> pb.JobFailure:
    return pb.JobFailure(
        queue_name=j.job.queue_name, job_id=j.job.id, lease_token=j.lease_token, message="boom"
    )


async def test_a_retried_job_wakes_the_workers_of_every_server(server_factory: ServerFactory) -> None:
    a, b = await server_factory(), await server_factory()
    engine = a.app.dispatcher.engine if a.app.dispatcher else None
    assert engine is not None
    sent: list[str] = []
    notify = engine.notify_waiting

    async def counted(queue: str) -> None:
        sent.append(queue)
        await notify(queue)

    engine.notify_waiting = counted  # type: ignore[method-assign]
    async with QueueManager(a.address, timeout=10) as qm:
        await qm.register_queue("retried")
        job = await qm.add_job("retried", "flaky", None, {"attempts": 2})
    first, second = RawWorker(a.address, ["retried"]), RawWorker(b.address, ["retried"], "raw-2")
    try:
        await first.connect(credits=1)
        (leased,) = await first.jobs(1)
        await second.connect(credits=1)  # idle: the queue is empty now
        started = time.monotonic()
        first.report(pb.WorkerReport(failures=[_failure(leased)]))  # no credit back: only b can take it
        (again,) = await second.jobs(1, timeout=10)
        waited = time.monotonic() - started
        assert again.job.id == job.id and again.job.attempts_made == 1
        # Woken by the fail script's event: an idle server otherwise looks again only every 5 s.
        assert waited < 2.0, f"the retry reached the other server after {waited:.2f} s"
        assert sent == [], "the server published the wake-up itself: a second round trip per failure"
    finally:
        await first.close()
        await second.close()


async def test_a_reports_completions_and_failures_go_to_redis_together(server: RunningServer) -> None:
    engine = server.app.dispatcher.engine if server.app.dispatcher else None
    assert engine is not None
    failing = asyncio.Event()
    complete, fail = engine.complete, engine.fail

    async def complete_once_failing(*args: Any, **kwargs: Any) -> Any:
        # Sent one after the other, the completions would wait here for a failure that comes after them.
        await asyncio.wait_for(failing.wait(), 5)
        return await complete(*args, **kwargs)

    async def fail_now(*args: Any, **kwargs: Any) -> Any:
        failing.set()
        return await fail(*args, **kwargs)

    engine.complete, engine.fail = complete_once_failing, fail_now  # type: ignore[method-assign]
    async with QueueManager(server.address, timeout=10) as qm:
        await qm.register_queue("both")
        ok = await qm.add_job("both", "ok")
        bad = await qm.add_job("both", "bad")
        w = RawWorker(server.address, ["both"])
        try:
            await w.connect(credits=2)
            leased = {j.job.id: j for j in await w.jobs(2)}
            report = pb.WorkerReport(failures=[_failure(leased[bad.id])])
            done = leased[ok.id]
            report.completions.add(queue_name="both", job_id=done.job.id, lease_token=done.lease_token)
            w.report(report)
            for job_id, state in ((ok.id, JobState.COMPLETED), (bad.id, JobState.FAILED)):
                finished = await asyncio.wait_for(qm.wait_for_job("both", job_id), 10)
                assert finished.state is state
        finally:
            await w.close()
