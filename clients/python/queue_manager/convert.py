"""The one place where protobuf messages become public dataclasses (jobs, queues, metrics) and payloads.

Payload convention: JSON-serialisable data travels as UTF-8 JSON in ``Payload.raw`` with content type
``application/json`` (cheap to encode; no ``google.protobuf.Struct`` on the hot path); ``bytes`` travel as
``application/octet-stream``. On the way back a ``json`` Value (what the server returns to readers), JSON
``raw`` bytes and other ``raw`` bytes become Python values, JSON values and ``bytes`` respectively.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import duration_pb2, json_format, struct_pb2, timestamp_pb2

from queue_manager.enums import STATE_BY_NUMBER, JobPriority, JobState
from queue_manager.options import Backoff, JobMetadata, JobOptions, KeepJobs, QueueConfig, RateLimit
from queue_manager.v1 import types_pb2

__all__ = [
    "JSON_CONTENT_TYPE",
    "OCTET_STREAM",
    "Job",
    "JobPriority",
    "JobState",
    "Queue",
    "QueueMetrics",
    "decode_payload",
    "encode_payload",
    "job_from_proto",
    "metrics_from_proto",
    "python_to_value",
    "queue_from_proto",
    "value_to_python",
]

JSON_CONTENT_TYPE = "application/json"
OCTET_STREAM = "application/octet-stream"

# json.dumps builds a new encoder per call when given any option; one shared encoder avoids that.
_encode_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
# json.loads(bytes) sniffs the encoding first; decoding UTF-8 ourselves and parsing the str is faster.
_decode_json = json.JSONDecoder().decode
_MAX_EXACT_FLOAT_INT = 2**53


@dataclass(slots=True)
class Job:
    """A job as stored by the server.

    Attributes:
        id: Job id, unique within its queue.
        name: Job name (the kind of work).
        data: The job's data (JSON value, or bytes).
        queue_name: Queue the job belongs to.
        state: Current state; None if the server did not say.
        priority: Priority level.
        attempts_made: Number of finished runs that failed.
        max_attempts: Maximum runs including the first.
        stalled_count: Times the job was recovered from a lost worker.
        result: Result of the successful run.
        failed_reason: Error message of the last failure.
        stacktrace: Stack trace of the last failure.
        progress: Last progress reported by the worker.
        created_at: When the job was added.
        processed_at: When the current or last run started.
        finished_at: When the job completed or failed for good.
        run_at: When a delayed job becomes due.
        metadata: Correlation id, tags and attributes.
        worker_id: Worker holding the job, while active.
        options: The options the job was added with, after queue defaults.
    """

    id: str
    name: str
    data: Any
    queue_name: str
    state: JobState | None = None
    priority: JobPriority = JobPriority.NORMAL
    attempts_made: int = 0
    max_attempts: int = 0
    stalled_count: int = 0
    result: Any = None
    failed_reason: str = ""
    stacktrace: str = ""
    progress: Any = None
    created_at: datetime | None = None
    processed_at: datetime | None = None
    finished_at: datetime | None = None
    run_at: datetime | None = None
    metadata: JobMetadata = field(default_factory=JobMetadata)
    worker_id: str = ""
    options: JobOptions = field(default_factory=JobOptions)


@dataclass(slots=True)
class Queue:
    """A registered queue.

    Attributes:
        name: Queue name.
        config: Its settings, with defaults filled in.
        paused: Whether the queue is paused.
        created_at: When it was first registered.
    """

    name: str
    config: QueueConfig
    paused: bool = False
    created_at: datetime | None = None


@dataclass(slots=True)
class QueueMetrics:
    """Counts of a queue's jobs by state.

    Attributes:
        queue_name: Queue name.
        waiting: Jobs ready to run.
        active: Jobs leased to workers.
        delayed: Jobs waiting for their run-at time.
        completed: Completed jobs still retained.
        failed: Failed jobs still retained.
        paused: Jobs waiting in a paused queue.
        stalled: Active jobs whose lease expired and that wait for recovery.
        stalled_total: Total recoveries since the queue was registered.
    """

    queue_name: str
    waiting: int = 0
    active: int = 0
    delayed: int = 0
    completed: int = 0
    failed: int = 0
    paused: int = 0
    stalled: int = 0
    stalled_total: int = 0


def encode_payload(data: Any, into: types_pb2.Payload) -> None:
    """Fills a Payload with data: bytes as octet-stream, anything else as compact JSON.

    Args:
        data: The value; None leaves the payload unset.
        into: The message to fill (usually a field of a request being built).

    Raises:
        TypeError: The value is neither bytes nor JSON-serialisable.
        ValueError: The value contains NaN or infinity, or a circular reference.
    """
    if data is None:
        return
    if isinstance(data, bytes | bytearray | memoryview):
        into.raw = bytes(data)
        into.content_type = OCTET_STREAM
        return
    try:
        text = _encode_json(data)
    except TypeError as exc:
        raise TypeError(f"data must be JSON-serialisable or bytes: {exc}") from None
    into.raw = text.encode()
    into.content_type = JSON_CONTENT_TYPE


def decode_payload(payload: types_pb2.Payload) -> Any:
    """The Python value of a Payload: JSON as Python values, other raw bodies as bytes, unset as None."""
    kind = payload.WhichOneof("body")
    if kind == "raw":
        content_type = payload.content_type
        if content_type == JSON_CONTENT_TYPE or content_type.startswith(JSON_CONTENT_TYPE):
            try:
                return _decode_json(payload.raw.decode())
            except ValueError:
                return payload.raw
        return payload.raw
    if kind == "json":
        return value_to_python(payload.json)
    return None


def value_to_python(value: struct_pb2.Value) -> Any:
    """A `google.protobuf.Value` as a Python value; integral numbers become ``int``."""
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return {key: value_to_python(item) for key, item in value.struct_value.fields.items()}
    if kind == "list_value":
        return [value_to_python(item) for item in value.list_value.values]
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        number = value.number_value
        if number.is_integer() and abs(number) < _MAX_EXACT_FLOAT_INT:
            return int(number)
        return number
    if kind == "bool_value":
        return value.bool_value
    return None


def python_to_value(data: Any) -> struct_pb2.Value:
    """A JSON-compatible Python value as a `google.protobuf.Value`.

    Raises:
        TypeError: The value is not JSON-compatible.
    """
    value = struct_pb2.Value()
    try:
        json_format.ParseDict(json.loads(_encode_json(data)), value)
    except TypeError as exc:
        raise TypeError(f"value must be JSON-serialisable: {exc}") from None
    return value


def job_from_proto(msg: types_pb2.Job) -> Job:
    """A public `Job` from a `queue_manager.v1.Job`."""
    return Job(
        id=msg.id,
        name=msg.name,
        data=decode_payload(msg.data),
        queue_name=msg.queue_name,
        state=STATE_BY_NUMBER.get(msg.state),
        priority=_priority(msg.priority) or JobPriority.NORMAL,
        attempts_made=msg.attempts_made,
        max_attempts=msg.max_attempts,
        stalled_count=msg.stalled_count,
        result=decode_payload(msg.result),
        failed_reason=msg.failed_reason,
        stacktrace=msg.stacktrace,
        progress=value_to_python(msg.progress) if msg.HasField("progress") else None,
        created_at=timestamp_to_datetime(msg.create_time) if msg.HasField("create_time") else None,
        processed_at=timestamp_to_datetime(msg.process_time) if msg.HasField("process_time") else None,
        finished_at=timestamp_to_datetime(msg.finish_time) if msg.HasField("finish_time") else None,
        run_at=timestamp_to_datetime(msg.run_time) if msg.HasField("run_time") else None,
        metadata=metadata_from_proto(msg.metadata),
        worker_id=msg.worker_id,
        options=job_options_from_proto(msg.options),
    )


def queue_from_proto(msg: types_pb2.Queue) -> Queue:
    """A public `Queue` from a `queue_manager.v1.Queue`."""
    return Queue(
        name=msg.name,
        config=queue_config_from_proto(msg.config),
        paused=msg.paused,
        created_at=timestamp_to_datetime(msg.create_time) if msg.HasField("create_time") else None,
    )


def metrics_from_proto(msg: types_pb2.QueueMetrics) -> QueueMetrics:
    """Public `QueueMetrics` from a `queue_manager.v1.QueueMetrics`."""
    return QueueMetrics(
        queue_name=msg.queue_name,
        waiting=msg.waiting,
        active=msg.active,
        delayed=msg.delayed,
        completed=msg.completed,
        failed=msg.failed,
        paused=msg.paused,
        stalled=msg.stalled,
        stalled_total=msg.stalled_total,
    )


def queue_config_from_proto(msg: types_pb2.QueueConfig) -> QueueConfig:
    """A public `QueueConfig` from a `queue_manager.v1.QueueConfig`."""
    rate_limit = None
    if msg.HasField("rate_limit"):
        rate_limit = RateLimit(
            max=msg.rate_limit.max, duration=duration_to_timedelta(msg.rate_limit.duration)
        )
    return QueueConfig(
        rate_limit=rate_limit,
        default_job_options=job_options_from_proto(msg.default_job_options),
        dead_letter_queue=msg.dead_letter_queue,
        completed_retention=keep_from_proto(msg.completed_retention)
        if msg.HasField("completed_retention")
        else None,
        failed_retention=keep_from_proto(msg.failed_retention) if msg.HasField("failed_retention") else None,
        disable_dead_letter=msg.disable_dead_letter,
    )


def job_options_from_proto(msg: types_pb2.JobOptions) -> JobOptions:
    """Public `JobOptions` from a `queue_manager.v1.JobOptions`; unset fields become None."""
    backoff = None
    if msg.HasField("backoff"):
        b = msg.backoff
        backoff = Backoff(
            type="exponential" if b.type == types_pb2.BACKOFF_TYPE_EXPONENTIAL else "fixed",
            delay=duration_to_timedelta(b.delay),
            jitter=b.jitter,
            max_delay=duration_to_timedelta(b.max_delay) if b.HasField("max_delay") else None,
        )
    return JobOptions(
        priority=_priority(msg.priority),
        delay=duration_to_timedelta(msg.delay) if msg.HasField("delay") else None,
        scheduled_at=timestamp_to_datetime(msg.schedule_time) if msg.HasField("schedule_time") else None,
        attempts=msg.attempts or None,
        backoff=backoff,
        job_id=msg.job_id or None,
        metadata=metadata_from_proto(msg.metadata) if msg.HasField("metadata") else None,
        remove_on_complete=keep_from_proto(msg.remove_on_complete)
        if msg.HasField("remove_on_complete")
        else None,
        remove_on_fail=keep_from_proto(msg.remove_on_fail) if msg.HasField("remove_on_fail") else None,
        timeout=duration_to_timedelta(msg.timeout) if msg.HasField("timeout") else None,
        max_stalled=msg.max_stalled or None,
    )


def metadata_from_proto(msg: types_pb2.JobMetadata) -> JobMetadata:
    """Public `JobMetadata` from a `queue_manager.v1.JobMetadata`."""
    return JobMetadata(
        correlation_id=msg.correlation_id, tags=list(msg.tags), attributes=dict(msg.attributes)
    )


def keep_from_proto(msg: types_pb2.KeepJobs) -> KeepJobs:
    """Public `KeepJobs` from a `queue_manager.v1.KeepJobs`."""
    return KeepJobs(
        remove=msg.remove,
        age=duration_to_timedelta(msg.age) if msg.HasField("age") else None,
        count=msg.count,
    )


def timestamp_to_datetime(msg: timestamp_pb2.Timestamp) -> datetime:
    """An aware UTC datetime from a Timestamp."""
    return datetime.fromtimestamp(msg.seconds + msg.nanos / 1e9, tz=UTC)


def duration_to_timedelta(msg: duration_pb2.Duration) -> timedelta:
    """A timedelta from a Duration (microsecond precision)."""
    return timedelta(seconds=msg.seconds, microseconds=msg.nanos // 1000)


def _priority(number: int) -> JobPriority | None:
    try:
        return JobPriority(number)
    except ValueError:
        return None
