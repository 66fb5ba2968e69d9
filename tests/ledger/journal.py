"""An append-only journal: one JSON object per line, one file per process, written so a kill loses nothing.

Each record is one ``os.write`` on an ``O_APPEND`` descriptor, so it is in the kernel (and survives a
``kill -9`` of the writer) before the call returns, and lines of concurrent writers never interleave. The
file is fsynced (``fdatasync``) at most every ``SYNC_INTERVAL_S`` by whoever writes next, and on close: a
machine crash could lose the last few milliseconds of records, a process crash none.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Group commit: one fdatasync (about 0.25 ms here) covers every record written in this interval.
SYNC_INTERVAL_S = 0.02


class Journal:
    """Appends records to one file; ``Journal.read`` reads every journal of a directory back."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._synced = time.monotonic()

    def record(self, event: str, **fields: Any) -> None:
        """Appends ``{"ev": event, "t": <wall clock s>, **fields}`` as one line."""
        line = json.dumps({"ev": event, "t": time.time(), **fields}, separators=(",", ":")) + "\n"
        os.write(self._fd, line.encode())
        now = time.monotonic()
        if now - self._synced >= SYNC_INTERVAL_S:
            os.fdatasync(self._fd)
            self._synced = now

    def close(self) -> None:
        if self._fd >= 0:
            os.fdatasync(self._fd)
            os.close(self._fd)
            self._fd = -1

    @staticmethod
    def read(directory: Path, pattern: str = "*.jsonl") -> Iterator[dict[str, Any]]:
        """Every record of every journal matching `pattern` in `directory`.

        A line that does not parse (a writer stopped inside ``os.write``, which a record this short makes
        unlikely) is skipped rather than failing the read.
        """
        for path in sorted(directory.glob(pattern)):
            for line in path.read_text().splitlines():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue
