"""The one place where protobuf messages meet engine records (both directions), validating on the way in."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf import json_format, struct_pb2
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from queue_manager.v1 import jobs_pb2, types_pb2, worker_service_pb2
from queue_manager_server import validate, windows
from queue_manager_server.bounds_convert import priority_bounds
from queue_manager_server.engine.aging import AGING_FIELD, bounds_field
from queue_manager_server.engine.engine import DEFAULT_DLQ
from queue_manager_server.engine.job_control import LOG_KEEP, LOG_LINE_CHARS, JobView, LogLine
from queue_manager_server.engine.records import (
    JSON_TYPE,
    STORED_ATTEMPTS,
    STORED_PRIORITY,
    ClaimedJob,
    JobRecord,
    NewJob,
    QueueRecord,
    is_json_type,
)
from queue_manager_server.errors import InvalidArgument
from queue_manager_server.metrics_convert import metrics_out  # noqa: F401 - metrics live in their own module

JSON = JSON_TYPE
OCTETS = "application/octet-stream"
DAY_MS = 24 * 3600 * 1000
DEFAULT_COMPLETED_KEEP = (DAY_MS, 10_000)
DEFAULT_FAILED_KEEP = (7 * DAY_MS, 100_000)
DEFAULT_MAX_STALLED = 1
# Links in one chain_to: enough for any pipeline; a longer process is a workflow.
MAX_CHAIN_LINKS = 100
# Failed runs a job may keep in its error history (JobOptions.error_history): each holds up to 10,000
# characters of message and 50,000 of stack trace (services/reports.py), so a job's history stays a few MB
# at worst, and appending to it (common.lua record_error) a copy of that.
MAX_ERROR_HISTORY = 100

STATE_NAMES: dict[int, str] = {
    types_pb2.JOB_STATE_WAITING: "waiting",
    types_pb2.JOB_STATE_ACTIVE: "active",
    types_pb2.JOB_STATE_DELAYED: "delayed",
    types_pb2.JOB_STATE_COMPLETED: "completed",
    types_pb2.JOB_STATE_FAILED: "failed",
    types_pb2.JOB_STATE_PAUSED: "paused",
    types_pb2.JOB_STATE_CANCELLED: "cancelled",
}
STATE_VALUES: dict[str, types_pb2.JobState.ValueType] = {
    v: types_pb2.JobState.Value(f"JOB_STATE_{v.upper()}") for v in STATE_NAMES.values()
}


def state_name(value: int, field: str = "state") -> str:
    name = STATE_NAMES.get(int(value))
    if name is None:
        raise InvalidArgument(field, validate.enum_problem(int(value), STATE_NAMES, types_pb2.JobState))
    return name


# ---- payloads ----------------------------------------------------------------------------------


# What an unset payload is stored as (a run that returned nothing, a job added without data).
NO_PAYLOAD = (b"null", JSON)


def payload_in(p: types_pb2.Payload, field: str, limit: int) -> tuple[bytes, str]:
    """Returns (body, content type); JSON values are stored as compact UTF-8 JSON."""
    kind = p.WhichOneof("body")
    if kind == "raw":
        body, ct = p.raw, p.content_type
        if ct != JSON:  # JSON, what clients send, needs no check of its text (~0.15 µs per add)
            ct = validate.text(ct, f"{field}.content_type", 200, required=False) or OCTETS
        validate.payload_size(len(body), limit, field)
        if is_json_type(ct):
            validate.json_bytes(body, field)
        return body, ct
    if kind == "json":
        try:
            body = value_json(p.json).encode()
        except ValueError:
            raise InvalidArgument(
                field, "NaN and Infinity are not JSON; send them as strings or null"
            ) from None
        validate.payload_size(len(body), limit, field)
        return body, JSON
    return NO_PAYLOAD


def payload_given(p: types_pb2.Payload, field: str, limit: int) -> tuple[bytes, str]:
    """`payload_in` for a payload that replaces data (RetryJob's, RedriveDeadLetters'): set, so it must hold
    a body."""
    if p.WhichOneof("body") is None:
        raise InvalidArgument(field, "holds no body: set json or raw, or leave data unset")
    return payload_in(p, field, limit)


# JSON nested deeper than this goes out as raw bytes (its content type JSON), not as a google.protobuf.Value:
# each JSON level is two message levels of a Value, and protobuf readers stop at 100 (upb's default) counted
# from the top of the response, where a job can sit a few levels down (a workflow run's steps). GetJob
# answered a job whose data nested 50 levels with INTERNAL.
VALUE_MAX_DEPTH = 32


class _TooDeep(Exception):
    """A JSON value nested deeper than VALUE_MAX_DEPTH (json_into_value)."""


def payload_out(body: bytes | None, ct: str, json_view: bool) -> types_pb2.Payload:
    """json_view: send JSON bodies as a google.protobuf.Value (readable in grpcurl) instead of raw bytes, but
    those nested deeper than VALUE_MAX_DEPTH."""
    if body is None:
        return types_pb2.Payload()
    if json_view and is_json_type(ct):
        out = types_pb2.Payload(content_type=JSON)
        try:
            json_into_value(json.loads(body), out.json)
        except (_TooDeep, RecursionError):
            return types_pb2.Payload(raw=body, content_type=ct)
        return out
    return types_pb2.Payload(raw=body, content_type=ct)


# google.protobuf.Value and JSON, directly: json_format's general converters cost 3-4× more per value.


# Integral doubles below this magnitude are exact integers: written without a fraction.
_MAX_EXACT_INT = 2.0**53


def _value_py(v: struct_pb2.Value) -> object:
    kind = v.WhichOneof("kind")
    if kind == "struct_value":
        return {k: _value_py(x) for k, x in v.struct_value.fields.items()}
    if kind == "list_value":
        return [_value_py(x) for x in v.list_value.values]
    if kind is None or kind == "null_value":
        return None
    if kind == "number_value":
        # Every number of a Value is a double; one that is a whole number is written as one ("50", not
        # "50.0"), as the Python client reads it (value_to_python) and a JSON integer reads back in Go
        # (json.Unmarshal into an int refuses "50.0") and TypeScript: progress in job events, JSON data.
        n = v.number_value
        return int(n) if n.is_integer() and -_MAX_EXACT_INT < n < _MAX_EXACT_INT else n
    return getattr(v, kind)


# One encoder for every call: json.dumps with arguments builds a new encoder each time (a third of the cost
# of a small value).
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def value_json(v: struct_pb2.Value) -> str:
    """A Value as compact JSON; ValueError for NaN or Infinity (not JSON)."""
    return _COMPACT_JSON.encode(_value_py(v))


def json_into_value(obj: object, v: struct_pb2.Value, depth: int = 0) -> None:
    """Sets v to a decoded JSON value (json.loads output); raises _TooDeep past VALUE_MAX_DEPTH levels."""
    if obj is None:
        v.null_value = struct_pb2.NULL_VALUE
    elif isinstance(obj, bool):
        v.bool_value = obj
    elif isinstance(obj, str):
        v.string_value = obj
    elif isinstance(obj, int | float):
        try:
            v.number_value = obj
        except OverflowError:  # an integer beyond any double (raw JSON may hold one): the nearest, ±inf
            v.number_value = math.inf if obj > 0 else -math.inf
    elif depth >= VALUE_MAX_DEPTH:
        raise _TooDeep
    elif isinstance(obj, dict):
        struct = v.struct_value
        struct.SetInParent()
        fields = struct.fields
        for k, x in obj.items():
            json_into_value(x, fields[k], depth + 1)
    else:
        values = v.list_value
        values.SetInParent()
        for x in obj:  # type: ignore[attr-defined]
            json_into_value(x, values.values.add(), depth + 1)


# ---- durations and times -----------------------------------------------------------------------


def ms_duration(ms: int) -> Duration:
    d = Duration()
    d.FromMilliseconds(ms)
    return d


def ms_timestamp(ms: int) -> Timestamp:
    t = Timestamp()
    t.FromMilliseconds(ms)
    return t


def ms_timestamp_fields(ms: int) -> dict[str, int]:
    """A Timestamp's constructor fields (answers gathered into one message are built from fields)."""
    s, rest = divmod(ms, 1000)
    return {"seconds": s, "nanos": rest * 1_000_000}


def _keep(k: types_pb2.KeepJobs, field: str) -> str:
    """Encodes a job's keep policy for Lua: "" default, "r" remove, "age:count" (0 = default part)."""
    if k.remove:
        return "r"
    age = validate.duration_ms(k.age, f"{field}.age") if k.HasField("age") else 0
    return f"{age}:{k.count}" if age or k.count else ""


# ---- jobs in -----------------------------------------------------------------------------------


def new_job(j: jobs_pb2.NewJob, field: str, payload_limit: int) -> NewJob:
    options = j.options if j.HasField("options") else None
    return job_from(j.name, j.data, options, field, payload_limit, name_part="name")


# The names of a job's parts in AddJob's request, for its errors: made once, not per add (~0.1 µs).
_JOB_PARTS = {("job", "name"): ("job.data", "job.name")}


def job_from(
    name: str,
    data: types_pb2.Payload,
    options: types_pb2.JobOptions | None,
    field: str,
    payload_limit: int,
    name_part: str = "job_name",
) -> NewJob:
    """`new_job` from its parts (a chain link's or a workflow step's, with no NewJob to copy them into).

    `name_part` is the name's field in the message that was sent, for errors: ``name`` in a NewJob,
    ``job_name`` in a ChainLink or a WorkflowStep.
    """
    data_field, name_field = _JOB_PARTS.get((field, name_part)) or (f"{field}.data", f"{field}.{name_part}")
    body, ct = payload_in(data, data_field, payload_limit)
    out = NewJob(id="", name=validate.text(name, name_field), data=body, content_type=ct)
    if options is not None:
        apply_options(out, options, f"{field}.options")
        if options.chain_to:
            _chain_in(out, options, f"{field}.options.chain_to", payload_limit)
    return out


# Attributes of the W3C trace context, which belong together: a job with a traceparent of its own inherits
# neither (a traceparent of one trace beside a tracestate of another would be a context of neither).
_TRACE_CONTEXT = frozenset({"traceparent", "tracestate"})


def inherit_metadata(
    own: bytes, attributes: Mapping[str, str], fallback: types_pb2.JobMetadata | None = None
) -> bytes:
    """A job's encoded metadata given what it inherits: a chain predecessor's or a workflow run's
    `attributes` (its trace context among them) go under its own, whose keys win; `fallback` (a run's
    correlation id and tags) stands in for metadata when the job has none of its own.

    The result stays within the limits a job's own metadata is held to (validate.MAX_ATTRIBUTES,
    validate.MAX_METADATA_BYTES): the job's own is kept whole (it was checked when it was given), and the
    inherited attributes fill the room left, the trace context first (``traceparent`` and ``tracestate``
    together), then the others by key, each that still fits. A job added for a flow (a chain's next link, a
    workflow step) was accepted long before: what it inherits must never make its add fail.
    """
    if not attributes and (own or fallback is None):
        return own
    md = types_pb2.JobMetadata()
    if own:
        md.MergeFromString(own)
    elif fallback is not None:
        md.CopyFrom(fallback)
    has_trace = "traceparent" in md.attributes
    inherited = {
        key: value
        for key, value in attributes.items()
        if key not in md.attributes and not (has_trace and key in _TRACE_CONTEXT)
    }
    room = validate.MAX_ATTRIBUTES - len(md.attributes)
    size = md.ByteSize()
    if len(inherited) <= room and size + _attributes_size(inherited) <= validate.MAX_METADATA_BYTES:
        md.attributes.update(inherited)
    else:
        trace = {key: inherited.pop(key) for key in sorted(_TRACE_CONTEXT) if key in inherited}
        for group in ([trace] if trace else []) + [{key: inherited[key]} for key in sorted(inherited)]:
            extra = _attributes_size(group)
            if len(group) <= room and size + extra <= validate.MAX_METADATA_BYTES:
                md.attributes.update(group)
                room, size = room - len(group), size + extra
    return md.SerializeToString()


def _attributes_size(attributes: Mapping[str, str]) -> int:
    """The encoded size of these attributes in a JobMetadata (map entries add up: one field each)."""
    return types_pb2.JobMetadata(attributes=attributes).ByteSize() if attributes else 0


def _chain_in(out: NewJob, o: types_pb2.JobOptions, field: str, payload_limit: int) -> None:
    """Validates chain_to whole and keeps it on the job (services/flows.py adds each link in turn)."""
    validate.count(len(o.chain_to), field, MAX_CHAIN_LINKS)
    for i, link in enumerate(o.chain_to):
        at = f"{field}[{i}]"
        validate.queue_name(link.queue_name, f"{at}.queue_name")
        if link.options.chain_to:
            raise InvalidArgument(
                f"{at}.options.chain_to", "a link has no chain of its own; list every link in the first job's"
            )
        if link.options.HasField("dedup"):
            raise InvalidArgument(f"{at}.options.dedup", "a link has no dedup key; give it to the first job")
        job_from(link.job_name, link.data, link.options, at, payload_limit)
    chain = types_pb2.JobOptions(chain_to=o.chain_to).SerializeToString()
    validate.payload_size(len(chain), payload_limit, field)
    out.extra["flo"] = b"1"
    out.extra["chn"] = chain


def apply_options(out: NewJob, o: types_pb2.JobOptions, field: str) -> None:
    out.priority = validate.enum_value(
        o.priority, range(0, 6), f"{field}.priority", types_pb2.JobPriority, "the queue's default"
    )
    if o.HasField("delay") and o.HasField("schedule_time"):
        raise InvalidArgument(f"{field}.delay", "set either delay or schedule_time, not both")
    if o.HasField("delay"):
        out.delay_ms = validate.duration_ms(o.delay, f"{field}.delay")
    if o.HasField("schedule_time"):
        out.run_at_ms = validate.run_time_ms(o.schedule_time, f"{field}.schedule_time")
    out.attempts = validate.count(o.attempts, f"{field}.attempts", validate.MAX_ATTEMPTS)
    if o.HasField("backoff"):
        b = o.backoff
        out.backoff_type = validate.enum_value(
            b.type, range(0, 3), f"{field}.backoff.type", types_pb2.BackoffType, "no backoff"
        )
        out.backoff_delay_ms = validate.duration_ms(b.delay, f"{field}.backoff.delay")
        out.backoff_jitter = validate.fraction(b.jitter, f"{field}.backoff.jitter")
        out.backoff_max_ms = validate.duration_ms(b.max_delay, f"{field}.backoff.max_delay")
        if out.backoff_type == 0 and (out.backoff_delay_ms or out.backoff_jitter or out.backoff_max_ms):
            raise InvalidArgument(f"{field}.backoff.type", "is required when a backoff delay is given")
    if o.job_id:
        out.id = validate.job_id(o.job_id, f"{field}.job_id", validate.MAX_JOB_ID)
    if o.HasField("metadata"):
        m = o.metadata
        validate.metadata(m, f"{field}.metadata")
        out.metadata = m.SerializeToString()
    if o.HasField("remove_on_complete"):
        out.keep_completed = _keep(o.remove_on_complete, f"{field}.remove_on_complete")
    if o.HasField("remove_on_fail"):
        out.keep_failed = _keep(o.remove_on_fail, f"{field}.remove_on_fail")
    if o.HasField("timeout"):
        out.timeout_ms = validate.duration_ms(o.timeout, f"{field}.timeout")
    out.max_stalled = validate.count(o.max_stalled, f"{field}.max_stalled", 1000)
    if o.HasField("expire_after"):
        out.expire_after_ms = validate.expire_after_ms(o.expire_after, f"{field}.expire_after")
    if o.group:
        out.group = validate.job_group(o.group, f"{field}.group")
    if o.worker_labels:
        if o.group:
            raise InvalidArgument(
                f"{field}.worker_labels",
                "cannot be given with a group yet: a job with worker labels is in their routing group",
            )
        out.group = validate.worker_labels(o.worker_labels, f"{field}.worker_labels")
    out.lifo = o.lifo
    if o.HasField("dedup"):
        _apply_dedup(out, o.dedup, f"{field}.dedup")
    if o.HasField("error_history"):
        # Not in the add's header: an extra job field ('ehn', common.lua record_error), as rare as the option.
        keep = validate.count(o.error_history, f"{field}.error_history", MAX_ERROR_HISTORY)
        out.extra["ehn"] = b"%d" % keep


def _apply_dedup(out: NewJob, d: types_pb2.Dedup, field: str) -> None:
    out.dedup_mode = validate.enum_value(
        d.mode, range(0, 4), f"{field}.mode", types_pb2.DedupMode, "KEEP_FIRST"
    )
    if not d.key:
        mode = types_pb2.DedupMode.Name(d.mode).removeprefix("DEDUP_MODE_") if d.mode else ""
        raise InvalidArgument(
            f"{field}.key", f"is required: a dedup{' mode ' + mode if mode else ''} needs a key"
        )
    out.dedup_key = validate.text(d.key, f"{field}.key", 200)
    if d.HasField("ttl"):
        out.dedup_ttl_ms = validate.duration_ms(d.ttl, f"{field}.ttl")
        if out.dedup_ttl_ms <= 0:
            raise InvalidArgument(
                f"{field}.ttl", "must be at least 1 ms; unset holds the key until the job finishes"
            )
    elif out.dedup_mode == types_pb2.DEDUP_MODE_EXTEND:
        raise InvalidArgument(
            f"{field}.ttl", "is required with mode EXTEND, which restarts the ttl at each duplicate"
        )


# ---- jobs out ----------------------------------------------------------------------------------


def _metadata(raw: bytes | None) -> types_pb2.JobMetadata | None:
    return types_pb2.JobMetadata.FromString(raw) if raw else None


def _keep_out(policy: str) -> types_pb2.KeepJobs | None:
    if not policy:
        return None
    if policy == "r":
        return types_pb2.KeepJobs(remove=True)
    age, count = (int(x) for x in policy.split(":"))
    k = types_pb2.KeepJobs(count=count)
    if age:
        k.age.CopyFrom(ms_duration(age))
    return k


# The fields a freshly added job may have (includes/add.lua stores defaults as absent): a record with no
# other field is answered without looking each of the others up (an add's answer, most waiting jobs).
_FRESH_FIELDS = frozenset({"name", "ts", "data", "ct", "pri", "att", "st"})


def job_out(
    r: JobRecord, queue_paused: bool = False, json_view: bool = True, data: types_pb2.Payload | None = None
) -> types_pb2.Job:
    """A stored job for admin reads (JSON payloads as JSON values, or with json_view=False as raw bytes).

    data: the job's data as a JSON value already at hand (an add answering with what it sent), used as is.
    """
    fields = job_out_fields(r, queue_paused, json_view, data)
    return fields if isinstance(fields, types_pb2.Job) else types_pb2.Job(**fields)


# The fields of a job created holding only what its add request says: a brief answer's job
# (AddJobStreamRequest.brief), which the client builds from its request and CreatedJob.
PLAIN_FIELDS = frozenset({"name", "ts", "data"})


def created_job_fields(r: JobRecord, queue_paused: bool) -> dict[str, Any]:
    """A CreatedJob's constructor fields for a job whose record holds PLAIN_FIELDS only (no 'st': waiting)."""
    return {
        "id": r.id,
        "state": types_pb2.JOB_STATE_PAUSED if queue_paused else types_pb2.JOB_STATE_WAITING,
        "create_time": ms_timestamp_fields(r.int("ts")),
    }


def job_out_fields(
    r: JobRecord, queue_paused: bool = False, json_view: bool = True, data: types_pb2.Payload | None = None
) -> dict[str, Any] | types_pb2.Job:
    """`job_out` as the Job's constructor fields when the record holds no more than a fresh job's (an add's
    answer, most waiting jobs), else as the message. Answers gathered into one message are built in one
    constructor call from such fields: a message given to a constructor is copied (2.6 µs less per add)."""
    f = r.fields
    if not f:  # a dedup key's holder that retention removed since: only its id is known
        return {"id": r.id, "queue_name": r.queue}
    st = r.state
    if st == "waiting" and queue_paused:
        st = "paused"
    priority, attempts = r.int("pri", STORED_PRIORITY), r.int("att", STORED_ATTEMPTS)
    out: dict[str, Any] = {
        "id": r.id,
        "queue_name": r.queue,
        "name": r.text("name"),
        # no ct: JSON
        "data": payload_out(f.get("data"), r.text("ct", JSON), json_view) if data is None else data,
        "state": STATE_VALUES.get(st, types_pb2.JOB_STATE_UNSPECIFIED),
        "priority": priority,
        "max_attempts": attempts,
        "create_time": ms_timestamp_fields(r.int("ts")),
        "options": {"priority": priority, "attempts": attempts},
    }
    if f.keys() <= _FRESH_FIELDS:
        return out
    j = types_pb2.Job(**out)
    _job_rest(r, j)
    return j


def worker_and_start(r: JobRecord) -> tuple[str, int]:
    """The worker of the job's last run and when that run started (ms; 0: none yet). claim.lua writes both in
    'wid' ("<worker id> <ms>"); older servers wrote the id alone there and the start in 'pts'."""
    wid = r.text("wid")
    if r.raw("pts") is not None:
        return wid, r.int("pts")
    worker, _, started = wid.rpartition(" ")
    return (worker, int(started)) if started.isdigit() else (wid, 0)


def _job_rest(r: JobRecord, j: types_pb2.Job) -> None:
    """What only jobs that ran, or were added with more than the defaults, have (job_out)."""
    # A job completed by its first finished run stores no 'atm' (complete.lua): that run is its one attempt.
    j.attempts_made = r.int("atm", 1 if j.state == types_pb2.JOB_STATE_COMPLETED else 0)
    j.stalled_count = r.int("stc")
    j.failed_reason = r.text("err")
    j.stacktrace = r.text("stk")
    worker, started = worker_and_start(r)
    if j.state == types_pb2.JOB_STATE_ACTIVE:  # a finished run leaves its lease's fields (common.lua)
        j.worker_id = worker
    if started:
        j.process_time.CopyFrom(ms_timestamp(started))
    j.cancel_requested = r.text("cxr") == "1"
    if r.text("grp"):
        group_out(j.options, r.text("grp"))
    if r.text("lf") == "1":
        j.options.lifo = True
    j.cancel_reason = r.text("cxm")
    if r.raw("res") is not None:
        # No 'rct': JSON (complete.lua stores a JSON result without its content type).
        j.result.CopyFrom(payload_out(r.raw("res"), r.text("rct") or JSON, json_view=True))
    elif j.state == types_pb2.JOB_STATE_COMPLETED:  # completed with no result (JSON null, not stored)
        j.result.CopyFrom(payload_out(NO_PAYLOAD[0], JSON, json_view=True))
    if r.raw("prog"):
        json_format.ParseDict(json.loads(r.raw("prog") or b"null"), j.progress)
    for name, target in (("fts", j.finish_time), ("run", j.run_time)):
        if r.raw(name):
            target.CopyFrom(ms_timestamp(r.int(name)))
    md = _metadata(r.raw("md"))
    if md is not None:
        j.metadata.CopyFrom(md)
    o = j.options
    o.max_stalled = r.int("ms")
    if r.int("bt"):
        o.backoff.type = r.int("bt")  # type: ignore[assignment]
        o.backoff.delay.CopyFrom(ms_duration(r.int("bd")))
        o.backoff.jitter = r.float("bj")
        if r.int("bm"):
            o.backoff.max_delay.CopyFrom(ms_duration(r.int("bm")))
    if r.int("to"):
        o.timeout.CopyFrom(ms_duration(r.int("to")))
    if r.int("exa"):
        o.expire_after.CopyFrom(ms_duration(r.int("exa")))
        j.expire_time.CopyFrom(ms_timestamp(r.int("exp")))
    kc, kf = _keep_out(r.text("kc")), _keep_out(r.text("kf"))
    if kc is not None:
        o.remove_on_complete.CopyFrom(kc)
    if kf is not None:
        o.remove_on_fail.CopyFrom(kf)
    if md is not None:
        o.metadata.CopyFrom(md)
    if r.raw("ehn") is not None:
        o.error_history = r.int("ehn")
    eh = r.raw("eh")
    if eh:
        j.errors.extend(errors_out(eh))
    if r.raw("ddk") is not None:
        o.dedup.key = r.text("ddk")
        if r.int("ddt"):
            o.dedup.ttl.CopyFrom(ms_duration(r.int("ddt")))
        o.dedup.mode = r.int("ddm")  # type: ignore[assignment]
    _flow_out(r, j)


def errors_out(eh: bytes) -> list[types_pb2.JobError]:
    """A job's error history ('eh': one JSON array per failed run, [attempt, kind, ms, worker id, message,
    stack trace], a newline between runs, oldest first; common.lua record_error)."""
    out = []
    for line in eh.split(b"\n"):
        attempt, kind, ms, worker, message, stack = json.loads(line.decode(errors="replace"))
        out.append(
            types_pb2.JobError(
                attempt=int(attempt),
                kind=types_pb2.JobErrorKind.ValueType(int(kind)),
                message=message,
                stacktrace=stack,
                worker_id=worker,
                time=ms_timestamp(int(ms)),
            )
        )
    return out


def _flow_out(r: JobRecord, j: types_pb2.Job) -> None:
    """A flow job's parents, chain root, workflow step, children, chain failure and chain links to come."""
    for name in ("par", "kup", "chd"):  # encoded Jobs holding only flow fields (kup: more parents)
        raw = r.raw(name)
        if raw:
            j.MergeFromString(raw)
    chain = r.raw("chn")
    if chain:
        j.options.MergeFromString(chain)
    j.chain_failure = r.text("cfl")
    if r.raw("kseq") is not None:  # children added at run time: as they are now, not as its last run saw
        del j.child_jobs[:]
        j.child_jobs.extend(child_jobs(r.fields))
        j.children_pending = r.int("kpn")


# A child's field on its parent's hash (lua/includes/children.lua): this prefix, then the child's id.
CHILD_FIELD = "k:"


def child_jobs(fields: Mapping[str, bytes]) -> list[types_pb2.ChildJob]:
    """A job's children as its hash records them (lua/includes/children.lua), in the order they were added:
    the finished ones with their outcomes, the others with their reference only."""
    rows: list[tuple[int, types_pb2.ChildJob]] = []
    for name, value in fields.items():
        if not name.startswith(CHILD_FIELD):
            continue
        seq, queue, *outcome = value.split(b" ", 2)
        ref = types_pb2.JobRef(queue_name=queue.decode(), job_id=name[len(CHILD_FIELD) :])
        child = types_pb2.ChildJob(job=ref)
        if outcome:
            done = types_pb2.Job.FromString(outcome[0])
            if done.child_jobs:
                child = done.child_jobs[0]
        rows.append((int(seq), child))
    rows.sort(key=lambda row: row[0])
    return [child for _, child in rows]


def job_delivery(queue: str, jobs: Sequence[ClaimedJob], token: str) -> worker_service_pb2.ConnectResponse:
    """The worker-stream message delivering claimed jobs (payloads as raw bytes: no JSON on the hot path).

    The jobs of one claim share most of their fields (queue, state, token, lease expiry; mostly name, content
    type, options and created time too): the first job's LeasedJob is built from plain dicts, and each
    other's is a copy of it with what differs set. A field set costs ~0.1 µs (from a dict or an attribute
    alike), the copy ~0.3 µs for all of them: 1.95 → 0.87 µs per job of a delivery of 200, a lone job's as
    before."""
    response = worker_service_pb2.ConnectResponse()
    delivery = response.delivery
    delivery.SetInParent()
    if not jobs:
        return response
    out = delivery.jobs
    f = jobs[0]
    first = out.add(**_leased_fields(queue, f, token, ms_timestamp_fields(f.lease_expiry_ms)))
    for i in range(1, len(jobs)):
        c = jobs[i]
        leased = out.add()
        leased.CopyFrom(first)  # the first job's extras come after the copies
        job = leased.job
        job.id = c.id
        job.data.raw = c.data
        if c.name != f.name:
            job.name = c.name
        if c.content_type != f.content_type:
            job.data.content_type = c.content_type
        if c.priority != f.priority:
            job.priority = c.priority  # type: ignore[assignment]
        if c.max_attempts != f.max_attempts:
            job.max_attempts = c.max_attempts
        if c.attempts_made != f.attempts_made:
            job.attempts_made = c.attempts_made
        if c.stalled_count != f.stalled_count:
            job.stalled_count = c.stalled_count
        if c.created_ms != f.created_ms:
            _set_ms(job.create_time, c.created_ms)
        if c.lease_expiry_ms != f.lease_expiry_ms:
            _set_ms(leased.lease_expire_time, c.lease_expiry_ms)
        if c.redelivery != f.redelivery:
            leased.redelivery = c.redelivery
        if c.metadata or c.timeout_ms or c.flow or c.group:
            _leased_extras(job, c)
    if f.metadata or f.timeout_ms or f.flow or f.group:
        _leased_extras(first.job, f)
    return response


def _set_ms(t: Timestamp, ms: int) -> None:
    seconds, rest = divmod(ms, 1000)
    t.seconds, t.nanos = seconds, rest * 1_000_000


def _leased_fields(queue: str, c: ClaimedJob, token: str, expiry: dict[str, int]) -> dict[str, Any]:
    return {
        "job": {
            "id": c.id,
            "queue_name": queue,
            "name": c.name,
            "data": {"raw": c.data, "content_type": c.content_type},
            "state": types_pb2.JOB_STATE_ACTIVE,
            "priority": c.priority,
            "attempts_made": c.attempts_made,
            "max_attempts": c.max_attempts,
            "stalled_count": c.stalled_count,
            "create_time": ms_timestamp_fields(c.created_ms),
        },
        "lease_token": token,
        "lease_expire_time": expiry,
        "redelivery": c.redelivery,
    }


def _leased_extras(job: types_pb2.Job, c: ClaimedJob) -> None:
    """What only some claimed jobs have: metadata, a timeout, a flow's parents and chain, a group."""
    if c.metadata:
        job.metadata.MergeFromString(c.metadata)
    if c.timeout_ms:
        job.options.timeout.CopyFrom(ms_duration(c.timeout_ms))
    if c.flow:
        job.MergeFromString(c.flow)
    if c.group:
        group_out(job.options, c.group)


def group_out(o: types_pb2.JobOptions, group: str) -> None:
    """A job's stored group as its options say it: a routing group (validate.ROUTE_PREFIX) as the worker
    labels it was named from, any other as the group."""
    if not group.startswith(validate.ROUTE_PREFIX):
        o.group = group
        return
    for pair in group[len(validate.ROUTE_PREFIX) :].split(","):
        key, _, value = pair.partition("=")
        o.worker_labels[key] = value


# ---- queues ------------------------------------------------------------------------------------


# A token bucket's largest capacity (RateLimit.burst): far more starts at once than any queue runs, small
# enough that the bucket's arithmetic in Lua stays exact.
MAX_RATE_BURST = 1_000_000


def rate_limit_in(rl: types_pb2.RateLimit, present: bool, field: str) -> tuple[int, int, int]:
    """A rate limit as the scripts keep it: max, window ms, burst (0: the default, a tenth of max); all 0
    for none (unset, or max 0)."""
    if not present or not rl.max:
        if present and rl.burst:
            raise InvalidArgument(f"{field}.burst", "needs a max: a burst is the capacity of a rate limit")
        return 0, 0, 0
    rl_ms = validate.duration_ms(rl.duration, f"{field}.duration")
    if rl_ms <= 0:
        raise InvalidArgument(f"{field}.duration", "must be positive when max is set")
    return rl.max, rl_ms, validate.count(rl.burst, f"{field}.burst", MAX_RATE_BURST)


def rate_limit_out(out: types_pb2.RateLimit, rl_max: int, rl_ms: int, burst: int) -> None:
    out.max = rl_max
    out.duration.CopyFrom(ms_duration(rl_ms))
    out.burst = burst


def group_limits_in(g: types_pb2.GroupLimits, field: str) -> tuple[int, int, int, int, int]:
    """A group's limits as the scripts keep them: concurrency, rate max, rate window ms, max size (0:
    none), rate burst (0: the default)."""
    rl_max, rl_ms, burst = rate_limit_in(g.rate_limit, g.HasField("rate_limit"), f"{field}.rate_limit")
    return g.concurrency, rl_max, rl_ms, validate.max_size(g.max_size, f"{field}.max_size"), burst


def group_limits_out(
    conc: int, rl_max: int, rl_ms: int, max_size: int = 0, burst: int = 0
) -> types_pb2.GroupLimits:
    out = types_pb2.GroupLimits(concurrency=conc, max_size=max_size)
    if rl_max:
        rate_limit_out(out.rate_limit, rl_max, rl_ms, burst)
    return out


def queue_meta(
    cfg: types_pb2.QueueConfig, field: str = "config", name: str = ""
) -> tuple[dict[str, str | int | bytes], types_pb2.QueueConfig]:
    """Validates the config of the queue `name`, fills defaults, and flattens it into the meta fields Lua
    reads. The default dead-letter queue's own default is none: it keeps its failed jobs."""
    filled = types_pb2.QueueConfig()
    filled.CopyFrom(cfg)
    fields: dict[str, str | int | bytes] = {}
    rl_max, rl_ms, burst = rate_limit_in(cfg.rate_limit, cfg.HasField("rate_limit"), f"{field}.rate_limit")
    fields["rl_max"], fields["rl_ms"], fields["rl_burst"] = rl_max, rl_ms, burst
    # Each fairness group's own limits (includes/claim.lua pop_groups); 0 = none.
    g_conc, g_rl_max, g_rl_ms, g_max, g_burst = group_limits_in(cfg.group_limits, f"{field}.group_limits")
    if cfg.group_limits.maintenance_windows:
        raise InvalidArgument(
            f"{field}.group_limits.maintenance_windows",
            "are a group's own (SetGroupLimits); the queue's windows go in maintenance_windows",
        )
    fields.update(g_conc=g_conc, g_rl_max=g_rl_max, g_rl_ms=g_rl_ms, g_max=g_max, g_rl_burst=g_burst)
    # Producer backpressure (includes/add.lua room_for); 0 = none.
    fields["max_size"] = validate.max_size(cfg.max_size, f"{field}.max_size")
    # Maintenance windows (windows.py): their digest tells set_window.lua which windows a span is for.
    windows.check_windows(cfg.maintenance_windows, f"{field}.maintenance_windows")
    fields["mwin"] = windows.digest(cfg.maintenance_windows)
    dlq = ""
    if name == DEFAULT_DLQ and not cfg.dead_letter_queue:
        filled.disable_dead_letter = True
    if not filled.disable_dead_letter:
        dlq = (
            validate.queue_name(cfg.dead_letter_queue, f"{field}.dead_letter_queue")
            if cfg.dead_letter_queue
            else DEFAULT_DLQ
        )
        filled.dead_letter_queue = dlq
    fields["dlq"] = dlq
    fields["conc"] = cfg.concurrency  # claim.lua: most jobs active at once; 0 = no cap
    bounds = priority_bounds(cfg.priority_bounds, f"{field}.priority_bounds")
    fields[AGING_FIELD] = bounds_field(bounds)  # age_waiting.lua; "" = none
    del filled.priority_bounds[:]
    for level, ms in bounds:  # stored by level
        filled.priority_bounds.add(priority=level, max_wait=ms_duration(ms))
    for kind, name, source, target, default in (
        (
            "kc",
            "completed_retention",
            cfg.completed_retention,
            filled.completed_retention,
            DEFAULT_COMPLETED_KEEP,
        ),
        ("kf", "failed_retention", cfg.failed_retention, filled.failed_retention, DEFAULT_FAILED_KEEP),
    ):
        age = validate.duration_ms(source.age, f"{field}.{name}.age") if source.HasField("age") else 0
        age, count = age or default[0], source.count or default[1]
        fields[f"{kind}_age"], fields[f"{kind}_count"] = age, count
        target.age.CopyFrom(ms_duration(age))
        target.count = count
    defaults = NewJob(id="", name="", data=b"")
    if cfg.HasField("default_job_options"):
        o = cfg.default_job_options
        if o.job_id:
            raise InvalidArgument(f"{field}.default_job_options.job_id", "cannot have a default")
        if o.HasField("delay") or o.HasField("schedule_time"):
            raise InvalidArgument(f"{field}.default_job_options.delay", "cannot have a default")
        if o.HasField("dedup"):
            raise InvalidArgument(f"{field}.default_job_options.dedup", "cannot have a default")
        if o.group:
            raise InvalidArgument(
                f"{field}.default_job_options.group", "cannot have a default: give it with each job"
            )
        if o.lifo:
            raise InvalidArgument(
                f"{field}.default_job_options.lifo", "cannot have a default: give it with each job"
            )
        if o.worker_labels:
            raise InvalidArgument(
                f"{field}.default_job_options.worker_labels", "cannot have a default: give them with each job"
            )
        if o.chain_to:
            raise InvalidArgument(
                f"{field}.default_job_options.chain_to", "cannot have a default: give it with each job"
            )
        apply_options(defaults, o, f"{field}.default_job_options")
    if cfg.completed_retention.remove and not defaults.keep_completed:
        defaults.keep_completed = "r"
    if cfg.failed_retention.remove and not defaults.keep_failed:
        defaults.keep_failed = "r"
    fields.update(
        d_pri=defaults.priority or 3,
        d_att=defaults.attempts or 1,
        d_bt=defaults.backoff_type,
        d_bd=defaults.backoff_delay_ms,
        d_bj=repr(defaults.backoff_jitter),
        d_bm=defaults.backoff_max_ms,
        d_to=defaults.timeout_ms,
        d_exa=defaults.expire_after_ms,
        d_kc=defaults.keep_completed,
        d_kf=defaults.keep_failed,
        # Sorted by key: what a job's own metadata leaves room for is taken from it in this order (add.lua).
        d_md=types_pb2.JobMetadata.FromString(defaults.metadata).SerializeToString(deterministic=True),
        max_stalled=defaults.max_stalled or DEFAULT_MAX_STALLED,
        # The error history's length for jobs without their own (common.lua record_error); "": 10.
        d_ehn=defaults.extra.get("ehn", b""),
    )
    fields["config"] = filled.SerializeToString()
    return fields, filled


def queue_out(r: QueueRecord) -> types_pb2.Queue:
    q = types_pb2.Queue(name=r.name, paused=r.paused, create_time=ms_timestamp(r.created_ms))
    if r.paused and r.paused_until_ms:
        q.paused_until.CopyFrom(ms_timestamp(r.paused_until_ms))
    if r.maintenance_until_ms:
        q.maintenance_until.CopyFrom(ms_timestamp(r.maintenance_until_ms))
    if r.next_maintenance_ms:
        q.next_maintenance_time.CopyFrom(ms_timestamp(r.next_maintenance_ms))
    if r.fields.get("config"):
        q.config.MergeFromString(r.fields["config"])
    return q


# ---- job logs ----------------------------------------------------------------------------------


def log_lines_in(lines: Sequence[types_pb2.JobLogLine]) -> list[tuple[int, str]]:
    """A worker's lines for add_logs.lua: (time ms, 0 = now; text cut to the limit), the last LOG_KEEP."""
    return [(_line_ms(line), line.message[:LOG_LINE_CHARS]) for line in lines[-LOG_KEEP:]]


def _line_ms(line: types_pb2.JobLogLine) -> int:
    """A log line's time in ms; 0 (now) when unset or not a valid timestamp (a line is never refused)."""
    if not line.HasField("time"):
        return 0
    try:
        return max(validate.timestamp_ms(line.time, "time"), 0)
    except InvalidArgument:
        return 0


def log_lines_out(lines: Sequence[LogLine]) -> list[types_pb2.JobLogLine]:
    return [types_pb2.JobLogLine(time=ms_timestamp(line.time_ms), message=line.text) for line in lines]


def job_view_out(v: JobView) -> types_pb2.Job:
    """A job with the tail of its log (GetJob, WaitForJob)."""
    j = job_out(v.record, v.queue_paused)
    j.logs.extend(log_lines_out(v.logs))
    j.log_count = v.log_count
    return j
