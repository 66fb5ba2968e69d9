"""The worker registry: which workers hold a stream to any server, their load and resource use.

Each server writes the entries of the workers connected to it (workers_seen.lua): on hello, whenever their
jobs in flight or reported stats change, and at least every heartbeat interval; and removes an entry when
its stream ends. An entry expires ``ttl`` after its last write (about three heartbeat intervals), so the
workers of a server killed with -9 drop out by themselves. Readers see only live entries (list_workers.lua).

Entry fields (a hash per worker, engine/keys.py ``worker_prefix``): ses (the stream's session id), sid
(server id), host, lang, ver, q (queues, comma-separated), conc (concurrency), inf (jobs in flight), cts
(stream opened, ms), hb (last report, ms), cpu (percent of one core), mem (resident bytes), lbl (labels,
JSON), st (whether it takes jobs: ``active``, ``quiet`` or ``stopping``; services/worker_control.py), tier
(WorkerHello.tier). Times are Redis times.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from queue_manager_server.engine.clients import Pipe
from queue_manager_server.engine.keys import worker_prefix, workers_index
from queue_manager_server.engine.scripts import Scripts


@dataclass(slots=True)
class WorkerEntry:
    """What a server writes about a worker whose stream it holds."""

    worker_id: str
    session_id: str
    server_id: str
    host: str
    language: str
    version: str
    queues: Sequence[str]
    concurrency: int
    in_flight: int
    connected_ago_ms: int
    reported_ago_ms: int
    cpu_percent: float = 0.0
    memory_bytes: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    state: str = "active"
    tier: int = 0

    def argv(self) -> list[Any]:
        return [
            self.worker_id,
            self.session_id,
            self.server_id,
            self.host,
            self.language,
            self.version,
            ",".join(self.queues),
            self.concurrency,
            self.in_flight,
            max(self.connected_ago_ms, 0),
            max(self.reported_ago_ms, 0),
            repr(float(self.cpu_percent)),
            self.memory_bytes,
            json.dumps(self.labels, separators=(",", ":")),
            self.state,
            self.tier,
        ]


@dataclass(slots=True)
class WorkerRecord:
    """A live registry entry as read back."""

    worker_id: str
    server_id: str
    host: str
    language: str
    version: str
    queues: list[str]
    concurrency: int
    in_flight: int
    connect_ms: int
    last_report_ms: int
    cpu_percent: float
    memory_bytes: int
    labels: dict[str, str]
    state: str = "active"
    tier: int = 0

    @property
    def free(self) -> int:
        """Jobs it could take now: its concurrency minus the jobs it holds."""
        return max(self.concurrency - self.in_flight, 0)


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _record(worker_id: str, flat: Sequence[Any]) -> WorkerRecord:
    f = {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}
    try:
        labels = json.loads(f.get("lbl") or "{}")
    except ValueError:
        labels = {}
    return WorkerRecord(
        worker_id=worker_id,
        server_id=f.get("sid", ""),
        host=f.get("host", ""),
        language=f.get("lang", ""),
        version=f.get("ver", ""),
        queues=[q for q in f.get("q", "").split(",") if q],
        concurrency=int(float(f.get("conc") or 0)),
        in_flight=int(float(f.get("inf") or 0)),
        connect_ms=int(float(f.get("cts") or 0)),
        last_report_ms=int(float(f.get("hb") or 0)),
        cpu_percent=float(f.get("cpu") or 0),
        memory_bytes=int(float(f.get("mem") or 0)),
        labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {},
        state=f.get("st") or "active",
        tier=int(float(f.get("tier") or 0)),
    )


def parse_workers(reply: Sequence[Any]) -> tuple[int, list[WorkerRecord]]:
    """A list_workers.lua reply: (Redis now ms, live workers by id)."""
    records = [_record(_text(reply[i]), reply[i + 1]) for i in range(1, len(reply) - 1, 2)]
    return int(reply[0]), sorted(records, key=lambda r: r.worker_id)


class WorkerStore:
    """Reads and writes the registry (one script call each)."""

    def __init__(self, scripts: Scripts, prefix: str) -> None:
        self.scripts = scripts
        self.index = workers_index(prefix)
        self.entry_prefix = worker_prefix(prefix)

    async def workers_seen(
        self, entries: Sequence[WorkerEntry], removed: Sequence[tuple[str, str]], ttl_ms: int
    ) -> int:
        """Writes `entries` and removes `removed` ((worker id, session id) pairs); returns Redis now (ms)."""
        args: list[Any] = [self.entry_prefix, ttl_ms, len(entries), len(removed)]
        for e in entries:
            args += e.argv()
        for worker_id, session_id in removed:
            args += [worker_id, session_id]
        return int(await self.scripts.run("workers_seen", [self.index], args))

    async def list_workers(self) -> tuple[int, list[WorkerRecord]]:
        """The live workers, by id, and Redis now (ms)."""
        return parse_workers(await self.scripts.run("list_workers", [self.index], [self.entry_prefix]))

    async def list_workers_in(self, pipe: Pipe) -> None:
        """Queues `list_workers` on a pipeline; parse its result with `parse_workers`."""
        self.scripts.call_in(pipe, "list_workers", [self.index], [self.entry_prefix])
