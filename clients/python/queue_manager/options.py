"""Job and queue options: typed dataclasses, parsing of snake_case mappings, validation, protobuf form.

Options may be given as a mapping with the seed's option names in snake_case or as the dataclasses below.
Durations are milliseconds (``int``/``float``, as in the seed) or `datetime.timedelta`; times are
`datetime.datetime` (a naive datetime is local time). Bad values raise `ValueError` (or `TypeError` for a
value of the wrong kind) before anything is sent.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeAlias

from google.protobuf import duration_pb2, timestamp_pb2

from queue_manager.enums import DEDUP_MODE_NUMBER, STATE_NUMBER, DedupMode, JobPriority, JobState
from queue_manager.routing import MAX_ROUTE_GROUP, ROUTE_PREFIX, is_control, validate_worker_labels
from queue_manager.v1 import types_pb2

if TYPE_CHECKING:  # maintenance.py builds on this module
    from queue_manager.maintenance import MaintenanceWindow

__all__ = [
    "Backoff",
    "ChainLink",
    "Dedup",
    "DurationLike",
    "GroupLimits",
    "JobMetadata",
    "JobOptions",
    "JobOptionsLike",
    "KeepJobs",
    "QueueConfig",
    "RateLimit",
    "check_page",
    "check_text",
    "job_options_to_proto",
    "parse_job_options",
    "parse_priority",
    "parse_state",
    "queue_config_to_proto",
    "size_limit",
    "to_duration",
    "to_timestamp",
    "validate_group",
    "validate_queue_name",
]

DurationLike: TypeAlias = int | float | timedelta
"""A duration: milliseconds, or a `timedelta`."""

_UINT32_MAX = 2**32 - 1
# The server's bounds (JobOptions.error_history, RateLimit.burst), checked here to fail before sending.
MAX_ERROR_HISTORY = 100
MAX_RATE_BURST = 1_000_000
_UINT64_MAX = 2**64 - 1
# The server's largest size limit (QueueConfig.max_size, GroupLimits.max_size), as its validate module has it.
MAX_SIZE_LIMIT = 1 << 48
_QUEUE_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")
_JOB_ID = re.compile(r"[A-Za-z0-9_.@:-]{1,200}")
_BACKOFF_TYPES = {"fixed": types_pb2.BACKOFF_TYPE_FIXED, "exponential": types_pb2.BACKOFF_TYPE_EXPONENTIAL}


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay policy between attempts.

    Attributes:
        type: ``"fixed"`` (the same delay each time) or ``"exponential"`` (``delay * 2^(attempt-1)``).
        delay: Base delay before the first retry.
        jitter: Random extra delay as a fraction of the computed delay, 0 to 1.
        max_delay: Upper bound of the computed delay; None means no bound.
    """

    type: str = "fixed"
    delay: DurationLike = 0
    jitter: float = 0.0
    max_delay: DurationLike | None = None


@dataclass(frozen=True, slots=True)
class KeepJobs:
    """Which finished jobs to keep.

    Attributes:
        remove: Remove the job as soon as it finishes.
        age: Keep finished jobs at most this long; None means the queue's default.
        count: Keep at most this many finished jobs; 0 means the queue's default.
    """

    remove: bool = False
    age: DurationLike | None = None
    count: int = 0


@dataclass(frozen=True, slots=True)
class JobMetadata:
    """Information about a job that is not its data.

    Attributes:
        correlation_id: Id to follow a request across systems.
        tags: Free tags.
        attributes: Free string map (trace context, tenant, origin…).
    """

    correlation_id: str = ""
    tags: list[str] = field(default_factory=list)
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ChainLink:
    """One job of a chain (`JobOptions.chain_to`): added when the job before it completes.

    Attributes:
        queue_name: Queue of the link's job (registered by the time the link is added).
        job_name: Job name.
        data: JSON-serialisable data, or bytes.
        options: Job options of the link (no ``chain_to`` of its own).
    """

    queue_name: str
    job_name: str
    data: Any = None
    options: JobOptionsLike | None = None


@dataclass(frozen=True, slots=True)
class Dedup:
    """A deduplication key: while it is held, adding a job with the same key returns the job holding it.

    Attributes:
        key: 1 to 200 characters, scoped to the queue.
        ttl: Hold the key this long from the first add, whatever becomes of that job ("at most one such job
            per ttl"). None: hold it until that job finishes (completes, fails for good, is cancelled or
            removed). EXTEND and REPLACE restart it at each duplicate.
        mode: What an add does while the key is held: a `DedupMode` or its name (``"keep_first"``,
            ``"extend"``, ``"replace"``). None: keep the first job.
    """

    key: str
    ttl: DurationLike | None = None
    mode: DedupMode | str | None = None


@dataclass(frozen=True, slots=True)
class JobOptions:
    """Per-job options; None (or 0 where noted) means the queue's default.

    The fields accept the same loose forms as the mapping keys of the same name.

    Attributes:
        priority: A `JobPriority`, 1 to 5, or a level name such as ``"high"``.
        delay: Run no earlier than this long after the add (exclusive with scheduled_at).
        scheduled_at: Run no earlier than this time (exclusive with delay).
        attempts: Maximum runs including the first.
        backoff: A `Backoff`, a mapping with its fields, or milliseconds for a fixed backoff.
        job_id: Idempotency key: adding an id that exists returns the existing job.
        metadata: A `JobMetadata` or a mapping: correlation_id, tags, attributes, and any other string
            keys (added to attributes).
        remove_on_complete: True (remove at once), a count to keep, a `KeepJobs`, or ``{"age", "count"}``.
        remove_on_fail: Same forms as remove_on_complete.
        timeout: Longest a single run may take before the worker fails it.
        max_stalled: How many times the job may be recovered from a lost worker before it fails.
        chain_to: Jobs to run one after another once this one completes: `ChainLink`s or mappings
            ``{"queue_name", "job_name", "data", "options"}``. Each link's processor sees its predecessor
            (id and result) in ``job.parent``; a link that fails for good stops the chain.
        dedup: A `Dedup`, a mapping ``{"key", "ttl"}`` or a key alone (held until the job finishes): while
            the key is held, adding a job with it returns the job that holds it instead of a new one.
        expire_after: Expiry: a job not started within this long of being ready (its add, or its run time
            when delayed or scheduled) is not run; a claim that finds it late ends it cancelled, its
            ``cancel_reason`` starting ``"expired: "``. Whole milliseconds, up to 365 days.
        group: Fairness group (a tenant, a customer): the ready jobs of different groups take turns, so
            one group's flood does not hold back the others; a group may have limits of its own
            (``QueueManager.set_group_limits``, the queue's ``group_limits``). 1 to 128 characters.
        lifo: True puts the job at the head of its priority level (its group's, with a group): of the jobs
            of a level the last added runs first. A delayed job goes to the head when due; a retry goes
            to the back.
        error_history: How many failed runs the job keeps in `Job.errors` (the last ones); None means the
            queue's default, else 10; 0 keeps none beyond ``failed_reason`` and ``stacktrace``. At most 100.
        worker_labels: Labels a worker must have to run the job (hard routing): it goes only to a worker
            whose labels (``Worker(labels=...)``) hold every one of these pairs, and waits until one
            connects. At most 16 pairs; not with ``group``.
    """

    priority: JobPriority | int | str | None = None
    delay: DurationLike | None = None
    scheduled_at: datetime | None = None
    attempts: int | None = None
    backoff: Backoff | Mapping[str, Any] | DurationLike | None = None
    job_id: str | None = None
    metadata: JobMetadata | Mapping[str, Any] | None = None
    remove_on_complete: KeepJobs | Mapping[str, Any] | bool | int | None = None
    remove_on_fail: KeepJobs | Mapping[str, Any] | bool | int | None = None
    timeout: DurationLike | None = None
    max_stalled: int | None = None
    chain_to: Sequence[ChainLink | Mapping[str, Any]] | None = None
    dedup: Dedup | Mapping[str, Any] | str | None = None
    expire_after: DurationLike | None = None
    group: str | None = None
    lifo: bool | None = None
    error_history: int | None = None
    worker_labels: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``max`` job starts per ``duration``, shared by all workers: a token bucket.

    Attributes:
        max: Jobs allowed per duration; 0 means no limit.
        duration: Window over which max applies.
        burst: The bucket's capacity: how many jobs may start at once after the queue was idle, before the
            rate applies. 0 means the default, a tenth of max (at least 1). Up to 1,000,000.
    """

    max: int
    duration: DurationLike
    burst: int = 0


@dataclass(frozen=True, slots=True)
class GroupLimits:
    """Limits of one fairness group (`JobOptions.group`), on top of the queue's own limits.

    Attributes:
        concurrency: Most jobs of the group active at once across all workers and servers; 0: no limit.
        rate_limit: Token-bucket rate limit on the group's job starts; None means unlimited.
        max_size: Producer backpressure: the most jobs of the group waiting (ready to run; a delayed one
            counts once due). An add beyond it raises `QueueFullError`. 0: no limit.
    """

    concurrency: int = 0
    rate_limit: RateLimit | None = None
    max_size: int = 0


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """A queue's settings as the server stores them.

    Attributes:
        rate_limit: Token-bucket rate limit on job starts; None means unlimited.
        default_job_options: Defaults for jobs added without their own options.
        dead_letter_queue: Queue that receives jobs which failed for good.
        completed_retention: Retention of completed jobs.
        failed_retention: Retention of failed jobs.
        disable_dead_letter: Failed jobs stay only in failed.
        concurrency: Most jobs of the queue active at once across all workers and servers; 0: no cap.
        priority_bounds: Anti-starvation aging: per level (HIGH to BACKGROUND), the longest a job of it
            waits behind the levels above before it runs next; empty means strict priority.
        group_limits: Limits of each fairness group on its own (a group's own limits, set with
            `QueueManager.set_group_limits`, replace them for that group); None means no per-group limit.
        max_size: Producer backpressure: the most jobs the queue holds waiting (or paused) and delayed. An
            add beyond it raises `QueueFullError`; jobs the server adds itself (chain links, workflow steps,
            schedules, retries) are never refused. 0: no limit.
        maintenance_windows: Recurring windows in which the queue starts no job (`MaintenanceWindow`);
            empty: none.
    """

    rate_limit: RateLimit | None = None
    default_job_options: JobOptions = field(default_factory=JobOptions)
    dead_letter_queue: str = ""
    completed_retention: KeepJobs | None = None
    failed_retention: KeepJobs | None = None
    disable_dead_letter: bool = False
    concurrency: int = 0
    priority_bounds: Mapping[JobPriority, timedelta] = field(default_factory=dict)
    group_limits: GroupLimits | None = None
    max_size: int = 0
    maintenance_windows: list[MaintenanceWindow] = field(default_factory=list)


JobOptionsLike: TypeAlias = JobOptions | Mapping[str, Any]
"""Job options as a `JobOptions` or a mapping with the same keys."""

_JOB_OPTION_NAMES = frozenset(f.name for f in fields(JobOptions))


def parse_job_options(options: JobOptionsLike | None) -> JobOptions:
    """Turns a mapping of job options into a `JobOptions`, rejecting unknown keys.

    Args:
        options: A mapping with snake_case option names, a `JobOptions`, or None.

    Returns:
        The options as a dataclass (values are checked later, by `job_options_to_proto`).
    """
    if options is None:
        return JobOptions()
    if isinstance(options, JobOptions):
        return options
    if not isinstance(options, Mapping):
        raise TypeError(f"job options must be a mapping or JobOptions, not {type(options).__name__}")
    unknown = sorted(str(key) for key in options if key not in _JOB_OPTION_NAMES)
    if unknown:
        expected = ", ".join(sorted(_JOB_OPTION_NAMES))
        raise ValueError(f"unknown job option {', '.join(map(repr, unknown))}; expected {expected}")
    return JobOptions(**options)


def job_options_to_proto(
    options: JobOptionsLike | None, into: types_pb2.JobOptions | None = None
) -> types_pb2.JobOptions:
    """Validates job options and builds their protobuf form.

    Args:
        options: A mapping, a `JobOptions`, or None (every field unset).
        into: A message to fill instead of a new one (for example a field of a request being built).

    Returns:
        The filled `queue_manager.v1.JobOptions`.
    """
    opts = parse_job_options(options)
    msg = types_pb2.JobOptions() if into is None else into
    if opts.priority is not None:
        msg.priority = parse_priority(opts.priority)  # type: ignore[assignment]
    if opts.delay is not None and opts.scheduled_at is not None:
        raise ValueError("job options 'delay' and 'scheduled_at' are exclusive; give one")
    if opts.delay is not None:
        msg.delay.CopyFrom(to_duration(opts.delay, "delay"))
    if opts.scheduled_at is not None:
        msg.schedule_time.CopyFrom(to_timestamp(opts.scheduled_at, "scheduled_at"))
    if opts.attempts is not None:
        msg.attempts = _uint(opts.attempts, "attempts", minimum=1)
    if opts.backoff is not None:
        _fill_backoff(msg.backoff, opts.backoff)
    if opts.job_id is not None:
        msg.job_id = _job_id(opts.job_id)
    if opts.metadata is not None:
        _fill_metadata(msg.metadata, opts.metadata)
    if opts.remove_on_complete is not None and opts.remove_on_complete is not False:
        _fill_keep(msg.remove_on_complete, opts.remove_on_complete, "remove_on_complete")
    if opts.remove_on_fail is not None and opts.remove_on_fail is not False:
        _fill_keep(msg.remove_on_fail, opts.remove_on_fail, "remove_on_fail")
    if opts.timeout is not None:
        msg.timeout.CopyFrom(to_duration(opts.timeout, "timeout", positive=True))
    if opts.max_stalled is not None:
        msg.max_stalled = _uint(opts.max_stalled, "max_stalled")
    if opts.chain_to is not None:
        if isinstance(opts.chain_to, str | bytes | Mapping):
            raise TypeError("chain_to must be a list of links")
        for i, link in enumerate(opts.chain_to):
            _fill_link(msg.chain_to.add(), link, f"chain_to[{i}]")
    if opts.dedup is not None:
        _fill_dedup(msg.dedup, opts.dedup)
    if opts.expire_after is not None:
        msg.expire_after.CopyFrom(to_duration(opts.expire_after, "expire_after", positive=True))
    if opts.group is not None:
        msg.group = validate_group(opts.group)
        if msg.group.startswith(ROUTE_PREFIX):
            raise ValueError(f"group must not start with {ROUTE_PREFIX!r}: worker_labels' groups have it")
    if opts.worker_labels:
        if opts.group is not None:
            raise ValueError("job options 'group' and 'worker_labels' cannot be given together yet")
        msg.worker_labels.update(validate_worker_labels(opts.worker_labels))
    if opts.lifo is not None:
        if not isinstance(opts.lifo, bool):
            raise TypeError(f"lifo must be a bool, not {type(opts.lifo).__name__}")
        msg.lifo = opts.lifo
    if opts.error_history is not None:
        msg.error_history = _uint(opts.error_history, "error_history", maximum=MAX_ERROR_HISTORY)
    return msg


def validate_group(value: Any, what: str = "group") -> str:
    """Checks a fairness group name: 1 to 128 characters, no control characters."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    longest = MAX_ROUTE_GROUP if value.startswith(ROUTE_PREFIX) else 128
    if not 1 <= len(value) <= longest or any(map(is_control, value)):
        raise ValueError(f"{what} must be 1 to 128 characters without control characters, got {value!r}")
    # A lone surrogate cannot be sent (protobuf strings are UTF-8): say so here, naming the field, rather
    # than let the encoder raise a UnicodeEncodeError that names neither. On a command line it is a byte
    # that is not UTF-8, which Python's argv decoding turns into one.
    bad = next((c for c in value if 0xD800 <= ord(c) <= 0xDFFF), None)
    if bad is not None:
        raise ValueError(
            f"{what} {value!r} must be Unicode text: it holds a lone surrogate (U+{ord(bad):04X}; from a "
            "command line, a byte that is not UTF-8)"
        )
    return value


def _fill_dedup(msg: types_pb2.Dedup, value: Dedup | Mapping[str, Any] | str) -> None:
    if isinstance(value, str):
        value = Dedup(key=value)
    elif isinstance(value, Mapping):
        unknown = sorted(str(key) for key in value if key not in {"key", "ttl", "mode"})
        if unknown:
            raise ValueError(f"unknown dedup option {', '.join(map(repr, unknown))}; expected key, ttl, mode")
        value = Dedup(**value)
    if not isinstance(value, Dedup):
        raise TypeError(f"dedup must be a key, a mapping or a Dedup, not {type(value).__name__}")
    if not isinstance(value.key, str):
        raise TypeError(f"dedup key must be a str, not {type(value.key).__name__}")
    if not 1 <= len(value.key) <= 200 or "\x00" in value.key:
        raise ValueError(f"dedup key must be 1 to 200 characters (no NUL), got {len(value.key)}")
    msg.key = value.key
    if value.ttl is not None:
        msg.ttl.CopyFrom(to_duration(value.ttl, "dedup ttl", positive=True))
    if value.mode is not None:
        mode = dedup_mode(value.mode)
        if mode is DedupMode.EXTEND and value.ttl is None:
            raise ValueError("dedup mode extend restarts the ttl at each duplicate: give a ttl")
        msg.mode = DEDUP_MODE_NUMBER[mode]  # type: ignore[assignment]


def dedup_mode(value: DedupMode | str) -> DedupMode:
    """A `DedupMode` from itself or its name (any case, ``-`` for ``_``: ``"keep-first"``)."""
    if isinstance(value, DedupMode):
        return value
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return DedupMode(value.strip().lower().replace("-", "_"))
        choices = ", ".join(mode.value for mode in DedupMode)
        raise ValueError(f"unknown dedup mode {value!r}; expected {choices}")
    raise TypeError(f"dedup mode must be a DedupMode or its name, not {type(value).__name__}")


def _fill_link(msg: types_pb2.ChainLink, value: ChainLink | Mapping[str, Any], what: str) -> None:
    # Imported here: convert builds on this module's dataclasses.
    from queue_manager.convert import encode_payload

    if isinstance(value, Mapping):
        unknown = sorted(set(value) - {"queue_name", "job_name", "data", "options"})
        if unknown:
            raise ValueError(
                f"{what}: unknown key(s) {unknown}; expected queue_name, job_name, data, options"
            )
        try:
            value = ChainLink(**value)
        except TypeError as exc:
            raise ValueError(f"{what}: {exc}") from None
    msg.queue_name = validate_queue_name(value.queue_name, f"{what}.queue_name")
    try:
        msg.job_name = validate_job_name(value.job_name)
        encode_payload(value.data, msg.data)
        job_options_to_proto(value.options, into=msg.options)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{what}: {exc}") from None
    if msg.options.chain_to:
        raise ValueError(f"{what}: a link has no chain_to of its own; list every link in the first job's")


def queue_config_to_proto(
    *,
    rate_limit: RateLimit | Mapping[str, Any] | None = None,
    default_job_options: JobOptionsLike | None = None,
    dead_letter_queue: str | None = None,
    completed_retention: KeepJobs | Mapping[str, Any] | bool | int | None = None,
    failed_retention: KeepJobs | Mapping[str, Any] | bool | int | None = None,
    disable_dead_letter: bool = False,
    concurrency: int = 0,
    max_size: int = 0,
) -> types_pb2.QueueConfig:
    """Validates queue settings and builds their protobuf form.

    Args:
        rate_limit: A `RateLimit` or ``{"max": n, "duration": ms}``.
        default_job_options: Defaults for the queue's jobs, as for `job_options_to_proto`.
        dead_letter_queue: Name of the queue receiving jobs that failed for good.
        completed_retention: Retention of completed jobs (same forms as ``remove_on_complete``).
        failed_retention: Retention of failed jobs (same forms as ``remove_on_fail``).
        disable_dead_letter: Keep failed jobs only in failed.
        concurrency: Most jobs of the queue active at once across all workers and servers; 0: no cap.
        max_size: Most jobs the queue holds waiting (or paused) and delayed; 0: no limit.

    Returns:
        The `queue_manager.v1.QueueConfig`.
    """
    msg = types_pb2.QueueConfig()
    if rate_limit is not None:
        _fill_rate_limit(msg.rate_limit, rate_limit)
    if default_job_options is not None:
        job_options_to_proto(default_job_options, into=msg.default_job_options)
    if dead_letter_queue:
        msg.dead_letter_queue = validate_queue_name(dead_letter_queue, "dead_letter_queue")
    if completed_retention is not None:
        _fill_keep(msg.completed_retention, completed_retention, "completed_retention")
    if failed_retention is not None:
        _fill_keep(msg.failed_retention, failed_retention, "failed_retention")
    msg.disable_dead_letter = bool(disable_dead_letter)
    msg.concurrency = _uint(concurrency, "concurrency")
    msg.max_size = size_limit(max_size, "max_size")
    return msg


def parse_priority(value: JobPriority | int | str) -> JobPriority:
    """Turns a `JobPriority`, a number 1 to 5 or a level name (any case) into a `JobPriority`."""
    if isinstance(value, bool):
        raise TypeError("priority must be a JobPriority, 1 to 5, or a level name, not a bool")
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return parse_priority(int(text))
        try:
            return JobPriority[text.upper()]
        except KeyError:
            names = ", ".join(p.name.lower() for p in JobPriority)
            raise ValueError(f"priority {value!r} is not one of {names} (or 1 to 5)") from None
    if isinstance(value, int):
        try:
            return JobPriority(value)
        except ValueError:
            raise ValueError(
                f"priority must be between 1 (critical) and 5 (background), got {value}"
            ) from None
    raise TypeError(f"priority must be a JobPriority, 1 to 5, or a level name, not {type(value).__name__}")


def parse_state(value: JobState | str) -> JobState:
    """Turns a `JobState` or a state name (any case) into a `JobState`."""
    if isinstance(value, JobState):
        return value
    if not isinstance(value, str):
        raise TypeError(f"state must be a JobState or a state name, not {type(value).__name__}")
    try:
        return JobState(value.strip().lower())
    except ValueError:
        names = ", ".join(s.value for s in JobState)
        raise ValueError(f"state {value!r} is not one of {names}") from None


def state_number(value: JobState | str) -> int:
    """The wire number of a state given as a `JobState` or a name."""
    return STATE_NUMBER[parse_state(value)]


def validate_queue_name(name: str, what: str = "queue name") -> str:
    """Checks a queue name: 1 to 100 letters, digits, "-", "_" or "."."""
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a str, not {type(name).__name__}")
    if not _QUEUE_NAME.fullmatch(name):
        raise ValueError(f"{what} {name!r} must be 1 to 100 letters, digits, '-', '_' or '.'")
    return name


def validate_job_name(name: str) -> str:
    """Checks a job name: 1 to 200 characters."""
    if not isinstance(name, str):
        raise TypeError(f"job name must be a str, not {type(name).__name__}")
    if not 1 <= len(name) <= 200:
        raise ValueError(f"job name must be 1 to 200 characters, got {len(name)}")
    return name


def duration_ms(value: DurationLike, what: str, *, positive: bool = False) -> float:
    """A duration in milliseconds, checked to be a finite number that is not negative (or positive)."""
    if isinstance(value, timedelta):
        ms = value / timedelta(milliseconds=1)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        ms = float(value)
    else:
        raise TypeError(f"{what} must be milliseconds (int) or a timedelta, not {type(value).__name__}")
    if not math.isfinite(ms) or ms < 0 or (positive and ms == 0):
        raise ValueError(f"{what} must be {'more than' if positive else 'at least'} 0 ms, got {value!r}")
    return ms


def to_duration(value: DurationLike, what: str, *, positive: bool = False) -> duration_pb2.Duration:
    """A `google.protobuf.Duration` from milliseconds or a timedelta (see `duration_ms`)."""
    ms = duration_ms(value, what, positive=positive)
    msg = duration_pb2.Duration()
    msg.FromNanoseconds(round(ms * 1_000_000))
    return msg


def to_timestamp(value: datetime, what: str) -> timestamp_pb2.Timestamp:
    """A `google.protobuf.Timestamp` from a datetime (a naive datetime is local time)."""
    if not isinstance(value, datetime):
        raise TypeError(f"{what} must be a datetime, not {type(value).__name__}")
    msg = timestamp_pb2.Timestamp()
    msg.FromNanoseconds(round(value.timestamp() * 1_000_000) * 1000)
    return msg


def _uint(value: int, what: str, *, minimum: int = 0, maximum: int = _UINT32_MAX) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if not minimum <= value <= maximum:
        raise ValueError(f"{what} must be between {minimum} and {maximum}, got {value}")
    return value


def size_limit(value: int, what: str) -> int:
    """A size limit (``max_size``): a whole number of jobs, 0 for none. The server refuses one above 2**48
    (INVALID_ARGUMENT naming the field); this checks the type and the field's 64-bit range."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if not 0 <= value <= _UINT64_MAX:
        # The message gives the server's limit, not the field's: a value between the two is refused
        # there, and a person told "up to 2**64" would try one.
        raise ValueError(
            f"{what} must be between 0 (no limit) and {MAX_SIZE_LIMIT:,} (2**48, the server's maximum), "
            f"got {value}"
        )
    return value


def _job_id(value: str | int) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise TypeError(f"job_id must be a str, not {type(value).__name__}")
    if not _JOB_ID.fullmatch(value):
        raise ValueError(f"job_id {value!r} must be 1 to 200 letters, digits, '-', '_', '.', '@' or ':'")
    return value


def _fill_backoff(msg: types_pb2.Backoff, value: Backoff | Mapping[str, Any] | DurationLike) -> None:
    if isinstance(value, int | float | timedelta) and not isinstance(value, bool):
        value = Backoff(type="fixed", delay=value)
    elif isinstance(value, Mapping):
        unknown = sorted(str(key) for key in value if key not in {"type", "delay", "jitter", "max_delay"})
        if unknown:
            names = ", ".join(map(repr, unknown))
            raise ValueError(f"unknown backoff option {names}; expected type, delay, jitter, max_delay")
        value = Backoff(**value)
    if not isinstance(value, Backoff):
        raise TypeError(f"backoff must be a mapping, a Backoff or milliseconds, not {type(value).__name__}")
    kind = _BACKOFF_TYPES.get(str(value.type).lower())
    if kind is None:
        raise ValueError(f"backoff type {value.type!r} must be 'fixed' or 'exponential'")
    msg.type = kind
    msg.delay.CopyFrom(to_duration(value.delay, "backoff delay"))
    jitter = value.jitter
    if isinstance(jitter, bool) or not isinstance(jitter, int | float) or not 0 <= jitter <= 1:
        raise ValueError(f"backoff jitter must be a number from 0 to 1, got {jitter!r}")
    msg.jitter = float(jitter)
    if value.max_delay is not None:
        msg.max_delay.CopyFrom(to_duration(value.max_delay, "backoff max_delay"))


def _fill_metadata(msg: types_pb2.JobMetadata, value: JobMetadata | Mapping[str, Any]) -> None:
    if isinstance(value, JobMetadata):
        value = {"correlation_id": value.correlation_id, "tags": value.tags, "attributes": value.attributes}
    if not isinstance(value, Mapping):
        raise TypeError(f"metadata must be a mapping or JobMetadata, not {type(value).__name__}")
    for key, item in value.items():
        if key == "correlation_id":
            msg.correlation_id = check_text(item, "metadata correlation_id")
        elif key == "tags":
            if isinstance(item, str) or not isinstance(item, list | tuple | set | frozenset):
                raise TypeError("metadata tags must be a list of str")
            msg.tags.extend(check_text(tag, "metadata tag") for tag in item)
        elif key == "attributes":
            if not isinstance(item, Mapping):
                raise TypeError("metadata attributes must be a mapping of str to str")
            for name, text in item.items():
                msg.attributes[check_text(name, "metadata attribute name")] = check_text(
                    text, f"metadata attribute {name!r}"
                )
        else:
            msg.attributes[check_text(key, "metadata key")] = check_text(item, f"metadata {key!r}")


def _fill_keep(msg: types_pb2.KeepJobs, value: KeepJobs | Mapping[str, Any] | bool | int, what: str) -> None:
    if isinstance(value, bool):
        value = KeepJobs(remove=value)
    elif isinstance(value, int):
        value = KeepJobs(count=value)
    elif isinstance(value, Mapping):
        unknown = sorted(str(key) for key in value if key not in {"remove", "age", "count"})
        if unknown:
            raise ValueError(
                f"unknown {what} key {', '.join(map(repr, unknown))}; expected age, count, remove"
            )
        value = KeepJobs(**value)
    if not isinstance(value, KeepJobs):
        raise TypeError(f"{what} must be True, a count, a mapping or KeepJobs, not {type(value).__name__}")
    msg.remove = bool(value.remove)
    if value.age is not None:
        msg.age.CopyFrom(to_duration(value.age, f"{what} age"))
    msg.count = _uint(value.count, f"{what} count")


def _fill_rate_limit(msg: types_pb2.RateLimit, value: RateLimit | Mapping[str, Any]) -> None:
    if isinstance(value, Mapping):
        unknown = sorted(str(key) for key in value if key not in {"max", "duration", "burst"})
        if unknown:
            raise ValueError(
                f"unknown rate_limit key {', '.join(map(repr, unknown))}; expected max, duration, burst"
            )
        if "max" not in value or "duration" not in value:
            raise ValueError("rate_limit needs both 'max' and 'duration'")
        value = RateLimit(max=value["max"], duration=value["duration"], burst=value.get("burst", 0))
    if not isinstance(value, RateLimit):
        raise TypeError(f"rate_limit must be a mapping or RateLimit, not {type(value).__name__}")
    msg.max = _uint(value.max, "rate_limit max")
    msg.duration.CopyFrom(to_duration(value.duration, "rate_limit duration", positive=msg.max > 0))
    msg.burst = _uint(value.burst, "rate_limit burst", maximum=MAX_RATE_BURST)
    if msg.burst and not msg.max:
        raise ValueError("rate_limit burst needs a max: a burst is the capacity of a rate limit")


def check_text(value: object, what: str) -> str:
    """A str argument as given; else a TypeError naming it (protobuf's own words for a str field given another
    type, "bad argument type for built-in operation", named neither the argument nor the call)."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__} {value!r:.50}")
    return value


def check_page(page_size: object, page_token: object) -> tuple[int, str]:
    """A listing's page size (1 to 1000, 0 for the server's 100) and token, checked before the call: a
    negative or huge size failed in protobuf with a bare "Value out of range: -1"."""
    if isinstance(page_size, bool) or not isinstance(page_size, int) or not 0 <= page_size <= 1000:
        raise ValueError(f"page_size must be an int from 1 to 1000 (0 means 100), got {page_size!r}")
    return page_size, check_text(page_token, "page_token")
