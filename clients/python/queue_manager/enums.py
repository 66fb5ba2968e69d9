"""Public enums: job priority and job state, with the same values as the wire."""

from __future__ import annotations

import enum

__all__ = ["STATE_BY_NUMBER", "STATE_NUMBER", "JobPriority", "JobState"]


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


# The wire numbers of `queue_manager.v1.JobState`, in both directions (0 is "unspecified").
STATE_NUMBER: dict[JobState, int] = {state: number for number, state in enumerate(JobState, start=1)}
STATE_BY_NUMBER: dict[int, JobState] = {number: state for state, number in STATE_NUMBER.items()}
