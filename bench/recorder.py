"""Per-job accounting inside a benchmark worker process, the same for every system measured.

Standard library only: the peers' workers (bench/.venv-peers) import it too, and the BullMQ worker
(bench/peers/bullmq/common.mjs) writes the same two files. In ``out_dir``, one pair per process:

- ``<tag>-<pid>.ids``: one line per successful run, ``<job id>`` (drain) or
  ``<job id> <add→start ns> <warm-up 0|1>`` (latency). The harness checks that every job appears once.
- ``<tag>-<pid>.stat``: JSON rewritten (atomically) every ``interval`` seconds: ``count`` (lines so far),
  ``side`` (jobs of a side queue, not counted), ``first_ns``/``last_ns`` (wall clock of the first job start
  and of the last job end), ``cpu_s`` (this process's CPU time since its first job start).

The clock starts at the first job start, so worker start-up never counts; ``cpu_s`` is read at each flush
(a process is idle between its last job and the next flush).
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path


class Recorder:
    """Counts jobs by id in one worker process; thread-safe enough for CPython threads and asyncio."""

    def __init__(self, out_dir: str | Path, tag: str, interval: float = 0.1) -> None:
        base = Path(out_dir) / f"{tag}-{os.getpid()}"
        self.ids_path = base.with_suffix(".ids")
        self.stat_path = base.with_suffix(".stat")
        self.interval = interval
        self.first_ns = 0
        self.last_ns = 0
        self.side = 0
        self._cpu_first = 0.0
        self._lines: list[str] = []
        self._written = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def started(self) -> int:
        """Call when a processor starts; returns the wall clock in ns."""
        now = time.time_ns()
        if not self.first_ns:
            self.first_ns = now
            self._cpu_first = time.process_time()
        return now

    def done(self, job_id: str) -> None:
        """Call when a processor run ends successfully."""
        self._lines.append(job_id)
        self.last_ns = time.time_ns()

    def latency(self, job_id: str, started_ns: int, stamp_ns: int, warm: bool) -> None:
        """Records a latency sample (add stamp → processor start) as this job's line."""
        self._lines.append(f"{job_id} {started_ns - stamp_ns} {1 if warm else 0}")
        self.last_ns = time.time_ns()

    def side_done(self) -> None:
        """Counts a job of a side queue (features scenario); it is not a measured job."""
        self.side += 1

    def flush(self) -> None:
        """Appends the new lines and rewrites the stat file."""
        with self._lock:
            end = len(self._lines)
            if end > self._written:
                with open(self.ids_path, "a") as out:
                    out.write("\n".join(self._lines[self._written : end]) + "\n")
                self._written = end
            stat = {
                "count": end,
                "side": self.side,
                "first_ns": self.first_ns,
                "last_ns": self.last_ns,
                "cpu_s": time.process_time() - self._cpu_first if self.first_ns else 0.0,
                "pid": os.getpid(),
            }
            tmp = self.stat_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(stat))
            tmp.replace(self.stat_path)

    def start_flusher(self) -> None:
        """Flushes every interval from a daemon thread (works beside asyncio loops and worker threads)."""
        self.flush()

        def loop() -> None:
            while not self._stop.wait(self.interval):
                self.flush()

        self._thread = threading.Thread(target=loop, name="bench-recorder", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stops the flusher and writes everything left."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.flush()
