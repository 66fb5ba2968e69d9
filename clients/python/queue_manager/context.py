"""`JobContext`: the job as a processor sees it (data, attempts, metadata, progress reporting)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Generator, Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from google.protobuf import struct_pb2

from queue_manager.child_jobs import KEEP, ChildSpecLike, wait_for_children_request
from queue_manager.convert import (
    ChildJob,
    EventWait,
    ExternalEvent,
    ParentJob,
    WorkflowStepRef,
    child_jobs_from_proto,
    decode_payload,
    event_from_proto,
    event_wait_from_proto,
    job_options_from_proto,
    metadata_from_proto,
    parents_from_proto,
    priority_of,
    python_to_value,
    timestamp_to_datetime,
    workflow_ref_from_proto,
)
from queue_manager.enums import JobPriority
from queue_manager.external_events import wait_for_event_request
from queue_manager.job_control import update_job_data_request
from queue_manager.options import JobMetadata, JobOptions
from queue_manager.v1 import external_events_pb2, jobs_pb2, worker_service_pb2

if TYPE_CHECKING:
    from opentelemetry.trace import Span

__all__ = ["JobContext", "ProgressSink"]


class ProgressSink(Protocol):
    """Where a context sends progress, log lines and data updates: the worker that runs the job."""

    def _report_progress(self, ctx: JobContext, value: struct_pb2.Value) -> None: ...

    def _report_log(self, ctx: JobContext, time_ns: int, message: str) -> None: ...

    def _update_data(
        self, ctx: JobContext, request: jobs_pb2.UpdateJobDataRequest
    ) -> Awaitable[None] | None: ...

    def _wait_for_children(
        self, ctx: JobContext, request: jobs_pb2.WaitForChildrenRequest
    ) -> Awaitable[NoReturn]: ...

    def _wait_for_event(
        self, ctx: JobContext, request: external_events_pb2.WaitForEventRequest
    ) -> Awaitable[NoReturn]: ...


class _Done:
    """An awaitable that is already complete: what `JobContext.log` (and `update_data` from a processor's
    thread) returns, so awaiting it is optional
    (and, unlike a coroutine, leaving it unawaited warns about nothing)."""

    __slots__ = ()

    def __await__(self) -> Generator[None, None, None]:
        return
        yield  # makes this a generator function


_DONE = _Done()


class JobContext:
    """The job as a processor sees it.

    Attributes:
        id: Job id.
        name: Job name.
        data: Job data (JSON value or bytes).
        queue_name: Queue of the job.
        attempts_made: Finished runs so far, which are the failed ones, since a completed run ends the job
            (0 on the first run; ``attempts_made + 1`` is this run's attempt number).
        max_attempts: Maximum runs including the first.
        priority: Priority level.
        stalled_count: Times the job was recovered from a lost worker.
        redelivery: True when an earlier run of this attempt was lost (crash, lease expiry).
        lease_token: Token of this run's lease (shared by the jobs delivered in the same batch).
    """

    __slots__ = (
        "_cancelled",
        "_job",
        "_lost",
        "_metadata",
        "_span",
        "_task",
        "_timed_out",
        "_worker",
        "attempts_made",
        "data",
        "id",
        "lease_token",
        "max_attempts",
        "name",
        "priority",
        "queue_name",
        "redelivery",
        "stalled_count",
    )

    def __init__(self, leased: worker_service_pb2.LeasedJob, worker: ProgressSink) -> None:
        job = leased.job
        self._job = job
        self._worker = worker
        self._task: asyncio.Future[None] | None = None
        self._lost = False
        self._cancelled = False
        self._timed_out = ""  # why the run passed its timeout (the worker's or the server's); "" before
        self._metadata: JobMetadata | None = None
        self._span: Span | None = None  # the run's span, when the worker traces (tracing.py)
        self.id = job.id
        self.name = job.name
        self.queue_name = job.queue_name
        self.data: Any = decode_payload(job.data)
        self.attempts_made = job.attempts_made
        self.max_attempts = job.max_attempts
        self.priority = priority_of(job.priority) or JobPriority.NORMAL
        self.stalled_count = job.stalled_count
        self.redelivery = leased.redelivery
        self.lease_token = leased.lease_token

    @property
    def cancelled(self) -> bool:
        """True once the run must stop: the job was cancelled, or it passed its timeout (on this worker or
        on the server, whichever noticed first).

        An async processor's task is cancelled as well (it sees `asyncio.CancelledError`); a plain-``def``
        processor should check this now and then and return. However the run then ends, the worker reports
        it as cancelled, or for a timeout as a failure that timed out (its result, if any, is discarded).
        """
        return self._cancelled or bool(self._timed_out)

    @property
    def parents(self) -> list[ParentJob]:
        """Predecessors in a chain or workflow, with their results (all of depends_on for a fan-in step)."""
        return parents_from_proto(self._job)

    @property
    def parent(self) -> ParentJob | None:
        """The predecessor (chain link, workflow branch step): its id and result; None for a first job."""
        return self.parents[0] if len(self._job.parents) else None

    @property
    def children(self) -> list[ChildJob]:
        """The children this job added at run time (`wait_for_children`), each with its outcome: what a run
        after the wait combines. In the order they were added, over all the job's waits."""
        return child_jobs_from_proto(self._job)

    @property
    def event(self) -> ExternalEvent | None:
        """The external event that ended this job's last `wait_for_event` (its key, data, id and time); None
        when the job never waited, or when the wait timed out (`event_timed_out`)."""
        return event_from_proto(self._job)

    @property
    def event_wait(self) -> EventWait | None:
        """The last `wait_for_event` of this job (its keys and timeout), which this run follows; None when
        it never waited for an event."""
        return event_wait_from_proto(self._job)

    @property
    def event_timed_out(self) -> bool:
        """True when this run follows a `wait_for_event` that ended with no event: it timed out (or an
        operator promoted the job)."""
        return self._job.HasField("event_wait") and not self._job.HasField("event")

    @property
    def workflow(self) -> WorkflowStepRef | None:
        """The workflow run and step of this job, if it is a workflow step."""
        return workflow_ref_from_proto(self._job)

    @property
    def key(self) -> tuple[str, str]:
        """(queue name, job id): what names this run on its worker (a lease token may cover a batch)."""
        return (self.queue_name, self.id)

    @property
    def metadata(self) -> JobMetadata:
        """Correlation id, tags and attributes."""
        if self._metadata is None:
            self._metadata = metadata_from_proto(self._job.metadata)
        return self._metadata

    @property
    def options(self) -> JobOptions:
        """The options the worker stream carries with the job: its ``timeout``.

        The full options (after queue defaults) are on `QueueManager.get_job`.
        """
        return job_options_from_proto(self._job.options)

    @property
    def created_at(self) -> datetime | None:
        """When the job was added."""
        return timestamp_to_datetime(self._job.create_time) if self._job.HasField("create_time") else None

    @property
    def lost(self) -> bool:
        """True once the server refused this run's lease; the result will be discarded."""
        return self._lost

    async def update_progress(self, value: Any) -> None:
        """Reports progress (a number 0-100 or any JSON value); sent with the next report, never awaited."""
        self.report_progress(value)

    def report_progress(self, value: Any) -> None:
        """Like `update_progress`, callable from a plain-``def`` processor's thread as well."""
        self._worker._report_progress(self, python_to_value(value))

    def log(self, message: str) -> Awaitable[None]:
        """Adds a line to the job's log (`QueueManager.get_job_logs`, ``qm jobs logs``).

        Never blocks: the line is stamped now and sent with the worker's next report. Callable from a
        plain-``def`` processor's thread too. Awaiting the result is optional (``await job.log("...")``
        and ``job.log("...")`` do the same). The server keeps each job's last 1,000 lines, each cut to
        2,000 characters; lines of a run whose lease was lost are dropped.

        Args:
            message: The text (other values are converted with ``str``).
        """
        self._worker._report_log(self, time.time_ns(), message if isinstance(message, str) else str(message))
        return _DONE

    def update_data(self, data: Any) -> Awaitable[None]:
        """Replaces this job's data on the server, so that its next attempt (a retry after a failure, or a
        redelivery after a crash) starts from it: save the step a long job has reached, and resume from it.

        The change is fenced by this run's lease: once the lease is lost (the job was recovered and may run
        elsewhere) it is refused with `FailedPreconditionError` and nothing changes. On success
        ``job.data`` holds the new value. From an async processor, ``await job.update_data(...)``; from a
        plain-``def`` processor's thread, call it without ``await``: it returns once the server has answered.

        Args:
            data: The new data: bytes (sent as application/octet-stream) or a JSON-serialisable value (None
                is JSON null); at most the server's payload limit.

        Raises:
            FailedPreconditionError: This run's lease was lost.
            InvalidArgumentError: The data is over the server's payload limit.
            TypeError, ValueError: The data is neither bytes nor JSON (raised before anything is sent).
        """
        request = update_job_data_request(self.queue_name, self.id, data, self.lease_token)
        return self._worker._update_data(self, request) or _DONE

    def wait_for_children(self, children: Iterable[ChildSpecLike], data: Any = KEEP) -> Awaitable[NoReturn]:
        """Adds child jobs and ends this run until they have all finished: a map-reduce whose width is known
        only at run time (split a file into chunks, process each, combine the results).

        The server adds the children (in any registered queues) and parks this job in delayed with no due
        time, using no attempt and holding no worker slot. Once every child has completed, failed for good
        or been cancelled, the job runs again, its `children` holding their outcomes. The call is fenced by
        this run's lease and safe to repeat: each child's id is derived from this job, its wait and the
        child's place in the list, so a run lost after the call and run again adds no child twice.

        From an async processor, ``await job.wait_for_children([...])``; from a plain-``def`` processor's
        thread, call it without ``await``. Either way it does not return: once the server has answered, it
        raises `WaitingForChildren`, which ends the run (let it pass).

        Args:
            children: 1 to 1,000 `ChildSpec` (or dicts with ``queue_name``, ``name``, ``data``, ``options``);
                a job adds at most 1,000 over its life.
            data: The job's new data for its next run (a checkpoint), in the same step; by default it is
                kept.

        Raises:
            WaitingForChildren: The children were added; the run is over.
            InvalidArgumentError: A child is malformed, over the payload limit or in a queue that is not
                registered, or too many children: nothing was added and the run goes on.
            FailedPreconditionError: This run's lease was lost.
            TypeError, ValueError: A child or the data could not be encoded (raised before anything is sent).
        """
        request = wait_for_children_request(self.queue_name, self.id, self.lease_token, children, data)
        return self._worker._wait_for_children(self, request)

    def wait_for_event(
        self, keys: str | Iterable[str], timeout: float | timedelta | None = None, data: Any = KEEP
    ) -> Awaitable[NoReturn]:
        """Ends this run until an external event of one of `keys` is pushed (`QueueManager.push_event`, the
        HTTP ``POST /v1/events``): an approval, a payment's webhook, a reply.

        The server parks this job in delayed, using no attempt and holding no worker slot. A push of one of
        the keys made after this call moves it back to waiting at once; its next run sees the event in
        `event`. Events pushed before the call are not seen. With a timeout, the job runs again when it
        passes with no event (`event_timed_out`). The call is fenced by this run's lease and is one atomic
        step: a run lost before the server's answer either waits, or runs again and waits anew.

        From an async processor, ``await job.wait_for_event("order:7:paid")``; from a plain-``def``
        processor's thread, call it without ``await``. Either way it does not return: once the server has
        answered, it raises `WaitingForEvent`, which ends the run (let it pass).

        Args:
            keys: One event key, or 1 to 16 (an event of any one ends the wait); each 1 to 256 characters,
                no control characters.
            timeout: Seconds or a timedelta to wait at most; None waits with no end.
            data: The job's new data for its next run (a checkpoint), in the same step; by default it is
                kept.

        Raises:
            WaitingForEvent: The job waits; the run is over.
            InvalidArgumentError: Bad keys or timeout, or data over the payload limit: the run goes on.
            FailedPreconditionError: This run's lease was lost.
            TypeError, ValueError: Bad keys, timeout or data (raised before anything is sent).
        """
        names = keys if isinstance(keys, str) else list(keys)
        request = wait_for_event_request(self.queue_name, self.id, self.lease_token, names, timeout, data)
        return self._worker._wait_for_event(self, request)

    def __repr__(self) -> str:
        return f"JobContext(queue_name={self.queue_name!r}, id={self.id!r}, name={self.name!r})"
