"""Hard routing by worker labels (`JobOptions.worker_labels`): the server's checks, made here first."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# The prefix of the routing groups the server keeps routed jobs in ("labels:gpu=a100,region=eu"): a job's
# own group may not start with it.
ROUTE_PREFIX = "labels:"
MAX_ROUTE_PAIRS = 16
MAX_ROUTE_KEY = 64
MAX_ROUTE_VALUE = 128
# The longest routing group name: the prefix and every pair, "key=value" joined by ','.
MAX_ROUTE_GROUP = len(ROUTE_PREFIX) + MAX_ROUTE_PAIRS * (MAX_ROUTE_KEY + MAX_ROUTE_VALUE + 2)


def is_control(c: str) -> bool:
    """A control character as the server counts them: C0, DEL, C1, U+2028 and U+2029."""
    o = ord(c)
    return o < 0x20 or 0x7F <= o <= 0x9F or o in (0x2028, 0x2029)


def validate_worker_labels(value: Any) -> dict[str, str]:
    """Checks a job's worker labels: at most 16 pairs; keys 1 to 64 characters without '=' or ','; values
    up to 128 characters without ','; no control characters. Returns them as a dict."""
    if not isinstance(value, Mapping):
        raise TypeError(f"worker_labels must be a mapping of str to str, not {type(value).__name__}")
    if len(value) > MAX_ROUTE_PAIRS:
        raise ValueError(f"worker_labels has {len(value)} pairs; the limit is {MAX_ROUTE_PAIRS}")
    out: dict[str, str] = {}
    for key, val in value.items():
        if not isinstance(key, str) or not isinstance(val, str):
            raise TypeError(f"worker_labels must map str to str, got {key!r}: {val!r}")
        if not 1 <= len(key) <= MAX_ROUTE_KEY or "=" in key or "," in key or any(map(is_control, key)):
            raise ValueError(
                f"worker_labels key {key!r} must be 1 to {MAX_ROUTE_KEY} characters without '=', ',' or "
                "control characters"
            )
        if len(val) > MAX_ROUTE_VALUE or "," in val or any(map(is_control, val)):
            raise ValueError(
                f"worker_labels[{key!r}] must be up to {MAX_ROUTE_VALUE} characters without ',' or control "
                f"characters, got {val!r}"
            )
        out[key] = val
    return out
