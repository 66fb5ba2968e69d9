"""JobFilter in (ListJobs, RetryFailedJobs, CancelJobs, RemoveJobs), validated, as engine/search.py's
JobFilter; and the bounds of the bulk calls that take one."""

from __future__ import annotations

from datetime import UTC, datetime

from queue_manager.v1 import jobs_pb2
from queue_manager_server import validate
from queue_manager_server.engine.search import MAX_ACTION, JobFilter
from queue_manager_server.errors import InvalidArgument

# Longest job name (NewJob.name) and correlation id (JobMetadata.correlation_id).
_MAX_NAME = 200
_MAX_CORRELATION_ID = 200


def _value(value: str, field: str, max_len: int) -> str:
    """A condition's text: within the limit of what it is compared with, and not blank (which no job holds;
    leaving the field empty is how every job matches)."""
    validate.text(value, field, max_len, required=False)
    if value and not value.strip():
        raise InvalidArgument(field, "is blank; leave it empty to match every job")
    return value


def _name(value: str, field: str) -> tuple[str, bool]:
    """The name condition: (name, False) exact, or (prefix, True) for a value ending with "*"."""
    _value(value, field, _MAX_NAME)
    prefix = value.endswith("*")
    stem = value[:-1] if prefix else value
    if "*" in stem:
        raise InvalidArgument(
            field, f"{value!r} holds a '*' before its end; '*' may only end a name, as a prefix ('send-*')"
        )
    if prefix and not stem:
        raise InvalidArgument(field, "is '*' alone, which every name matches; leave it empty instead")
    return stem, prefix


def _shown(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def job_filter(f: jobs_pb2.JobFilter, field: str = "filter") -> JobFilter | None:
    """The filter of a request; None when it sets no condition (every job matches).

    Raises:
        InvalidArgument: A '*' that does not end the name, a blank value, a value longer than what it is
            compared with, an invalid time, or created_after not before created_before.
    """
    name, prefix = _name(f.name, f"{field}.name")
    if f.group:
        validate.group(f.group, f"{field}.group")
        _value(f.group, f"{field}.group", validate.MAX_GROUP)
    tag = _value(f.tag, f"{field}.tag", validate.MAX_TAG_CHARS)
    correlation_id = _value(f.correlation_id, f"{field}.correlation_id", _MAX_CORRELATION_ID)
    after = before = None
    if f.HasField("created_after"):
        after = validate.timestamp_ms(f.created_after, f"{field}.created_after")
    if f.HasField("created_before"):
        before = validate.timestamp_ms(f.created_before, f"{field}.created_before")
    if after is not None and before is not None and after >= before:
        raise InvalidArgument(
            f"{field}.created_after",
            f"({_shown(after)}) is not before {field}.created_before ({_shown(before)}): no job can match",
        )
    out = JobFilter(name, prefix, f.group, tag, correlation_id, after, before)
    return None if out == JobFilter() else out


def action_limit(limit: int, field: str = "limit") -> int:
    """A bulk call's limit: 1 to MAX_ACTION jobs acted on; 0 means MAX_ACTION."""
    if limit > MAX_ACTION:
        raise InvalidArgument(
            field, f"{limit} is above the maximum of {MAX_ACTION} per call; continue with next_page_token"
        )
    return limit or MAX_ACTION
