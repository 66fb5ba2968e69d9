"""Keeps the job events of the queues watched here on: renews their watch deadlines (WatchJobEvents).

Each queue some WatchJobEvents call of this process follows has its watch deadline pushed forward every third
of its ttl (engine/job_events.py). Once its last watcher here leaves, the deadline is no longer renewed and
lapses, and the queue's scripts stop publishing (unless another server renews it for watchers of its own).
"""

from __future__ import annotations

import asyncio

from queue_manager_server.components.base import Component
from queue_manager_server.engine.job_events import JobEvents
from queue_manager_server.errors import QueueDeleted, QueueNotFound
from queue_manager_server.services.job_events import EventWatchers


class EventWatchRenewal(Component):
    name = "event_watch"

    def __init__(self, events: JobEvents, watchers: EventWatchers) -> None:
        super().__init__(watchers.ttl_ms / 3000)
        self.events = events
        self.watchers = watchers

    async def tick(self) -> None:
        queues = self.watchers.queues()
        ttl = self.watchers.ttl_ms
        results = await asyncio.gather(*(self.events.watch(q, ttl) for q in queues), return_exceptions=True)
        for queue, r in zip(queues, results, strict=True):
            if isinstance(r, QueueNotFound):
                # Deleted, and its 'x' message missed (obliterate.lua publishes one; this server's
                # subscription was down then): its watchers end with NOT_FOUND now.
                self.watchers.fail(queue, QueueDeleted(queue))
            elif isinstance(r, Exception):
                self.log.warning("watch renewal failed", extra={"queue": queue, "error": str(r)})
