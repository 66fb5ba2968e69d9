"""The metrics stream's sampler: one read of Redis per interval per server, however many clients watch.

Watchers that ask for the same queues, interval and contents (`WatchKey`) form a group; a group is a
component that reads a snapshot at once, then every interval, renders it once and hands the same message
to each of its watchers. It runs only while it has watchers: the first one starts it, the last one to
leave stops it. A watcher that joins a running group gets the group's latest snapshot at once. A watcher
that reads slower than the interval gets the newest snapshot when it asks (older ones are dropped, never
queued). A failed read ends every watcher of the group with the read's error (its stream ends with the
mapped status; clients reconnect).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Generic, TypeVar

from queue_manager_server.components.base import Component, error_text
from queue_manager_server.engine.metrics import MetricsReader, Snapshot
from queue_manager_server.services.metrics import WatchKey

T = TypeVar("T")


class Feed(Generic[T]):
    """One watcher's view of its group: the newest snapshot not yet taken."""

    def __init__(self) -> None:
        self._item: T | BaseException | None = None
        self._ready = asyncio.Event()

    def put(self, item: T | BaseException) -> None:
        self._item = item
        self._ready.set()

    async def next(self) -> T:
        await self._ready.wait()
        self._ready.clear()
        item = self._item
        if isinstance(item, BaseException):
            raise item
        assert item is not None
        return item


class SamplerGroup(Component, Generic[T]):
    """Reads the snapshots of one `WatchKey` for its watchers."""

    name = "metrics-sampler"

    def __init__(self, reader: MetricsReader, key: WatchKey, render: Callable[[Snapshot], T]) -> None:
        super().__init__(key.interval_ms / 1000)
        self.reader = reader
        self.key = key
        self.render = render
        self.feeds: set[Feed[T]] = set()
        self.latest: T | None = None

    async def tick(self) -> None:
        try:
            item = self.render(await self.reader.snapshot(self.key.queues, self.key.history))
        except Exception as exc:
            self.latest = None
            self.log.warning("metrics read failed", extra={"error": error_text(exc)})
            for feed in self.feeds:
                feed.put(exc)
            return
        self.latest = item
        for feed in self.feeds:
            feed.put(item)


class MetricsSampler:
    """The groups of this server's metrics watchers (services/metrics.py `WatchSource`)."""

    def __init__(self, reader: MetricsReader) -> None:
        self.reader = reader
        self.groups: dict[WatchKey, SamplerGroup[object]] = {}
        self._stopping: set[asyncio.Task[None]] = set()

    @asynccontextmanager
    async def watch(self, key: WatchKey, render: Callable[[Snapshot], T]) -> AsyncIterator[Feed[T]]:
        """Watches `key` (render must depend on the key only: the group renders once for all)."""
        found: SamplerGroup[T] | None = self.groups.get(key)  # type: ignore[assignment]
        group = found if found is not None else self._start(key, render)
        feed: Feed[T] = Feed()
        group.feeds.add(feed)
        if group.latest is not None:
            feed.put(group.latest)
        try:
            yield feed
        finally:
            group.feeds.discard(feed)
            if not group.feeds and self.groups.get(key) is group:
                del self.groups[key]
                # Not awaited here: the watcher leaving may be a cancellation.
                task = asyncio.create_task(group.stop(), name="metrics-sampler-stop")
                self._stopping.add(task)
                task.add_done_callback(self._stopping.discard)

    def _start(self, key: WatchKey, render: Callable[[Snapshot], T]) -> SamplerGroup[T]:
        group = SamplerGroup(self.reader, key, render)
        self.groups[key] = group  # type: ignore[assignment]
        group.start()
        return group

    async def stop(self) -> None:
        """Stops every group (the server is going away)."""
        groups, self.groups = list(self.groups.values()), {}
        for group in groups:
            await group.stop()
        if self._stopping:
            await asyncio.gather(*self._stopping, return_exceptions=True)
