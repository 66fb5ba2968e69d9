"""Log sampling: a storm of like records is logged as its first few and a count, not line by line.

When a dependency goes down, every run of a queue fails the same way, thousands a second; one log line per
failure then buries everything else in the log, and costs the process more than the runs themselves (a
formatted line written to its stream is ~13 µs of a worker's CPU per failure, a run ~11 µs). A `Sampler`
lets through the first `burst` records of each kind (a key: the queue and the error's type, say) in each
window of `window` seconds and counts the rest; when that window has ended, the count is told once ("N more
like it"), by the next record of the kind or by `flush`, which a caller runs now and then so that the
count of a storm that stopped is told too. A trickle (fewer than `burst` a window) is logged in full.

The records stay complete elsewhere: the server keeps every failure on its job and counts them in the
queue's metrics. Like zap's sampler (first N per second per message), but every record left out is
counted and reported.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

# Records of one kind logged per window, and the window's length in seconds.
BURST = 10
WINDOW_S = 1.0
# Kinds followed at once; beyond this, the oldest window is told and forgotten (an odd storm of distinct
# keys cannot grow the table).
MAX_KEYS = 1_000

# Told the records left out of one window: (key, how many, the window's length in seconds so far).
Summary = Callable[[Hashable, int, float], None]


@dataclass(slots=True)
class _Window:
    start: float
    logged: int = 0
    left_out: int = 0


class Sampler:
    """Admits the first `burst` records of each key per `window` seconds; `summary` is told the rest.

    Args:
        summary: Called with (key, records left out, seconds) once the window that left them out has ended.
        burst: Records of one key logged per window.
        window: The window's length in seconds.
        clock: Monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        summary: Summary,
        burst: int = BURST,
        window: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._summary = summary
        self._burst = burst
        self._window = window
        self._clock = clock
        self._windows: dict[Hashable, _Window] = {}
        # The earliest end of a window holding left-out records (flush has nothing to do before it).
        self._due = float("inf")

    def admit(self, key: Hashable) -> bool:
        """Whether a record of this kind is logged now; when not, it is counted for its window's summary."""
        now = self._clock()
        w = self._windows.get(key)
        if w is not None and now - w.start >= self._window:
            self._tell(key, w, now)
            w = None
        if w is None:
            if len(self._windows) >= MAX_KEYS:
                oldest = next(iter(self._windows))
                self._tell(oldest, self._windows[oldest], now)
            w = self._windows[key] = _Window(now)
        if w.logged < self._burst:
            w.logged += 1
            return True
        if not w.left_out:
            self._due = min(self._due, w.start + self._window)
        w.left_out += 1
        return False

    def flush(self, final: bool = False) -> None:
        """Tells the counts of windows that have ended (final: of every window, as when the process stops),
        and forgets the ended windows."""
        now = self._clock()
        if not final and now < self._due and len(self._windows) < MAX_KEYS // 2:
            return
        self._due = float("inf")
        for key, w in list(self._windows.items()):
            if final or now - w.start >= self._window:
                self._tell(key, w, now)
            elif w.left_out:
                self._due = min(self._due, w.start + self._window)

    def _tell(self, key: Hashable, w: _Window, now: float) -> None:
        del self._windows[key]
        if w.left_out:
            self._summary(key, w.left_out, min(now - w.start, self._window))
