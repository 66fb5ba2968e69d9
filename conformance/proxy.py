"""The kit's window on the worker protocol: a gRPC proxy between the worker under test and the real server.

Every call passes through unchanged (as bytes) but ``WorkerService/Connect``, whose messages are decoded,
recorded per stream (`StreamRecord`, with the time each passed) and forwarded. One fault can be injected:
the heartbeats (``report.extensions``) of chosen leases are dropped, so those leases run out on the server
while the worker still runs them (the lease-fencing check). The upstream server may stop and come back on
the same address: a stream opened meanwhile ends UNAVAILABLE, as it would against the server itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio

from queue_manager.v1 import worker_service_pb2 as pb
from queue_manager.v1 import worker_service_pb2_grpc as pb_grpc

CONNECT = "/queue_manager.v1.WorkerService/Connect"
# Headers that belong to one HTTP/2 hop, not to the call: not copied upstream.
_HOP_HEADERS = {"user-agent", "content-type", "te", "grpc-accept-encoding", "grpc-timeout"}


@dataclass
class Message:
    """One message of a worker stream: ``>`` worker to server, ``<`` server to worker."""

    at: float
    direction: str
    body: pb.ConnectRequest | pb.ConnectResponse | None = None
    # For the end of a direction: "half-close" (the worker's), or the status the stream ended with.
    end: str = ""
    # With a status other than OK, the server's message: what the kit shows a worker whose stream it ended.
    details: str = ""


@dataclass
class StreamRecord:
    """Everything one worker stream carried, in the order the proxy saw it."""

    number: int
    messages: list[Message] = field(default_factory=list)
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, direction: str, body: Any = None, end: str = "", details: str = "") -> None:
        self.messages.append(Message(time.monotonic(), direction, body, end, details))


class Proxy:
    """A loopback gRPC server forwarding to `upstream`, recording every worker stream."""

    def __init__(self, upstream: str, listen: str = "127.0.0.1:0") -> None:
        self.upstream = upstream
        self.listen = listen
        self.streams: list[StreamRecord] = []
        # Leases (job id, lease token) whose extensions are dropped on the way to the server.
        self.drop_extensions: set[tuple[str, str]] = set()
        self.changed = asyncio.Event()  # set at every recorded message: a waiter re-checks its condition
        # Called with each worker stream once it has ended (the recording proxy saves it then).
        self.on_stream_end: Callable[[StreamRecord], None] | None = None
        self._server: grpc.aio.Server | None = None
        self._channel: grpc.aio.Channel | None = None
        self.address = ""

    async def start(self) -> None:
        self._channel = grpc.aio.insecure_channel(self.upstream)
        self._server = grpc.aio.server()
        self._server.add_generic_rpc_handlers((_Handler(self),))
        port = self._server.add_insecure_port(self.listen)
        self.address = f"{self.listen.rsplit(':', 1)[0]}:{port}"
        await self._server.start()

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(0)
        if self._channel is not None:
            await self._channel.close()

    def _note(self) -> None:
        self.changed.set()

    async def wait_for(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        """Returns once `check()` holds, re-checked at every message the proxy records."""
        try:
            async with asyncio.timeout(timeout):
                while not check():
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            raise AssertionError(f"not within {timeout:.0f} s: {what}") from None

    async def connect(
        self, requests: AsyncIterator[pb.ConnectRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ConnectResponse]:
        record = StreamRecord(len(self.streams) + 1)
        self.streams.append(record)
        assert self._channel is not None
        call = pb_grpc.WorkerServiceStub(self._channel).Connect(
            self._upstream_requests(requests, record), metadata=_call_metadata(context)
        )
        try:
            async for response in call:
                record.add("<", response)
                self._note()
                yield response
            record.add("<", end="OK")
        except grpc.aio.AioRpcError as exc:
            record.add("<", end=exc.code().name, details=exc.details() or "")
            await context.abort(exc.code(), exc.details() or "")
        finally:
            call.cancel()
            record.ended.set()
            self._note()
            if self.on_stream_end is not None:
                self.on_stream_end(record)

    async def _upstream_requests(
        self, requests: AsyncIterator[pb.ConnectRequest], record: StreamRecord
    ) -> AsyncIterator[pb.ConnectRequest]:
        async for request in requests:
            record.add(">", request)
            self._note()
            if request.WhichOneof("kind") == "report" and self.drop_extensions:
                kept = [
                    e
                    for e in request.report.extensions
                    if (e.job_id, e.lease_token) not in self.drop_extensions
                ]
                if len(kept) != len(request.report.extensions):
                    faulted = pb.ConnectRequest()  # the record keeps what the worker sent
                    faulted.CopyFrom(request)
                    del faulted.report.extensions[:]
                    faulted.report.extensions.extend(kept)
                    request = faulted
            yield request
        record.add(">", end="half-close")
        self._note()

    async def forward(
        self, method: str, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        """Any other call, unary or streaming, as bytes."""
        assert self._channel is not None
        call = self._channel.stream_stream(method)(requests, metadata=_call_metadata(context))
        try:
            # The upstream's headers at once, before any message: a client may wait for them before it writes
            # (the Python producer stream does), and they would otherwise go out with the first response,
            # which never comes.
            await context.send_initial_metadata(_forwarded(await call.initial_metadata()))
            async for response in call:
                yield response
        except grpc.aio.AioRpcError as exc:
            await context.abort(exc.code(), exc.details() or "")
        finally:
            call.cancel()


def _forwarded(metadata: Any) -> tuple[tuple[str, str | bytes], ...]:
    """Metadata to pass on: none of the transport's own (pseudo-headers and hop-by-hop headers)."""
    return tuple((k, v) for k, v in metadata or () if not k.startswith(":") and k not in _HOP_HEADERS)


def _call_metadata(context: grpc.aio.ServicerContext) -> tuple[tuple[str, str | bytes], ...]:
    return _forwarded(context.invocation_metadata())


class _Handler(grpc.GenericRpcHandler):  # type: ignore[misc]
    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method: str = details.method
        if method == CONNECT:
            return grpc.stream_stream_rpc_method_handler(
                self.proxy.connect,
                request_deserializer=pb.ConnectRequest.FromString,
                response_serializer=pb.ConnectResponse.SerializeToString,
            )

        async def forward(
            requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
        ) -> AsyncIterator[bytes]:
            async for response in self.proxy.forward(method, requests, context):
                yield response

        return grpc.stream_stream_rpc_method_handler(forward)
