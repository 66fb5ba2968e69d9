"""The Python worker's verdict on a heartbeat the server refused, against a real server and Valkey through the
conformance kit's gRPC proxy (conformance/proxy.py), which holds chosen answers back: an extension that
crossed the WaitForEvent call parking its run is refused as expected (a debug line, no warning), whether the
refusal comes before the call's answer or after the run has ended; a lease really lost still warns."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc.aio
import pytest

from conformance.proxy import Proxy
from queue_manager import JobContext, JobState, QueueManager
from queue_manager.v1 import worker_service_pb2 as pb
from tests.conftest import ServerFactory
from tests.rawworker import eventually
from tests.test_delay_job import until_state

WAIT = 20.0  # generous bound for anything awaited
LEASE_MS = 600  # heartbeats every 200 ms: one comes soon after the call
CROSSED = "a lease extension crossed the call that parked it"


class HoldingProxy(Proxy):
    """The kit's proxy, holding WaitForEvent's answer until `answer` is set and the worker stream's acks
    that refuse something until `acks` is set."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.answer, self.acks = asyncio.Event(), asyncio.Event()
        self.answered = asyncio.Event()  # the server has answered WaitForEvent (and parked the job)
        self.refusals = 0  # acks refusing something, seen from the server

    async def forward(
        self, method: str, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        async for response in super().forward(method, requests, context):
            if method.endswith("/WaitForEvent"):
                self.answered.set()
                await self.answer.wait()
            yield response

    async def connect(
        self, requests: AsyncIterator[pb.ConnectRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ConnectResponse]:
        async for response in super().connect(requests, context):
            if response.WhichOneof("kind") == "ack" and any(r.code for r in response.ack.results):
                self.refusals += 1
                self._note()
                await self.acks.wait()
            yield response


def extended_since(proxy: Proxy, start: int, job_id: str) -> bool:
    """Whether the worker's stream carried an extension of `job_id` after its first `start` messages."""
    return any(
        m.direction == ">"
        and isinstance(m.body, pb.ConnectRequest)
        and any(e.job_id == job_id for e in m.body.report.extensions)
        for m in proxy.streams[0].messages[start:]
    )


def credited_since(proxy: Proxy, start: int) -> bool:
    """Whether the worker granted a credit after its stream's first `start` messages (a run has ended)."""
    return any(
        m.direction == ">" and isinstance(m.body, pb.ConnectRequest) and m.body.report.credits > 0
        for m in proxy.streams[0].messages[start:]
    )


def logged(caplog: pytest.LogCaptureFixture, text: str) -> Callable[[], Awaitable[bool]]:
    """A predicate for `eventually`: a line holding `text` has been logged."""

    async def check() -> bool:
        return any(text in r.getMessage() for r in caplog.records)

    return check


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The client's warnings (the server's own are not the worker's business here)."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name.startswith("queue_manager.")
    ]


@pytest.mark.parametrize("refused", ["before_the_answer", "after_the_run_ended"])
async def test_a_heartbeat_crossing_the_call_that_parks_the_run_is_refused_without_a_warning(
    server_factory: ServerFactory, caplog: pytest.LogCaptureFixture, refused: str
) -> None:
    caplog.set_level(logging.DEBUG, "queue_manager")
    server = await server_factory(lease_ms=LEASE_MS)
    proxy = HoldingProxy(server.address)
    await proxy.start()
    # The worker goes through the proxy; the test's own calls go to the server, as the kit's do.
    qm = QueueManager(proxy.address, concurrency=1, shutdown_grace=2.0)
    admin = QueueManager(server.address)
    try:
        await admin.register_queue("parks")

        @qm.processor("parks")
        async def park(job: JobContext) -> None:
            await job.wait_for_event("order:paid")

        await qm.start_workers()
        job = await admin.add_job("parks", "wait", {})
        # The server has parked the job; its answer waits in the proxy while a heartbeat of the run goes by,
        # which the server refuses (the call ended the lease).
        await asyncio.wait_for(proxy.answered.wait(), WAIT)
        sent = len(proxy.streams[0].messages)
        await proxy.wait_for(lambda: extended_since(proxy, sent, job.id), WAIT, "a heartbeat after the call")
        await proxy.wait_for(lambda: proxy.refusals > 0, WAIT, "the server's refusal of that heartbeat")
        if refused == "before_the_answer":
            proxy.acks.set()
            await eventually(logged(caplog, CROSSED), timeout=WAIT)
            proxy.answer.set()
        else:
            ended = len(proxy.streams[0].messages)
            proxy.answer.set()
            await proxy.wait_for(lambda: credited_since(proxy, ended), WAIT, "the parked run's credit back")
            proxy.acks.set()
            await eventually(logged(caplog, CROSSED), timeout=WAIT)
        parked = await until_state(admin, "parks", job.id, JobState.DELAYED)
        assert parked.event_wait is not None
    finally:
        proxy.answer.set()
        proxy.acks.set()
        await qm.shutdown()
        await admin.shutdown()
        await proxy.stop()
    assert warnings(caplog) == []


async def test_a_heartbeat_refused_because_the_lease_was_lost_still_warns(
    server_factory: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "queue_manager")
    server = await server_factory(lease_ms=LEASE_MS)
    proxy = Proxy(server.address)
    await proxy.start()
    qm = QueueManager(proxy.address, concurrency=1, shutdown_grace=2.0)
    admin = QueueManager(server.address)
    started = asyncio.Event()
    try:
        await admin.register_queue("held")

        @qm.processor("held")
        async def hold(job: JobContext) -> None:
            proxy.drop_extensions.add((job.id, job.lease_token))
            started.set()
            await asyncio.sleep(WAIT)

        await qm.start_workers()
        job = await admin.add_job("held", "hold", {}, {"attempts": 1})
        await asyncio.wait_for(started.wait(), WAIT)
        # Its heartbeats dropped, the run's lease runs out and the server takes the job back; the next
        # heartbeat that reaches the server is refused.
        await until_state(admin, "held", job.id, JobState.FAILED, JobState.DELAYED, JobState.WAITING)
        proxy.drop_extensions.clear()
        await eventually(logged(caplog, "lost its lease"), timeout=WAIT)
    finally:
        await qm.shutdown()
        await proxy.stop()
    assert any(f"job held/{job.id} lost its lease" in w for w in warnings(caplog))
