"""Request validation: every check names the field and says how to fix it (raises InvalidArgument)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from queue_manager_server.errors import InvalidArgument

_QUEUE = re.compile(r"[A-Za-z0-9_.\-]{1,100}")
_JOB_ID = re.compile(r"[A-Za-z0-9_.@:\-]+")
# Ids a producer may choose; stored ids can be longer: a dead-letter copy is "<queue>:<original id>".
MAX_JOB_ID = 200
MAX_STORED_JOB_ID = 100 + 1 + MAX_JOB_ID
MAX_ATTEMPTS = 10_000
# Ten years: anything longer is a unit mistake (seconds given as milliseconds, or the like).
MAX_DURATION_MS = 10 * 365 * 24 * 3600 * 1000


# Queue names already found valid (every add names its queue: a set lookup costs a fifth of the pattern's
# match), up to this many; names beyond them are matched each time.
_VALID_QUEUE_NAMES: set[str] = set()
_VALID_QUEUE_NAMES_MAX = 10_000


def queue_name(value: str, field: str = "queue_name") -> str:
    if value in _VALID_QUEUE_NAMES:
        return value
    if not _QUEUE.fullmatch(value):
        if not value:
            raise InvalidArgument(field, "is required")
        raise InvalidArgument(
            field, f"{value[:120]!r} is not a valid queue name: use 1-100 letters, digits, '-', '_' or '.'"
        )
    if len(_VALID_QUEUE_NAMES) < _VALID_QUEUE_NAMES_MAX:
        _VALID_QUEUE_NAMES.add(value)
    return value


# One rule for every job id check, to create or to look up: both state the same limits.
_JOB_ID_RULE = (
    f"use 1-{MAX_JOB_ID} letters, digits and - _ . @ : (a dead-letter copy's id, '<queue>:<job id>', "
    f"may have up to {MAX_STORED_JOB_ID})"
)


def job_id(value: str, field: str = "job_id", max_len: int = MAX_STORED_JOB_ID) -> str:
    """A job id to look up (max_len = MAX_STORED_JOB_ID) or to create (max_len = MAX_JOB_ID)."""
    if not value:
        raise InvalidArgument(field, "is required")
    if len(value) > max_len or not _JOB_ID.fullmatch(value):
        raise InvalidArgument(field, f"{value[:120]!r} is not a valid job id: {_JOB_ID_RULE}")
    return value


def text(value: str, field: str, max_len: int = 200, required: bool = True) -> str:
    if required and not value:
        raise InvalidArgument(field, "is required")
    if len(value) > max_len:
        raise InvalidArgument(field, f"is {len(value)} characters long; the limit is {max_len}")
    if "\x00" in value:
        raise InvalidArgument(field, "must not contain NUL characters")
    return value


# Longest fairness group name (JobOptions.group): a tenant or customer id, a host name.
MAX_GROUP = 128


def is_control(c: str) -> bool:
    """A character that breaks a line of text or a terminal: C0, DEL, C1, U+2028 and U+2029."""
    o = ord(c)
    return o < 0x20 or 0x7F <= o <= 0x9F or o in (0x2028, 0x2029)


def group(value: str, field: str) -> str:
    """A fairness group name: 1 to MAX_GROUP characters, no control characters (it is part of key names and
    of log lines): C0, DEL, C1 (U+0080-U+009F, NEL among them) and the line and paragraph separators. A
    routing group's name (ROUTE_PREFIX) may be up to MAX_ROUTE_GROUP: the group RPCs name it as listed."""
    text(value, field, MAX_ROUTE_GROUP if value.startswith(ROUTE_PREFIX) else MAX_GROUP)
    _no_control(value, field)
    return value


def _no_control(value: str, field: str) -> None:
    bad = next((c for c in value if is_control(c)), None)
    if bad is not None:
        raise InvalidArgument(field, f"must not contain control characters (found U+{ord(bad):04X})")


# Longest external event key and event id (PushEvent, WaitForEvent): a name with an entity's id in it
# ("order:1234:paid"), or a webhook delivery's id; each is part of a Redis key name.
MAX_EVENT_KEY = 256


def event_key(value: str, field: str) -> str:
    """An external event's key or id: 1 to MAX_EVENT_KEY characters, no control characters (they would break
    log lines, and the newline separates a waiting job's keys: lua/includes/external_events.lua)."""
    text(value, field, MAX_EVENT_KEY)
    _no_control(value, field)
    return value


def job_group(value: str, field: str) -> str:
    """A job's own fairness group (JobOptions.group): a group name that is not a routing group's."""
    if value.startswith(ROUTE_PREFIX):
        raise InvalidArgument(
            field, f"must not start with {ROUTE_PREFIX!r}: that prefix names the groups of worker_labels"
        )
    return group(value, field)


# Hard routing (JobOptions.worker_labels): a routed job's group is ROUTE_PREFIX and its pairs in key order,
# "key=value" joined by ',' ("labels:gpu=a100,region=eu"), readable where groups are listed. Keys hold no '='
# or ',' and values no ',', so the scripts split a name back into its pairs (includes/claim.lua route_ok).
ROUTE_PREFIX = "labels:"
MAX_ROUTE_PAIRS = 16
MAX_ROUTE_KEY = 64
MAX_ROUTE_VALUE = 128
MAX_ROUTE_GROUP = len(ROUTE_PREFIX) + MAX_ROUTE_PAIRS * (MAX_ROUTE_KEY + MAX_ROUTE_VALUE + 2)


def worker_labels(labels: Mapping[str, str], field: str) -> str:
    """A job's worker labels (JobOptions.worker_labels), checked; returns the name of their routing group."""
    if len(labels) > MAX_ROUTE_PAIRS:
        raise InvalidArgument(field, f"has {len(labels)} pairs; the limit is {MAX_ROUTE_PAIRS}")
    pairs = []
    for key in sorted(labels):
        value = labels[key]
        if not key:
            raise InvalidArgument(f"{field} key", "must not be empty")
        if len(key) > MAX_ROUTE_KEY:
            raise InvalidArgument(
                f"{field} key {key[:40]!r}", f"is {len(key)} characters long; the limit is {MAX_ROUTE_KEY}"
            )
        at = f"{field}[{key[:40]!r}]"
        if "=" in key or "," in key:
            raise InvalidArgument(f"{field} key {key[:40]!r}", "must not contain '=' or ','")
        _no_control(key, f"{field} key {key[:40]!r}")
        if len(value) > MAX_ROUTE_VALUE:
            raise InvalidArgument(at, f"is {len(value)} characters long; the limit is {MAX_ROUTE_VALUE}")
        if "," in value:
            raise InvalidArgument(at, "must not contain ','")
        _no_control(value, at)
        pairs.append(f"{key}={value}")
    return ROUTE_PREFIX + ",".join(pairs)


# Largest size limit (QueueConfig.max_size, GroupLimits.max_size): within Redis's 64-bit integers, and far
# beyond any real backlog.
MAX_SIZE_LIMIT = 1 << 48


def max_size(value: int, field: str) -> int:
    """A size limit: 0 (none) to MAX_SIZE_LIMIT jobs."""
    if value > MAX_SIZE_LIMIT:
        raise InvalidArgument(field, f"{value} is above the maximum of {MAX_SIZE_LIMIT}; 0 means no limit")
    return value


def duration_ms(d: Duration, field: str) -> int:
    """A duration in whole ms, a part of a millisecond rounded up: 0.4 ms is 1 ms, never 0 (a timeout or a
    rate-limit window of 0 would mean none, and a dedup ttl of 0 is refused)."""
    if d.seconds < 0 or d.nanos < 0:
        raise InvalidArgument(field, "must not be negative")
    ms = d.seconds * 1000 - (-d.nanos // 1_000_000)
    if ms > MAX_DURATION_MS:
        raise InvalidArgument(field, f"{ms} ms is longer than the 10-year maximum")
    return ms


# Longest expiry a job may have (JobOptions.expire_after): a job not started within a year is a mistake, not
# a deadline.
MAX_EXPIRE_AFTER_MS = 365 * 24 * 3600 * 1000


def expire_after_ms(d: Duration, field: str) -> int:
    """A job's expiry (JobOptions.expire_after) in ms: whole milliseconds, 1 ms to 365 days."""
    if d.seconds < 0 or d.nanos < 0 or (d.seconds == 0 and d.nanos == 0):
        raise InvalidArgument(field, "must be positive; leave it unset for a job that never expires")
    if d.nanos % 1_000_000:
        raise InvalidArgument(field, "must be a whole number of milliseconds")
    ms = d.seconds * 1000 + d.nanos // 1_000_000
    if ms > MAX_EXPIRE_AFTER_MS:
        raise InvalidArgument(field, f"{ms} ms is longer than the 365-day maximum")
    return ms


# The range a google.protobuf.Timestamp may hold (0001-01-01 to 9999-12-31), in seconds.
MIN_TIMESTAMP_S, MAX_TIMESTAMP_S = -62_135_596_800, 253_402_300_799


def timestamp_ms(ts: Timestamp, field: str) -> int:
    """A request's Timestamp in ms; out-of-range seconds or nanos are refused (protobuf would raise)."""
    if not MIN_TIMESTAMP_S <= ts.seconds <= MAX_TIMESTAMP_S or not 0 <= ts.nanos <= 999_999_999:
        raise InvalidArgument(field, "is not a valid timestamp (years 1 to 9999, nanos 0 to 999,999,999)")
    return ts.seconds * 1000 + ts.nanos // 1_000_000


# Longest timed pause (PauseQueueRequest.resume_after / resume_at): a pause lifting more than a year on is a
# unit mistake or a pause meant to last until it is resumed by hand; a leap year's maintenance calendar fits.
MAX_PAUSE_MS = 366 * 24 * 3600 * 1000


def resume_time_ms(after: Duration | None, at: Timestamp | None, now_ms: int, paused: str = "queue") -> int:
    """When a timed pause lifts (Redis time, ms) from a PauseQueue or PauseGroup request's resume_after or
    resume_at (None: unset), the server's clock reading `now_ms`; 0 for a pause that lasts until resumed.
    `paused` ("queue" or "group") is what the messages tell the caller to resume instead."""
    if after is not None and at is not None:
        raise InvalidArgument("resume_at", "give resume_after or resume_at, not both")
    if after is not None:
        if after.seconds < 0 or after.nanos < 0 or (after.seconds == 0 and after.nanos == 0):
            raise InvalidArgument(
                "resume_after", "must be positive; leave it unset for a pause that lasts until resumed"
            )
        ms = after.seconds * 1000 - (-after.nanos // 1_000_000)
        if ms > MAX_PAUSE_MS:
            raise InvalidArgument("resume_after", f"{ms} ms is longer than the 366-day maximum")
        return now_ms + ms
    if at is not None:
        ms = timestamp_ms(at, "resume_at")
        if ms <= now_ms:
            raise InvalidArgument(
                "resume_at",
                f"{_iso(ms)} is not in the future (the server's clock reads {_iso(now_ms)}); give a later "
                f"time, or resume the {paused} now",
            )
        if ms - now_ms > MAX_PAUSE_MS:
            raise InvalidArgument(
                "resume_at",
                f"{_iso(ms)} is more than 366 days ahead (the server's clock reads {_iso(now_ms)})",
            )
        return ms
    return 0


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def run_time_ms(ts: Timestamp, field: str) -> int:
    """A time a job may run at (a job's schedule_time, a schedule's start_time or end_time) in ms.

    Kept as milliseconds since the Unix epoch (a schedule stores -1 for "none"), so these go from
    1970-01-01 to the end of year 9999, the last a Timestamp holds. A time before 1970 is refused rather
    than run at once: it is most often an unset date in the caller's language (year 1), not a wish.
    """
    if not 0 <= ts.seconds <= MAX_TIMESTAMP_S or not 0 <= ts.nanos <= 999_999_999:
        try:
            shown = ts.ToJsonString()
        except ValueError:
            shown = f"seconds={ts.seconds}, nanos={ts.nanos}"
        raise InvalidArgument(
            field, f"{shown} is out of range: use a time from 1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z"
        )
    return ts.seconds * 1000 + ts.nanos // 1_000_000


# Job and workflow metadata: free text, bounded piece by piece and as a whole (stored with every job).
MAX_TAGS = 100
MAX_TAG_CHARS = 200
MAX_ATTRIBUTES = 100
MAX_ATTRIBUTE_KEY_CHARS = 200
MAX_ATTRIBUTE_VALUE_CHARS = 2_000
MAX_METADATA_BYTES = 16 * 1024


def metadata(m: Any, field: str) -> None:
    """Checks a JobMetadata or WorkflowMetadata: correlation id, tags, attributes, total size."""
    text(m.correlation_id, f"{field}.correlation_id", 200, required=False)
    if hasattr(m, "created_by"):
        text(m.created_by, f"{field}.created_by", 200, required=False)
    count(len(m.tags), f"{field}.tags", MAX_TAGS)
    for i, tag in enumerate(m.tags):
        text(tag, f"{field}.tags[{i}]", MAX_TAG_CHARS, required=False)
    attributes = getattr(m, "attributes", {})
    count(len(attributes), f"{field}.attributes", MAX_ATTRIBUTES)
    for key, value in attributes.items():
        text(key, f"{field}.attributes key", MAX_ATTRIBUTE_KEY_CHARS)
        text(value, f"{field}.attributes[{key[:40]!r}]", MAX_ATTRIBUTE_VALUE_CHARS, required=False)
    if m.ByteSize() > MAX_METADATA_BYTES:
        raise InvalidArgument(field, f"is {m.ByteSize()} bytes; the limit is {MAX_METADATA_BYTES} bytes")


# A worker's hello is stored in the worker registry and shown by ListWorkers and the dashboard.
MAX_LABELS = 50
MAX_HELLO_QUEUES = 1_000


# Highest tier a worker's hello may give (WorkerHello.tier).
MAX_TIER = 100


def worker_hello(h: Any) -> None:
    """Checks the free parts of a worker's hello: labels, language, version, the number of queues."""
    count(len(h.queues), "hello.queues", MAX_HELLO_QUEUES)
    text(h.language, "hello.language", 100, required=False)
    text(h.version, "hello.version", 100, required=False)
    count(len(h.labels), "hello.labels", MAX_LABELS)
    for key, value in h.labels.items():
        text(key, "hello.labels key", 100)
        text(value, f"hello.labels[{key[:40]!r}]", 500, required=False)
    if h.tier > MAX_TIER:
        raise InvalidArgument("hello.tier", f"{h.tier} must be 0 to {MAX_TIER}")


# Largest weight of a queue in a worker's hello (WorkerHello.queue_weights).
MAX_QUEUE_WEIGHT = 1_000


def queue_shares(h: Any, queues: list[str]) -> tuple[tuple[str, ...] | None, dict[str, int] | None]:
    """A hello's sharing of the worker's slots among its queues: (strict order, None), (None, weights by
    queue, every queue's) or (None, None) for none."""
    if h.strict_order and h.queue_weights:
        raise InvalidArgument("hello.queue_weights", "give weights or strict_order, not both")
    if h.strict_order:
        return (tuple(queues) if len(queues) > 1 else None), None
    if not h.queue_weights:
        return None, None
    for name, weight in h.queue_weights.items():
        if name not in queues:
            raise InvalidArgument(
                "hello.queue_weights", f"names {name[:100]!r}, which is not one of the worker's queues"
            )
        if not 1 <= weight <= MAX_QUEUE_WEIGHT:
            raise InvalidArgument(
                f"hello.queue_weights[{name[:100]!r}]", f"{weight} must be 1 to {MAX_QUEUE_WEIGHT:,}"
            )
    if len(queues) == 1:
        return None, None
    return None, {q: h.queue_weights.get(q, 1) for q in queues}


def count(value: int, field: str, maximum: int) -> int:
    if value > maximum:
        raise InvalidArgument(field, f"{value} is above the maximum of {maximum}")
    return value


def fraction(value: float, field: str) -> float:
    if not 0.0 <= value <= 1.0:
        raise InvalidArgument(field, f"{value} must be between 0 and 1")
    return value


class ProtoEnum(Protocol):
    """A generated enum (``types_pb2.JobPriority``): its names by number, and its descriptor's name."""

    DESCRIPTOR: Any

    def Name(self, number: Any) -> str: ...  # Any: each enum's number type is its own NewType

    def values(self) -> list[Any]: ...


def enum_value(value: int, allowed: range, field: str, enum: ProtoEnum, unset: str = "") -> int:
    """An enum field's number when it is in `allowed`; else the error lists the values `enum` names there.

    Args:
        value: The number sent (an unknown one reaches the server as is: proto3 enums are open).
        allowed: The numbers accepted, 0 among them when unset is allowed.
        field: The field's name, for the error.
        enum: The generated enum (``types_pb2.JobPriority``), whose names the error lists.
        unset: What leaving the field unset (0) means, when that is allowed.
    """
    if value in allowed:
        return value
    raise InvalidArgument(field, enum_problem(value, allowed, enum, unset))


def enum_problem(value: int, allowed: Iterable[int], enum: ProtoEnum, unset: str = "") -> str:
    """Says that `value` is missing (0) or not one of the known values, and lists the ones accepted."""
    prefix = enum.Name(0).removesuffix("UNSPECIFIED")
    choices = [f"{number} ({enum.Name(number).removeprefix(prefix)})" for number in sorted(allowed) if number]
    listed = ", ".join(choices[:-1]) + f" or {choices[-1]}" if len(choices) > 1 else choices[0]
    if value == 0 and not unset:
        return f"is required: use {listed}"
    tail = f", or leave it unset (0) for {unset}" if unset else ""
    if value in enum.values():
        return f"{value} ({enum.Name(value).removeprefix(prefix)}) is not accepted here: use {listed}{tail}"
    return f"{value} is not a known {enum.DESCRIPTOR.name} value: use {listed}{tail}"


def payload_size(size: int, limit: int, field: str) -> None:
    if size > limit:
        raise InvalidArgument(
            field,
            f"is {size} bytes; the limit is {limit} bytes (QM_MAX_PAYLOAD_BYTES). "
            "Store large data elsewhere and pass a reference",
        )


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


# One decoder for every check (json.loads with an option builds a decoder per call: a tenth of a bulk add's
# validation).
_JSON = json.JSONDecoder(parse_constant=_no_constant)
# Its scanner (the C one where there is one), which reads one value at an index: (value, end index).
_SCAN: Callable[[str, int], tuple[Any, int]] = _JSON.scan_once  # type: ignore[attr-defined]


def _one_value(text: str) -> bool:
    """Whether text is one JSON value with nothing around it (most bodies), by the scanner alone: 0.2 µs where
    decode, which also skips whitespace and explains errors, takes 0.8."""
    try:
        return _SCAN(text, 0)[1] == len(text)
    except (StopIteration, ValueError):
        return False


def json_bytes(body: bytes, field: str) -> None:
    """A JSON body must be UTF-8 JSON text (RFC 8259), without NaN or Infinity."""
    if body.startswith(b"\xef\xbb\xbf"):
        raise InvalidArgument(
            field,
            "content type is application/json but the body starts with a byte order mark; send it without",
        )
    try:
        text = body.decode()
        if not _one_value(text):
            _JSON.decode(text)  # accepts it (whitespace around the value) or says what is wrong
    except UnicodeDecodeError as exc:
        raise InvalidArgument(
            field,
            f"content type is application/json but the body is not UTF-8 text ({exc.reason} at byte "
            f"{exc.start})",
        ) from None
    except ValueError as exc:
        raise InvalidArgument(
            field, f"content type is application/json but the body is not JSON ({exc})"
        ) from None
    except RecursionError:
        raise InvalidArgument(
            field,
            "content type is application/json but the body nests arrays and objects too deeply to read "
            "(the limit is near 1,000 levels); flatten it",
        ) from None
