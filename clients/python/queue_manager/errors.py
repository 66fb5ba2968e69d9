"""Exceptions raised by the client, and the one place that maps gRPC status codes to them."""

from __future__ import annotations

import ast
import math
import re
from datetime import datetime, timedelta
from typing import Any

import grpc

__all__ = [
    "AlreadyExistsError",
    "DelayedError",
    "FailedPreconditionError",
    "InvalidArgumentError",
    "NotFoundError",
    "PermissionDeniedError",
    "QueueFullError",
    "QueueManagerError",
    "RateLimitedError",
    "ResourceExhaustedError",
    "UnauthenticatedError",
    "UnavailableError",
    "UnrecoverableError",
    "WaitingForChildren",
    "WaitingForEvent",
    "error_from_rpc",
    "error_from_status",
]


class QueueManagerError(Exception):
    """A call to the server failed.

    Attributes:
        code: The gRPC status code the server (or the channel) answered with.
        message: The status message, meant for a person.
    """

    default_code = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code if code is not None else self.default_code

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class NotFoundError(QueueManagerError):
    """The queue or job does not exist."""

    default_code = grpc.StatusCode.NOT_FOUND


class InvalidArgumentError(QueueManagerError):
    """The server rejected a field of the request; the message names it."""

    default_code = grpc.StatusCode.INVALID_ARGUMENT


class FailedPreconditionError(QueueManagerError):
    """The request is valid but the state does not allow it (stale lease, active job…)."""

    default_code = grpc.StatusCode.FAILED_PRECONDITION


class AlreadyExistsError(QueueManagerError):
    """The object to create exists already."""

    default_code = grpc.StatusCode.ALREADY_EXISTS


class UnavailableError(QueueManagerError):
    """The server (or its Redis) cannot be reached; retrying later may succeed."""

    default_code = grpc.StatusCode.UNAVAILABLE


class ResourceExhaustedError(QueueManagerError):
    """The server or its store is out of a resource (Redis out of memory, a gRPC message over its limit), or
    an add found its queue full (`QueueFullError`, a subclass)."""

    default_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class QueueFullError(ResourceExhaustedError):
    """An add was refused by producer backpressure: the queue holds its ``max_size`` jobs (waiting, paused
    and delayed), or the job's fairness group its own ``max_size`` (waiting). Nothing was written; adding
    again once workers have taken some succeeds.

    Attributes:
        queue: The full queue.
        group: The full group; "" when the queue itself is full.
    """

    def __init__(
        self, message: str, code: grpc.StatusCode | None = None, *, queue: str = "", group: str = ""
    ) -> None:
        super().__init__(message, code)
        self.queue = queue
        self.group = group


class UnauthenticatedError(QueueManagerError):
    """The call carried no token, or one the server does not know (docs/security.md)."""

    default_code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDeniedError(QueueManagerError):
    """The token's roles or queue patterns do not cover the call; the message says which."""

    default_code = grpc.StatusCode.PERMISSION_DENIED


class UnrecoverableError(Exception):
    """Raised by a processor to fail its job for good, skipping the attempts left."""


class RateLimitedError(Exception):
    """Raised by a processor when downstream said "slow down" (an HTTP 429, say).

    The job goes back to wait ``retry_after`` without using an attempt, and its queue starts no job for
    that long, for every worker on every server.

    Args:
        retry_after: Seconds (int or float) or a `timedelta`, 0 to 10 years (the server cuts a hold to one
            day).
        message: Text for logs; default "rate limited: retry after <n>s".

    Attributes:
        retry_after: The interval, as a `timedelta`.
    """

    def __init__(self, retry_after: float | timedelta, message: str = "") -> None:
        if isinstance(retry_after, timedelta):
            seconds = retry_after.total_seconds()
        elif isinstance(retry_after, int | float) and not isinstance(retry_after, bool):
            seconds = float(retry_after)
        else:
            raise TypeError(f"retry_after must be seconds or a timedelta, not {type(retry_after).__name__}")
        # Bounded as DelayedError's delay is: a longer (or infinite) wait cannot travel as a Duration, and
        # said only "at least 0" about a value that was.
        if not math.isfinite(seconds) or not 0 <= seconds <= _MAX_DELAY_S:
            raise ValueError(
                "retry_after must be from 0 to 10 years in seconds, or a timedelta within that (the server "
                f"holds the queue off for at most one day), got {retry_after!r}"
            )
        self.retry_after = timedelta(seconds=seconds)
        super().__init__(message or f"rate limited: retry after {seconds:g}s")


_KEEP = object()  # DelayedError's data default: keep the job's data


class DelayedError(Exception):
    """Raised by a processor to run its job again later without using an attempt: a durable sleep between
    the steps of a long job (BullMQ's ``moveToDelayed`` + ``DelayedError``, Hatchet's durable sleep).

    The run ends, the job waits ``delay`` in delayed (by the server's clock; its group's slot and the
    worker's are free meanwhile) and then runs again as attempt ``attempts_made + 1`` as before, not as a
    redelivery. With ``data``, the job's data is replaced in the same step (a checkpoint: the next run
    resumes from it); without, it is kept. A cancel asked meanwhile ends the job cancelled.

    Args:
        delay: Seconds (int or float) or a `timedelta`, 0 to 10 years (0: again as soon as a worker is free).
        data: The job's new data (JSON-serialisable, or bytes), within the server's payload limit; a value
            the server cannot store fails the attempt with the reason instead.

    Attributes:
        delay: The interval, as a `timedelta`.
        data: The new data, or `DelayedError.KEEP`.
    """

    KEEP: Any = _KEEP

    def __init__(self, delay: float | timedelta, data: Any = _KEEP) -> None:
        if isinstance(delay, timedelta):
            seconds = delay.total_seconds()
        elif isinstance(delay, int | float) and not isinstance(delay, bool):
            seconds = float(delay)
        else:
            raise TypeError(f"delay must be seconds or a timedelta, not {type(delay).__name__}")
        if not math.isfinite(seconds) or not 0 <= seconds <= _MAX_DELAY_S:
            raise ValueError(f"delay must be 0 to 10 years in seconds, got {delay!r}")
        self.delay = timedelta(seconds=seconds)
        self.data = data
        super().__init__(f"run again in {seconds:g}s")


class WaitingForChildren(Exception):
    """Raised by `JobContext.wait_for_children` once the server has added the children and ended the run:
    the processor stops there, and the job runs again when its children have all finished. Let it pass
    (an ``except Exception`` that swallows it changes nothing: the run is over and what the processor
    returns is discarded).

    Attributes:
        children: The children added, as (queue name, job id) pairs, in the order given.
        pending: How many of the job's children had not finished when the run ended.
    """

    def __init__(self, children: list[tuple[str, str]], pending: int) -> None:
        self.children = children
        self.pending = pending
        super().__init__(f"waiting for {pending} of {len(children)} children")


class WaitingForEvent(Exception):
    """Raised by `JobContext.wait_for_event` once the server has parked the job and ended the run: the
    processor stops there, and the job runs again when an event of one of its keys is pushed (or the wait
    times out). Let it pass, as `WaitingForChildren`.

    Attributes:
        keys: The event keys the job waits for.
        until: When the wait times out; None for a wait without a timeout.
    """

    def __init__(self, keys: list[str], until: datetime | None) -> None:
        self.keys = keys
        self.until = until
        super().__init__(
            f"waiting for event {', '.join(keys)}" + (f" until {until.isoformat()}" if until else "")
        )


# The longest delay the server takes (its durations' limit: docs/api.md "Limits").
_MAX_DELAY_S = 10 * 365 * 24 * 3600


_BY_CODE: dict[grpc.StatusCode, type[QueueManagerError]] = {
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
}


# What grpc-core itself says when a call's connection went away mid-call (a stream whose server stopped): it
# ends the call INTERNAL, with these words, which no server sends. That is the connection lost, and a unary
# call would have said UNAVAILABLE.
_CONNECTION_LOST = "Internal error from Core"


# grpc-core's words for a connection that failed in its TLS handshake name OpenSSL's reason, not the setting
# to change; each is followed by what the caller can do about it. "Socket closed" is also what a plaintext
# client and a client without the certificate a mutual-TLS server asks for are told.
_TLS_HINTS = (
    (
        "WRONG_VERSION_NUMBER",
        "the server does not use TLS on this port: connect without TLS (unset QM_TLS_CA and QM_TLS)",
    ),
    (
        "CERTIFICATE_VERIFY_FAILED",
        "the server's certificate is not signed by the CA bundle given (QM_TLS_CA, qm --tls-ca)",
    ),
    (
        "Hostname Verification Check failed",
        "the server's certificate does not name the host dialled: dial a name it holds, or set "
        "QM_TLS_SERVER_NAME (qm --tls-server-name)",
    ),
    (
        "Socket closed",
        "if the server uses TLS, give the CA bundle that signed its certificate (QM_TLS_CA, qm --tls-ca); if "
        "it requires mutual TLS, also a client certificate its CA signed (QM_TLS_CERT and QM_TLS_KEY)",
    ),
)


def _with_tls_hint(message: str) -> str:
    for words, hint in _TLS_HINTS:
        if words in message:
            return f"{message}; {hint}"
    return message


def error_from_rpc(exc: grpc.RpcError) -> QueueManagerError:
    """Turns a failed gRPC call (sync or asyncio) into the matching `QueueManagerError` subclass.

    Args:
        exc: The error raised by a grpc or grpc.aio call; both expose ``code()`` and ``details()``.

    Returns:
        The exception to raise in its place.
    """
    code_of = getattr(exc, "code", None)
    details_of = getattr(exc, "details", None)
    code = code_of() if callable(code_of) else grpc.StatusCode.UNKNOWN
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    message = details_of() if callable(details_of) else None
    if code == grpc.StatusCode.INTERNAL and message == _CONNECTION_LOST:
        return _error(grpc.StatusCode.UNAVAILABLE, "the connection to the server was lost; retry")
    if code == grpc.StatusCode.UNAVAILABLE and message:
        message = _with_tls_hint(str(message))
    return _error(code, str(message) if message else "")


def error_from_status(code: int, message: str) -> QueueManagerError:
    """The `QueueManagerError` for a status carried in an answer (a refused item of ``AddJobBatch``).

    Args:
        code: The gRPC status code's number.
        message: The status message.
    """
    return _error(status_code(code) or grpc.StatusCode.UNKNOWN, message)


_BY_NUMBER = {status.value[0]: status for status in grpc.StatusCode}


def status_code(number: int) -> grpc.StatusCode | None:
    """The gRPC status code with this number (as answers and report verdicts carry it), or None."""
    return _BY_NUMBER.get(number)


# The server's words for an add refused by a size limit (server errors.py QueueFull). A group's name is
# Python's repr of it: in single quotes, or in double quotes when it holds a single one, with backslash
# escapes; a queue's name holds no quote.
_REPR = r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\""
_FULL = re.compile(rf"(?:group ({_REPR}) of )?queue '([A-Za-z0-9._-]+)' is full: ")


def _group_name(quoted: str) -> str:
    try:
        name = ast.literal_eval(quoted)  # a str literal only: the pattern matched one
    except (ValueError, SyntaxError):
        return quoted
    return name if isinstance(name, str) else quoted


def _error(code: grpc.StatusCode, message: str) -> QueueManagerError:
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and (full := _FULL.match(message)):
        return QueueFullError(message, code, queue=full[2], group=_group_name(full[1]) if full[1] else "")
    cls = _BY_CODE.get(code, QueueManagerError)
    return cls(message or code.name.lower().replace("_", " "), code)
