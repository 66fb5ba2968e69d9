"""The worker process's resource use, sent with each heartbeat (``WorkerReport.stats``).

Measured with psutil when it is installed (``pip install queue-manager[stats]``); without it the worker
sends no stats and works as before (the server shows 0 CPU and memory for it).
"""

from __future__ import annotations

from typing import Any

try:
    import psutil  # type: ignore[import-untyped]  # no stubs needed: three calls
except ImportError:  # an optional extra: the client depends only on grpcio and protobuf
    psutil = None

__all__ = ["ProcessStats"]


class ProcessStats:
    """Samples this process's CPU (percent of one core since the previous sample) and resident memory."""

    def __init__(self) -> None:
        self._process: Any = None
        if psutil is not None:
            try:
                self._process = psutil.Process()
                self._process.cpu_percent(None)  # the first call starts the measurement
            except Exception:  # no /proc, a sandbox…: no stats rather than no worker
                self._process = None

    @property
    def available(self) -> bool:
        return self._process is not None

    def sample(self) -> tuple[float, int] | None:
        """(CPU percent of one core since the last sample, resident bytes), or None without psutil."""
        if self._process is None:
            return None
        try:
            return float(self._process.cpu_percent(None)), int(self._process.memory_info().rss)
        except Exception:
            return None
