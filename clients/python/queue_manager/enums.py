"""Public enums: job priority, job state, dedup mode and worker state, with the same values as the wire."""

from __future__ import annotations

import enum

__all__ = [
    "STATE_BY_NUMBER",
    "STATE_NUMBER",
    "DedupMode",
    "JobErrorKind",
    "JobPriority",
    "JobState",
    "WorkerState",
]


class JobPriority(enum.IntEnum):
    """Priority of a job: a lower number runs first, FIFO within a level."""

    CRITICAL = 1
    HIGH = 2
    NORMAL = 3
    LOW = 4
    BACKGROUND = 5


class JobState(enum.StrEnum):
    """Where a job is in its lifecycle."""

    WAITING = "waiting"
    ACTIVE = "active"
    DELAYED = "delayed"
    COMPLETED = "completed"
    FAILED = "failed"
    PAUSED = "paused"
    CANCELLED = "cancelled"


class DedupMode(enum.StrEnum):
    """What an add does when its dedup key is held (`Dedup.mode`)."""

    #: The add is ignored and answered with the job holding the key (the default).
    KEEP_FIRST = "keep_first"
    #: The add is ignored and the key's ttl restarts (a sliding window); needs a ttl.
    EXTEND = "extend"
    #: While the holder has not started (waiting or delayed), the add replaces its name and data, restarts
    #: the ttl and re-delays it (debounce); once it started or finished, the add creates a new job.
    REPLACE = "replace"


class JobErrorKind(enum.StrEnum):
    """How a failed run ended (`JobError.kind`)."""

    #: The processor raised an error (or its result could not be stored).
    ERROR = "error"
    #: The run passed the job's timeout and the server ended it.
    TIMEOUT = "timeout"
    #: The run was lost: its worker went away or its lease expired.
    STALLED = "stalled"
    #: The run was stopped by a cancel and the job ended cancelled.
    CANCELLED = "cancelled"


# The wire numbers of `queue_manager.v1.JobErrorKind` (0 is "unspecified": never a recorded run's).
ERROR_KIND_BY_NUMBER: dict[int, JobErrorKind] = dict(enumerate(JobErrorKind, start=1))


# The wire numbers of `queue_manager.v1.DedupMode`, in both directions (0 is "unspecified": keep the first).
DEDUP_MODE_NUMBER: dict[DedupMode, int] = {mode: number for number, mode in enumerate(DedupMode, start=1)}
DEDUP_MODE_BY_NUMBER: dict[int, DedupMode] = {number: mode for mode, number in DEDUP_MODE_NUMBER.items()}


# The wire numbers of `queue_manager.v1.JobState`, in both directions (0 is "unspecified").
STATE_NUMBER: dict[JobState, int] = {state: number for number, state in enumerate(JobState, start=1)}
STATE_BY_NUMBER: dict[int, JobState] = {number: state for state, number in STATE_NUMBER.items()}


class WorkerState(enum.StrEnum):
    """Whether a connected worker takes jobs (`WorkerInfo.state`; `QueueManager.quiet_worker` and its kin)."""

    ACTIVE = "active"
    #: Quieted by an operator: runs what it holds, takes nothing new, stays connected.
    QUIET = "quiet"
    #: Stopping (an operator's stop, or its own shutdown): finishes or releases what it holds, then leaves.
    STOPPING = "stopping"


# The wire numbers of `queue_manager.v1.WorkerState` (0, "unspecified", reads as active: an older server).
WORKER_STATE_BY_NUMBER: dict[int, WorkerState] = dict(enumerate(WorkerState, start=1))
