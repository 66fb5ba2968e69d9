"""Keeps the registry entries of the workers connected to this server true (engine/workers.py).

Every tick it writes, in one script call, the entries whose jobs in flight or reported stats changed and
those not written for a heartbeat interval (their expiry is three intervals away, so only a dead server's
workers expire), and removes the entries of streams that ended. A tick with nothing to do costs nothing.
The worker service writes a worker's first entry at its hello and removes it when its stream ends; this
loop also removes the entries of ended streams it wrote, and at shutdown every entry it still holds.
"""

from __future__ import annotations

import time

from queue_manager_server.components.base import Component, error_text
from queue_manager_server.engine.workers import WorkerStore
from queue_manager_server.services.dispatcher import Dispatcher, WorkerSession
from queue_manager_server.services.registry import registry_entry, registry_ttl_ms

# How stale a worker's jobs in flight (hence the free capacity in the metrics) may get.
INTERVAL_S = 0.5


class WorkerRegistry(Component):
    name = "worker-registry"

    def __init__(
        self,
        store: WorkerStore,
        dispatcher: Dispatcher,
        server_id: str,
        heartbeat_ms: int,
        interval: float = INTERVAL_S,
    ) -> None:
        super().__init__(interval)
        self.store = store
        self.dispatcher = dispatcher
        self.server_id = server_id
        self.refresh_s = heartbeat_ms / 1000
        self.ttl_ms = registry_ttl_ms(heartbeat_ms)
        # session -> (jobs in flight, stats message, state, concurrency, monotonic time) as last written
        self._written: dict[WorkerSession, tuple[int, object, str, int, float]] = {}

    async def tick(self) -> None:
        now = time.monotonic()
        live = [s for s in self.dispatcher.all_sessions() if not s.closed]
        due = []
        for s in live:
            last = self._written.get(s)
            shown = (len(s.leases), s.stats, s.state, s.concurrency)
            if last is None or last[:4] != shown or now - last[4] >= self.refresh_s:
                due.append(s)
        alive = set(live)
        ended = [s for s in self._written if s not in alive]
        if not due and not ended:
            return
        await self.store.workers_seen(
            [registry_entry(s, self.server_id, now) for s in due],
            [(s.worker_id, s.session_id) for s in ended],
            self.ttl_ms,
        )
        for s in due:
            self._written[s] = (len(s.leases), s.stats, s.state, s.concurrency, now)
        for s in ended:
            del self._written[s]
        # A stream that ended while we wrote: the worker service's removal may have gone first.
        closed = [s for s in due if s.closed]
        if closed:
            await self.store.workers_seen([], [(s.worker_id, s.session_id) for s in closed], self.ttl_ms)
            for s in closed:
                del self._written[s]

    async def stop(self) -> None:
        await super().stop()
        gone = list(self._written)
        if gone:
            try:
                await self.store.workers_seen([], [(s.worker_id, s.session_id) for s in gone], self.ttl_ms)
            except Exception as exc:  # they expire anyway
                self.log.warning("cannot remove workers", extra={"error": error_text(exc)})
            self._written.clear()
