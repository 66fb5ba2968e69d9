"""Finding jobs by what they are and acting on those found: the JobFilter of ListJobs and of the bulk calls
(RetryFailedJobs, CancelJobs, RemoveJobs), their requests and their results.

The server keeps no index for a filter: each call reads at most a few thousand jobs of the state, so a
filtered page may hold fewer jobs than asked, or none, and still carry a token; the listing (or the bulk
action) is complete only when the token comes back empty.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from queue_manager.enums import JobState
from queue_manager.options import state_number, to_timestamp, validate_queue_name
from queue_manager.v1 import jobs_pb2, types_pb2

# Most jobs one bulk call acts on (the server's limit per call).
MAX_BULK_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class BulkResult:
    """What one bounded bulk call did.

    Attributes:
        count: Jobs retried, cancelled or removed.
        next_page_token: Where the next call continues; "" once the whole state was read.
        requested: Active jobs whose workers were told to stop them (`cancel_jobs` only).
    """

    count: int
    next_page_token: str
    requested: int = 0


@dataclass(frozen=True, slots=True)
class JobCount:
    """How many jobs of a state match a filter (`QueueManager.count_jobs`).

    Attributes:
        count: The matches counted.
        next_page_token: Where counting would go on; "" once the whole state was read.
        calls: The ListJobs calls made.
    """

    count: int
    next_page_token: str
    calls: int

    @property
    def complete(self) -> bool:
        """The whole state was read: `count` is every match (as of the reads)."""
        return not self.next_page_token


def count_jobs_request(
    queue_name: str, state: JobState | str, flt: jobs_pb2.JobFilter, page_token: str
) -> jobs_pb2.ListJobsRequest:
    """A ListJobsRequest with count_only: the matches of one bounded read, no jobs."""
    return jobs_pb2.ListJobsRequest(
        queue_name=validate_queue_name(queue_name),
        state=state_number(state),  # type: ignore[arg-type]
        page_token=page_token,
        filter=flt,
        count_only=True,
    )


def max_calls_checked(max_calls: int | None) -> int | None:
    """`count_jobs`' max_calls: None (to the end) or a positive int."""
    if max_calls is not None and (
        isinstance(max_calls, bool) or not isinstance(max_calls, int) or max_calls < 1
    ):
        raise ValueError(f"max_calls must be a positive int (None: until the end), got {max_calls!r}")
    return max_calls


def _text(value: str | None, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{what} is empty; leave it out (None) to match every job")
    return value


def job_filter(
    name: str | None = None,
    group: str | None = None,
    tag: str | None = None,
    correlation_id: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> jobs_pb2.JobFilter:
    """Builds and checks a JobFilter; None leaves a condition out.

    Args:
        name: The job name, exact, or a prefix ending with "*" ("send-*").
        group: The fairness group (JobOptions.group).
        tag: A tag of the job's metadata.
        correlation_id: The job's correlation id.
        created_after: Created at or after this time (a naive datetime is local time).
        created_before: Created before this time.

    Raises:
        ValueError: An empty value, a '*' that does not end the name, or created_after not before
            created_before.
    """
    flt = jobs_pb2.JobFilter(
        name=_text(name, "name"),
        group=_text(group, "group"),
        tag=_text(tag, "tag"),
        correlation_id=_text(correlation_id, "correlation_id"),
    )
    if "*" in flt.name[:-1]:
        raise ValueError(f"name {name!r} holds a '*' before its end; '*' may only end a name ('send-*')")
    if flt.name == "*":
        raise ValueError("name '*' matches every name; leave it out (None) instead")
    if created_after is not None:
        flt.created_after.CopyFrom(to_timestamp(created_after, "created_after"))
    if created_before is not None:
        flt.created_before.CopyFrom(to_timestamp(created_before, "created_before"))
    if created_after is not None and created_before is not None and created_after >= created_before:
        raise ValueError(
            f"created_after ({created_after.isoformat()}) is not before created_before "
            f"({created_before.isoformat()}): no job can match"
        )
    return flt


def _limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= MAX_BULK_LIMIT:
        raise ValueError(
            f"limit must be an int from 1 to {MAX_BULK_LIMIT} (0 means {MAX_BULK_LIMIT}), got {limit!r}"
        )
    return limit


def retry_jobs_request(
    queue_name: str, state: JobState | str, flt: jobs_pb2.JobFilter, limit: int, page_token: str
) -> jobs_pb2.RetryFailedJobsRequest:
    """A bounded RetryFailedJobsRequest (state: failed or cancelled)."""
    number = state_number(state)
    if number not in (types_pb2.JOB_STATE_FAILED, types_pb2.JOB_STATE_CANCELLED):
        raise ValueError(f"state must be 'failed' or 'cancelled', got {state!r}")
    return jobs_pb2.RetryFailedJobsRequest(
        queue_name=validate_queue_name(queue_name),
        state=number,  # type: ignore[arg-type]
        filter=flt,
        limit=_limit(limit) or MAX_BULK_LIMIT,
        page_token=page_token,
    )


def cancel_jobs_request(
    queue_name: str, state: JobState | str, flt: jobs_pb2.JobFilter, limit: int, page_token: str, reason: str
) -> jobs_pb2.CancelJobsRequest:
    """A CancelJobsRequest (the server checks the state: waiting, paused, delayed or active)."""
    return jobs_pb2.CancelJobsRequest(
        queue_name=validate_queue_name(queue_name),
        state=state_number(state),  # type: ignore[arg-type]
        filter=flt,
        limit=_limit(limit),
        page_token=page_token,
        reason=reason,
    )


def remove_jobs_request(
    queue_name: str, state: JobState | str, flt: jobs_pb2.JobFilter, limit: int, page_token: str
) -> jobs_pb2.RemoveJobsRequest:
    """A RemoveJobsRequest (the server checks the state: any but active)."""
    return jobs_pb2.RemoveJobsRequest(
        queue_name=validate_queue_name(queue_name),
        state=state_number(state),  # type: ignore[arg-type]
        filter=flt,
        limit=_limit(limit),
        page_token=page_token,
    )
