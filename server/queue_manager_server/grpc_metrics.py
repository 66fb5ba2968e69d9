"""The grpc-ecosystem server metrics, counted by an interceptor of our own (py-grpc-prometheus has no aio).

Names and labels are those of go-grpc-prometheus, so existing gRPC dashboards and alerts work unchanged:
``grpc_server_started_total``, ``grpc_server_handled_total`` (with ``grpc_code``, spelled as Go spells
it: ``OK``, ``NotFound``, ``InvalidArgument``…), ``grpc_server_msg_received_total``,
``grpc_server_msg_sent_total`` and the ``grpc_server_handling_seconds`` histogram, each labelled
``grpc_type`` (unary, client_stream, server_stream, bidi_stream), ``grpc_service`` and ``grpc_method``.

They describe the calls this process served, so unlike the queue metrics (read from Redis at scrape time)
they are per process: scrape every server and sum.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc
import grpc.aio
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

# A bucket bound as Prometheus writes it ("0.005", "+Inf").
go_float: Callable[[float], str] = floatToGoString

# Prometheus's default buckets (seconds), the ones go-grpc-prometheus uses for handling time.
HANDLING_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# grpc.StatusCode → the name Go's codes.Code.String() gives it (the label value dashboards expect).
GO_CODE_NAMES = {
    code: "".join(part.capitalize() for part in code.name.split("_")) for code in grpc.StatusCode
}
GO_CODE_NAMES[grpc.StatusCode.OK] = "OK"
GO_CODE_NAMES[grpc.StatusCode.CANCELLED] = "Canceled"

Labels = tuple[str, str, str]  # grpc_type, grpc_service, grpc_method


class _Histogram:
    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(HANDLING_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(HANDLING_BUCKETS, seconds)] += 1
        self.total += seconds


class GrpcMetrics:
    """The counters of this process's RPCs, and a prometheus_client collector over them."""

    def __init__(self) -> None:
        self.started: dict[Labels, int] = defaultdict(int)
        self.handled: dict[tuple[str, str, str, str], int] = defaultdict(int)
        self.received: dict[Labels, int] = defaultdict(int)
        self.sent: dict[Labels, int] = defaultdict(int)
        self.handling: dict[Labels, _Histogram] = defaultdict(_Histogram)
        self.interceptor = MetricsInterceptor(self)

    def finish(self, labels: Labels, code: grpc.StatusCode, seconds: float) -> None:
        self.handled[(*labels, GO_CODE_NAMES.get(code, "Unknown"))] += 1
        self.handling[labels].observe(seconds)

    def collect(self) -> Iterator[Metric]:
        names = ["grpc_type", "grpc_service", "grpc_method"]
        for name, doc, values in (
            ("grpc_server_started", "RPCs started on the server.", self.started),
            ("grpc_server_msg_received", "Stream messages received by the server.", self.received),
            ("grpc_server_msg_sent", "Stream messages sent by the server.", self.sent),
        ):
            family = CounterMetricFamily(name, doc, labels=names)
            for labels, count in sorted(values.items()):
                family.add_metric(list(labels), count)
            yield family
        handled = CounterMetricFamily(
            "grpc_server_handled",
            "RPCs completed on the server, by status code.",
            labels=[*names, "grpc_code"],
        )
        for labels4, count in sorted(self.handled.items()):
            handled.add_metric(list(labels4), count)
        yield handled
        seconds = HistogramMetricFamily(
            "grpc_server_handling_seconds",
            "Time from the start of an RPC to its end (a stream's whole life), in seconds.",
            labels=names,
        )
        for labels, hist in sorted(self.handling.items()):
            cumulative, buckets = 0, []
            for bound, count in zip([*HANDLING_BUCKETS, float("inf")], hist.counts, strict=True):
                cumulative += count
                buckets.append((go_float(bound), cumulative))
            seconds.add_metric(list(labels), buckets, hist.total)
        yield seconds


def _labels(method: str, request_streaming: bool, response_streaming: bool) -> Labels:
    service, _, name = method.lstrip("/").rpartition("/")
    kind = {
        (False, False): "unary",
        (True, False): "client_stream",
        (False, True): "server_stream",
        (True, True): "bidi_stream",
    }[(request_streaming, response_streaming)]
    return kind, service, name


def _code(context: grpc.aio.ServicerContext, default: grpc.StatusCode) -> grpc.StatusCode:
    code = context.code()
    return code if isinstance(code, grpc.StatusCode) else default


class MetricsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Wraps every handler (each of the four RPC shapes) to count it; adds nothing to a call's work but a
    few dictionary updates."""

    def __init__(self, metrics: GrpcMetrics) -> None:
        self.metrics = metrics
        # Per method: the handler last wrapped and its wrapper. Without a per-call interceptor after this
        # one, the next handler is the same object on every call, so its wrapper is built once.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        labels = _labels(method, handler.request_streaming, handler.response_streaming)
        wrap = {
            "unary": (self._unary, grpc.unary_unary_rpc_method_handler, handler.unary_unary),
            "client_stream": (self._unary, grpc.stream_unary_rpc_method_handler, handler.stream_unary),
            "server_stream": (self._stream, grpc.unary_stream_rpc_method_handler, handler.unary_stream),
            "bidi_stream": (self._stream, grpc.stream_stream_rpc_method_handler, handler.stream_stream),
        }
        make_behavior, make_handler, behavior = wrap[labels[0]]
        return make_handler(
            make_behavior(labels, behavior),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _requests(self, labels: Labels, request: Any) -> Any:
        """The request as the handler sees it: a stream's messages are counted as they are read."""
        if labels[0] in ("unary", "server_stream"):
            self.metrics.received[labels] += 1
            return request
        return self._count_in(labels, request)

    async def _count_in(self, labels: Labels, requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for message in requests:
            self.metrics.received[labels] += 1
            yield message

    def _unary(self, labels: Labels, behavior: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
        m = self.metrics

        async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
            m.started[labels] += 1
            start = time.perf_counter()
            code = grpc.StatusCode.UNKNOWN
            try:
                response = await behavior(self._requests(labels, request), context)
                code = _code(context, grpc.StatusCode.OK)
                if code == grpc.StatusCode.OK:
                    m.sent[labels] += 1
                return response
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except BaseException:
                code = _code(context, grpc.StatusCode.UNKNOWN)
                raise
            finally:
                m.finish(labels, code, time.perf_counter() - start)

        return handle

    def _stream(self, labels: Labels, behavior: Callable[..., Any]) -> Callable[..., AsyncIterator[Any]]:
        m = self.metrics

        async def handle(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            m.started[labels] += 1
            start = time.perf_counter()
            code = grpc.StatusCode.UNKNOWN
            try:
                result = behavior(self._requests(labels, request), context)
                if hasattr(result, "__aiter__"):
                    async for response in result:
                        m.sent[labels] += 1
                        yield response
                else:  # a handler that writes with context.write() and returns a coroutine
                    await result
                code = _code(context, grpc.StatusCode.OK)
            except (asyncio.CancelledError, GeneratorExit):
                code = grpc.StatusCode.CANCELLED
                raise
            except BaseException:
                code = _code(context, grpc.StatusCode.UNKNOWN)
                raise
            finally:
                m.finish(labels, code, time.perf_counter() - start)

        return handle
