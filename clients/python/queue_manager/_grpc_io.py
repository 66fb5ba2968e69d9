"""How this process's gRPC reads its sockets: chosen on import, before grpc is (queue_manager/__init__.py).

grpcio 1.85 reads and writes sockets on its EventEngine's own threads, which hand each message received to
the completion queue that grpc.aio's poller thread waits on, which wakes the event loop: a thread wake-up
more per message, on each side of every call and stream. With the core's ``event_engine_client`` and
``event_engine_listener`` experiments off, channels and the server's accepted connections use the core's
polling endpoints, read by the thread that waits on the completion queue itself. Measured on one 2-core
machine (bench/RESULTS.md, "Later morning of 2026-12-05"): a message and its echo on an open stream
(`python -m bench.rtt`) 0.17 → 0.10 ms; an add's answer reaching its client and a job reaching its worker
~0.1 ms sooner each.

The core reads ``GRPC_EXPERIMENTS`` once, when grpc is first imported, so it is set here only while grpc is
not imported yet, and never over the process's own choice: ``GRPC_EXPERIMENTS=""`` (or any value) keeps it.
The server (`qm serve`), the workers, the producers and the dashboard import this package first.
"""

from __future__ import annotations

import functools
import logging
import os
import sys

# The core's experiments this process turns off (grpc's own list, comma-separated, "-" for off).
POLLING_IO = "-event_engine_client,-event_engine_listener"

# Set when this package came too late: grpc was imported first and the process chose nothing itself, so
# grpc reads its sockets on its own threads (`hint_if_late` says so once).
LATE = "GRPC_EXPERIMENTS" not in os.environ and "grpc" in sys.modules

# Only while it can still take effect, and never over the process's own choice.
if "grpc" not in sys.modules and "GRPC_EXPERIMENTS" not in os.environ:
    os.environ["GRPC_EXPERIMENTS"] = POLLING_IO


@functools.cache  # once per process
def hint_if_late() -> None:
    """Logs (INFO, at the first channel) that grpc was imported before this package, and what it costs.
    Found so in our own benchmark's producer: ~6% on add-to-start latency (bench/RESULTS.md)."""
    if LATE:
        logging.getLogger("queue_manager").info(
            "grpc was imported before queue_manager, so grpc reads this process's sockets on threads of its "
            "own (a thread wake-up more per message); import queue_manager first, or start Python with "
            "GRPC_EXPERIMENTS=%s",
            POLLING_IO,
        )
