"""Resource use: the worker process's, sent with each heartbeat (``WorkerReport.stats``), and the
machine's, which bounds an autoscaling pool (`WorkerManager`).

Measured with psutil when it is installed (``pip install queue-manager[stats]``); without it the worker
sends no stats and works as before (the server shows 0 CPU and memory for it), and a pool grows without
looking at the machine.
"""

from __future__ import annotations

from typing import Any

try:
    import psutil  # type: ignore[import-untyped]  # no stubs needed: three calls
except ImportError:  # an optional extra: the client depends only on grpcio and protobuf
    psutil = None

__all__ = ["MachineStats", "ProcessStats"]


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


class MachineStats:
    """Samples the whole machine's CPU (percent of all cores since the previous sample) and memory use."""

    def __init__(self) -> None:
        self._ready = False
        if psutil is not None:
            try:
                psutil.cpu_percent(None)  # the first call starts the measurement
                self._ready = True
            except Exception:  # no /proc, a sandbox…: no limits rather than no pool
                self._ready = False

    @property
    def available(self) -> bool:
        return self._ready

    def sample(self) -> tuple[float | None, float | None]:
        """(CPU percent, memory percent in use), or (None, None) without psutil."""
        if not self._ready:
            return None, None
        try:
            return float(psutil.cpu_percent(None)), float(psutil.virtual_memory().percent)
        except Exception:
            return None, None
