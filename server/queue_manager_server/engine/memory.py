"""Per-queue memory estimates (memory_estimate.lua): each queue measured at most once per interval, whatever
the number of servers and metrics reads.

The estimate measures a queue's own keys with MEMORY USAGE and a random sample of its jobs per state, so it
costs a bounded number of commands however many jobs the queue holds (the script's header says how). It is
still some hundred commands, so it does not run with every metrics read (the metrics stream reads every
second): the script keeps its figure in the queue's ``memory`` key (engine/keys.py) for the interval and,
while it is there, answers with it after two reads. The metrics reads call it in the pipeline of the
queue's metrics (engine/metrics.py): no round trip of its own, and nothing on the add, claim or completion
path. Kept in Redis, not in a server's memory, so every server shows the same figure.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from queue_manager_server.engine.keys import QueueKeys

log = logging.getLogger("queue_manager_server.engine.memory")
# The refusals already logged: a store that refuses MEMORY USAGE would otherwise log one with every metrics
# read (every second while a dashboard is open).
_logged: set[str] = set()

# How long an estimate is kept before a metrics read of its queue measures again (Settings
# memory_estimate_ms); the metrics stream reads every second, Prometheus every 15 s or so.
DEFAULT_INTERVAL_MS = 30_000
# Jobs sampled per state (waiting, delayed, active, completed, failed, cancelled): with jobs of one size the
# mean is exact; with mixed sizes its error shrinks as 1/sqrt(K).
JOB_SAMPLES = 16
# Elements MEMORY USAGE reads of a large key before it extrapolates (Redis's default is 5).
KEY_SAMPLES = 16


def memory_estimate_keys(k: QueueKeys) -> list[str]:
    """memory_estimate.lua's KEYS."""
    return [k.meta, k.memory]


def memory_estimate_args(interval_ms: int, seed: int) -> list[int]:
    """memory_estimate.lua's ARGV."""
    return [interval_ms, JOB_SAMPLES, KEY_SAMPLES, seed]


def parse_memory_estimate(r: Sequence[Any]) -> int | None:
    """A memory_estimate.lua reply: the estimated bytes (0 when Redis refuses MEMORY USAGE), or None when
    the queue is not registered."""
    code = int(r[0])
    if code == -1:
        return None
    if code == -2:
        reason = r[1].decode() if isinstance(r[1], bytes) else str(r[1])
        if reason not in _logged:
            _logged.add(reason)
            log.warning(f"cannot estimate the queues' memory (MEMORY USAGE refused; shown as 0): {reason}")
        return 0
    return int(r[1])
