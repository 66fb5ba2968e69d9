"""A minimal worker speaking the stream protocol by hand, to test the server side of it exactly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from queue_manager.v1 import worker_service_pb2 as pb
from queue_manager.v1 import worker_service_pb2_grpc as rpc


class RawWorker:
    def __init__(
        self,
        address: str,
        queues: list[str],
        worker_id: str = "raw-1",
        concurrency: int = 10,
        options: list[tuple[str, int]] | None = None,
    ) -> None:
        self.channel = grpc.aio.insecure_channel(address, options=options)
        self.queues = queues
        self.worker_id = worker_id
        self.concurrency = concurrency
        self._out: asyncio.Queue[pb.ConnectRequest | None] = asyncio.Queue()
        self.call: grpc.aio.StreamStreamCall | None = None
        self.welcome: pb.ServerWelcome | None = None

    async def _requests(self) -> AsyncIterator[pb.ConnectRequest]:
        while (m := await self._out.get()) is not None:
            yield m

    async def connect(self, credits: int = 0) -> pb.ServerWelcome:
        self._out.put_nowait(
            pb.ConnectRequest(
                hello=pb.WorkerHello(
                    worker_id=self.worker_id, queues=self.queues, concurrency=self.concurrency
                )
            )
        )
        self.call = rpc.WorkerServiceStub(self.channel).Connect(self._requests())
        first = await self.recv()
        assert first.WhichOneof("kind") == "welcome", first
        self.welcome = first.welcome
        if credits:
            self.report(pb.WorkerReport(credits=credits))
        return first.welcome

    def open(self) -> None:
        """Starts the stream without a hello (connect sends one): for a refusal at the call's start, which a
        hello written meanwhile can turn into grpc.aio's own INTERNAL (its write fails first) instead of the
        server's status."""
        self.call = rpc.WorkerServiceStub(self.channel).Connect(self._requests())

    def report(self, r: pb.WorkerReport) -> None:
        self._out.put_nowait(pb.ConnectRequest(report=r))

    async def recv(self, timeout: float = 10.0) -> pb.ConnectResponse:
        assert self.call is not None
        m = await asyncio.wait_for(self.call.read(), timeout)
        assert m is not grpc.aio.EOF, "stream ended"
        return m  # type: ignore[return-value]

    async def jobs(self, n: int, timeout: float = 10.0) -> list[pb.LeasedJob]:
        got: list[pb.LeasedJob] = []
        while len(got) < n:
            m = await self.recv(timeout)
            if m.WhichOneof("kind") == "delivery":
                got += m.delivery.jobs
        return got

    async def until(self, kind: str, timeout: float = 10.0) -> pb.ConnectResponse:
        while True:
            m = await self.recv(timeout)
            if m.WhichOneof("kind") == kind:
                return m

    def half_close(self) -> None:
        self._out.put_nowait(None)

    async def wait_end(self, timeout: float = 10.0) -> None:
        assert self.call is not None
        while await asyncio.wait_for(self.call.read(), timeout) is not grpc.aio.EOF:
            pass

    async def close(self) -> None:
        if self.call is not None:
            self.call.cancel()
        await self.channel.close()


def lease(j: pb.LeasedJob) -> pb.LeaseRef:
    return pb.LeaseRef(queue_name=j.job.queue_name, job_id=j.job.id, lease_token=j.lease_token)


async def eventually(check: object, timeout: float = 10.0, interval: float = 0.02) -> None:
    """Awaits an async predicate becoming true (for state another process changes)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(interval)
