"""Pull workers (no stream): `PulledJob`, a job fetched with `QueueManager.fetch_jobs` (or
`SyncQueueManager.fetch_jobs`) that its holder completes, fails or keeps leased with unary calls, and the
request builders both clients share.

A pull worker costs a round trip per call, and a job it drops is recovered only when its lease runs out
(a stream worker's jobs come back as soon as its stream ends): see docs/api.md, "Pull workers (no stream)".
With tracing on, ``with job.span():`` around a run gives it the CONSUMER span a stream worker's run has
(docs/observability.md).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from google.protobuf import duration_pb2

from queue_manager import tracing
from queue_manager.convert import Job, encode_payload, job_from_proto, python_to_value, timestamp_to_datetime
from queue_manager.options import validate_queue_name
from queue_manager.v1 import pull_pb2, types_pb2, worker_service_pb2

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

__all__ = [
    "MAX_FETCH",
    "MAX_WAIT_S",
    "FailOutcome",
    "PulledJob",
    "SyncPulledJob",
    "fetch_request",
    "taken_up",
]

# The server's bounds (services/pull.py), checked here so a mistake fails before the call.
MAX_FETCH = 1000
MAX_WAIT_S = 30.0

_pb = pull_pb2
# The requests that name a leased job.
_R = TypeVar(
    "_R",
    pull_pb2.CompleteJobRequest,
    pull_pb2.FailJobRequest,
    pull_pb2.ExtendJobLeaseRequest,
    pull_pb2.ReportJobProgressRequest,
)


@dataclass(frozen=True, slots=True)
class FailOutcome:
    """What a failure did to the job.

    Attributes:
        will_retry: The job runs again (attempts left, or retry_after); False: it failed for good.
        retry_at: When the next run is due (None when it failed for good).
    """

    will_retry: bool
    retry_at: datetime | None


@dataclass(eq=False)
class _Lease:
    """The fields both pulled-job classes share: the job and its lease."""

    job: Job
    lease_token: str
    lease_expires: datetime | None
    redelivery: bool
    # Monotonic seconds when it was fetched: the run's duration reported with its outcome. None for a job
    # taken up by its lease (`taken_up`): the fetch was another process's, so the server measures the run.
    fetched_at: float | None = field(default_factory=time.monotonic)
    # Set by extend_lease when the job was cancelled while it ran: stop the run.
    cancel_requested: bool = False
    # The client's tracer (None: tracing is off), and the run's span while `span` is open.
    _tracer: Tracer | None = field(default=None, repr=False)
    _span: Span | None = field(default=None, repr=False)

    @property
    def id(self) -> str:
        return self.job.id

    @property
    def name(self) -> str:
        return self.job.name

    @property
    def data(self) -> Any:
        return self.job.data

    @property
    def queue_name(self) -> str:
        return self.job.queue_name

    @contextmanager
    def span(self) -> Iterator[Span | None]:
        """The run's OpenTelemetry CONSUMER span (``{queue} process``), current while the block runs, as a
        stream worker's run has one: ``with job.span(): ...`` around the run's code and its `complete` or
        `fail`. Its parent is the trace context the job was added with (its add's PRODUCER span); spans the
        block starts nest under it; `fail`, or an exception leaving the block, ends it with ERROR status.

        Yields:
            The span, or None when tracing is off (no opentelemetry-api, or no tracer provider configured).
        """
        if self._tracer is None:
            yield None
            return
        with tracing.process_pulled(self._tracer, self.job) as span:
            self._span = span
            try:
                yield span
            finally:
                self._span = None

    def _fenced(self, request: _R) -> _R:
        """The request with the job and its lease token set (each call presents them)."""
        request.queue_name, request.job_id, request.lease_token = (
            self.job.queue_name,
            self.job.id,
            self.lease_token,
        )
        return request

    def _duration(self) -> duration_pb2.Duration | None:
        if self.fetched_at is None:
            return None
        d = duration_pb2.Duration()
        d.FromNanoseconds(round((time.monotonic() - self.fetched_at) * 1e9))
        return d

    def _complete_request(self, result: Any) -> pull_pb2.CompleteJobRequest:
        request = self._fenced(_pb.CompleteJobRequest(duration=self._duration()))
        encode_payload(result, request.result, "result")
        return request

    def _fail_request(
        self, message: str, no_retry: bool, retry_after: float | timedelta | None, stacktrace: str
    ) -> pull_pb2.FailJobRequest:
        if not isinstance(message, str):
            raise TypeError(f"message must be a str, not {type(message).__name__}")
        request = self._fenced(
            _pb.FailJobRequest(
                message=message, stacktrace=stacktrace, do_not_retry=no_retry, duration=self._duration()
            )
        )
        if retry_after is not None:
            request.retry_after.CopyFrom(_seconds(retry_after, "retry_after"))
        if self._span is not None:
            tracing.record_failed_run(self._span, message)
        return request

    def _extend_request(self, duration: float | timedelta | None) -> pull_pb2.ExtendJobLeaseRequest:
        request = self._fenced(_pb.ExtendJobLeaseRequest())
        if duration is not None:
            request.lease_duration.CopyFrom(_seconds(duration, "duration"))
        return request

    def _extended(self, response: pull_pb2.ExtendJobLeaseResponse) -> datetime:
        self.lease_expires = timestamp_to_datetime(response.lease_expire_time)
        self.cancel_requested = response.cancel_requested
        return self.lease_expires

    def _progress_request(self, progress: Any, logs: Sequence[str]) -> pull_pb2.ReportJobProgressRequest:
        if isinstance(logs, str):
            raise TypeError("logs must be a sequence of lines, not one str")
        lines = [types_pb2.JobLogLine(message=str(line)) for line in logs]
        request = self._fenced(_pb.ReportJobProgressRequest(logs=lines))
        if progress is not None:
            request.progress.CopyFrom(python_to_value(progress))
        return request


_Call = Callable[[str, Any], Awaitable[Any]]


@dataclass(eq=False)
class PulledJob(_Lease):
    """A job fetched by `QueueManager.fetch_jobs`, leased to the caller until `lease_expires`.

    Finish it with `complete` or `fail`; a run longer than the lease calls `extend_lease` (a heartbeat)
    before it runs out. A lost lease (it ran out and the job was recovered, or the job was removed) makes
    each call raise `FailedPreconditionError` (`NotFoundError` for a removed job).

    Attributes:
        job: The job (id, name, data, attempts…); only its id and queue for a job taken up by its lease
            (`QueueManager.pulled_job`).
        lease_token: The lease's token, which each call presents.
        lease_expires: When the lease runs out unless extended (None for a job taken up by its lease, until
            `extend_lease`).
        redelivery: True when an earlier run of this attempt was lost (a crash, a lease run out).
        cancel_requested: Set by `extend_lease` when the job was cancelled while it ran: stop the run.
    """

    _call: _Call | None = None

    async def complete(self, result: Any = None) -> None:
        """Records the run's success with its result (JSON-serialisable or bytes; None stores none)."""
        assert self._call is not None
        await self._call("CompleteJob", self._complete_request(result))

    async def fail(
        self,
        message: str,
        *,
        no_retry: bool = False,
        retry_after: float | timedelta | None = None,
        stacktrace: str = "",
    ) -> FailOutcome:
        """Records a failed run: retried per the job's attempts and backoff, or failed for good.

        Args:
            message: Why it failed.
            no_retry: Fail for good now, skipping any attempts left.
            retry_after: Seconds (or a timedelta): the job waits this long without using an attempt, and the
                queue starts no job meanwhile (the processor was told to slow down).
            stacktrace: A stack trace, for display.
        """
        assert self._call is not None
        response = await self._call("FailJob", self._fail_request(message, no_retry, retry_after, stacktrace))
        return _fail_outcome(response)

    async def extend_lease(self, duration: float | timedelta | None = None) -> datetime:
        """Extends the lease to `duration` seconds from now (1 s to 1 h; None: the server's lease) and
        returns its new expiry; sets `cancel_requested` when the job was cancelled meanwhile."""
        assert self._call is not None
        return self._extended(await self._call("ExtendJobLease", self._extend_request(duration)))

    async def report_progress(self, progress: Any = None, logs: Sequence[str] = ()) -> None:
        """Records the run's progress (a number 0-100 or any JSON; None leaves it) and appends log lines."""
        assert self._call is not None
        await self._call("ReportJobProgress", self._progress_request(progress, logs))


_SyncCall = Callable[[str, Any], Any]


@dataclass(eq=False)
class SyncPulledJob(_Lease):
    """A job fetched by `SyncQueueManager.fetch_jobs`: `PulledJob` with blocking calls."""

    _call: _SyncCall | None = None

    def complete(self, result: Any = None) -> None:
        """See `PulledJob.complete`."""
        assert self._call is not None
        self._call("CompleteJob", self._complete_request(result))

    def fail(
        self,
        message: str,
        *,
        no_retry: bool = False,
        retry_after: float | timedelta | None = None,
        stacktrace: str = "",
    ) -> FailOutcome:
        """See `PulledJob.fail`."""
        assert self._call is not None
        return _fail_outcome(
            self._call("FailJob", self._fail_request(message, no_retry, retry_after, stacktrace))
        )

    def extend_lease(self, duration: float | timedelta | None = None) -> datetime:
        """See `PulledJob.extend_lease`."""
        assert self._call is not None
        return self._extended(self._call("ExtendJobLease", self._extend_request(duration)))

    def report_progress(self, progress: Any = None, logs: Sequence[str] = ()) -> None:
        """See `PulledJob.report_progress`."""
        assert self._call is not None
        self._call("ReportJobProgress", self._progress_request(progress, logs))


def fetch_request(
    queue_name: str,
    max_jobs: int,
    wait: float | timedelta,
    lease_duration: float | timedelta | None,
    worker_name: str | None,
) -> tuple[pull_pb2.FetchJobsRequest, float]:
    """The FetchJobsRequest and its wait in seconds (the call's deadline is that much longer).

    Raises:
        TypeError, ValueError: An argument of the wrong type or out of range.
    """
    validate_queue_name(queue_name)
    if isinstance(max_jobs, bool) or not isinstance(max_jobs, int):
        raise TypeError(f"max_jobs must be an int, not {type(max_jobs).__name__}")
    if not 1 <= max_jobs <= MAX_FETCH:
        raise ValueError(f"max_jobs must be from 1 to {MAX_FETCH:,}, got {max_jobs}")
    wait_d = _seconds(wait, "wait")
    wait_s = wait_d.ToNanoseconds() / 1e9
    if wait_s > MAX_WAIT_S:
        raise ValueError(f"wait must be at most {MAX_WAIT_S:g} seconds, got {wait_s:g}")
    request = _pb.FetchJobsRequest(queue_name=queue_name, max_jobs=max_jobs, wait=wait_d)
    if lease_duration is not None:
        request.lease_duration.CopyFrom(_seconds(lease_duration, "lease_duration"))
    if worker_name is not None:
        if not isinstance(worker_name, str) or not worker_name:
            raise ValueError("worker_name must be a non-empty string")
        request.worker_name = worker_name
    return request, wait_s


def taken_up(queue_name: str, job_id: str, lease_token: str) -> Job:
    """The job of a lease taken up by reference (`QueueManager.pulled_job`): its id and queue only.

    Raises:
        TypeError, ValueError: An argument of the wrong type or empty.
    """
    validate_queue_name(queue_name)
    for what, value in (("job_id", job_id), ("lease_token", lease_token)):
        if not isinstance(value, str):
            raise TypeError(f"{what} must be a str, not {type(value).__name__}")
        if not value:
            raise ValueError(f"{what} must not be empty")
    return Job(id=job_id, name="", data=None, queue_name=queue_name)


def leases(response: pull_pb2.FetchJobsResponse) -> list[tuple[Job, worker_service_pb2.LeasedJob]]:
    """Each fetched job as a public `Job`, beside its LeasedJob (token, expiry, redelivery)."""
    return [(job_from_proto(leased.job), leased) for leased in response.jobs]


def _fail_outcome(response: pull_pb2.FailJobResponse) -> FailOutcome:
    at = timestamp_to_datetime(response.retry_time) if response.HasField("retry_time") else None
    return FailOutcome(will_retry=response.will_retry, retry_at=at)


def _seconds(value: float | timedelta, what: str) -> duration_pb2.Duration:
    """A Duration from seconds (int or float) or a timedelta, checked to be finite and not negative."""
    if isinstance(value, timedelta):
        s = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        s = float(value)
    else:
        raise TypeError(f"{what} must be seconds (a number) or a timedelta, not {type(value).__name__}")
    if not s >= 0 or s == float("inf"):
        raise ValueError(f"{what} must be a finite number of seconds, at least 0, got {value!r}")
    d = duration_pb2.Duration()
    d.FromNanoseconds(round(s * 1e9))
    return d
