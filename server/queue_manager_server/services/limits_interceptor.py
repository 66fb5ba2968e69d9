"""Bounds the calls served at once: worker streams and everything else counted apart.

A worker stream holds its slot for its whole life, so it has a pool of its own (``--max-worker-streams``);
a fleet of idle workers can then never starve producers of slots, nor a flood of unary calls lock workers
out. A call past its pool's bound ends at once with ``RESOURCE_EXHAUSTED`` naming the setting; its handler
never runs. Health checks and reflection are not counted (a load balancer must see an overloaded server as
alive). gRPC's own ``maximum_concurrent_rpcs`` would count both kinds in one pool and answer without naming
the setting, hence this interceptor.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio

from queue_manager_server.access import OPEN_PREFIXES, WORKER_SERVICE

_MAKERS = {
    (False, False): (grpc.unary_unary_rpc_method_handler, "unary_unary"),
    (True, False): (grpc.stream_unary_rpc_method_handler, "stream_unary"),
    (False, True): (grpc.unary_stream_rpc_method_handler, "unary_stream"),
    (True, True): (grpc.stream_stream_rpc_method_handler, "stream_stream"),
}


class _Pool:
    __slots__ = ("count", "limit", "message")

    def __init__(self, limit: int, message: str) -> None:
        self.count = 0
        self.limit = limit
        self.message = message


class LimitsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, max_rpcs: int, max_worker_streams: int) -> None:
        self.calls = _Pool(
            max_rpcs,
            f"the server is serving its limit of {max_rpcs} calls at once (--max-concurrent-rpcs, "
            "QM_MAX_CONCURRENT_RPCS); retry shortly",
        )
        self.workers = _Pool(
            max_worker_streams,
            f"the server holds its limit of {max_worker_streams} worker streams (--max-worker-streams, "
            "QM_MAX_WORKER_STREAMS); connect to another server or retry later",
        )
        # Per method: the handler last wrapped and its wrapper (built once while the next handler is the
        # same object on every call, as it is without a per-call interceptor after this one).
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method: str = details.method
        if handler is None or method.startswith(OPEN_PREFIXES):
            return handler
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        pool = self.workers if method.startswith(WORKER_SERVICE) else self.calls
        make, attr = _MAKERS[(handler.request_streaming, handler.response_streaming)]
        behavior = getattr(handler, attr)
        counted = _counted_stream(pool, behavior) if handler.response_streaming else _counted(pool, behavior)
        wrapped = make(
            counted,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        self._wrapped[method] = (handler, wrapped)
        return wrapped


def _counted(pool: _Pool, behavior: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if pool.count >= pool.limit:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, pool.message)
        pool.count += 1
        try:
            return await behavior(request, context)
        finally:
            pool.count -= 1

    return handle


def _counted_stream(pool: _Pool, behavior: Callable[..., Any]) -> Callable[..., AsyncIterator[Any]]:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        if pool.count >= pool.limit:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, pool.message)
        pool.count += 1
        try:
            async for response in behavior(request, context):
                yield response
        finally:
            pool.count -= 1

    return handle
