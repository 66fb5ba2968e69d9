"""Where protobuf messages become public dataclasses (jobs, queues) and payloads; metrics and workers
become theirs in queue_manager/metrics.py (`QueueMetrics` and `metrics_from_proto` are re-exported here).

Payload convention: JSON-serialisable data travels as UTF-8 JSON in ``Payload.raw`` with content type
``application/json`` (cheap to encode; no ``google.protobuf.Struct`` on the hot path); ``bytes`` travel as
``application/octet-stream``. On the way back a ``json`` Value (what the server returns to readers), JSON
``raw`` bytes and other ``raw`` bytes become Python values, JSON values and ``bytes`` respectively.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import duration_pb2, json_format, struct_pb2, timestamp_pb2

from queue_manager.bounds import priority_bounds_from_proto
from queue_manager.enums import (
    DEDUP_MODE_BY_NUMBER,
    ERROR_KIND_BY_NUMBER,
    STATE_BY_NUMBER,
    JobErrorKind,
    JobPriority,
    JobState,
)
from queue_manager.groups import queue_group_limits_from_proto
from queue_manager.maintenance import windows_from_proto
from queue_manager.metrics import QueueMetrics, metrics_from_proto
from queue_manager.options import (
    Backoff,
    ChainLink,
    Dedup,
    JobMetadata,
    JobOptions,
    KeepJobs,
    QueueConfig,
    RateLimit,
)
from queue_manager.payload_format import EncodedPayload, encoded_payload, is_encoded
from queue_manager.v1 import jobs_pb2, types_pb2

__all__ = [
    "JSON_CONTENT_TYPE",
    "OCTET_STREAM",
    "EventWait",
    "ExternalEvent",
    "Job",
    "JobError",
    "JobErrorKind",
    "JobLogLine",
    "JobPriority",
    "JobRef",
    "JobState",
    "ParentJob",
    "Queue",
    "QueueMetrics",
    "WorkflowStepRef",
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
# Payload bodies sent as they are; a tuple, as `bytes | bytearray | memoryview` builds a union on every call.
_BYTES_LIKE = (bytes, bytearray, memoryview)
_MAX_EXACT_FLOAT_INT = 2**53


@dataclass(frozen=True, slots=True)
class JobRef:
    """Names a job: its queue and id."""

    queue_name: str
    job_id: str


@dataclass(frozen=True, slots=True)
class ParentJob:
    """A job's predecessor in a chain or workflow, with its outcome.

    Attributes:
        queue_name: Queue of the predecessor.
        job_id: Its id.
        step_key: Its workflow step key ("" in a chain).
        state: Its state when this job was created (completed, or failed for an on_failure step).
        result: Its result, when it completed.
        failed_reason: Its failure reason, when it failed.
    """

    queue_name: str
    job_id: str
    step_key: str = ""
    state: JobState | None = None
    result: Any = None
    failed_reason: str = ""


@dataclass(slots=True)
class ChildJob:
    """A job that a running job added as its child (`JobContext.wait_for_children`), with its outcome.

    Attributes:
        queue_name: Queue of the child.
        job_id: Its id.
        state: Its state once it finished (completed, failed or cancelled); None while it has not, and for
            a child removed before it finished (see ``removed``).
        result: Its result, when it completed (None when ``truncated``).
        failed_reason: Why it failed for good or was cancelled.
        truncated: True when its result was over 1 KiB: read it with `QueueManager.get_job` on the child.
        current_state: Its state now, in `QueueManager.get_job` (waiting, active, delayed, completed,
            failed, cancelled); None once it was removed, and in ``JobContext.children``.
        removed: True when it was removed before it finished (`QueueManager.remove_job`, a clean or drain
            of its queue, a redrive of a dead-letter copy): its parent no longer waits for it, and
            ``failed_reason`` says how it was removed.
    """

    queue_name: str
    job_id: str
    state: JobState | None = None
    result: Any = None
    failed_reason: str = ""
    truncated: bool = False
    current_state: JobState | None = None
    removed: bool = False


@dataclass(frozen=True, slots=True)
class EventWait:
    """A job's wait for an external event (`JobContext.wait_for_event`).

    Attributes:
        keys: The event keys it waits for; an event of any one ends the wait.
        until: When the wait times out; None for a wait without a timeout.
    """

    keys: list[str]
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class ExternalEvent:
    """An external event (`QueueManager.push_event`) as the job it woke sees it.

    Attributes:
        key: The event's key (one of those the job waited for).
        data: The event's data (decoded as job data is).
        event_id: The id the push gave; empty when none.
        pushed_at: When the server recorded the push.
    """

    key: str
    data: Any = None
    event_id: str = ""
    pushed_at: datetime | None = None


def event_wait_from_proto(msg: types_pb2.Job) -> EventWait | None:
    """The job's event wait (parked, or the one its run follows); None when it has none."""
    if not msg.HasField("event_wait"):
        return None
    w = msg.event_wait
    return EventWait(list(w.keys), timestamp_to_datetime(w.until) if w.HasField("until") else None)


def event_from_proto(msg: types_pb2.Job) -> ExternalEvent | None:
    """The external event that ended the job's last wait; None when none did."""
    if not msg.HasField("event"):
        return None
    e = msg.event
    return ExternalEvent(
        key=e.key,
        data=decode_payload(e.data) if e.HasField("data") else None,
        event_id=e.event_id,
        pushed_at=timestamp_to_datetime(e.pushed_at) if e.HasField("pushed_at") else None,
    )


@dataclass(frozen=True, slots=True)
class WorkflowStepRef:
    """Places a job in a workflow run."""

    run_id: str
    step_key: str


@dataclass(frozen=True, slots=True)
class JobLogLine:
    """One line a processor logged (`JobContext.log`).

    Attributes:
        time: When the worker logged it.
        message: The text (at most 2,000 characters; longer lines are cut).
    """

    time: datetime | None
    message: str


@dataclass(frozen=True, slots=True)
class JobError:
    """One failed run of a job (`Job.errors`).

    Attributes:
        attempt: The run's attempt, 1 for the first; a lost run uses none, so it shares its number with the
            run after it.
        kind: How the run ended: raised, timed out, lost (stalled) or stopped by a cancel; None for a kind
            this client does not know.
        message: The processor's error message, or the server's for a timeout, a lost run or a cancel.
        stacktrace: The stack trace the worker sent; empty when the server ended the run.
        worker_id: The worker that ran it.
        time: When the run ended.
    """

    attempt: int
    kind: JobErrorKind | None
    message: str
    stacktrace: str = ""
    worker_id: str = ""
    time: datetime | None = None


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
        attempts_made: Number of finished runs (a completed first run shows 1; a lost run does not count).
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
        options: The options the job was added with, after queue defaults (``chain_to`` holds the chain
            links still to come).
        parents: Predecessors in a chain or workflow, with their results.
        children: Jobs this one started when it finished (next chain link, following workflow steps).
        chain_root: For a chain link, the job whose ``chain_to`` it came from.
        child_jobs: The children it added at run time (`JobContext.wait_for_children`), in the order added,
            each with its outcome once finished.
        children_pending: How many of those have not finished yet (while above zero after a wait, the job is
            delayed with no ``run_at``, waiting for them).
        event_wait: Its wait for an external event (`JobContext.wait_for_event`): the keys and the timeout,
            while it is parked, and on the run after it; None when it never waited for one.
        event: The external event that ended that wait; None while it waits and when it timed out.
        chain_failure: For a chain's first job, why the chain stopped (a later link failed for good).
        workflow: For a workflow step's job, its run and step.
        logs: The last log lines (at most 20, oldest first); `QueueManager.get_job_logs` pages through all.
        log_count: Number of log lines kept (the last 1,000).
        errors: Its last failed runs, oldest first (``options.error_history`` of them, default 10): runs
            that raised, timed out, were lost with their worker or were stopped by a cancel. Kept through
            `QueueManager.retry_job` (attempts then count afresh).
        cancel_requested: True once a cancel was asked while the job was active (its worker is told).
        cancel_reason: Why it was cancelled (an expired job's starts with ``"expired: "``).
        expires_at: When the job expires if not started by then (``options.expire_after`` after it was first
            ready); None for a job without expiry.
        created: On the job `QueueManager.add_job` returns: True when the call created it, False when its
            ``job_id`` or dedup key was taken and this is the job that held it (nothing was added). None on
            jobs read any other way. Not compared: it tells about the call, not the job.
        replaced: On the job `QueueManager.add_job` returns: True when the add's dedup key (mode
            ``replace``) was held by a job that had not started, which now has this add's name and data (this
            is that job); else False. None on jobs read any other way. Not compared, as ``created``.
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
    parents: list[ParentJob] = field(default_factory=list)
    children: list[JobRef] = field(default_factory=list)
    chain_root: JobRef | None = None
    chain_failure: str = ""
    workflow: WorkflowStepRef | None = None
    logs: list[JobLogLine] = field(default_factory=list)
    log_count: int = 0
    errors: list[JobError] = field(default_factory=list)
    cancel_requested: bool = False
    cancel_reason: str = ""
    expires_at: datetime | None = None
    child_jobs: list[ChildJob] = field(default_factory=list)
    children_pending: int = 0
    event_wait: EventWait | None = None
    event: ExternalEvent | None = None
    created: bool | None = field(default=None, compare=False)
    replaced: bool | None = field(default=None, compare=False)


@dataclass(slots=True)
class Queue:
    """A registered queue.

    Attributes:
        name: Queue name.
        config: Its settings, with defaults filled in.
        paused: Whether the queue is paused.
        created_at: When it was first registered.
        paused_until: When its timed pause lifts by itself (UTC); None for a pause until it is resumed.
        maintenance_until: While a maintenance window holds it (``paused`` is then True): when the window
            ends. None outside the windows.
        next_maintenance_time: When its next maintenance window starts; None without windows.
    """

    name: str
    config: QueueConfig
    paused: bool = False
    created_at: datetime | None = None
    paused_until: datetime | None = None
    maintenance_until: datetime | None = None
    next_maintenance_time: datetime | None = None


def encode_payload(data: Any, into: types_pb2.Payload, what: str = "data") -> None:
    """Fills a Payload with data: bytes as octet-stream, anything else as compact JSON.

    Args:
        data: The value; None leaves the payload unset.
        into: The message to fill (usually a field of a request being built).
        what: What the value is, for the error's message (``result`` for a processor's return value).

    Raises:
        TypeError: The value is neither bytes nor JSON-serialisable.
        ValueError: The value contains NaN or infinity, or a circular reference.
    """
    if data is None:
        return
    if isinstance(data, _BYTES_LIKE):
        into.raw = bytes(data)
        into.content_type = OCTET_STREAM
        return
    if isinstance(data, EncodedPayload):  # read without the keys: handed on as it came
        into.raw = data.raw
        into.content_type = data.content_type
        return
    try:
        text = _encode_json(data)
    except TypeError as exc:
        raise TypeError(f"{what} must be JSON-serialisable or bytes: {exc}") from None
    except ValueError as exc:  # json's own words ("Out of range float values…") did not say what was refused
        raise ValueError(
            f"{what} must be JSON (no NaN or infinity, no circular reference) or bytes: {exc}"
        ) from None
    into.raw = text.encode()
    into.content_type = JSON_CONTENT_TYPE


def decode_payload(payload: types_pb2.Payload) -> Any:
    """The Python value of a Payload: JSON as Python values, an encoded payload this client did not decode
    (codecs.py) as an `EncodedPayload`, other raw bodies as bytes, unset as None."""
    kind = payload.WhichOneof("body")
    if kind == "raw":
        content_type = payload.content_type
        if content_type == JSON_CONTENT_TYPE or content_type.startswith(JSON_CONTENT_TYPE):
            try:
                return _decode_json(payload.raw.decode())
            except ValueError:
                return payload.raw
        if is_encoded(content_type):
            return encoded_payload(content_type, payload.raw)
        return payload.raw
    if kind == "json":
        return value_to_python(payload.json)
    return None


def value_json(value: struct_pb2.Value) -> str:
    """A `google.protobuf.Value` as compact JSON text."""
    return _encode_json(value_to_python(value))


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
    has = msg.HasField
    job = Job(
        id=msg.id,
        name=msg.name,
        data=decode_payload(msg.data),
        queue_name=msg.queue_name,
        state=STATE_BY_NUMBER.get(msg.state),
        priority=_PRIORITIES.get(msg.priority) or JobPriority.NORMAL,
        max_attempts=msg.max_attempts,
        created_at=timestamp_to_datetime(msg.create_time) if has("create_time") else None,
        options=job_options_from_proto(msg.options),
    )
    # What runs, flows and workflows fill, which an add's answer has none of: the plain values copied, the
    # others converted only when set (the defaults stand otherwise; all of it through the constructor cost
    # every add 1 µs more).
    job.attempts_made = msg.attempts_made
    job.stalled_count = msg.stalled_count
    job.failed_reason = msg.failed_reason
    job.stacktrace = msg.stacktrace
    job.worker_id = msg.worker_id
    job.chain_failure = msg.chain_failure
    job.log_count = msg.log_count
    job.cancel_requested = msg.cancel_requested
    job.cancel_reason = msg.cancel_reason
    for name, attr, read in _READ_WHEN_SET:
        if has(name):
            setattr(job, attr, read(getattr(msg, name)))
    if msg.parents:
        job.parents = parents_from_proto(msg)
    if msg.children:
        job.children = [job_ref_from_proto(c) for c in msg.children]
    job.workflow = workflow_ref_from_proto(msg)
    if msg.child_jobs:
        job.child_jobs = child_jobs_from_proto(msg)
    job.children_pending = msg.children_pending
    job.event_wait = event_wait_from_proto(msg)
    job.event = event_from_proto(msg)
    if msg.logs:
        job.logs = log_lines_from_proto(msg.logs)
    if msg.errors:
        job.errors = [
            JobError(
                attempt=e.attempt,
                kind=ERROR_KIND_BY_NUMBER.get(e.kind),
                message=e.message,
                stacktrace=e.stacktrace,
                worker_id=e.worker_id,
                time=timestamp_to_datetime(e.time) if e.HasField("time") else None,
            )
            for e in msg.errors
        ]
    return job


def job_ref_from_proto(msg: types_pb2.JobRef) -> JobRef:
    return JobRef(queue_name=msg.queue_name, job_id=msg.job_id)


def parents_from_proto(msg: types_pb2.Job) -> list[ParentJob]:
    """A job's predecessors (chain link or workflow step) with their decoded results."""
    return [
        ParentJob(
            queue_name=p.job.queue_name,
            job_id=p.job.job_id,
            step_key=p.step_key,
            state=STATE_BY_NUMBER.get(p.state),
            result=decode_payload(p.result),
            failed_reason=p.failed_reason,
        )
        for p in msg.parents
    ]


def child_jobs_from_proto(msg: types_pb2.Job) -> list[ChildJob]:
    """The children a job added at run time, with their decoded results."""
    return [
        ChildJob(
            queue_name=c.job.queue_name,
            job_id=c.job.job_id,
            state=STATE_BY_NUMBER.get(c.state),
            result=decode_payload(c.result) if c.HasField("result") else None,
            failed_reason=c.failed_reason,
            truncated=c.truncated,
            current_state=STATE_BY_NUMBER.get(c.current_state),
            removed=c.removed,
        )
        for c in msg.child_jobs
    ]


def workflow_ref_from_proto(msg: types_pb2.Job) -> WorkflowStepRef | None:
    if not msg.HasField("workflow"):
        return None
    return WorkflowStepRef(run_id=msg.workflow.run_id, step_key=msg.workflow.step_key)


def queue_from_proto(msg: types_pb2.Queue) -> Queue:
    """A public `Queue` from a `queue_manager.v1.Queue`."""
    return Queue(
        name=msg.name,
        config=queue_config_from_proto(msg.config),
        paused=msg.paused,
        created_at=timestamp_to_datetime(msg.create_time) if msg.HasField("create_time") else None,
        paused_until=timestamp_to_datetime(msg.paused_until) if msg.HasField("paused_until") else None,
        maintenance_until=timestamp_to_datetime(msg.maintenance_until)
        if msg.HasField("maintenance_until")
        else None,
        next_maintenance_time=timestamp_to_datetime(msg.next_maintenance_time)
        if msg.HasField("next_maintenance_time")
        else None,
    )


def queue_config_from_proto(msg: types_pb2.QueueConfig) -> QueueConfig:
    """A public `QueueConfig` from a `queue_manager.v1.QueueConfig`."""
    rate_limit = None
    if msg.HasField("rate_limit"):
        rate_limit = RateLimit(
            max=msg.rate_limit.max,
            duration=duration_to_timedelta(msg.rate_limit.duration),
            burst=msg.rate_limit.burst,
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
        concurrency=msg.concurrency,
        priority_bounds=priority_bounds_from_proto(msg),
        group_limits=queue_group_limits_from_proto(msg),
        max_size=msg.max_size,
        maintenance_windows=windows_from_proto(msg.maintenance_windows),
    )


# Options without metadata or chain links hold nothing mutable, and the jobs of one producer mostly share
# theirs (the queue's defaults filled in): each distinct one is converted once. Bounded; cleared when full.
_SHARED_OPTIONS: dict[bytes, JobOptions] = {}
_SHARED_OPTIONS_MAX = 1024


def job_options_from_proto(msg: types_pb2.JobOptions) -> JobOptions:
    """Public `JobOptions` from a `queue_manager.v1.JobOptions`; unset fields become None."""
    if msg.HasField("metadata") or msg.chain_to:
        return _job_options(msg)
    key = msg.SerializeToString(deterministic=True)
    options = _SHARED_OPTIONS.get(key)
    if options is None:
        if len(_SHARED_OPTIONS) >= _SHARED_OPTIONS_MAX:
            _SHARED_OPTIONS.clear()
        options = _SHARED_OPTIONS[key] = _job_options(msg)
    return options


def _job_options(msg: types_pb2.JobOptions) -> JobOptions:
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
        priority=priority_of(msg.priority),
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
        expire_after=duration_to_timedelta(msg.expire_after) if msg.HasField("expire_after") else None,
        group=msg.group or None,
        lifo=msg.lifo or None,
        error_history=msg.error_history if msg.HasField("error_history") else None,
        worker_labels=dict(msg.worker_labels) or None,
        chain_to=[
            ChainLink(
                queue_name=link.queue_name,
                job_name=link.job_name,
                data=decode_payload(link.data),
                options=job_options_from_proto(link.options),
            )
            for link in msg.chain_to
        ]
        or None,
        dedup=Dedup(
            key=msg.dedup.key,
            ttl=duration_to_timedelta(msg.dedup.ttl) if msg.dedup.HasField("ttl") else None,
            mode=DEDUP_MODE_BY_NUMBER.get(msg.dedup.mode),
        )
        if msg.HasField("dedup")
        else None,
    )


# The options of a job created as its request says (CreatedJob): priority NORMAL, one attempt (nothing
# mutable, so shared, as job_options_from_proto shares them).
_PLAIN_OPTIONS = JobOptions(priority=JobPriority.NORMAL, attempts=1)


# created_job's data when the caller has none at hand: the request's payload, decoded.
_FROM_REQUEST: Any = object()
# The last creation time created_job converted, as (seconds, nanos, datetime): the adds of one message share
# the time of the script call that wrote them, and a datetime is immutable (converting cost 0.6 µs per add).
_last_created: tuple[int, int, datetime] = (0, 0, datetime.fromtimestamp(0, tz=UTC))


def created_job(
    request: jobs_pb2.AddJobRequest, created: jobs_pb2.CreatedJob, data: Any = _FROM_REQUEST
) -> Job:
    """The job a brief answer stands for (AddJobStreamRequest.brief): the request's queue, name and data
    with the answer's id, state and time, as job_from_proto reads the same job from a whole answer.

    data: the value the request was built from, which becomes the job's data as it is (decoding the
    request's payload again cost a producer 1.5 µs per add); bytes-like data reads as bytes."""
    global _last_created
    if data is _FROM_REQUEST:
        data = decode_payload(request.job.data)
    elif isinstance(data, (bytearray, memoryview)):  # sent (and read back) as bytes; a tuple: see _BYTES_LIKE
        data = bytes(data)
    ts = created.create_time
    seconds, nanos, created_at = _last_created
    if ts.seconds != seconds or ts.nanos != nanos:
        created_at = timestamp_to_datetime(ts)
        _last_created = (ts.seconds, ts.nanos, created_at)
    return Job(
        id=created.id,
        name=request.job.name,
        data=data,
        queue_name=request.queue_name,
        state=STATE_BY_NUMBER.get(created.state),
        priority=JobPriority.NORMAL,
        max_attempts=1,
        created_at=created_at,
        options=_PLAIN_OPTIONS,
        created=True,
        replaced=False,
    )


def log_lines_from_proto(lines: Iterable[types_pb2.JobLogLine]) -> list[JobLogLine]:
    """Public `JobLogLine`s from `queue_manager.v1.JobLogLine`s."""
    return [
        JobLogLine(
            time=timestamp_to_datetime(line.time) if line.HasField("time") else None, message=line.message
        )
        for line in lines
    ]


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


_PRIORITIES: dict[int, JobPriority] = {p.value: p for p in JobPriority}


def priority_of(number: int) -> JobPriority | None:
    """The `JobPriority` of a protobuf priority number; None when unset or unknown."""
    return _PRIORITIES.get(number)


# The Job fields job_from_proto reads only when their message field is set (field, Job attribute, reader);
# otherwise the Job's default stands.
_READ_WHEN_SET: tuple[tuple[Any, str, Callable[[Any], Any]], ...] = (
    ("result", "result", decode_payload),
    ("progress", "progress", value_to_python),
    ("process_time", "processed_at", timestamp_to_datetime),
    ("finish_time", "finished_at", timestamp_to_datetime),
    ("run_time", "run_at", timestamp_to_datetime),
    ("expire_time", "expires_at", timestamp_to_datetime),
    ("metadata", "metadata", metadata_from_proto),
    ("chain_root", "chain_root", job_ref_from_proto),
)
