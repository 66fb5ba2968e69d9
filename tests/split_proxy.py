"""A gRPC proxy that splits one client's calls between two servers on one Redis: worker streams
(``WorkerService/Connect``) go to one, every other call to the other, as a load balancer spreading one
channel's calls over several servers may. A stream worker's WaitForEvent or WaitForChildren then reaches
another server than its stream. Calls pass through as bytes, their metadata copied."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import grpc.aio

CONNECT = "/queue_manager.v1.WorkerService/Connect"
# Headers that belong to one HTTP/2 hop, not to the call: not copied upstream.
_HOP_HEADERS = {"user-agent", "content-type", "te", "grpc-accept-encoding", "grpc-timeout"}


class SplitProxy:
    """Listens on a free loopback port; worker streams go to `streams`, every other call to `calls`."""

    def __init__(self, streams: str, calls: str) -> None:
        self.targets = (streams, calls)
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._server: grpc.aio.Server | None = None
        self.address = ""

    async def start(self) -> str:
        self._channels = {t: grpc.aio.insecure_channel(t) for t in self.targets}
        self._server = grpc.aio.server()
        self._server.add_generic_rpc_handlers((_Handler(self),))
        port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()
        self.address = f"127.0.0.1:{port}"
        return self.address

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(0)
        for channel in self._channels.values():
            await channel.close()

    async def forward(
        self, method: str, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        """One call, unary or streaming, to the server its method goes to."""
        channel = self._channels[self.targets[0] if method == CONNECT else self.targets[1]]
        metadata = tuple(
            (k, v)
            for k, v in context.invocation_metadata() or ()
            if not k.startswith(":") and k not in _HOP_HEADERS
        )
        call = channel.stream_stream(method)(requests, metadata=metadata)
        try:
            async for response in call:
                yield response
        except grpc.aio.AioRpcError as exc:
            await context.abort(exc.code(), exc.details() or "")
        finally:
            call.cancel()


class _Handler(grpc.GenericRpcHandler):  # type: ignore[misc]
    def __init__(self, proxy: SplitProxy) -> None:
        self.proxy = proxy

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method: str = details.method

        async def forward(
            requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
        ) -> AsyncIterator[bytes]:
            async for response in self.proxy.forward(method, requests, context):
                yield response

        return grpc.stream_stream_rpc_method_handler(forward)
