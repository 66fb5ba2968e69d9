"""`ClientBase`: what the parts of `QueueManager` share: its settings, its channel (opened on first use) and
its unary calls, whose failures become the client's errors (errors.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import grpc
import grpc.aio

from queue_manager import tracing
from queue_manager.channel import aio_channel
from queue_manager.codecs import CodecChain
from queue_manager.errors import error_from_rpc
from queue_manager.v1 import queue_service_pb2_grpc

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer, TracerProvider

    from queue_manager.v1.queue_service_pb2_grpc import QueueServiceAsyncStub


__all__ = ["ClientBase"]

# The adds' tracer before it was read (QueueManager._tracing).
UNREAD = object()


class ClientBase:
    """The channel and the call plumbing of a `QueueManager`; its `__init__` sets these (client.py)."""

    address: str
    timeout: float | None
    _credentials: grpc.ChannelCredentials | None
    _token: str | None
    _channel_options: list[tuple[str, Any]] | None
    _tracer_provider: TracerProvider | None
    _tracer: Tracer | object | None
    _channel: grpc.aio.Channel | None
    _queues: QueueServiceAsyncStub | None
    _codecs: CodecChain | None  # the payload codecs (codecs.py); None: payloads go and come as they are

    def _ensure_channel(self) -> grpc.aio.Channel:
        if self._channel is None:
            self._channel = aio_channel(self.address, self._credentials, self._channel_options, self._token)
            self._queues = cast(
                "QueueServiceAsyncStub", queue_service_pb2_grpc.QueueServiceStub(self._channel)
            )
        return self._channel

    def _tracing(self) -> Tracer | None:
        """The adds' tracer (None: tracing is off), read once."""
        tracer = self._tracer
        if tracer is UNREAD:
            tracer = self._tracer = tracing.tracer(self._tracer_provider)
        return cast("Tracer | None", tracer)

    def _queue_stub(self) -> QueueServiceAsyncStub:
        self._ensure_channel()
        assert self._queues is not None
        return self._queues

    async def _unary(self, method: Any, request: Any) -> Any:
        # grpc is untyped for mypy here; each caller annotates the response type it receives.
        codecs = self._codecs
        if codecs is not None:  # every payload of every call, so that no call can send one in clear
            codecs.encode_message(request)
        try:
            response = await method(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        if codecs is not None:
            codecs.decode_message(response)
        return response
