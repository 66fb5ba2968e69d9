"""Job-control requests shared by `QueueManager` and `SyncQueueManager` (and a running job's data update):
logs, waiting, retry, promotion, priority, data and run time. Validation happens here, before anything is
sent."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from queue_manager.convert import JSON_CONTENT_TYPE, Job, encode_payload, job_from_proto
from queue_manager.enums import JobPriority, JobState
from queue_manager.options import (
    DurationLike,
    check_page,
    parse_priority,
    to_duration,
    to_timestamp,
    validate_queue_name,
)
from queue_manager.v1 import jobs_pb2, types_pb2

__all__ = [
    "FINISHED",
    "change_priority_request",
    "finished_job",
    "get_job_logs_request",
    "reschedule_job_request",
    "retry_failed_request",
    "update_job_data_request",
    "wait_for_job_request",
]

# States a job does not leave on its own: `wait_for_job` returns once the job is in one of them.
FINISHED = frozenset(
    {types_pb2.JOB_STATE_COMPLETED, types_pb2.JOB_STATE_FAILED, types_pb2.JOB_STATE_CANCELLED}
)
_RETRYABLE = {"failed": types_pb2.JOB_STATE_FAILED, "cancelled": types_pb2.JOB_STATE_CANCELLED}
# A wait's own deadline comes after the server ends the stream at `timeout`, by this margin.
_DEADLINE_MARGIN_S = 10.0


def job_key(queue_name: str, job_id: str) -> tuple[str, str]:
    """Checks a queue name and a job id (the server checks the id's characters)."""
    validate_queue_name(queue_name)
    if not isinstance(job_id, str):  # protobuf's own words were "bad argument type for built-in operation"
        raise TypeError(f"job id must be a str, not {type(job_id).__name__} {job_id!r:.50}")
    if not job_id:
        raise ValueError(f"job id must be a non-empty str, got {job_id!r}")
    return queue_name, job_id


def get_job_logs_request(
    queue_name: str, job_id: str, page_size: int, page_token: str
) -> jobs_pb2.GetJobLogsRequest:
    """Builds and validates a GetJobLogsRequest."""
    queue_name, job_id = job_key(queue_name, job_id)
    page_size, page_token = check_page(page_size, page_token)
    return jobs_pb2.GetJobLogsRequest(
        queue_name=queue_name, job_id=job_id, page_size=page_size, page_token=page_token
    )


def wait_for_job_request(
    queue_name: str, job_id: str, timeout: float | timedelta | None
) -> tuple[jobs_pb2.WaitForJobRequest, float | None]:
    """Builds a WaitForJobRequest and the call's deadline in seconds (None: no deadline).

    Args:
        timeout: Seconds (or a timedelta) after which the server ends the stream; None waits until the job
            finishes.
    """
    queue_name, job_id = job_key(queue_name, job_id)
    request = jobs_pb2.WaitForJobRequest(queue_name=queue_name, job_id=job_id)
    if timeout is None:
        return request, None
    seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not 0 <= seconds < 10 * 365 * 86400
    ):
        raise ValueError(f"timeout must be seconds (at least 0) or a timedelta, got {timeout!r}")
    request.timeout.FromNanoseconds(round(seconds * 1e9))
    return request, seconds + _DEADLINE_MARGIN_S


def retry_failed_request(queue_name: str, state: JobState | str) -> jobs_pb2.RetryFailedJobsRequest:
    """Builds a RetryFailedJobsRequest for the failed (or cancelled) jobs of a queue."""
    number = _RETRYABLE.get(str(state).strip().lower())
    if number is None:
        raise ValueError(f"state must be 'failed' or 'cancelled', got {state!r}")
    return jobs_pb2.RetryFailedJobsRequest(queue_name=validate_queue_name(queue_name), state=number)


def change_priority_request(
    queue_name: str, job_id: str, priority: JobPriority | int | str
) -> jobs_pb2.ChangeJobPriorityRequest:
    """Builds and validates a ChangeJobPriorityRequest."""
    queue_name, job_id = job_key(queue_name, job_id)
    return jobs_pb2.ChangeJobPriorityRequest(
        queue_name=queue_name,
        job_id=job_id,
        priority=parse_priority(priority),  # type: ignore[arg-type]
    )


def reschedule_job_request(
    queue_name: str, job_id: str, delay: DurationLike | None, run_at: datetime | None
) -> jobs_pb2.RescheduleJobRequest:
    """Builds a RescheduleJobRequest: exactly one of `delay` (ms or a timedelta, from now) and `run_at`.

    Raises:
        ValueError: Both or neither given, a negative delay, a bad queue name or job id.
        TypeError: A delay that is not a number or timedelta, a run_at that is not a datetime.
    """
    queue_name, job_id = job_key(queue_name, job_id)
    if (delay is None) == (run_at is None):
        raise ValueError("give exactly one of delay (from now) and run_at (a datetime)")
    request = jobs_pb2.RescheduleJobRequest(queue_name=queue_name, job_id=job_id)
    if delay is not None:
        request.delay.CopyFrom(to_duration(delay, "delay"))
    else:
        assert run_at is not None
        request.run_time.CopyFrom(to_timestamp(run_at, "run_at"))
    return request


def update_job_data_request(
    queue_name: str, job_id: str, data: Any, lease_token: str = ""
) -> jobs_pb2.UpdateJobDataRequest:
    """Builds an UpdateJobDataRequest: bytes go as octet-stream, anything else as JSON (None as JSON null).

    Raises:
        TypeError: The data is neither bytes nor JSON-serialisable.
        ValueError: The data holds NaN or infinity, or a circular reference; a bad queue name or job id.
    """
    queue_name, job_id = job_key(queue_name, job_id)
    request = jobs_pb2.UpdateJobDataRequest(queue_name=queue_name, job_id=job_id, lease_token=lease_token)
    if data is None:  # the data is required: an unset payload would be refused, so None is sent as null
        request.data.raw, request.data.content_type = b"null", JSON_CONTENT_TYPE
    else:
        encode_payload(data, request.data)
    return request


def finished_job(
    queue_name: str, job_id: str, last: types_pb2.Job | None, timeout: float | timedelta | None
) -> Job:
    """The job a wait ended on, when it is finished; else the TimeoutError to tell why not."""
    if last is not None and last.state in FINISHED:
        return job_from_proto(last)
    state = types_pb2.JobState.Name(last.state).removeprefix("JOB_STATE_").lower() if last else "unknown"
    seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
    waited = "" if seconds is None else f" after a wait of {seconds:g} s"
    raise TimeoutError(f"job {job_id!r} in queue {queue_name!r} is still {state}{waited}")
