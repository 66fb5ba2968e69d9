"""Request validation: every check names the field and says how to fix it (raises InvalidArgument)."""

from __future__ import annotations

import json
import re

from google.protobuf.duration_pb2 import Duration

from queue_manager_server.errors import InvalidArgument

_QUEUE = re.compile(r"[A-Za-z0-9_.\-]{1,100}")
_JOB_ID = re.compile(r"[A-Za-z0-9_.@:\-]+")
# Ids a producer may choose; stored ids can be longer: a dead-letter copy is "<queue>:<original id>".
MAX_JOB_ID = 200
MAX_STORED_JOB_ID = 100 + 1 + MAX_JOB_ID
MAX_ATTEMPTS = 10_000
# Ten years: anything longer is a unit mistake (seconds given as milliseconds, or the like).
MAX_DURATION_MS = 10 * 365 * 24 * 3600 * 1000


def queue_name(value: str, field: str = "queue_name") -> str:
    if not _QUEUE.fullmatch(value):
        if not value:
            raise InvalidArgument(field, "is required")
        raise InvalidArgument(
            field, f"{value[:120]!r} is not a valid queue name: use 1-100 letters, digits, '-', '_' or '.'"
        )
    return value


def job_id(value: str, field: str = "job_id", max_len: int = MAX_STORED_JOB_ID) -> str:
    """A job id to look up (max_len = MAX_STORED_JOB_ID) or to create (max_len = MAX_JOB_ID)."""
    if not value:
        raise InvalidArgument(field, "is required")
    if len(value) > max_len or not _JOB_ID.fullmatch(value):
        raise InvalidArgument(
            field,
            f"{value[:120]!r} is not a valid job id: use 1-{max_len} of letters, digits and - _ . @ :",
        )
    return value


def text(value: str, field: str, max_len: int = 200, required: bool = True) -> str:
    if required and not value:
        raise InvalidArgument(field, "is required")
    if len(value) > max_len:
        raise InvalidArgument(field, f"is {len(value)} characters long; the limit is {max_len}")
    if "\x00" in value:
        raise InvalidArgument(field, "must not contain NUL characters")
    return value


def duration_ms(d: Duration, field: str) -> int:
    if d.seconds < 0 or d.nanos < 0:
        raise InvalidArgument(field, "must not be negative")
    ms = d.seconds * 1000 + d.nanos // 1_000_000
    if ms > MAX_DURATION_MS:
        raise InvalidArgument(field, f"{ms} ms is longer than the 10-year maximum")
    return ms


def count(value: int, field: str, maximum: int) -> int:
    if value > maximum:
        raise InvalidArgument(field, f"{value} is above the maximum of {maximum}")
    return value


def fraction(value: float, field: str) -> float:
    if not 0.0 <= value <= 1.0:
        raise InvalidArgument(field, f"{value} must be between 0 and 1")
    return value


def enum_value(value: int, allowed: range, field: str, names: str) -> int:
    if value not in allowed:
        raise InvalidArgument(field, f"{value} is not one of {names}")
    return value


def payload_size(size: int, limit: int, field: str) -> None:
    if size > limit:
        raise InvalidArgument(
            field,
            f"is {size} bytes; the limit is {limit} bytes (QM_MAX_PAYLOAD_BYTES). "
            "Store large data elsewhere and pass a reference",
        )


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def json_bytes(body: bytes, field: str) -> None:
    try:
        json.loads(body, parse_constant=_no_constant)
    except ValueError as exc:
        raise InvalidArgument(
            field, f"content type is application/json but the body is not JSON ({exc})"
        ) from None
