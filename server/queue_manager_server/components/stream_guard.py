"""Cuts worker streams whose worker stopped reading, so their jobs go back to waiting.

A worker that stops reading its stream (a frozen process behind a live connection, a bug, a hostile client)
leaves each message the server writes waiting on HTTP/2 flow control. Its jobs stay leased to it until their
leases run out, and whatever the server sends meanwhile piles up in memory. Two bounds end that:

- a message that has waited ``--worker-stall-ms`` for the worker to take it: checked here every second;
- more than ``--max-worker-buffer`` messages waiting: checked as each is queued (`WorkerSession.send`).

Either way the stream is cut as if its connection were lost (`WorkerSession.cut`): its handler ends, the
jobs it holds return to waiting at once (stalled count +1), and the worker, if it comes back, reconnects.
"""

from __future__ import annotations

import time

from queue_manager_server.components.base import Component
from queue_manager_server.services.dispatcher import Dispatcher

INTERVAL_S = 1.0


class StreamGuard(Component):
    name = "stream-guard"

    def __init__(self, dispatcher: Dispatcher, stall_ms: int, interval: float = INTERVAL_S) -> None:
        super().__init__(min(interval, stall_ms / 2000))
        self.dispatcher = dispatcher
        self.stall_s = stall_ms / 1000

    async def tick(self) -> None:
        now = time.monotonic()
        for s in self.dispatcher.all_sessions():
            if s.writing_since and now - s.writing_since > self.stall_s:
                s.cut(f"a message waited {now - s.writing_since:.1f} s to be read (--worker-stall-ms)")
