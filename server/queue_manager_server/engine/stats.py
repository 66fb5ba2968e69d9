"""Processing-time histograms as the scripts keep them, and the figures derived from their counts.

Each run a worker reports with its duration falls into one bucket: h<i> counts runs of at most
``DURATION_BOUNDS_MS[i - 1]`` ms (and more than the bound before), h<len + 1> longer ones (+Inf). The
scripts keep the counts per queue for all time (Prometheus) and per minute (the last five minutes give the
average, the p95 and the error rate). includes/stats.lua holds the same bounds; a test compares them.
"""

from __future__ import annotations

from collections.abc import Sequence

# Millisecond bounds: 1 ms to an hour, dense where job runtimes usually are.
DURATION_BOUNDS_MS: tuple[int, ...] = (
    1,
    5,
    10,
    25,
    50,
    100,
    250,
    500,
    1000,
    2500,
    5000,
    10000,
    30000,
    60000,
    300000,
    900000,
    1800000,
    3600000,
)
BUCKETS = len(DURATION_BOUNDS_MS) + 1
# A run duration that asks complete.lua and fail.lua to measure the run themselves, from its start to their
# now (includes/stats.lua MEASURE_RUN): a pull worker that reports no duration (curl, ``qm pull``) is counted
# as a stream worker's run is, rather than left out.
MEASURE_RUN_US = -2
# The window of the average, p95 and error rate: the current minute and the four before it.
RECENT_MINUTES = 5
# Minutes of history (one-minute buckets, the current one last).
HISTORY_MINUTES = 60


def quantile_ms(counts: Sequence[int], q: float) -> float | None:
    """The q-quantile of a histogram's runs, interpolated linearly inside its bucket (as Prometheus's
    ``histogram_quantile`` does), so it is exact to the bucket's width. Runs past the last bound count as
    the last bound. None when the histogram is empty."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    below = 0
    for i, n in enumerate(counts):
        if n and below + n >= rank:
            if i >= len(DURATION_BOUNDS_MS):
                return float(DURATION_BOUNDS_MS[-1])
            lower = DURATION_BOUNDS_MS[i - 1] if i else 0
            upper = DURATION_BOUNDS_MS[i]
            return lower + (upper - lower) * (rank - below) / n
        below += n
    return float(DURATION_BOUNDS_MS[-1])


def mean_ms(counts: Sequence[int], total_us: int) -> float | None:
    """The mean duration of a histogram's runs (from their exact sum); None when it is empty."""
    runs = sum(counts)
    return total_us / runs / 1000 if runs else None


def error_rate(completed: int, failed: int) -> float:
    """Failed / (completed + failed); 0 when nothing finished."""
    finished = completed + failed
    return failed / finished if finished else 0.0
