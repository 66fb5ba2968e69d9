"""Checks of the client's settings (`QueueManager`, `SyncQueueManager`, `Worker`), made when they are given.

A bad setting used later fails far from where it was written, or not at all: ``concurrency="5"`` broke
the worker's first credit report, a NaN timeout every call, and gRPC reads timeouts past about 7e9 s as
already passed. Each error names the parameter and what it accepts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import grpc

__all__ = [
    "MAX_CONCURRENCY",
    "MAX_TIMEOUT_S",
    "check_channel_options",
    "check_concurrency",
    "check_credentials",
    "check_grace",
    "check_labels",
    "check_timeout",
    "check_token",
]

# Far above what one process runs at once; the hello carries a uint32, and a thread pool of that size
# is made for plain-def processors.
MAX_CONCURRENCY = 100_000
# A year: gRPC turns a deadline into nanoseconds since the epoch, so timeouts past about 7e9 s wrap
# around and every call fails at once with DEADLINE_EXCEEDED.
MAX_TIMEOUT_S = 365 * 24 * 3600.0


def check_concurrency(value: int | None, what: str = "concurrency") -> int | None:
    """None (the default), or an int from 1 to `MAX_CONCURRENCY`."""
    if value is None:
        return None
    accepted = f"a whole number from 1 to {MAX_CONCURRENCY:,} (or None for the default)"
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be {accepted}, not {type(value).__name__} {value!r:.50}")
    if not 1 <= value <= MAX_CONCURRENCY:
        raise ValueError(f"{what} must be {accepted}, got {value}")
    return value


def _seconds(value: object, what: str, accepted: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be {accepted}, not {type(value).__name__} {value!r:.50}")
    return float(value)


def check_timeout(value: float | None, what: str = "timeout") -> float | None:
    """None (no deadline), or seconds more than 0 and at most `MAX_TIMEOUT_S`."""
    if value is None:
        return None
    accepted = f"seconds more than 0 and at most {MAX_TIMEOUT_S:,.0f} (365 days), or None for no deadline"
    seconds = _seconds(value, what, accepted)
    if not (0 < seconds <= MAX_TIMEOUT_S):  # NaN fails every comparison
        raise ValueError(f"{what} must be {accepted}, got {value!r}")
    return seconds


def check_grace(value: float, what: str = "shutdown_grace") -> float:
    """Seconds, a finite number of at least 0."""
    accepted = "a finite number of seconds, at least 0"
    seconds = _seconds(value, what, accepted)
    if not (0 <= seconds < math.inf):
        raise ValueError(f"{what} must be {accepted}, got {value!r}")
    return seconds


# Largest weight of a queue (Worker queue_weights), as the server allows.
# Highest tier of a worker (the server's validate.MAX_TIER).
MAX_TIER = 100
MAX_QUEUE_WEIGHT = 1_000


def check_queue_weights(value: Mapping[str, int] | None, queues: Iterable[str]) -> dict[str, int]:
    """Weights of a worker's queues (None: none), each an int from 1 to MAX_QUEUE_WEIGHT of one of them."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(
            f"queue_weights must be a mapping of queue name to weight, not {type(value).__name__}"
        )
    known = set(queues)
    out = {}
    for name, weight in value.items():
        if name not in known:
            raise ValueError(f"queue_weights names {name!r}, which has no processor on this worker")
        if isinstance(weight, bool) or not isinstance(weight, int):
            raise TypeError(f"queue_weights[{name!r}] must be an int, not {type(weight).__name__}")
        if not 1 <= weight <= MAX_QUEUE_WEIGHT:
            raise ValueError(f"queue_weights[{name!r}] must be 1 to {MAX_QUEUE_WEIGHT:,}, got {weight}")
        out[name] = weight
    return out


def check_tier(value: int) -> int:
    """A worker's tier among the workers of its queues (WorkerHello.tier): an int from 0 to `MAX_TIER`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"tier must be a whole number from 0 to {MAX_TIER}, not {type(value).__name__}")
    if not 0 <= value <= MAX_TIER:
        raise ValueError(f"tier must be 0 to {MAX_TIER}, got {value}")
    return value


def check_queue_order(value: Sequence[str], queues: Iterable[str]) -> list[str]:
    """A strict order of a worker's queues: each of them once, highest priority first."""
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise TypeError(f"queue_order must be a list of queue names, not {type(value).__name__}")
    order, known = list(value), set(queues)
    if len(set(order)) != len(order) or set(order) != known:
        raise ValueError(
            f"queue_order must name each of the worker's queues once: {sorted(known)}, got {order}"
        )
    return order


def check_queue_shares(
    weights: Mapping[str, int] | None, order: Sequence[str] | None, queues: Iterable[str]
) -> tuple[dict[str, int], list[str] | None]:
    """How a worker shares its slots among its queues (Worker, WorkerManager): the checked weights and the
    checked strict order (None: no strict order); not both."""
    queues = list(queues)
    checked = check_queue_weights(weights, queues)
    if order is not None and checked:
        raise ValueError("give queue_weights or queue_order, not both")
    return checked, (check_queue_order(order, queues) if order is not None else None)


def check_labels(value: Mapping[str, str] | None, what: str = "worker_labels") -> dict[str, str]:
    """A mapping of str to str (None: no labels), as a new dict."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"{what} must be a mapping of str to str, not {type(value).__name__}")
    for key, label in value.items():
        if not isinstance(key, str) or not isinstance(label, str):
            raise TypeError(
                f"{what} must map str to str, not {type(key).__name__} {key!r:.50} to "
                f"{type(label).__name__} {label!r:.50}"
            )
    return dict(value)


def check_channel_options(
    value: list[tuple[str, Any]] | None, what: str = "channel_options"
) -> list[tuple[str, Any]] | None:
    """None, or a list (any sequence) of ``(name, value)`` pairs with str names, as a list."""
    if value is None:
        return None
    shape = 'a list of (name, value) pairs such as [("grpc.max_receive_message_length", 1 << 24)]'
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, list | tuple):
        raise TypeError(f"{what} must be {shape}, not {type(value).__name__}")
    for index, pair in enumerate(value):
        if not isinstance(pair, tuple | list) or len(pair) != 2 or not isinstance(pair[0], str):
            raise TypeError(f"{what}[{index}] must be a (name, value) pair with a str name, got {pair!r:.80}")
    return [(name, option) for name, option in value]


def check_credentials(value: grpc.ChannelCredentials | None) -> grpc.ChannelCredentials | None:
    """None, or `grpc.ChannelCredentials` (such as `queue_manager.credentials.tls_credentials` makes)."""
    if value is not None and not isinstance(value, grpc.ChannelCredentials):
        raise TypeError(
            "credentials must be grpc.ChannelCredentials (see queue_manager.credentials.tls_credentials) "
            f"or None, not {type(value).__name__}"
        )
    return value


def check_token(value: str | None) -> str | None:
    """None (``QM_TOKEN``, else none), or a str; its form is checked where the channel is made."""
    if value is not None and not isinstance(value, str):
        raise TypeError(f"token must be a str or None, not {type(value).__name__}")
    return value
