"""Request builders shared by the asyncio client and the blocking client (validation happens here)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from queue_manager.bounds import PriorityBoundsLike, priority_bounds_to_proto
from queue_manager.convert import encode_payload
from queue_manager.enums import JobState
from queue_manager.groups import GroupLimitsLike, group_limits_to_proto
from queue_manager.job_control import job_key
from queue_manager.maintenance import MaintenanceWindowLike, windows_to_proto
from queue_manager.options import (
    DurationLike,
    JobOptionsLike,
    KeepJobs,
    RateLimit,
    check_page,
    check_text,
    job_options_to_proto,
    queue_config_to_proto,
    state_number,
    to_duration,
    validate_job_name,
    validate_queue_name,
)
from queue_manager.v1 import jobs_pb2, metrics_pb2, queue_service_pb2

__all__ = [
    "BULK_CHUNK_BYTES",
    "BULK_CHUNK_JOBS",
    "BulkJob",
    "BulkJobLike",
    "RetentionLike",
    "add_job_request",
    "bulk_requests",
    "cancel_job_request",
    "clean_queue_request",
    "drain_queue_request",
    "list_jobs_request",
    "list_workers_request",
    "obliterate_queue_request",
    "queue_metrics_request",
    "register_queue_request",
]

# A stream message carries many jobs because the cost is per message, not per byte (see DESIGN.md);
# the byte bound keeps a chunk well under the 16 MiB message limit when payloads are large.
BULK_CHUNK_JOBS = 500
BULK_CHUNK_BYTES = 4 * 1024 * 1024

RetentionLike: TypeAlias = KeepJobs | Mapping[str, Any] | bool | int


@dataclass(frozen=True, slots=True)
class BulkJob:
    """One job of a bulk add.

    Attributes:
        name: Job name.
        data: Job data (JSON-serialisable or bytes).
        options: Job options, as for `QueueManager.add_job`.
    """

    name: str
    data: Any = None
    options: JobOptionsLike | None = None


BulkJobLike: TypeAlias = BulkJob | Mapping[str, Any]
"""A `BulkJob` or a mapping with keys ``name``, ``data`` and ``options``."""

_BULK_KEYS = frozenset({"name", "data", "options"})


def add_job_request(
    queue_name: str, name: str, data: Any, options: JobOptionsLike | None
) -> jobs_pb2.AddJobRequest:
    """Builds and validates an AddJobRequest."""
    request = jobs_pb2.AddJobRequest(queue_name=validate_queue_name(queue_name))
    _fill_new_job(request.job, name, data, options)
    return request


# The server checks a whole AddJobs stream before writing any of it, so it holds the stream in memory and
# takes at most this many jobs per stream; add_bulk opens as many streams as it needs.
MAX_STREAM_JOBS = 100_000


def bulk_requests(
    queue_name: str,
    jobs: Iterable[BulkJobLike],
    *,
    chunk_jobs: int = BULK_CHUNK_JOBS,
    chunk_bytes: int = BULK_CHUNK_BYTES,
) -> Iterator[jobs_pb2.AddBulkRequest]:
    """Splits jobs into AddBulkRequest messages of at most ``chunk_jobs`` jobs and about ``chunk_bytes``.

    Jobs are validated as they are read, so an invalid job raises before its chunk is yielded.
    """
    validate_queue_name(queue_name)
    jobs = _job_list(jobs)
    request = jobs_pb2.AddBulkRequest(queue_name=queue_name)
    size = 0
    last_options: object = None
    last_proto = None
    for index, item in enumerate(jobs):
        name, data, options = _bulk_fields(item, index)
        new_job = request.jobs.add()
        try:
            # The same options object for many jobs is common; convert it once.
            if options is not None and options is last_options and last_proto is not None:
                _fill_new_job(new_job, name, data, None)
                new_job.options.CopyFrom(last_proto)
            else:
                _fill_new_job(new_job, name, data, options)
                last_options, last_proto = options, new_job.options
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"job {index}: {exc}") from None
        size += len(new_job.data.raw) + len(name) + 32
        if len(request.jobs) >= chunk_jobs or size >= chunk_bytes:
            yield request
            request = jobs_pb2.AddBulkRequest(queue_name=queue_name)
            size = 0
    if request.jobs:
        yield request


def split_streams(
    requests: list[jobs_pb2.AddBulkRequest], max_jobs: int = MAX_STREAM_JOBS
) -> list[list[jobs_pb2.AddBulkRequest]]:
    """Groups bulk messages into streams of at most ``max_jobs`` jobs (the server's per-stream limit)."""
    streams: list[list[jobs_pb2.AddBulkRequest]] = []
    count = max_jobs
    for request in requests:
        if count + len(request.jobs) > max_jobs:
            streams.append([])
            count = 0
        streams[-1].append(request)
        count += len(request.jobs)
    return streams


def register_queue_request(
    name: str,
    *,
    rate_limit: RateLimit | Mapping[str, Any] | None = None,
    default_job_options: JobOptionsLike | None = None,
    dead_letter_queue: str | None = None,
    completed_retention: RetentionLike | None = None,
    failed_retention: RetentionLike | None = None,
    disable_dead_letter: bool = False,
    concurrency: int = 0,
    priority_bounds: PriorityBoundsLike | None = None,
    group_limits: GroupLimitsLike | None = None,
    max_size: int = 0,
    maintenance_windows: Iterable[MaintenanceWindowLike] = (),
) -> queue_service_pb2.RegisterQueueRequest:
    """Builds and validates a RegisterQueueRequest."""
    config = queue_config_to_proto(
        rate_limit=rate_limit,
        default_job_options=default_job_options,
        dead_letter_queue=dead_letter_queue,
        completed_retention=completed_retention,
        failed_retention=failed_retention,
        disable_dead_letter=disable_dead_letter,
        concurrency=concurrency,
        max_size=max_size,
    )
    if priority_bounds is not None:
        priority_bounds_to_proto(priority_bounds, config)
    if group_limits is not None:
        group_limits_to_proto(group_limits, config.group_limits, "group_limits")
    windows_to_proto(maintenance_windows, config)
    return queue_service_pb2.RegisterQueueRequest(name=validate_queue_name(name), config=config)


CLEANABLE_STATES = (
    JobState.COMPLETED,
    JobState.FAILED,
    JobState.CANCELLED,
    JobState.WAITING,
    JobState.PAUSED,
    JobState.DELAYED,
)
"""States `clean_queue` accepts (never active: running jobs are not pulled from their workers); the CLI and
the dashboard offer these."""


def clean_queue_request(
    name: str, grace: DurationLike, state: JobState | str, limit: int = 0
) -> queue_service_pb2.CleanQueueRequest:
    """Builds and validates a CleanQueueRequest."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit < 2**32:
        raise ValueError(f"limit must be an int from 0 (no limit) to {2**32 - 1}, got {limit!r}")
    return queue_service_pb2.CleanQueueRequest(
        name=validate_queue_name(name),
        grace=to_duration(grace, "grace"),
        state=state_number(state),  # type: ignore[arg-type]
        limit=limit,
    )


def _flag(value: bool, what: str) -> bool:
    # A bool field given the str "yes" failed in protobuf without naming the argument; "no" would have
    # been as truthy as "yes" had it been let through.
    if not isinstance(value, bool):
        raise TypeError(f"{what} must be True or False, not {type(value).__name__} {value!r:.50}")
    return value


def list_jobs_request(
    queue_name: str, state: JobState | str, page_size: int, page_token: str
) -> jobs_pb2.ListJobsRequest:
    """Builds and validates a ListJobsRequest."""
    page_size, page_token = check_page(page_size, page_token)
    return jobs_pb2.ListJobsRequest(
        queue_name=validate_queue_name(queue_name),
        state=state_number(state),  # type: ignore[arg-type]
        page_size=page_size,
        page_token=page_token,
    )


def cancel_job_request(queue_name: str, job_id: str, reason: str) -> jobs_pb2.CancelJobRequest:
    """Builds and validates a CancelJobRequest (the server checks the reason's length)."""
    queue_name, job_id = job_key(queue_name, job_id)
    reason = check_text(reason, "reason")
    return jobs_pb2.CancelJobRequest(queue_name=queue_name, job_id=job_id, reason=reason)


def drain_queue_request(name: str, include_delayed: bool) -> queue_service_pb2.DrainQueueRequest:
    """Builds and validates a DrainQueueRequest."""
    return queue_service_pb2.DrainQueueRequest(
        name=validate_queue_name(name), include_delayed=_flag(include_delayed, "include_delayed")
    )


def obliterate_queue_request(name: str, force: bool) -> queue_service_pb2.ObliterateQueueRequest:
    """Builds and validates an ObliterateQueueRequest."""
    return queue_service_pb2.ObliterateQueueRequest(
        name=validate_queue_name(name), force=_flag(force, "force")
    )


def queue_metrics_request(name: str, include_history: bool) -> queue_service_pb2.GetQueueMetricsRequest:
    """Builds and validates a GetQueueMetricsRequest."""
    return queue_service_pb2.GetQueueMetricsRequest(
        name=validate_queue_name(name), include_history=_flag(include_history, "include_history")
    )


def list_workers_request(queue: str | None) -> metrics_pb2.ListWorkersRequest:
    """Builds and validates a ListWorkersRequest: None (or "") lists the workers of every queue."""
    if queue is None or queue == "":
        return metrics_pb2.ListWorkersRequest()
    return metrics_pb2.ListWorkersRequest(queue_name=validate_queue_name(queue, "queue"))


def _fill_new_job(msg: jobs_pb2.NewJob, name: str, data: Any, options: JobOptionsLike | None) -> None:
    msg.name = validate_job_name(name)
    encode_payload(data, msg.data)
    if options is not None:
        job_options_to_proto(options, into=msg.options)


def _job_list(jobs: object) -> Iterable[BulkJobLike]:
    """The jobs of a bulk add, refusing what iterates but is not a list of jobs: a lone job's mapping or
    `BulkJob` (a dict iterated gives its keys, which failed as "job 0: must be a mapping, not str")."""
    expected = "jobs must be a list (or other iterable) of BulkJob or dicts {'name', 'data', 'options'}"
    if isinstance(jobs, Mapping | BulkJob):
        raise TypeError(
            f"{expected}, not one {type(jobs).__name__}; to add one job, pass [job] or use add_job"
        )
    if isinstance(jobs, str | bytes | bytearray) or not isinstance(jobs, Iterable):
        raise TypeError(f"{expected}, not {type(jobs).__name__}")
    return jobs


def _bulk_fields(item: BulkJobLike, index: int) -> tuple[str, Any, JobOptionsLike | None]:
    if isinstance(item, BulkJob):
        return item.name, item.data, item.options
    if not isinstance(item, Mapping):
        raise TypeError(f"job {index}: must be a mapping or BulkJob, not {type(item).__name__}")
    if "name" not in item:
        raise ValueError(f"job {index}: 'name' is required")
    unknown = [key for key in item if key not in _BULK_KEYS]
    if unknown:
        raise ValueError(
            f"job {index}: unknown key {', '.join(map(repr, unknown))}; expected name, data, options"
        )
    return item["name"], item.get("data"), item.get("options")
