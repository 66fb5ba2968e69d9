"""What a server writes about each worker whose stream it holds, for the worker registry (engine/workers.py).

The entry is written when the worker says hello (services/workers.py), then kept fresh by the registry
component (components/worker_registry.py) while the stream is open, and removed when it ends.
"""

from __future__ import annotations

from queue_manager_server.engine.workers import WorkerEntry
from queue_manager_server.services.dispatcher import WorkerSession

# An entry lives this many heartbeat intervals after its last write: a server refreshes its workers' entries
# every interval, so only the workers of a server that died (or lost Redis) drop out.
TTL_HEARTBEATS = 3


def registry_ttl_ms(heartbeat_ms: int) -> int:
    return TTL_HEARTBEATS * heartbeat_ms


def registry_entry(s: WorkerSession, server_id: str, now: float) -> WorkerEntry:
    """The entry of a session as of `now` (monotonic seconds)."""
    h = s.hello
    return WorkerEntry(
        worker_id=s.worker_id,
        session_id=s.session_id,
        server_id=server_id,
        host=h.labels.get("host", ""),
        language=h.language,
        version=h.version,
        queues=s.queues,
        concurrency=s.concurrency,
        in_flight=len(s.leases),
        connected_ago_ms=round((now - s.connected_at) * 1000),
        reported_ago_ms=round((now - s.reported_at) * 1000),
        cpu_percent=s.stats.cpu_percent if s.stats is not None else 0.0,
        memory_bytes=s.stats.memory_bytes if s.stats is not None else 0,
        labels=dict(h.labels),
        state=s.state,
        tier=s.tier,
    )
