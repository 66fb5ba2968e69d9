"""The WaitForJob calls this process serves, by job, so the notifier can wake exactly the right ones.

Scripts publish ``j <queue> <id> <state>`` on the events channel when a job that some server follows
changes state (common.lua ``notify_job``); the notifier hands each such event to `JobWaiters.notify`. A
follower re-reads the job when woken, so a duplicate or stale event costs one read and never shows a wrong
state; a missed event is covered by the follower's periodic re-check and by `notify_all` after the
subscription is re-established.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager


class Follower:
    """One WaitForJob call: set when its job may have changed.

    Attributes:
        changed: Set by an event about the job (the caller clears it before each read).
        event_state: The state named by the last event ("removed" when the job was removed), so a follower
            whose job vanished can tell a job removed on finishing from one removed while unfinished.
    """

    __slots__ = ("changed", "event_state")

    def __init__(self) -> None:
        self.changed = asyncio.Event()
        self.event_state = ""


class JobWaiters:
    """Followers by (queue, job id); one registry per server process."""

    def __init__(self) -> None:
        self._followers: dict[tuple[str, str], set[Follower]] = {}

    @contextmanager
    def follow(self, queue: str, job_id: str) -> Iterator[Follower]:
        """Registers a follower of the job for the duration of the ``with`` block."""
        key = (queue, job_id)
        follower = Follower()
        self._followers.setdefault(key, set()).add(follower)
        try:
            yield follower
        finally:
            group = self._followers.get(key)
            if group is not None:
                group.discard(follower)
                if not group:
                    del self._followers[key]

    def notify(self, queue: str, job_id: str, state: str) -> None:
        """A ``j`` event: wakes the followers of that job."""
        for follower in self._followers.get((queue, job_id), ()):
            follower.event_state = state
            follower.changed.set()

    def notify_all(self) -> None:
        """Wakes every follower (events may have been missed while the subscription was down)."""
        for group in self._followers.values():
            for follower in group:
                follower.changed.set()

    def __len__(self) -> int:
        return sum(len(group) for group in self._followers.values())
