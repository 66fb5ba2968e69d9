"""Domain errors. The engine and services raise these; services/errors.py maps them to gRPC status codes."""

from __future__ import annotations


class QueueManagerError(Exception):
    """Base of every error a client can cause or must be told about."""


class InvalidArgument(QueueManagerError):
    """A request field is malformed; the message names the field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class QueueNotFound(QueueManagerError):
    def __init__(self, queue: str) -> None:
        super().__init__(f"queue {queue!r} is not registered; register it first (QueueService/RegisterQueue)")
        self.queue = queue


class QueueDeleted(QueueNotFound):
    """The queue a stream follows was deleted (ObliterateQueue) while the stream was open."""

    def __init__(self, queue: str) -> None:
        QueueManagerError.__init__(
            self,
            f"queue {queue!r} was deleted (ObliterateQueue); register it again and watch anew to follow "
            "its jobs",
        )
        self.queue = queue


class JobNotFound(QueueManagerError):
    def __init__(self, queue: str, job_id: str) -> None:
        super().__init__(f"job {job_id!r} not found in queue {queue!r}")


class LeaseNotHeld(QueueManagerError):
    """A completion, failure, extension, progress or data update presented a lease token that no longer
    holds."""

    def __init__(self, queue: str, job_id: str, message: str = "") -> None:
        super().__init__(
            message
            or f"lease of job {job_id!r} in queue {queue!r} is not held by this token (the run ended "
            "already, or its lease expired and the job was recovered or removed); nothing was recorded"
        )

    @classmethod
    def lost(cls, queue: str, job_id: str, consequence: str) -> LeaseNotHeld:
        """The refusal of a call a running job makes with its lease (a data update, a wait for children or
        for an event) after the lease was lost; `consequence` says what the call therefore did not do."""
        return cls(
            queue,
            job_id,
            f"the lease of job {job_id!r} in queue {queue!r} held by this token was lost (it expired or "
            f"the job was recovered, cancelled or removed); {consequence}",
        )


class JobActive(QueueManagerError):
    """An operation needs the job (or queue) to have no active run."""


class Unavailable(QueueManagerError):
    """Redis cannot be reached or the server is shutting down."""


class AnswerLost(QueueManagerError):
    """The call did its work, but its answer is gone: a retry would do the work twice, so it must not be
    retried the way an unavailable server's call is."""


class PermissionDenied(QueueManagerError):
    """The caller's token does not cover the request (raised while reading a stream; access.py says why)."""


class ScheduleNotFound(QueueManagerError):
    def __init__(self, queue: str, schedule_id: str) -> None:
        super().__init__(f"schedule {schedule_id!r} not found in queue {queue!r}")


class EventTriggerNotFound(QueueManagerError):
    def __init__(self, trigger_id: str) -> None:
        super().__init__(f"event trigger {trigger_id!r} not found")


class WorkerNotFound(QueueManagerError):
    """No live server holds a stream of the worker (ControlWorker)."""


class WorkflowNotFound(QueueManagerError):
    def __init__(self, run_id: str) -> None:
        super().__init__(f"workflow run {run_id!r} not found (runs are kept 7 days after they finish)")


# Trailing metadata naming why a status was answered, where one status covers conditions a client handles
# apart: RESOURCE_EXHAUSTED is a full queue (retry once workers took some; HTTP 429) or an out-of-memory store
# (an operator must act; HTTP 507).
REASON_KEY = "qm-reason"
QUEUE_FULL = "queue-full"


def _jobs(n: int) -> str:
    return f"{n} job" if n == 1 else f"{n} jobs"


class QueueFull(QueueManagerError):
    """An add found no room: the queue (or the job's group) holds its max_size (RESOURCE_EXHAUSTED).

    A bulk add, checked whole, gives `bulk`: the jobs the queue (or group) holds, its max_size and the jobs of
    the add against it, so that a refusal of an add too big for a queue that is not full says so."""

    def __init__(self, queue: str, group: str = "", bulk: tuple[int, int, int] | None = None) -> None:
        if bulk is not None:
            held, cap, adding = bulk
            what = f"group {group!r} of queue {queue!r}" if group else f"queue {queue!r}"
            counted = "waiting" if group else "waiting and delayed"
            setting = "GroupLimits.max_size" if group else "QueueConfig.max_size"
            hint = (
                f"add them in parts of at most {cap}"
                if adding > cap
                else "add them again once workers have taken some"
            )
            super().__init__(
                f"{what} is full: it holds {_jobs(held)} {counted} and its max_size ({setting}) is {cap}, so "
                f"this bulk add, with {_jobs(adding)}{' for it' if group else ''}, does not fit (room for "
                f"{max(cap - held, 0)}); none was added; {hint}"
            )
        elif group:
            super().__init__(
                f"group {group!r} of queue {queue!r} is full: its jobs waiting reach its max_size "
                "(GroupLimits.max_size); the job was not added; add it again once workers have taken some"
            )
        else:
            super().__init__(
                f"queue {queue!r} is full: its jobs waiting and delayed reach its max_size "
                "(QueueConfig.max_size); the job was not added; add it again once workers have taken some"
            )


class WrongState(QueueManagerError):
    """The operation does not apply to the thing in its current state (FAILED_PRECONDITION)."""


class EventsDropped(QueueManagerError):
    """A WatchJobEvents call fell behind: its buffer filled and events were dropped (RESOURCE_EXHAUSTED)."""

    def __init__(self, queue: str, dropped: int, limit: int) -> None:
        super().__init__(
            f"events dropped: the watcher fell behind by {dropped} events of queue {queue!r} (the server "
            f"buffers at most {limit} per watcher, QM_EVENTS_BUFFER); read the stream faster, or filter it "
            "(types, job_names), then watch again; GetJob and WaitForJob give a job's durable state"
        )
        self.dropped = dropped
