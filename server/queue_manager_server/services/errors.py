"""Turns domain errors into gRPC statuses, in one place, for unary and streaming handlers."""

from __future__ import annotations

import functools
import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from redis.asyncio.sentinel import MasterNotFoundError
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    ClusterDownError,
    ClusterError,
    MasterDownError,
    MaxConnectionsError,
    NoPermissionError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from queue_manager_server import errors

log = logging.getLogger("queue_manager_server.services")

_STATUS: list[tuple[type[Exception], grpc.StatusCode]] = [
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.QueueNotFound, grpc.StatusCode.NOT_FOUND),
    (errors.JobNotFound, grpc.StatusCode.NOT_FOUND),
    (errors.ScheduleNotFound, grpc.StatusCode.NOT_FOUND),
    (errors.EventTriggerNotFound, grpc.StatusCode.NOT_FOUND),
    (errors.LeaseNotHeld, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.JobActive, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.QueueObliterating, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.WorkflowNotFound, grpc.StatusCode.NOT_FOUND),
    (errors.WorkerNotFound, grpc.StatusCode.NOT_FOUND),
    (errors.WrongState, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    # Not UNAVAILABLE, which clients and the docs retry: the work was done and only its answer is lost, which
    # DATA_LOSS says (as the clients' own codec errors do: the call succeeded, its result cannot be read).
    (errors.AnswerLost, grpc.StatusCode.DATA_LOSS),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.QueueFull, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.EventsDropped, grpc.StatusCode.RESOURCE_EXHAUSTED),
]

_UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
_STORE = "the job store (Redis)"
_LOADING = f"{_STORE} is loading its data set after a restart; retry in a few seconds"
# Redis conditions no change to the request can fix: a status and what to do. First match wins, so a
# subclass comes before its base (BusyLoadingError and AuthenticationError are ConnectionErrors,
# MasterDownError is a ClusterDownError, which is a ClusterError; MaxConnectionsError and Sentinel's
# MasterNotFoundError are ConnectionErrors;
# OutOfMemoryError, ReadOnlyError… are ResponseErrors).
_REDIS: list[tuple[type[Exception], grpc.StatusCode, str]] = [
    # A script without flags refuses OOM only at its first write (once it has written it runs to the end),
    # so the refused script changed nothing.
    (
        OutOfMemoryError,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"{_STORE} is out of memory (maxmemory reached) and refused the write, which changed nothing; "
        "remove jobs (clean, drain or obliterate queues) or raise maxmemory, then retry",
    ),
    (BusyLoadingError, _UNAVAILABLE, _LOADING),
    (
        ReadOnlyError,
        _UNAVAILABLE,
        f"{_STORE} is a read-only replica (a failover may be in progress); retry shortly, "
        "and if this persists point the server at the primary",
    ),
    (NoScriptError, _UNAVAILABLE, f"{_STORE} lost its scripts (a restart or failover); retry shortly"),
    (TryAgainError, _UNAVAILABLE, f"{_STORE} cluster is moving keys between nodes; retry shortly"),
    (MasterDownError, _UNAVAILABLE, f"{_STORE} replica has lost its primary; retry shortly"),
    (ClusterDownError, _UNAVAILABLE, f"{_STORE} cluster is down; retry shortly"),
    # Redirected too often (slots moving), or no node serves a key's slot / none is reachable.
    (ClusterError, _UNAVAILABLE, f"{_STORE} cluster kept redirecting the request; retry shortly"),
    (
        RedisClusterException,
        _UNAVAILABLE,
        f"{_STORE} cluster has no reachable node for the request's keys now; retry shortly, and if this "
        "persists check that every slot is served (CLUSTER INFO)",
    ),
    (
        RedisTimeoutError,
        _UNAVAILABLE,
        f"{_STORE} did not answer in time (QM_REDIS_TIMEOUT_MS); it is overloaded or stalled; retry shortly",
    ),
    (
        AuthenticationError,
        _UNAVAILABLE,
        f"{_STORE} refused the server's credentials; an operator must fix REDIS_URL / REDIS_PASSWORD",
    ),
    (
        MaxConnectionsError,
        _UNAVAILABLE,
        f"{_STORE} connections (QM_REDIS_MAX_CONNECTIONS) all stayed busy for QM_REDIS_TIMEOUT_MS; the "
        "server is overloaded; retry shortly",
    ),
    # Sentinel (sentinel.py): no sentinel names a primary that is up, as while a failover runs.
    (
        MasterNotFoundError,
        _UNAVAILABLE,
        f"{_STORE} has no primary now: the sentinels report none up (a failover is under way); retry shortly",
    ),
    (RedisConnectionError, _UNAVAILABLE, f"{_STORE} is unreachable; retry shortly"),
    # An ACL user without a command the server sends (the "job store condition" log line names it).
    (
        NoPermissionError,
        _UNAVAILABLE,
        f"{_STORE} refused a command to the server's Redis user (its ACL); an operator must grant the "
        "commands docs/security.md lists",
    ),
]
# Error codes that redis-py has no class for, so they stay at the start of a ResponseError's message.
_REDIS_CODES: dict[str, tuple[grpc.StatusCode, str]] = {
    "BUSY": (_UNAVAILABLE, f"{_STORE} is busy running a long script; retry shortly"),
    "MISCONF": (
        _UNAVAILABLE,
        f"{_STORE} refuses writes because it cannot save to disk (see its log); retry once that is fixed",
    ),
    "NOREPLICAS": (_UNAVAILABLE, f"{_STORE} has too few replicas in sync to accept writes; retry shortly"),
    "LOADING": (_UNAVAILABLE, _LOADING),
}
# The code is the message's first word or, inside a pipeline, the first word of the original message that
# redis-py puts after "Command # N (<command>) of pipeline caused error: ", as is or quoted in a tuple's repr
# (an error with more than one argument).
_CODE = re.compile(r"(?:Command # \d+ .*? of pipeline caused error: (?:\(['\"])?)?([A-Z]+)\b", re.DOTALL)


def _redis_status(exc: BaseException) -> tuple[grpc.StatusCode, str] | None:
    for kind, code, message in _REDIS:
        if isinstance(exc, kind):
            return code, message
    if isinstance(exc, ResponseError) and (m := _CODE.match(str(exc))):
        return _REDIS_CODES.get(m.group(1))
    return None


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status and message a client sees for an exception (never a stack trace)."""
    for kind, code in _STATUS:
        if isinstance(exc, kind):
            return code, str(exc)
    if found := _redis_status(exc):
        log.warning(
            "job store condition",
            extra={"status": found[0].name, "error": f"{type(exc).__name__}: {exc}"},
        )
        return found
    ref = uuid.uuid4().hex[:12]
    log.error("unexpected error", exc_info=exc, extra={"error_ref": ref})
    return grpc.StatusCode.INTERNAL, f"internal error (reference {ref}); see the server log"


def reason_metadata(exc: Exception) -> tuple[tuple[str, str], ...]:
    """The trailing metadata that says why (errors.REASON_KEY), for the errors one status shares."""
    return ((errors.REASON_KEY, errors.QUEUE_FULL),) if isinstance(exc, errors.QueueFull) else ()


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
            await context.abort(code, message, trailing_metadata=reason_metadata(exc))
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
