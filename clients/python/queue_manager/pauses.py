"""Pause requests: a queue's or a fairness group's pause, optionally timed to lift by itself."""

from __future__ import annotations

from datetime import datetime

from queue_manager.options import DurationLike, to_duration, to_timestamp
from queue_manager.v1 import queue_service_pb2

__all__ = ["pause_queue_request", "set_resume_time"]


def set_resume_time(
    into: queue_service_pb2.PauseQueueRequest | queue_service_pb2.PauseGroupRequest,
    resume_after: DurationLike | None,
    resume_at: datetime | None,
) -> None:
    """Fills a pause request's resume_after or resume_at (at most one; neither: the pause lasts until it is
    resumed). The server refuses a time not in the future by its own clock, or more than 366 days ahead."""
    if resume_after is not None and resume_at is not None:
        raise ValueError("give resume_after or resume_at, not both")
    if resume_after is not None:
        into.resume_after.CopyFrom(to_duration(resume_after, "resume_after", positive=True))
    elif resume_at is not None:
        into.resume_at.CopyFrom(to_timestamp(resume_at, "resume_at"))


def pause_queue_request(
    name: str, resume_after: DurationLike | None = None, resume_at: datetime | None = None
) -> queue_service_pb2.PauseQueueRequest:
    """Builds a PauseQueueRequest (the server checks the name, as for every queue call)."""
    request = queue_service_pb2.PauseQueueRequest(name=name)
    set_resume_time(request, resume_after, resume_at)
    return request
