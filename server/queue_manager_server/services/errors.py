"""Turns domain errors into gRPC statuses, in one place, for unary and streaming handlers."""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from redis.exceptions import BusyLoadingError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from queue_manager_server import errors

log = logging.getLogger("queue_manager_server.services")

_STATUS: list[tuple[type[Exception], grpc.StatusCode]] = [
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.QueueNotFound, grpc.StatusCode.NOT_FOUND),
    (errors.JobNotFound, grpc.StatusCode.NOT_FOUND),
    (errors.LeaseNotHeld, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.JobActive, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
]


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status and message a client sees for an exception (never a stack trace)."""
    for kind, code in _STATUS:
        if isinstance(exc, kind):
            return code, str(exc)
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | BusyLoadingError):
        return grpc.StatusCode.UNAVAILABLE, "the job store (Redis) is unreachable; retry shortly"
    if isinstance(exc, ResponseError) and str(exc).startswith("OOM"):
        return (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "the job store (Redis) is out of memory; nothing was written",
        )
    ref = uuid.uuid4().hex[:12]
    log.error("unexpected error", exc_info=exc, extra={"error_ref": ref})
    return grpc.StatusCode.INTERNAL, f"internal error (reference {ref}); see the server log"


T = TypeVar("T")
Handler = Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[T]]


def unary(fn: Handler[T]) -> Handler[T]:
    """Wraps a unary (or client-streaming) handler: domain errors become statuses."""

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> T:
        try:
            return await fn(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            code, message = status_for(exc)
            await context.abort(code, message)
            raise AssertionError("unreachable") from None

    return wrapper


def streaming(
    fn: Callable[[Any, Any, grpc.aio.ServicerContext], AsyncIterator[T]],
) -> Callable[..., AsyncIterator[T]]:
    """Wraps a server-streaming (or bidi) handler the same way."""

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[T]:
        try:
            async for item in fn(self, request, context):
                yield item
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            code, message = status_for(exc)
            await context.abort(code, message)

    return wrapper
