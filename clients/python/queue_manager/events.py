"""A queue's job events (WatchJobEvents), as BullMQ's QueueEvents gives them: added, active, progress,
completed, failed, retrying, stalled, cancelled, removed, expired.

The feed is live and at most once: it starts when the stream's headers arrive (`JobEventStream.ready`) and
holds what happened from then on, never a replay; a job's durable state is `QueueManager.get_job` /
`wait_for_job`. A watcher that reads too slowly for the server's buffer is ended with
`ResourceExhaustedError` ("events dropped: the watcher fell behind by N events…"): watch again, and read
missed state with ``get_job``.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Generator, Iterable
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Self

import grpc
import grpc.aio

from queue_manager.convert import timestamp_to_datetime
from queue_manager.errors import error_from_rpc
from queue_manager.options import validate_queue_name
from queue_manager.v1 import jobs_pb2


class JobEventType(enum.StrEnum):
    """What happened to a job (``queue_manager.v1.JobEventType``)."""

    ADDED = "added"
    WAITING = "waiting"
    ACTIVE = "active"
    PROGRESS = "progress"
    COMPLETED = "completed"
    FAILED = "failed"
    RETRYING = "retrying"
    DELAYED = "delayed"
    STALLED = "stalled"
    CANCELLED = "cancelled"
    REMOVED = "removed"
    EXPIRED = "expired"


# The wire numbers, in both directions (0 is "unspecified").
EVENT_NUMBER: dict[JobEventType, int] = {t: n for n, t in enumerate(JobEventType, start=1)}
EVENT_BY_NUMBER: dict[int, JobEventType] = {n: t for t, n in EVENT_NUMBER.items()}


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One thing that happened to one job.

    Attributes:
        queue_name: The job's queue.
        job_id: The job's id.
        job_name: The job's name ("" when the job was gone before the event could read it).
        type: What happened; None for a type this client does not know (a newer server's).
        time: When (the job store's clock).
        attempt: ACTIVE: which attempt this run is (1 = the first); COMPLETED, FAILED, RETRYING: the attempts
            made, this one included; 0 when not known.
        failed_reason: FAILED and RETRYING: the failure's reason (its first 200 bytes).
        progress: PROGRESS: the progress reported, as JSON text ("" when over 1,000 bytes).
        run_at: ADDED (a delayed job), RETRYING, DELAYED: when the job runs.
    """

    queue_name: str
    job_id: str
    job_name: str
    type: JobEventType | None
    time: datetime
    attempt: int = 0
    failed_reason: str = ""
    progress: str = ""
    run_at: datetime | None = None


def event_from_proto(m: jobs_pb2.JobEvent) -> JobEvent:
    return JobEvent(
        queue_name=m.queue_name,
        job_id=m.job_id,
        job_name=m.job_name,
        type=EVENT_BY_NUMBER.get(m.type),
        time=timestamp_to_datetime(m.time),
        attempt=m.attempt,
        failed_reason=m.failed_reason,
        progress=m.progress,
        run_at=timestamp_to_datetime(m.run_at) if m.HasField("run_at") else None,
    )


def event_type(value: JobEventType | str) -> JobEventType:
    """An event type from its enum member or its name ("completed", "COMPLETED")."""
    try:
        return JobEventType(str(value).strip().lower())
    except ValueError:
        known = ", ".join(t.value for t in JobEventType)
        raise ValueError(f"unknown job event type {value!r}: use one of {known}") from None


def watch_job_events_request(
    queue_name: str,
    types: Iterable[JobEventType | str] | JobEventType | str | None,
    job_names: Iterable[str] | str | None,
) -> jobs_pb2.WatchJobEventsRequest:
    """Builds and checks a WatchJobEventsRequest (None or empty filters: everything)."""
    if isinstance(types, str):
        types = [types]
    if isinstance(job_names, str):
        job_names = [job_names]
    # A number in place of either failed in iteration ("'int' object is not iterable"), naming neither.
    if types is not None and not isinstance(types, Iterable):
        raise TypeError(f"types must be a JobEventType, a name or a list of them, not {type(types).__name__}")
    if job_names is not None and not isinstance(job_names, Iterable):
        raise TypeError(f"job_names must be a job name or a list of names, not {type(job_names).__name__}")
    numbers = sorted({EVENT_NUMBER[event_type(t)] for t in types or ()})
    names = list(job_names or ())
    for name in names:
        if not isinstance(name, str) or not name:
            raise ValueError(f"job names must be non-empty strings, got {name!r}")
    return jobs_pb2.WatchJobEventsRequest(
        queue_name=validate_queue_name(queue_name),
        types=numbers,  # type: ignore[arg-type]
        job_names=names,
    )


class JobEventStream:
    """A live WatchJobEvents call: iterate it for `JobEvent`s; ``await stream.ready()`` (or ``async with``)
    returns once the server watches, so every event from then on is in the stream. Leaving the ``async
    with`` block, or `close`, ends the call."""

    def __init__(self, call: Any) -> None:
        self._call = call

    async def ready(self) -> None:
        """Returns once the server has started the watch; raises the call's error if it ended instead (an
        unknown queue: `NotFoundError`)."""
        try:
            await self._call.initial_metadata()
            if self._call.done():
                await self._call.read()  # the status: raises it unless OK
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None

    def close(self) -> None:
        self._call.cancel()

    async def __aenter__(self) -> Self:
        try:
            await self.ready()
        except BaseException:
            self.close()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __aiter__(self) -> AsyncIterator[JobEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[JobEvent]:
        try:
            async for response in self._call:
                for m in response.events:
                    yield event_from_proto(m)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        finally:
            self._call.cancel()


def sync_events(call: Any) -> Generator[JobEvent]:
    """The events of a blocking WatchJobEvents call, until the generator is closed."""
    try:
        for response in call:
            for m in response.events:
                yield event_from_proto(m)
    except grpc.RpcError as exc:
        raise error_from_rpc(exc) from None
    finally:
        call.cancel()
