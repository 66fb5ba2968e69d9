"""WatchJobEvents: a queue's job events, live, to every watcher this process serves.

The protocol of the call:

- The request names a queue and, optionally, the event types and job names wanted (empty: all).
- The server registers the watcher, then pushes the queue's watch deadline forward (engine/job_events.py
  ``watch``: from then on the queue's scripts publish their job events) and sends the response headers. A
  client that awaits the headers knows that every event from then on reaches it.
- Each message holds the events of one script call the watcher wants (a batch claim's, a bulk add's), in
  the order they happened; a job's events come in the order it went through them.
- Delivery is live and at most once (Redis pub/sub): events published while this server's subscription
  was down (a Redis restart) are not replayed. GetJob and WaitForJob give a job's durable state.
- A watcher that reads too slowly is not allowed to hold up the others or grow the server's memory: each
  has a buffer of at most ``limit`` events (QM_EVENTS_BUFFER); once an event does not fit, the stream ends
  with RESOURCE_EXHAUSTED "events dropped: the watcher fell behind by N events…".
- The stream ends with NOT_FOUND "queue … was deleted" when the queue is deleted (ObliterateQueue publishes
  ``x <queue>`` on the events channel, which ends every server's watchers of it at once; a server whose
  subscription missed it finds out at its next renewal), and otherwise runs until the client cancels it (or
  its deadline passes).

Every server process has one subscription to the events channel (components/notifier.py), which hands the
``e`` messages to `EventWatchers.deliver`; a message is decoded only when this process watches its queue. A
component (components/event_watch.py) renews the watch deadline of every queue watched here every third of
its ttl, so the deadline of a server that stopped lapses by itself and the queue's scripts stop publishing.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import grpc

from queue_manager.v1 import jobs_pb2 as pb
from queue_manager_server import events_convert, validate
from queue_manager_server.engine.job_events import EventBatch, JobEvents, decode
from queue_manager_server.errors import EventsDropped
from queue_manager_server.services.errors import streaming

# Events one watcher may have waiting to be sent (QM_EVENTS_BUFFER): a burst (a bulk add of 10,000 jobs is
# 10,000 ADDED events) fits, a stream that stopped reading ends instead of growing.
DEFAULT_BUFFER = 10_000
# How long a queue's scripts go on publishing its events after this server last renewed the watch
# (QM_EVENTS_TTL_MS); renewed every third of it.
DEFAULT_TTL_MS = 15_000


class EventWatcher:
    """One WatchJobEvents call: its filters and its bounded buffer of batches to send."""

    def __init__(self, queue: str, types: frozenset[int], names: frozenset[str], limit: int) -> None:
        self.queue = queue
        self.types = types
        self.names = names
        self.limit = limit
        self.dropped = 0
        # Ends the call (the queue was deleted).
        self.error: Exception | None = None
        self._batches: deque[EventBatch] = deque()
        self._count = 0
        self._ready = asyncio.Event()

    def offer(self, batch: EventBatch) -> None:
        """Buffers the batch's events this watcher wants; counts them dropped when they do not fit."""
        types, names = self.types, self.names
        events = batch.events
        if types or names:
            events = [e for e in events if (not types or e.type in types) and (not names or e.name in names)]
        if not events:
            return
        if self.dropped or self._count + len(events) > self.limit:
            self.dropped += len(events)
        else:
            self._batches.append(EventBatch(batch.queue, batch.time_ms, events))
            self._count += len(events)
        self._ready.set()

    def fail(self, exc: Exception) -> None:
        self.error = exc
        self._ready.set()

    async def next(self) -> EventBatch:
        """The next batch to send; raises `EventsDropped` once events were dropped, or the call's error."""
        while True:
            if self.dropped:
                raise EventsDropped(self.queue, self.dropped, self.limit)
            if self.error is not None:
                raise self.error
            if self._batches:
                batch = self._batches.popleft()
                self._count -= len(batch.events)
                return batch
            self._ready.clear()
            await self._ready.wait()


class EventWatchers:
    """The watchers this process serves, by queue; one registry per server process."""

    def __init__(self, limit: int = DEFAULT_BUFFER, ttl_ms: int = DEFAULT_TTL_MS) -> None:
        self.limit = limit
        self.ttl_ms = ttl_ms
        self._by_queue: dict[str, set[EventWatcher]] = {}

    @contextmanager
    def watch(self, queue: str, types: frozenset[int], names: frozenset[str]) -> Iterator[EventWatcher]:
        """Registers a watcher of the queue for the duration of the ``with`` block."""
        watcher = EventWatcher(queue, types, names, self.limit)
        self._by_queue.setdefault(queue, set()).add(watcher)
        try:
            yield watcher
        finally:
            group = self._by_queue.get(queue)
            if group is not None:
                group.discard(watcher)
                if not group:
                    del self._by_queue[queue]

    def queues(self) -> list[str]:
        """The queues watched here (their watch deadlines to renew)."""
        return list(self._by_queue)

    def deliver(self, data: bytes) -> None:
        """An ``e`` message of the events channel: to the watchers of its queue (decoded only if any)."""
        parts = data.split(b" ", 2)
        if len(parts) < 3 or not self._by_queue.get(parts[1].decode(errors="replace")):
            return
        batch = decode(data)
        if batch is None:
            return
        for watcher in self._by_queue.get(batch.queue, ()):
            watcher.offer(batch)

    def fail(self, queue: str, exc: Exception) -> None:
        """Ends every watcher of the queue with the error (the queue is gone)."""
        for watcher in self._by_queue.get(queue, ()):
            watcher.fail(exc)

    def __len__(self) -> int:
        return sum(len(group) for group in self._by_queue.values())


class JobEventHandlers:
    """WatchJobEvents (part of `QueueService`)."""

    event_watchers: EventWatchers
    job_events: JobEvents

    @streaming
    async def WatchJobEvents(
        self, request: pb.WatchJobEventsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchJobEventsResponse]:
        queue = validate.queue_name(request.queue_name)
        types = events_convert.types_filter(request.types)
        names = events_convert.names_filter(request.job_names)
        with self.event_watchers.watch(queue, types, names) as watcher:
            # Registered first, deadline second: every event the scripts publish from then on is delivered.
            await self.job_events.watch(queue, self.event_watchers.ttl_ms)
            await context.send_initial_metadata(())
            while True:
                yield events_convert.response_out(await watcher.next())
