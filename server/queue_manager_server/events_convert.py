"""Job events (engine/job_events.py) to their proto messages and the WatchJobEvents request's filter."""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf.timestamp_pb2 import Timestamp

from queue_manager.v1 import jobs_pb2 as pb
from queue_manager_server import validate
from queue_manager_server.engine.job_events import PROGRESS, EventBatch, JobEventRecord
from queue_manager_server.errors import InvalidArgument

# The event types a filter may name (every JobEventType but UNSPECIFIED).
EVENT_TYPES = range(1, max(pb.JobEventType.values()) + 1)
# Most job names one filter may list.
MAX_FILTER_NAMES = 100


def _timestamp(ms: int) -> Timestamp:
    t = Timestamp()
    t.FromMilliseconds(ms)
    return t


def types_filter(values: Sequence[int]) -> frozenset[int]:
    """The request's event types (empty: every type); an unknown one is INVALID_ARGUMENT."""
    for i, value in enumerate(values):
        validate.enum_value(value, EVENT_TYPES, f"types[{i}]", pb.JobEventType)
    return frozenset(values)


def names_filter(values: Sequence[str]) -> frozenset[str]:
    """The request's job names (empty: every job), each as a job's name may be."""
    if len(values) > MAX_FILTER_NAMES:
        raise InvalidArgument("job_names", f"lists {len(values)} names; the limit is {MAX_FILTER_NAMES}")
    return frozenset(validate.text(v, f"job_names[{i}]") for i, v in enumerate(values))


def event_out(batch: EventBatch, e: JobEventRecord) -> pb.JobEvent:
    """One event of a batch as its message."""
    m = pb.JobEvent(queue_name=batch.queue, job_id=e.job_id, job_name=e.name, type=e.type, attempt=e.attempt)  # type: ignore[arg-type]
    m.time.CopyFrom(_timestamp(batch.time_ms))
    if e.text:
        if e.type == PROGRESS:
            m.progress = e.text
        else:
            m.failed_reason = e.text
    if e.run_at_ms > 0:
        m.run_at.CopyFrom(_timestamp(e.run_at_ms))
    return m


def response_out(batch: EventBatch) -> pb.WatchJobEventsResponse:
    """A batch (one script call's events a watcher wants) as one stream message."""
    return pb.WatchJobEventsResponse(events=[event_out(batch, e) for e in batch.events])
